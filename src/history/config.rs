//! The `storage:` section: where the incident history and the detection
//! snapshots are kept ([`StorageConfig`]), the keys and rules that validate
//! it, and its part of the example config.
//!
//! The directory is only named here; it is created and checked when the
//! server starts, so that `triage validate` does not need it.

use std::path::PathBuf;
use std::time::Duration;

use crate::validate::{at_least, duration, flag, text, Checker, Section};

/// Settings of the `storage:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Whether the history goes to disk. When false nothing touches the
    /// disk: the history is kept in memory (and pruned the same way) and is
    /// lost on exit.
    pub enabled: bool,
    /// Directory of `triage.db`; created if missing.
    pub data_dir: PathBuf,
    /// How long resolved incidents, changes and snapshots are kept.
    pub retention: Duration,
    /// How often the detection state is snapshotted (and once more at a
    /// graceful shutdown).
    pub snapshot_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: true,
            data_dir: PathBuf::from("./data"),
            retention: Duration::from_secs(14 * 24 * 3600),
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

// === the `storage:` section of the config file ===

/// Keys of `storage`.
pub(crate) const STORAGE_KEYS: &[&str] = &["enabled", "data_dir", "retention", "snapshot_interval"];
/// Shortest history retention: keeping less than an hour of incidents is
/// more likely a typo than a wish.
const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// Shortest snapshot interval: a snapshot of thousands of series takes tens
/// of milliseconds to write, so more often than every second is churn.
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// The `storage:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# The incident history (incidents, their events, change events) and
# snapshots of the detection baselines, in SQLite at <data_dir>/triage.db, so
# they survive restarts. See docs/HISTORY.md.
storage:
  # false keeps the history in memory only (nothing is written to disk) and
  # a restarted collector warms up again.
  enabled: true
  # Created if missing; must be writable. Mount a volume here in containers.
  data_dir: ./data
  # Resolved incidents, changes and snapshots older than this are pruned
  # (at least 1h; 14d is 336h).
  retention: 14d
  # How often the detection baselines and open incidents are snapshotted
  # (also at a graceful shutdown); a restart loses at most this much
  # learning. At least 1s.
  snapshot_interval: 60s
"#;

/// Reads the `storage` section into `storage`. The directory is only
/// named here; it is created and checked when the server starts.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, storage: &mut StorageConfig) {
    let section = checker.section(top, "storage", STORAGE_KEYS);
    checker.field(&section, "enabled", &mut storage.enabled, flag);
    checker.field(&section, "data_dir", &mut storage.data_dir, |value| {
        let name = text(value, "a directory path such as ./data")?;
        if name.trim().is_empty() {
            return Err("expected a directory path, got an empty string".to_owned());
        }
        Ok(PathBuf::from(name))
    });
    checker.field(&section, "retention", &mut storage.retention, |value| {
        at_least(duration(value)?, MIN_RETENTION)
    });
    checker.field(
        &section,
        "snapshot_interval",
        &mut storage.snapshot_interval,
        |value| at_least(duration(value)?, MIN_SNAPSHOT_INTERVAL),
    );
}
