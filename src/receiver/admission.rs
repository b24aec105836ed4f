//! Admission of export requests: whether a request is read and decoded now,
//! or refused with an answer its exporter retries later. Nothing refused
//! here has been decoded or recorded, so a refusal loses nothing: the OTLP
//! exporter keeps the batch and sends it again.
//!
//! Two gates, shared by the gRPC and the HTTP receiver through their
//! [`DecodePool`](super::decode::DecodePool):
//!
//! - **The memory limiter** ([`MemoryLimiter`]), like the OTel Collector's
//!   `memory_limiter` processor: a task samples the process's resident
//!   memory every `check_interval`; while it is above the soft limit
//!   (`limit - spike`) every new export request is refused, before its body
//!   is read. Below the soft limit requests are accepted again. The spike
//!   allowance is what may arrive between two samples. The Collector also
//!   forces a garbage collection above the hard limit; there is no garbage
//!   collector here, and what decoding holds is freed as soon as a request
//!   is answered.
//! - **The decode queue** (in the pool): requests waiting for a decoding
//!   worker are bounded by count and by the bytes of their bodies, and a
//!   request that waits longer than `max_wait` is refused. Without these,
//!   2,000 requests in flight queued for seconds until their clients gave
//!   up (issue #14).
//!
//! A refusal is a [`Busy`]: gRPC UNAVAILABLE with a `google.rpc.RetryInfo`
//! detail, HTTP 503 with `Retry-After` and the same `google.rpc.Status` in
//! the body. OTLP names UNAVAILABLE as the backpressure code, which every
//! exporter retries (RESOURCE_EXHAUSTED is retryable only with RetryInfo,
//! and this crate keeps it for bodies over the size limit, which are not).
//!
//! The memory state changes only in [`MemoryLimiter::observe`], which logs
//! each transition once; requests only read it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{describe_gauge, gauge, Unit};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::http::{AnyMsg, RpcStatus};

/// `google.rpc.Code.UNAVAILABLE`.
pub const CODE_UNAVAILABLE: i32 = 14;

/// Gauge: 1 while the memory limiter refuses export requests, else 0.
pub const MEMORY_LIMITER_REFUSING: &str = "triage_memory_limiter_refusing";
/// Gauge: the process's resident memory at the latest sample, in bytes.
pub const MEMORY_RESIDENT: &str = "triage_memory_resident_bytes";
/// Gauge: the configured hard memory limit, in bytes.
pub const MEMORY_LIMIT: &str = "triage_memory_limit_bytes";
/// Gauge: the soft memory limit (limit - spike), in bytes; above it export
/// requests are refused.
pub const MEMORY_SOFT_LIMIT: &str = "triage_memory_soft_limit_bytes";
/// Gauge: export requests waiting for a decoding worker.
pub const DECODE_QUEUE_REQUESTS: &str = "triage_decode_queue_requests";
/// Gauge: body bytes of the export requests waiting for a decoding worker.
pub const DECODE_QUEUE_BYTES: &str = "triage_decode_queue_bytes";

/// The default `max_queued_requests`.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 128;
/// The default `max_queued_mib`, in bytes.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// The default `max_queue_wait`.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// The default `memory_check_interval` (the Collector's recommended 1 s).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the resident memory is read. `/proc/self/status` gives it in kB,
/// so no page size is needed (`statm` counts pages, and the page size is
/// not readable without `unsafe` or a new dependency).
const STATUS_FILE: &str = "/proc/self/status";

