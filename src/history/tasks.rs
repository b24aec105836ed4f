//! The history's part in a running collector: restoring state at start,
//! recording incident events and changes as they happen, periodic snapshots
//! of the detection state, and pruning.
//!
//! Invariants: every database call runs on a blocking thread, never on the
//! async runtime; a failed write is logged and counted
//! ([`WRITE_ERRORS_METRIC`](super::WRITE_ERRORS_METRIC), and
//! [`History::health`]) and never stops detection or ingestion; at most one
//! snapshot write is in flight.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{wall_clock_nanos, EventKind, History, HistoryError, PackedSnapshot};
use crate::detect::engine::{Engine, EngineSnapshot};
use crate::model::Change;
use crate::model::{rfc3339, Incident, IncidentEvent, IncidentState};
use crate::store::changes::ChangeLog;
use crate::store::Store;

/// How often old history is pruned. Retention is days; an hour late is
/// nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Restores the changes within retention into the change log; returns how
/// many. Called at start, before anything records a change.
/// The incidents the history records as open, as the events that bring a
/// consumer up to date: each as it was opened (when that event is on
/// record), then as it was last recorded. Alerting takes them at start-up.
pub fn open_incident_events(history: &History) -> Result<Vec<IncidentEvent>, HistoryError> {
    let mut events = Vec::new();
    for latest in history.open_incidents()? {
        let first = history
            .get_incident(&latest.id)?
            .and_then(|(_, events)| {
                events
                    .into_iter()
                    .find(|event| event.kind == EventKind::Opened)
            })
            .map(|event| event.incident);
        if let Some(first) = first {
            events.push(IncidentEvent::Opened(first));
        }
        events.push(IncidentEvent::Updated(latest));
    }
    Ok(events)
}

pub fn restore_changes(
    history: &History,
    changes: &ChangeLog,
    now_unix_nanos: u64,
) -> Result<usize, HistoryError> {
    let since = now_unix_nanos.saturating_sub(history.retention().as_nanos() as u64);
    let stored = history.changes(since)?;
    let count = stored.len();
    for change in stored {
        changes.restore(change);
    }
    Ok(count)
}

/// What was read at start to restore detection.
struct Saved {
    /// The newest snapshot.
    snapshot: Option<EngineSnapshot>,
    /// Incidents recorded as open.
    recorded_open: Vec<Incident>,
    /// Incidents open in the snapshot that the record says resolved.
    resolved_ids: BTreeSet<String>,
}

fn load(history: &History) -> Result<Saved, HistoryError> {
    let snapshot = history.latest_snapshot()?;
    let recorded_open = history.open_incidents()?;
    let mut resolved_ids = BTreeSet::new();
    for open in snapshot
        .iter()
        .flat_map(|snapshot| &snapshot.incidents.open)
    {
        if let Some((stored, _)) = history.get_incident(&open.incident.id)? {
            if stored.state == IncidentState::Resolved {
                resolved_ids.insert(stored.id);
            }
        }
    }
    Ok(Saved {
        snapshot,
        recorded_open,
        resolved_ids,
    })
}

/// Loads the newest snapshot into `engine` and makes its open incidents
/// agree with the recorded ones (see `Engine::reconcile`). Returns the
/// events to publish so the record and its consumers catch up: incidents
/// the engine has open that were never recorded (opened), and recorded ones
/// that can no longer be followed (resolved now). Failures are logged: a
/// collector that cannot read its history starts fresh rather than not at
/// all.
pub async fn restore_engine(
    history: Arc<History>,
    store: &Store,
    engine: &mut Engine,
) -> Vec<IncidentEvent> {
    let started = Instant::now();
    let saved = match tokio::task::spawn_blocking(move || load(&history)).await {
        Ok(Ok(saved)) => saved,
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot read saved detection state; starting with fresh baselines");
            return Vec::new();
        }
        Err(error) => {
            tracing::error!(%error, "reading saved detection state failed; starting fresh");
            return Vec::new();
        }
    };
    let window = store.config().window;
    // The window this process is in started before it did: its data is
    // partial. Judging starts with the next one.
    let resume_window = store.window_index(store.now_unix_nanos()) + 1;
    if let Some(snapshot) = saved.snapshot {
        let restored = engine.restore(snapshot, window, resume_window);
        let (_, ready) = engine.readiness();
        tracing::info!(
            series = restored.series,
            ready,
            skipped = restored.skipped,
            open_incidents = restored.open_incidents,
            took_ms = started.elapsed().as_millis() as u64,
            "restored detection baselines"
        );
    }
    let reconciled = engine.reconcile(&saved.recorded_open, &saved.resolved_ids, resume_window);
    let now = wall_clock_nanos();
    let mut events: Vec<IncidentEvent> = reconciled
        .unrecorded
        .into_iter()
        .map(IncidentEvent::Opened)
        .collect();
    for mut incident in reconciled.superseded {
        incident.state = IncidentState::Resolved;
        incident.resolved_unix_nanos = Some(now);
        incident.resolved = Some(rfc3339(now));
        events.push(IncidentEvent::Resolved(incident));
    }
    let open: Vec<&str> = engine
        .incidents()
        .open_incidents()
        .into_iter()
        .map(|incident| incident.id.as_str())
        .collect();
    if !open.is_empty() || !reconciled.dropped.is_empty() {
        tracing::info!(
            open = ?open,
            adopted = ?reconciled.adopted,
            dropped = ?reconciled.dropped,
            "open incidents restored"
        );
    }
    events
}

