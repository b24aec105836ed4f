//! Series identity: what a series measures and whose it is.

use std::sync::Arc;

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKind {
    /// Spans a service handled (SERVER, CONSUMER and INTERNAL/root spans),
    /// named by operation.
    Operation,
    /// Calls a service made to another (CLIENT, PRODUCER spans), named by the
    /// callee, as seen from the caller.
    Edge,
    /// A metric stream (gauge, sum or distribution), named by metric name and
    /// kept attributes.
    Metric,
    /// Log records of one severity class (or `all`, whose errors are the
    /// records at ERROR and above).
    Log,
    /// The exclusive view of an operation, written by the span analysis
    /// (`analyze::spans`), named like the operation: durations are the
    /// spans' own time (minus their children's), errors only those that
    /// originate in the service. Such a series exists only beside an
    /// operation series of the same name and does not count towards the
    /// series caps, so it never pushes an operation into overflow.
    Own,
}

impl SeriesKind {
    pub const ALL: [SeriesKind; 5] = [
        SeriesKind::Operation,
        SeriesKind::Edge,
        SeriesKind::Metric,
        SeriesKind::Log,
        SeriesKind::Own,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Operation => "operation",
            SeriesKind::Edge => "edge",
            SeriesKind::Metric => "metric",
            SeriesKind::Log => "log",
            SeriesKind::Own => "own",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The pseudo-service of conditions on the collector itself (its input
/// stopped), named like the store's overflow series so it cannot clash
/// with a real `service.name` in practice.
pub const COLLECTOR_SERVICE: &str = "__collector__";

/// Identifies one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub kind: SeriesKind,
    pub service: Arc<str>,
    pub name: Arc<str>,
}

impl SeriesKey {
    pub fn new(kind: SeriesKind, service: &str, name: &str) -> Self {
        SeriesKey {
            kind,
            service: Arc::from(service),
            name: Arc::from(name),
        }
    }
}