/// The shortest delay a refusal asks for: `Retry-After` counts whole
/// seconds.
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How the memory limiter is set (`receivers.otlp.memory_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The hard limit, in bytes (`memory_limit_mib`).
    pub limit: u64,
    /// The most memory expected to grow between two samples, in bytes
    /// (`memory_spike_limit_mib`); less than `limit`.
    pub spike: u64,
    /// How often the resident memory is sampled.
    pub check_interval: Duration,
}

impl MemoryLimit {
    /// Above this requests are refused.
    pub fn soft_limit(&self) -> u64 {
        self.limit.saturating_sub(self.spike)
    }
}

/// Bounds on the requests waiting for a decoding worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most requests waiting at once; one more is refused.
    pub max_requests: usize,
    /// Most body bytes the waiting requests hold together; a request that
    /// would cross it is refused, unless nothing else waits (a request
    /// larger than the bound may still wait alone).
    pub max_bytes: usize,
    /// Longest a request waits for a worker before it is refused.
    pub max_wait: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            max_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_wait: DEFAULT_MAX_QUEUE_WAIT,
        }
    }
}

/// Admission settings of the receivers, validated from the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionSettings {
    /// `None`: no memory limit (the default; the manifests set one).
    pub memory: Option<MemoryLimit>,
    /// The decode queue's bounds.
    pub queue: QueueLimits,
}

/// Why a request is refused for now. Every variant is retryable: the
/// request was not read or not decoded, and sent again later it will be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error(
        "the collector is over its memory limit ({} MiB resident, soft limit {} MiB); retry later",
        .resident / MIB,
        .soft_limit / MIB
    )]
    Memory {
        resident: u64,
        soft_limit: u64,
        retry_after: Duration,
    },
    #[error("{0} requests are already waiting to be decoded (max_queued_requests); retry later")]
    QueueFull(usize),
    #[error(
        "the requests waiting to be decoded already hold {} MiB (max_queued_mib); retry later",
        .0 / MIB as usize
    )]
    QueueBytes(usize),
    #[error("the request waited {0:?} for a decoder (max_queue_wait); retry later")]
    Waited(Duration),
}

const MIB: u64 = 1024 * 1024;

impl Busy {
    /// The `reason` label of `triage_receiver_refused_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Busy::Memory { .. } => "memory_limit",
            Busy::QueueFull(_) => "queue_full",
            Busy::QueueBytes(_) => "queue_bytes",
            Busy::Waited(_) => "queue_timeout",
        }
    }

    /// How long the client is asked to wait: a memory sample or two for
    /// the memory limiter, a second for the queue.
    pub fn retry_after(&self) -> Duration {
        match self {
            Busy::Memory { retry_after, .. } => (*retry_after).max(MIN_RETRY_DELAY),
            _ => MIN_RETRY_DELAY,
        }
    }

    /// Whole seconds for `Retry-After`, rounded up.
    pub fn retry_after_secs(&self) -> u64 {
        let delay = self.retry_after();
        delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
    }

    /// The encoded `google.rpc.Status` (code UNAVAILABLE, this message, a
    /// `RetryInfo` detail): the body of the HTTP answer and the
    /// `grpc-status-details-bin` of the gRPC one.
    pub fn rpc_status(&self) -> RpcStatus {
        let delay = self.retry_after();
        let retry = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        RpcStatus {
            code: CODE_UNAVAILABLE,
            message: self.to_string(),
            details: vec![AnyMsg {
                type_url: RETRY_INFO_TYPE.to_owned(),
                value: retry.encode_to_vec(),
            }],
        }
    }

    /// The gRPC answer: UNAVAILABLE with a `RetryInfo` detail.
    pub fn grpc_status(&self) -> tonic::Status {
        tonic::Status::with_details(
            tonic::Code::Unavailable,
            self.to_string(),
            self.rpc_status().encode_to_vec().into(),
        )
    }

    /// The `google.rpc.Status` in OTLP/JSON's shape (the `Any` detail with
    /// its `@type` and the `Duration` as a string of seconds).
    pub fn json_status(&self) -> serde_json::Value {
        let delay = self.retry_after();
        serde_json::json!({
            "code": CODE_UNAVAILABLE,
            "message": self.to_string(),
            "details": [{
                "@type": RETRY_INFO_TYPE,
                "retryDelay": format!("{}s", delay.as_secs_f64()),
            }],
        })
    }
}

/// The type URL of `google.rpc.RetryInfo` in an `Any`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

// === MemoryLimiter ===

/// The memory gate (see the module documentation). Cheap to check from
/// every request: one atomic load.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// `None`: no limit; the limiter never refuses and has no task.
    limit: Option<MemoryLimit>,
    /// Set while the latest sample is above the soft limit.
    refusing: AtomicBool,
    /// The latest sample, in bytes (0 before the first).
    resident: AtomicU64,
    /// A state set by tests in place of the samples: 0 none, 1 accepting,
    /// 2 refusing.
    forced: AtomicU8,
}