/// Records every incident event into the history, in order, until the
/// sending side (detection) is gone. Ends by itself after detection stops,
/// so the last events are written before shutdown completes.
pub async fn record_incidents(
    history: Arc<History>,
    mut events: broadcast::Receiver<IncidentEvent>,
) {
    loop {
        match events.recv().await {
            Ok(event) => {
                let writer = Arc::clone(&history);
                let written = tokio::task::spawn_blocking(move || {
                    writer.record_event(&event, wall_clock_nanos())
                })
                .await;
                // A failed write was counted and logged by the history;
                // only a write task that panicked is counted here.
                if let Err(error) = written {
                    history.write_failed("incident_event", 1, &error);
                }
            }
            Err(RecvError::Lagged(missed)) => history.write_failed(
                "incident_event",
                missed,
                &format_args!(
                    "the history fell behind; {missed} incident events were not recorded"
                ),
            ),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Records every change the change log gets, until `shutdown`; then
/// records what is already queued.
pub async fn record_changes(
    history: Arc<History>,
    mut changes: broadcast::Receiver<Change>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = changes.recv() => received,
        };
        match received {
            Ok(change) => write_change(&history, change).await,
            Err(RecvError::Lagged(missed)) => history.write_failed(
                "change",
                missed,
                &format_args!("the history fell behind; {missed} changes were not recorded"),
            ),
            Err(RecvError::Closed) => return,
        }
    }
    while let Ok(change) = changes.try_recv() {
        write_change(&history, change).await;
    }
}

async fn write_change(history: &Arc<History>, change: Change) {
    let writer = Arc::clone(history);
    // A failed write was counted and logged by the history.
    if let Err(error) = tokio::task::spawn_blocking(move || writer.record_change(&change)).await {
        history.write_failed("change", 1, &error);
    }
}

/// Prunes the history at start and then every hour, until `shutdown`.
pub async fn prune(history: Arc<History>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pruner = Arc::clone(&history);
        match tokio::task::spawn_blocking(move || pruner.prune(wall_clock_nanos())).await {
            Ok(Ok(counts)) => {
                if counts != super::PruneCounts::default() {
                    tracing::info!(?counts, "pruned history past retention");
                }
            }
            // Counted and logged by the history.
            Ok(Err(_)) => {}
            Err(error) => history.write_failed("prune", 1, &error),
        }
    }
}

/// Takes snapshots of the detection state on an interval and writes them on
/// a blocking thread, one at a time, so that detection never waits for the
/// disk. The detection loop asks [`Snapshotter::due`] each tick, encodes
/// the engine's state when it is ([`Snapshotter::pack`]), and hands the
/// encoded copy to [`Snapshotter::save`].
pub struct Snapshotter {
    /// Where snapshots go.
    history: Arc<History>,
    /// Time between snapshots.
    interval: Duration,
    /// The store's window length, which snapshots record.
    window: Duration,
    /// When the last snapshot was taken (or the snapshotter made).
    last: Instant,
    /// The write in flight; a new snapshot is not taken until it is done.
    writing: Option<JoinHandle<()>>,
}

impl Snapshotter {
    /// A snapshotter writing to `history` every `interval`, for a store
    /// with windows of `window`.
    pub fn new(history: Arc<History>, interval: Duration, window: Duration) -> Self {
        Snapshotter {
            history,
            interval,
            window,
            last: Instant::now(),
            writing: None,
        }
    }

    /// The store's window length, for `Engine::snapshot`.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a snapshot should be taken now.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
            && self.writing.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Encodes the engine's state for [`Snapshotter::save`]; a failure is
    /// counted and logged as a failed snapshot write.
    pub fn pack(&self, engine: &Engine) -> Option<PackedSnapshot> {
        self.packer().pack(engine)
    }

    /// What encodes snapshots, to take to the thread that owns the engine.
    pub fn packer(&self) -> Packer {
        Packer {
            history: Arc::clone(&self.history),
            window: self.window,
        }
    }

    /// Writes `snapshot` in the background.
    pub fn save(&mut self, snapshot: PackedSnapshot) {
        self.last = Instant::now();
        let history = Arc::clone(&self.history);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_snapshot(&history, &snapshot)
        }));
    }

    /// Waits for the write in flight, then writes `snapshot` (the state at
    /// shutdown) and waits for it too.
    pub async fn finish(mut self, snapshot: PackedSnapshot) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
        let history = Arc::clone(&self.history);
        let _ = tokio::task::spawn_blocking(move || write_snapshot(&history, &snapshot)).await;
    }
}

/// Encodes snapshots of the detection state ([`Snapshotter::packer`]).
#[derive(Clone)]
pub struct Packer {
    /// Where failures are counted.
    history: Arc<History>,
    /// The store's window length.
    window: Duration,
}

impl Packer {
    /// See [`Snapshotter::pack`].
    pub fn pack(&self, engine: &Engine) -> Option<PackedSnapshot> {
        PackedSnapshot::of_engine(engine, self.window)
            .inspect_err(|error| self.history.write_failed("snapshot", 1, error))
            .ok()
    }
}

fn write_snapshot(history: &History, snapshot: &PackedSnapshot) {
    let started = Instant::now();
    // A failure is counted and logged by the history.
    if history.save_packed(wall_clock_nanos(), snapshot).is_ok() {
        tracing::debug!(
            series = snapshot.n_series(),
            bytes = snapshot.bytes(),
            took_ms = started.elapsed().as_millis() as u64,
            "saved detection snapshot"
        );
    }
}