/// What one sample changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Crossed above the soft limit: refusing from now on.
    Refusing,
    /// Back under the soft limit: accepting again.
    Accepting,
}

impl MemoryLimiter {
    /// A limiter for `limit`; `None` never refuses.
    pub fn new(limit: Option<MemoryLimit>) -> Arc<MemoryLimiter> {
        Arc::new(MemoryLimiter {
            limit,
            refusing: AtomicBool::new(false),
            resident: AtomicU64::new(0),
            forced: AtomicU8::new(0),
        })
    }

    /// A limiter that never refuses.
    pub fn off() -> Arc<MemoryLimiter> {
        Self::new(None)
    }

    /// The configured limit, if any.
    pub fn limit(&self) -> Option<MemoryLimit> {
        self.limit
    }

    /// Whether a new request may be read now.
    pub fn check(&self) -> Result<(), Busy> {
        let refusing = match self.forced.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => self.refusing.load(Ordering::Relaxed),
        };
        if !refusing {
            return Ok(());
        }
        Err(Busy::Memory {
            resident: self.resident.load(Ordering::Relaxed),
            soft_limit: self.limit.map_or(0, |limit| limit.soft_limit()),
            retry_after: self
                .limit
                .map_or(MIN_RETRY_DELAY, |limit| limit.check_interval),
        })
    }

    /// Takes one sample of the resident memory (bytes): updates the state
    /// and the gauges, and logs a transition once.
    pub fn observe(&self, resident: u64) -> Option<Transition> {
        let limit = self.limit?;
        self.resident.store(resident, Ordering::Relaxed);
        gauge!(MEMORY_RESIDENT).set(resident as f64);
        let soft_limit = limit.soft_limit();
        let over = resident > soft_limit;
        let was = self.refusing.swap(over, Ordering::Relaxed);
        gauge!(MEMORY_LIMITER_REFUSING).set(if over { 1.0 } else { 0.0 });
        let mib = |bytes: u64| bytes / MIB;
        match (was, over) {
            (false, true) => {
                tracing::warn!(
                    resident_mib = mib(resident),
                    soft_limit_mib = mib(soft_limit),
                    limit_mib = mib(limit.limit),
                    "memory above the soft limit: refusing export requests (retryable) until it falls"
                );
                Some(Transition::Refusing)
            }
            (true, false) => {
                tracing::info!(
                    resident_mib = mib(resident),
                    soft_limit_mib = mib(soft_limit),
                    "memory below the soft limit again: accepting export requests"
                );
                Some(Transition::Accepting)
            }
            _ => None,
        }
    }

    /// Samples the process's resident memory every `check_interval` until
    /// `shutdown`; returns at once when there is no limit. The first
    /// sample is taken at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(limit) = self.limit else {
            return;
        };
        gauge!(MEMORY_LIMIT).set(limit.limit as f64);
        gauge!(MEMORY_SOFT_LIMIT).set(limit.soft_limit() as f64);
        let mut tick = tokio::time::interval(limit.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unreadable = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match resident_bytes() {
                Ok(resident) => {
                    unreadable = false;
                    self.observe(resident);
                }
                // Logged once; without a sample the state stays as it was.
                Err(error) if !unreadable => {
                    unreadable = true;
                    tracing::error!(%error, file = STATUS_FILE, "cannot read the resident memory; the memory limit is not enforced until it can be read");
                }
                Err(_) => {}
            }
        }
    }

    /// Sets the state by hand, in place of the samples (`Some(true)`:
    /// refusing), or gives it back to them (`None`). For tests, which
    /// cannot make the process's memory rise and fall on cue.
    #[doc(hidden)]
    pub fn force(&self, refusing: Option<bool>) {
        let value = match refusing {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        self.forced.store(value, Ordering::Relaxed);
    }

    /// A line for `/readyz` while requests are refused.
    pub fn warning(&self) -> Option<String> {
        self.check().err().map(|busy| {
            format!(
                "export requests are refused (retryable) while memory is over the limit: {busy}"
            )
        })
    }
}

/// The resident memory of this process, from `/proc/self/status`.
pub fn resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string(STATUS_FILE)?;
    parse_vm_rss(&status)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS line in kB"))
}

/// The `VmRSS:  1234 kB` line, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib.saturating_mul(1024))
}

/// Describes the gauges of this module.
pub fn describe_metrics() {
    describe_gauge!(
        MEMORY_LIMITER_REFUSING,
        "1 while export requests are refused for memory over the soft limit."
    );
    describe_gauge!(
        MEMORY_RESIDENT,
        Unit::Bytes,
        "Resident memory at the memory limiter's latest sample."
    );
    describe_gauge!(
        MEMORY_LIMIT,
        Unit::Bytes,
        "The memory limit (memory_limit_mib)."
    );
    describe_gauge!(
        MEMORY_SOFT_LIMIT,
        Unit::Bytes,
        "The soft memory limit (limit - spike); above it export requests are refused."
    );
    describe_gauge!(
        DECODE_QUEUE_REQUESTS,
        "Export requests waiting for a decoding worker."
    );
    describe_gauge!(
        DECODE_QUEUE_BYTES,
        Unit::Bytes,
        "Body bytes of the export requests waiting for a decoding worker."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Arc<MemoryLimiter> {
        MemoryLimiter::new(Some(MemoryLimit {
            limit: 200 * MIB,
            spike: 40 * MIB,
            check_interval: Duration::from_secs(1),
        }))
    }

    #[test]
    fn refuses_above_the_soft_limit_and_accepts_below_it() {
        let limiter = limiter();
        assert_eq!(limiter.check(), Ok(()));
        assert_eq!(limiter.observe(100 * MIB), None);
        assert_eq!(limiter.observe(160 * MIB), None, "at the soft limit");
        assert_eq!(limiter.observe(161 * MIB), Some(Transition::Refusing));
        let busy = limiter.check().unwrap_err();
        assert_eq!(busy.reason(), "memory_limit");
        assert!(busy
            .to_string()
            .contains("161 MiB resident, soft limit 160 MiB"));
        assert!(limiter.warning().is_some());
        // Only the transition is reported, once.
        assert_eq!(limiter.observe(300 * MIB), None);
        assert_eq!(limiter.observe(159 * MIB), Some(Transition::Accepting));
        assert_eq!(limiter.check(), Ok(()));
        assert_eq!(limiter.warning(), None);
    }

    #[test]
    fn no_limit_never_refuses_and_forcing_overrides_the_samples() {
        let off = MemoryLimiter::off();
        assert_eq!(off.observe(u64::MAX), None);
        assert_eq!(off.check(), Ok(()));
        off.force(Some(true));
        assert!(off.check().is_err());
        let limiter = limiter();
        limiter.observe(500 * MIB);
        limiter.force(Some(false));
        assert_eq!(limiter.check(), Ok(()));
        limiter.force(None);
        assert!(limiter.check().is_err());
    }

    #[test]
    fn the_answer_is_unavailable_with_retry_info() {
        let busy = Busy::Waited(Duration::from_secs(2));
        assert_eq!(busy.retry_after_secs(), 1);
        let status = RpcStatus::decode(&busy.rpc_status().encode_to_vec()[..]).unwrap();
        assert_eq!(status.code, CODE_UNAVAILABLE);
        assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE);
        let retry = RetryInfo::decode(&status.details[0].value[..]).unwrap();
        assert_eq!(retry.retry_delay.unwrap().seconds, 1);
        let grpc = busy.grpc_status();
        assert_eq!(grpc.code(), tonic::Code::Unavailable);
        assert_eq!(grpc.details(), &busy.rpc_status().encode_to_vec()[..]);
        let memory = Busy::Memory {
            resident: 0,
            soft_limit: 0,
            retry_after: Duration::from_millis(2500),
        };
        assert_eq!(memory.retry_after_secs(), 3);
        assert_eq!(memory.json_status()["details"][0]["retryDelay"], "2.5s");
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\ttriage\nVmHWM:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(resident_bytes().unwrap() > 0);
    }
}
