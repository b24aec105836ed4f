//! The history that survives restarts: incidents, every incident event,
//! change events and snapshots of the detection state, in an embedded SQLite
//! database at `<data_dir>/triage.db` (or in memory when storage is off).
//!
//! What this module owns and promises:
//!
//! - **One writer, one lock.** A [`History`] holds one SQLite connection
//!   behind a `parking_lot::Mutex`; every method is a short critical section
//!   and a single transaction, so a reader never sees half of a write. Calls
//!   block (disk I/O): async callers run them on `spawn_blocking`.
//! - **Events are numbered once.** [`History::record_event`] gives each
//!   incident event the next `seq` (SQLite `AUTOINCREMENT`, never reused even
//!   after pruning) and publishes it to [`History::subscribe`]rs *while still
//!   holding the lock*, so live subscribers see events in `seq` order and a
//!   watcher that subscribes first and then reads [`History::events_after`]
//!   can stitch the two with no gap and no duplicate.
//! - **The schema is versioned.** `schema_version` lists the numbered
//!   migrations applied (`migrations/NNNN_*.sql`); [`History::open`] applies
//!   the missing ones in order, each in its own transaction, and refuses a
//!   database written by a newer build instead of guessing.
//! - **A damaged file is moved aside, not fatal.** [`History::open`] runs
//!   `PRAGMA quick_check` before anything writes to the file. A database
//!   SQLite finds corrupt, truncated or not a database at all is renamed to
//!   `triage.db.corrupt-<UTC time>` (with its `-wal` and `-shm`), logged,
//!   counted ([`RECOVERED_METRIC`]) and replaced by an empty one; only a
//!   file or directory that cannot be opened, created or renamed (usually
//!   permissions) still fails start-up. Writes that fail later are counted
//!   ([`WRITE_ERRORS_METRIC`]) and shown by [`History::health`].
//! - **Bounded.** [`History::prune`] drops incidents resolved before the
//!   retention cutoff with their events, older changes and older snapshots;
//!   [`History::save_snapshot`] keeps only the newest few snapshots. Reads
//!   are capped ([`MAX_PAGE_SIZE`], [`MAX_EVENTS`]).
//!
//! The layout is documented for people with `sqlite3` in `docs/HISTORY.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::config::DbConfig;
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::broadcast;

use crate::detect::engine::{Engine, EngineSnapshot, SeriesSnapshot};
use crate::detect::incident::KeyRecord;
use crate::detect::SeriesDetector;
use crate::model::Change;
use crate::model::{rfc3339, Incident, IncidentEvent, IncidentState};

pub mod config;
pub mod tasks;

pub use config::StorageConfig;

/// The database file inside the data directory.
pub const DB_FILE: &str = "triage.db";
/// Most incidents one [`History::list_incidents`] page returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Most events one read returns, whatever limit is asked for.
pub const MAX_EVENTS: usize = 10_000;
/// Most changes [`History::changes`] returns (the newest); the in-memory
/// change log holds fewer anyway.
pub const MAX_CHANGES: usize = 100_000;
/// Largest baseline JSON read back. The largest history a config allows
/// (10,000 windows) with a full time-of-day profile is about 1.3 MB.
const MAX_DETECTOR_JSON: u64 = 64 * 1024 * 1024;
/// Snapshots kept: the newest, and one before it in case the newest turns
/// out unreadable.
const SNAPSHOTS_KEPT: i64 = 2;
/// Live events buffered per subscriber before it lags (and is told how many
/// it missed, which it can re-read with [`History::events_after`]).
const LIVE_BUFFER: usize = 1024;
/// How long a write waits for a lock held by someone else (an operator's
/// `sqlite3` session) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Self-metric: history writes that failed, by `what` (`incident_event`,
/// `change`, `snapshot`, `prune`). Failures are logged and counted;
/// detection carries on.
pub const WRITE_ERRORS_METRIC: &str = "triage_history_write_errors_total";
/// Self-metric: damaged databases moved aside at start, by `reason`
/// (`corrupt`: SQLite found the file damaged or truncated;
/// `not_a_database`: the file is not SQLite at all).
pub const RECOVERED_METRIC: &str = "triage_history_recovered_total";
/// Most problems `PRAGMA quick_check` is asked to list: the first few say
/// enough, and the log line stays short.
const QUICK_CHECK_PROBLEMS: usize = 5;

/// Describes this module's self-metrics for `/metrics` (`# HELP` lines);
/// the telemetry module's `describe` calls it once the recorder is
/// installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        WRITE_ERRORS_METRIC,
        "History writes that failed, by what was written."
    );
    metrics::describe_counter!(
        RECOVERED_METRIC,
        "Damaged history databases moved aside at start, by reason."
    );
    // At zero from the start, so that alerts on their increase (docs/HISTORY.md)
    // fire on the first failure.
    for what in ["incident_event", "change", "snapshot", "prune"] {
        metrics::counter!(WRITE_ERRORS_METRIC, "what" => what).increment(0);
    }
    for reason in ["corrupt", "not_a_database"] {
        metrics::counter!(RECOVERED_METRIC, "reason" => reason).increment(0);
    }
}

/// The numbered migrations, applied in order. Never edit one that has been
/// released: add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("history/migrations/0001_history.sql")),
    (2, include_str!("history/migrations/0002_snapshots.sql")),
];

/// Why the history could not be opened, read or written.
#[derive(Debug, Error)]
pub enum HistoryError {
    // Causes are part of the messages below and deliberately not
    // `source()`s (hence the hand-written `From` impls below): printed as a
    // chain (`{:#}`) they would appear twice.
    /// The data directory does not exist and cannot be created.
    #[error("cannot create the data directory {}: {error}", .path.display())]
    CreateDir {
        /// The directory as configured.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The database cannot be opened, set up or migrated (often: the
    /// directory is not writable).
    #[error("cannot open the history database {}: {error}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// The database is damaged (`PRAGMA quick_check` listed problems).
    /// [`History::open`] moves such a file aside; this is returned only if
    /// the new, empty database is damaged too.
    #[error("the history database {} is damaged: {problems}", .path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What the check found.
        problems: String,
    },
    /// A damaged database could not be moved aside (usually: the directory
    /// is not writable).
    #[error(
        "the history database {} is damaged and cannot be moved aside to {}: {error}",
        .path.display(),
        .to.display()
    )]
    MoveAside {
        /// The file that was to be moved.
        path: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The database was written by a newer build.
    #[error(
        "the history database {} has schema version {found}, but this build knows only up to \
         {known}; run a newer triage or point storage.data_dir elsewhere",
        .path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("history database: {0}")]
    Sqlite(rusqlite::Error),
    /// A stored JSON value could not be written or read back.
    #[error("history JSON: {0}")]
    Json(serde_json::Error),
    /// A baseline could not be compressed.
    #[error("cannot compress a baseline: {0}")]
    Compress(std::io::Error),
    /// A page token that this history did not hand out.
    #[error("invalid page token")]
    BadPageToken,
}

// === impl HistoryError ===

impl From<rusqlite::Error> for HistoryError {
    fn from(error: rusqlite::Error) -> Self {
        HistoryError::Sqlite(error)
    }
}

impl From<serde_json::Error> for HistoryError {
    fn from(error: serde_json::Error) -> Self {
        HistoryError::Json(error)
    }
}

impl From<std::io::Error> for HistoryError {
    fn from(error: std::io::Error) -> Self {
        HistoryError::Compress(error)
    }
}

/// What an incident event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The incident opened.
    Opened,
    /// Its kinds, series or severity changed.
    Updated,
    /// It resolved.
    Resolved,
}

impl EventKind {
    /// The kind of `event`.
    pub fn of(event: &IncidentEvent) -> EventKind {
        match event {
            IncidentEvent::Opened(_) => EventKind::Opened,
            IncidentEvent::Updated(_) => EventKind::Updated,
            IncidentEvent::Resolved(_) => EventKind::Resolved,
        }
    }

    /// The stored name: `opened`, `updated` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
        }
    }

    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<EventKind> {
        [EventKind::Opened, EventKind::Updated, EventKind::Resolved]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// An incident event as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the history; strictly increasing, never reused.
    pub seq: u64,
    /// Opened, updated or resolved.
    pub kind: EventKind,
    /// Wall clock when it was recorded, Unix nanoseconds.
    pub at_unix_nanos: u64,
    /// The incident as of this event.
    pub incident: Incident,
}

/// Which incidents to list. The default lists all of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentFilter {
    /// Only open or only resolved incidents.
    pub state: Option<IncidentState>,
    /// Only incidents of this service.
    pub service: Option<String>,
    /// Only incidents whose onset is at or after this time.
    pub since_unix_nanos: Option<u64>,
    /// Only incidents whose onset is before this time.
    pub until_unix_nanos: Option<u64>,
}

/// What one [`History::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Incidents resolved before the cutoff.
    pub incidents: usize,
    /// Events of those incidents.
    pub events: usize,
    /// Changes before the cutoff.
    pub changes: usize,
    /// Snapshots taken before the cutoff.
    pub snapshots: usize,
}

/// A damaged database that [`History::open`] moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Where the damaged file went (`<data_dir>/triage.db.corrupt-<UTC
    /// time>`; its `-wal` and `-shm`, if any, beside it with those
    /// suffixes, so `sqlite3` opens the three together).
    pub moved_to: PathBuf,
    /// What was wrong, as SQLite put it.
    pub problem: String,
    /// `corrupt` or `not_a_database`, as counted in [`RECOVERED_METRIC`].
    pub reason: &'static str,
    /// When it was moved, Unix nanoseconds.
    pub at_unix_nanos: u64,
}

/// How the history's writes are going, for `/readyz` and people. The
/// collector detects and alerts without its history, so none of this makes
/// it unready by itself; it says what is being lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryHealth {
    /// Writes that failed since start, of every kind (events that were
    /// never handed to the history because it fell behind included).
    pub write_failures: u64,
    /// The latest failure: what was being written and why it failed.
    pub last_write_error: Option<String>,
    /// When the latest failure happened, Unix nanoseconds.
    pub last_write_error_unix_nanos: Option<u64>,
    /// Whether the latest write failed (a later success clears it: a disk
    /// that was full and has room again).
    pub failing: bool,
    /// Whether a write failed because SQLite found the file damaged. It
    /// stays damaged: a restart checks it, moves it aside and starts a new
    /// one.
    pub damaged: bool,
    /// The damaged database moved aside at start, if there was one.
    pub recovered: Option<Recovery>,
}

impl HistoryHealth {
    /// One line for people saying what is wrong, or `None` when writes are
    /// going fine and nothing was recovered at start.
    pub fn problem(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.damaged {
            parts.push(
                "the database file is damaged; restart to move it aside and start a new one"
                    .to_owned(),
            );
        }
        if self.failing {
            if let Some(error) = &self.last_write_error {
                parts.push(format!("writes are failing ({error})"));
            }
        } else if self.write_failures > 0 {
            parts.push(format!(
                "{} writes failed since start, the latest write succeeded",
                self.write_failures
            ));
        }
        if let Some(recovery) = &self.recovered {
            parts.push(format!(
                "a damaged database was moved aside to {} at start ({})",
                recovery.moved_to.display(),
                recovery.problem
            ));
        }
        (!parts.is_empty()).then(|| format!("history: {}", parts.join("; ")))
    }
}

/// The incident, change and detection-state history. `Send + Sync`: share it
/// in an `Arc`.
pub struct History {
    /// The one connection. SQLite serializes writers anyway; one connection
    /// behind a mutex keeps `seq` assignment and the live broadcast in one
    /// order, and every critical section is a single short transaction.
    connection: Mutex<Connection>,
    /// Every recorded event, sent while the connection lock is held so that
    /// receivers see them in `seq` order. Sending never blocks; slow
    /// receivers lag.
    live: broadcast::Sender<StoredEvent>,
    /// How long resolved incidents, changes and snapshots are kept.
    retention: Duration,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// Write failures and the recovery at start, for [`History::health`].
    /// Its own lock, taken after a write has released the connection, so
    /// asking for health never waits for the disk.
    health: Mutex<HistoryHealth>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish()
    }
}

// === impl History ===

impl History {
    /// Opens (creating if needed) `<data_dir>/triage.db`, in WAL mode with
    /// `synchronous=NORMAL`, after `PRAGMA quick_check`, and applies missing
    /// migrations. A database SQLite finds damaged is moved aside and
    /// replaced by an empty one (see [`History::health`]); a directory or
    /// file that cannot be created, opened or renamed is an error naming the
    /// path. With storage disabled, returns an in-memory history and touches
    /// nothing on disk.
    pub fn open(config: &StorageConfig) -> Result<History, HistoryError> {
        if !config.enabled {
            return Ok(History::in_memory_with(config.retention));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|error| HistoryError::CreateDir {
            path: config.data_dir.clone(),
            error,
        })?;
        let path = config.data_dir.join(DB_FILE);
        if is_empty_file(&path) && !is_nonempty_file(&sidecar(&path, "-wal")) {
            // SQLite treats a 0-byte file as a new database, which is right;
            // said here because a history that was there is now gone.
            tracing::info!(
                path = %path.display(),
                "the history database is an empty file (0 bytes); starting a new history in it"
            );
        }
        let (connection, recovered) = match connect(&path) {
            Ok(connection) => (connection, None),
            Err(error) => {
                let Some((reason, problem)) = damage(&error) else {
                    return Err(error);
                };
                let moved_to = move_aside(&path)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %moved_to.display(),
                    reason,
                    problem,
                    "the history database is damaged: moved it aside and started an empty \
                     history (incidents, changes and baselines of earlier runs are in the \
                     moved file)"
                );
                // The server installs the metrics recorder before it opens
                // the history, so this is not lost.
                metrics::counter!(RECOVERED_METRIC, "reason" => reason).increment(1);
                let connection = connect(&path)?;
                let recovery = Recovery {
                    moved_to,
                    problem,
                    reason,
                    at_unix_nanos: wall_clock_nanos(),
                };
                (connection, Some(recovery))
            }
        };
        let history = History::with_connection(connection, config.retention, Some(path));
        history.health.lock().recovered = recovered;
        Ok(history)
    }

    /// An in-memory history with the default retention (tests, storage
    /// disabled).
    pub fn in_memory() -> History {
        History::in_memory_with(StorageConfig::default().retention)
    }

    /// An in-memory history keeping things for `retention`.
    pub fn in_memory_with(retention: Duration) -> History {
        // An in-memory SQLite database needs no file and no permissions;
        // opening it fails only when memory is exhausted, where nothing
        // else would work either.
        let mut connection = Connection::open_in_memory()
            .and_then(|connection| {
                connection.execute_batch("PRAGMA foreign_keys = ON;")?;
                Ok(connection)
            })
            .expect("an in-memory SQLite database opens");
        migrate(&mut connection, Path::new(":memory:"))
            .expect("the built-in migrations apply to an empty database");
        History::with_connection(connection, retention, None)
    }

    fn with_connection(connection: Connection, retention: Duration, path: Option<PathBuf>) -> Self {
        History {
            connection: Mutex::new(connection),
            live: broadcast::channel(LIVE_BUFFER).0,
            retention,
            path,
            health: Mutex::new(HistoryHealth::default()),
        }
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// How long resolved incidents, changes and snapshots are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Write failures so far and the damaged database moved aside at start,
    /// if any. Cheap: it never touches the database.
    pub fn health(&self) -> HistoryHealth {
        self.health.lock().clone()
    }

    /// Counts `count` failed writes of `what` (`incident_event`, `change`,
    /// `snapshot`, `prune`) that happened outside this type's own methods
    /// (a write task that panicked, events dropped before they reached the
    /// history), and logs `error`. The methods here count their own
    /// failures.
    pub fn write_failed(&self, what: &'static str, count: u64, error: &dyn std::fmt::Display) {
        metrics::counter!(WRITE_ERRORS_METRIC, "what" => what).increment(count);
        let mut health = self.health.lock();
        health.write_failures += count;
        health.last_write_error = Some(format!("{what}: {error}"));
        health.last_write_error_unix_nanos = Some(wall_clock_nanos());
        health.failing = true;
        drop(health);
        tracing::error!(what, count, %error, "history write failed; carrying on");
    }

    /// Notes how a write of `what` went, and hands its result back.
    fn written<T>(
        &self,
        what: &'static str,
        result: Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        match &result {
            Ok(_) => self.health.lock().failing = false,
            Err(error) => {
                // Said once: the failures that follow are logged anyway.
                let newly_damaged = damage(error).is_some()
                    && !std::mem::replace(&mut self.health.lock().damaged, true);
                if newly_damaged {
                    tracing::error!(
                        path = ?self.path,
                        "the history database is damaged; restart triage to move it aside and \
                         start a new one"
                    );
                }
                self.write_failed(what, 1, error);
            }
        }
        result
    }

    /// Records `event` at wall-clock time `at_unix_nanos`: assigns its
    /// `seq`, stores it, updates the incident's row, and publishes it to
    /// subscribers. A failure is counted in [`History::health`].
    pub fn record_event(
        &self,
        event: &IncidentEvent,
        at_unix_nanos: u64,
    ) -> Result<StoredEvent, HistoryError> {
        self.written("incident_event", self.insert_event(event, at_unix_nanos))
    }

    fn insert_event(
        &self,
        event: &IncidentEvent,
        at_unix_nanos: u64,
    ) -> Result<StoredEvent, HistoryError> {
        let incident = event.incident();
        let kind = EventKind::of(event);
        let json = serde_json::to_string(incident)?;
        let kinds = serde_json::to_string(&incident.kinds)?;
        let severity = enum_name(&incident.severity)?;
        let state = enum_name(&incident.state)?;
        let mut connection = self.connection.lock();
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO incident_events (incident_id, kind, at_unix_nanos, incident)
             VALUES (?1, ?2, ?3, ?4)",
            params![incident.id, kind.as_str(), to_sql(at_unix_nanos), json],
        )?;
        let seq = transaction.last_insert_rowid();
        transaction.execute(
            "INSERT INTO incidents (id, service, state, severity, kinds, summary,
                 onset_unix_nanos, opened_unix_nanos, resolved_unix_nanos,
                 updated_unix_nanos, incident)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (id) DO UPDATE SET
                 service = excluded.service, state = excluded.state,
                 severity = excluded.severity, kinds = excluded.kinds,
                 summary = excluded.summary,
                 onset_unix_nanos = excluded.onset_unix_nanos,
                 opened_unix_nanos = excluded.opened_unix_nanos,
                 resolved_unix_nanos = excluded.resolved_unix_nanos,
                 updated_unix_nanos = excluded.updated_unix_nanos,
                 incident = excluded.incident",
            params![
                incident.id,
                incident.service,
                state,
                severity,
                kinds,
                incident.summary,
                to_sql(incident.onset_unix_nanos),
                to_sql(incident.opened_unix_nanos),
                incident.resolved_unix_nanos.map(to_sql),
                to_sql(at_unix_nanos),
                json,
            ],
        )?;
        transaction.commit()?;
        let stored = StoredEvent {
            seq: from_sql(seq),
            kind,
            at_unix_nanos,
            incident: incident.clone(),
        };
        // Still under the lock: see the module doc. No subscriber is fine.
        let _ = self.live.send(stored.clone());
        drop(connection);
        Ok(stored)
    }

    /// Events as they are recorded, each with its `seq`.
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }

    /// Events with a `seq` after `seq`, oldest first, at most `limit` (and
    /// at most [`MAX_EVENTS`]).
    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredEvent>, HistoryError> {
        self.read_events(
            "SELECT seq, kind, at_unix_nanos, incident FROM incident_events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            to_sql(seq),
            limit,
        )
    }

    /// Events recorded at or after `unix_nanos`, oldest first, at most
    /// `limit` (and at most [`MAX_EVENTS`]).
    pub fn events_since(
        &self,
        unix_nanos: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        self.read_events(
            "SELECT seq, kind, at_unix_nanos, incident FROM incident_events
             WHERE at_unix_nanos >= ?1 ORDER BY seq LIMIT ?2",
            to_sql(unix_nanos),
            limit,
        )
    }

    fn read_events(
        &self,
        sql: &str,
        bound: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        let limit = limit.min(MAX_EVENTS) as i64;
        let connection = self.connection.lock();
        let mut statement = connection.prepare_cached(sql)?;
        let rows = statement.query_map(params![bound, limit], event_row)?;
        collect_events(rows)
    }

    /// Incidents matching `filter`, newest onset first (ties by id), at most
    /// `page_size` (capped at [`MAX_PAGE_SIZE`]; 0 means the cap), and the
    /// token of the next page when there is one. Tokens are opaque.
    pub fn list_incidents(
        &self,
        filter: &IncidentFilter,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<(Vec<Incident>, Option<String>), HistoryError> {
        let page_size = match page_size {
            0 => MAX_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if let Some(state) = filter.state {
            conditions.push("state = ?");
            values.push(SqlValue::Text(enum_name(&state)?));
        }
        if let Some(service) = &filter.service {
            conditions.push("service = ?");
            values.push(SqlValue::Text(service.clone()));
        }
        if let Some(since) = filter.since_unix_nanos {
            conditions.push("onset_unix_nanos >= ?");
            values.push(SqlValue::Integer(to_sql(since)));
        }
        if let Some(until) = filter.until_unix_nanos {
            conditions.push("onset_unix_nanos < ?");
            values.push(SqlValue::Integer(to_sql(until)));
        }
        if let Some(token) = page_token.filter(|token| !token.is_empty()) {
            let (onset, id) = decode_token(token)?;
            conditions.push("(onset_unix_nanos < ? OR (onset_unix_nanos = ? AND id < ?))");
            values.push(SqlValue::Integer(to_sql(onset)));
            values.push(SqlValue::Integer(to_sql(onset)));
            values.push(SqlValue::Text(id));
        }
        let mut sql = String::from("SELECT incident FROM incidents");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        // One more than a page tells whether another page follows.
        sql.push_str(" ORDER BY onset_unix_nanos DESC, id DESC LIMIT ?");
        values.push(SqlValue::Integer(page_size as i64 + 1));

        let connection = self.connection.lock();
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            row.get::<_, String>(0)
        })?;
        let mut incidents = Vec::new();
        for row in rows {
            incidents.push(serde_json::from_str::<Incident>(&row?)?);
        }
        drop(statement);
        drop(connection);
        let next = if incidents.len() > page_size {
            incidents.truncate(page_size);
            incidents
                .last()
                .map(|last| encode_token(last.onset_unix_nanos, &last.id))
        } else {
            None
        };
        Ok((incidents, next))
    }

    /// The incident `id` as last recorded, with its events oldest first (at
    /// most [`MAX_EVENTS`]); `None` when unknown.
    pub fn get_incident(
        &self,
        id: &str,
    ) -> Result<Option<(Incident, Vec<StoredEvent>)>, HistoryError> {
        let connection = self.connection.lock();
        let json: Option<String> = connection
            .prepare_cached("SELECT incident FROM incidents WHERE id = ?1")?
            .query_row(params![id], |row| row.get(0))
            .optional()?;
        let Some(json) = json else {
            return Ok(None);
        };
        let incident: Incident = serde_json::from_str(&json)?;
        let mut statement = connection.prepare_cached(
            "SELECT seq, kind, at_unix_nanos, incident FROM incident_events
             WHERE incident_id = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![id, MAX_EVENTS as i64], event_row)?;
        let events = collect_events(rows)?;
        Ok(Some((incident, events)))
    }

    /// Incidents recorded as open, oldest onset first. A row that cannot be
    /// read is skipped and logged (see [`decode_rows`]).
    pub fn open_incidents(&self) -> Result<Vec<Incident>, HistoryError> {
        let connection = self.connection.lock();
        let mut statement = connection.prepare_cached(
            "SELECT incident FROM incidents WHERE state = 'open'
             ORDER BY onset_unix_nanos, id",
        )?;
        let rows = statement.query_map([], decode_json)?;
        decode_rows(rows, "open incidents")
    }

    /// Stores a change (with the id the change log gave it; a change with
    /// the same id replaces it). A failure is counted in [`History::health`].
    pub fn record_change(&self, change: &Change) -> Result<(), HistoryError> {
        self.written("change", self.insert_change(change))
    }

    fn insert_change(&self, change: &Change) -> Result<(), HistoryError> {
        let json = serde_json::to_string(change)?;
        let kind = enum_name(&change.kind)?;
        let source = enum_name(&change.source)?;
        let connection = self.connection.lock();
        connection
            .prepare_cached(
                "INSERT OR REPLACE INTO changes (id, service, kind, version, key, value,
                     description, time_unix_nanos, link, source, change)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                to_sql(change.id),
                change.service,
                kind,
                change.version,
                change.key,
                change.value,
                change.description,
                to_sql(change.time_unix_nanos),
                change.link,
                source,
                json,
            ])?;
        Ok(())
    }

    /// Changes that happened at or after `since_unix_nanos`, oldest first
    /// (ties by id); the newest [`MAX_CHANGES`] at most. A row that cannot
    /// be read is skipped and logged (see [`decode_rows`]).
    pub fn changes(&self, since_unix_nanos: u64) -> Result<Vec<Change>, HistoryError> {
        let connection = self.connection.lock();
        let mut statement = connection.prepare_cached(
            "SELECT change FROM changes WHERE time_unix_nanos >= ?1
             ORDER BY time_unix_nanos DESC, id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(
            params![to_sql(since_unix_nanos), MAX_CHANGES as i64],
            decode_json,
        )?;
        let mut changes: Vec<Change> = decode_rows(rows, "changes")?;
        changes.reverse();
        Ok(changes)
    }

    /// Saves a snapshot of the detection state taken at `at_unix_nanos`, in
    /// one transaction, and drops all but the newest few. Encoding happens
    /// before the lock is taken, so readers wait only for the insert. A
    /// failure is counted in [`History::health`].
    pub fn save_snapshot(
        &self,
        at_unix_nanos: u64,
        snapshot: &EngineSnapshot,
    ) -> Result<(), HistoryError> {
        let packed = PackedSnapshot::of(snapshot);
        let result = packed.and_then(|packed| self.insert_snapshot(at_unix_nanos, &packed));
        self.written("snapshot", result)
    }

    /// Saves a snapshot encoded already ([`PackedSnapshot::of_engine`]);
    /// otherwise as [`History::save_snapshot`].
    pub fn save_packed(
        &self,
        at_unix_nanos: u64,
        snapshot: &PackedSnapshot,
    ) -> Result<(), HistoryError> {
        self.written("snapshot", self.insert_snapshot(at_unix_nanos, snapshot))
    }

    fn insert_snapshot(
        &self,
        at_unix_nanos: u64,
        snapshot: &PackedSnapshot,
    ) -> Result<(), HistoryError> {
        let mut connection = self.connection.lock();
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO snapshots (taken_unix_nanos, window_nanos, next_window_unix_nanos,
                 n_series, incidents)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                to_sql(at_unix_nanos),
                to_sql(snapshot.window_nanos),
                snapshot.next_window_unix_nanos.map(to_sql),
                snapshot.series.len() as i64,
                snapshot.incidents,
            ],
        )?;
        let id = transaction.last_insert_rowid();
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO snapshot_series (snapshot_id, kind, service, name,
                     last_data_unix_nanos, detector, detector_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for series in &snapshot.series {
                insert.execute(params![
                    id,
                    series.key.kind,
                    series.key.service,
                    series.key.name,
                    to_sql(series.last_data_unix_nanos),
                    &series.detector[..],
                    series.json_bytes as i64
                ])?;
            }
        }
        delete_snapshots(
            &transaction,
            "id NOT IN (SELECT id FROM snapshots ORDER BY id DESC LIMIT ?1)",
            SNAPSHOTS_KEPT,
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// The newest snapshot, if any. A series whose stored state cannot be
    /// read (written by an incompatible build) is skipped and logged; the
    /// rest is restored.
    pub fn latest_snapshot(&self) -> Result<Option<EngineSnapshot>, HistoryError> {
        let connection = self.connection.lock();
        let head = connection
            .prepare_cached(
                "SELECT id, window_nanos, next_window_unix_nanos, incidents
                 FROM snapshots ORDER BY id DESC LIMIT 1",
            )?
            .query_row([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .optional()?;
        let Some((id, window_nanos, next_window, incidents)) = head else {
            return Ok(None);
        };
        let mut statement = connection.prepare_cached(
            "SELECT kind, service, name, last_data_unix_nanos, detector
             FROM snapshot_series WHERE snapshot_id = ?1",
        )?;
        let rows = statement.query_map(params![id], |row| {
            Ok((
                KeyRecord {
                    kind: row.get(0)?,
                    service: row.get(1)?,
                    name: row.get(2)?,
                },
                row.get::<_, i64>(3)?,
                row.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        let mut series = Vec::new();
        let mut unreadable = 0usize;
        for row in rows {
            let (key, last_data, detector) = row?;
            let decoded = decompress(&detector)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok());
            match decoded {
                Some(detector) => series.push(SeriesSnapshot {
                    series: key,
                    last_data_unix_nanos: from_sql(last_data),
                    detector,
                }),
                None => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "some saved baselines could not be read; those series warm up again"
            );
        }
        Ok(Some(EngineSnapshot {
            window_nanos: from_sql(window_nanos),
            next_window_unix_nanos: next_window.map(from_sql),
            series,
            incidents: serde_json::from_str(&incidents)?,
        }))
    }

    /// Removes what is older than the retention at `now_unix_nanos`:
    /// incidents resolved before the cutoff and their events, changes before
    /// it, and snapshots taken before it. Open incidents are never pruned.
    /// A failure is counted in [`History::health`].
    pub fn prune(&self, now_unix_nanos: u64) -> Result<PruneCounts, HistoryError> {
        self.written("prune", self.delete_old(now_unix_nanos))
    }

    fn delete_old(&self, now_unix_nanos: u64) -> Result<PruneCounts, HistoryError> {
        let cutoff = to_sql(now_unix_nanos.saturating_sub(self.retention.as_nanos() as u64));
        let mut connection = self.connection.lock();
        let transaction = connection.transaction()?;
        let incidents = transaction.execute(
            "DELETE FROM incidents WHERE state = 'resolved' AND resolved_unix_nanos < ?1",
            params![cutoff],
        )?;
        let events = transaction.execute(
            "DELETE FROM incident_events
             WHERE incident_id NOT IN (SELECT id FROM incidents)",
            [],
        )?;
        let changes = transaction.execute(
            "DELETE FROM changes WHERE time_unix_nanos < ?1",
            params![cutoff],
        )?;
        let snapshots = delete_snapshots(&transaction, "taken_unix_nanos < ?1", cutoff)?;
        transaction.commit()?;
        Ok(PruneCounts {
            incidents,
            events,
            changes,
            snapshots,
        })
    }
}

// === opening and recovery ===

/// Opens `path`, checks it, switches it to WAL and migrates it. Errors that
/// mean the file is damaged are told apart by [`damage`].
fn connect(path: &Path) -> Result<Connection, HistoryError> {
    let fail = |error| HistoryError::Open {
        path: path.to_owned(),
        error,
    };
    let mut connection = Connection::open(path).map_err(fail)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    // Closing the last connection checkpoints the WAL into the file. Until
    // the file is known to be sound it must not: a damaged file is moved
    // aside as it was found, with its WAL, for whoever looks into it.
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(fail)?;
    for suffix in ["", "-wal"] {
        read_ahead(&sidecar(path, suffix));
    }
    quick_check(&connection, path)?;
    // WAL lets an operator's `sqlite3` read while the collector writes;
    // NORMAL syncs at checkpoints only: a power cut may lose the last
    // moments, never corrupt the file. Setting WAL writes to the file, so
    // an unwritable directory fails here, naming the path.
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "SQLite did not switch to WAL mode");
    }
    connection
        .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .map_err(fail)?;
    migrate(&mut connection, path)?;
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
        .map_err(fail)?;
    Ok(connection)
}

/// Reads `path` once, front to back, in large blocks, so that the check
/// that follows (which visits pages in b-tree order, one page at a time)
/// finds them in the operating system's cache. On a cold 537 MB database
/// the check alone took 12 s, the read and then the check 2.2 s
/// (docs/RELIABILITY.md); on a warm or small one the read costs
/// milliseconds. Errors are left to SQLite to report.
fn read_ahead(path: &Path) {
    use std::io::Read as _;
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    let mut block = vec![0u8; 1 << 20];
    while matches!(file.read(&mut block), Ok(n) if n > 0) {}
}

/// Runs `PRAGMA quick_check`: every page of every table and index is read
/// and its structure checked (page types, cell pointers, overflow chains,
/// the free list, which page belongs to which tree, key order), which finds
/// truncation and overwritten pages. It costs one read of the whole file
/// plus little CPU: 5 ms for a warm 35 MB database of 2,000 series' baselines
/// (see docs/RELIABILITY.md). The full `integrity_check` also matches every
/// index entry with its row, O(N log N); this schema's indexes are small,
/// so it finds little more, and the quick check is the one worth running at
/// every start.
fn quick_check(connection: &Connection, path: &Path) -> Result<(), HistoryError> {
    let fail = |error| HistoryError::Open {
        path: path.to_owned(),
        error,
    };
    let mut statement = connection
        .prepare(&format!("PRAGMA quick_check({QUICK_CHECK_PROBLEMS})"))
        .map_err(fail)?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(fail)?;
    let mut problems = Vec::new();
    for row in rows {
        // A row may hold several lines, under a heading naming the schema.
        let text = row.map_err(fail)?;
        problems.extend(
            text.lines()
                .filter(|line| *line != "ok" && !line.starts_with("*** in database"))
                .map(str::to_owned),
        );
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(HistoryError::Damaged {
        path: path.to_owned(),
        problems: problems.join("; "),
    })
}

/// Whether `error` says the database file is damaged, and if so the
/// reason counted in [`RECOVERED_METRIC`] and what SQLite said. Everything
/// else (permissions, a full disk, a lock held too long, a newer schema) is
/// not: moving the file aside would lose a good history.
fn damage(error: &HistoryError) -> Option<(&'static str, String)> {
    let source = match error {
        HistoryError::Damaged { problems, .. } => return Some(("corrupt", problems.clone())),
        HistoryError::Open { error: sqlite, .. } | HistoryError::Sqlite(sqlite) => sqlite,
        _ => return None,
    };
    match source.sqlite_error_code()? {
        ErrorCode::DatabaseCorrupt => Some(("corrupt", source.to_string())),
        ErrorCode::NotADatabase => Some(("not_a_database", source.to_string())),
        _ => None,
    }
}

/// Renames the damaged `path` to `<path>.corrupt-<UTC time>`, its `-wal`
/// and `-shm` along with it; returns the new name of the main file.
fn move_aside(path: &Path) -> Result<PathBuf, HistoryError> {
    let stamp = rfc3339(wall_clock_nanos()).replace(['-', ':'], "");
    let base = format!("{}.corrupt-{stamp}", path.display());
    // Never over an earlier one (two recoveries within a second).
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() || sidecar(&aside, "-wal").exists() {
        aside = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    // The WAL goes first: a WAL left beside a new, empty file could be
    // replayed into it.
    for suffix in ["-wal", "-shm", ""] {
        let from = sidecar(path, suffix);
        if suffix.is_empty() || from.exists() {
            let to = sidecar(&aside, suffix);
            std::fs::rename(&from, &to).map_err(|error| HistoryError::MoveAside {
                path: from,
                to,
                error,
            })?;
        }
    }
    Ok(aside)
}

/// `path` with `suffix` appended to its file name (`-wal`, `-shm`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn is_empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == 0)
}

fn is_nonempty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() > 0)
}

// === helpers ===

/// Applies the migrations the database lacks, in order, each with its
/// version row in one transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    migrate_to(connection, path, i64::MAX)
}

/// [`migrate`], stopping after version `target` (tests build old schemas).
fn migrate_to(connection: &mut Connection, path: &Path, target: i64) -> Result<(), HistoryError> {
    let fail = |error| HistoryError::Open {
        path: path.to_owned(),
        error,
    };
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version            INTEGER PRIMARY KEY,
                 applied_unix_nanos INTEGER NOT NULL
             )",
        )
        .map_err(fail)?;
    let current = schema_version(connection).map_err(fail)?;
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if current > known {
        return Err(HistoryError::NewerSchema {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS {
        if *version <= current || *version > target {
            continue;
        }
        // Another process may be opening the same file (two collectors
        // started on one directory): the write lock is taken first and the
        // version read again under it, so each migration runs exactly once.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        if schema_version(&transaction).map_err(fail)? >= *version {
            continue;
        }
        transaction.execute_batch(sql).map_err(fail)?;
        transaction
            .execute(
                "INSERT INTO schema_version (version, applied_unix_nanos) VALUES (?1, ?2)",
                params![version, to_sql(wall_clock_nanos())],
            )
            .map_err(fail)?;
        transaction.commit().map_err(fail)?;
        tracing::debug!(version, path = %path.display(), "applied history migration");
    }
    Ok(())
}

/// The newest migration applied (0 for a new database).
fn schema_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
}

/// Deletes the snapshots matching `condition` (with one parameter) and
/// their series; returns how many snapshots went.
fn delete_snapshots(
    transaction: &Transaction<'_>,
    condition: &str,
    parameter: i64,
) -> rusqlite::Result<usize> {
    // Explicit rather than relying on ON DELETE CASCADE, which a connection
    // without `foreign_keys = ON` (an operator's sqlite3) would not apply.
    transaction.execute(
        &format!(
            "DELETE FROM snapshot_series WHERE snapshot_id IN
                 (SELECT id FROM snapshots WHERE {condition})"
        ),
        params![parameter],
    )?;
    transaction.execute(
        &format!("DELETE FROM snapshots WHERE {condition}"),
        params![parameter],
    )
}

/// Compresses a baseline's JSON (zlib, the format of SQLite's
/// `sqlar_compress`, so `sqlar_uncompress(detector, detector_bytes)` reads it
/// in the `sqlite3` shell). Baselines are long runs of similar numbers under
/// repeated keys: about a tenth of the size, at the fastest level.
/// A snapshot of the detection state encoded for the database: every
/// series' detector as compressed JSON, the incident tracker as JSON.
///
/// [`PackedSnapshot::of_engine`] encodes the series one at a time straight
/// from the engine, through one reused JSON buffer, so taking a snapshot
/// holds the compressed state (a few KB per series) rather than a second
/// copy of every detector and its JSON: copying first made each minute's
/// snapshot a transient of about twice the detection state, which the
/// allocator kept as resident memory.
#[derive(Debug)]
pub struct PackedSnapshot {
    window_nanos: u64,
    next_window_unix_nanos: Option<u64>,
    incidents: String,
    series: Vec<PackedSeries>,
}

/// One series of a [`PackedSnapshot`].
#[derive(Debug)]
struct PackedSeries {
    key: KeyRecord,
    last_data_unix_nanos: u64,
    /// zlib of the detector's JSON.
    detector: Box<[u8]>,
    /// Length of that JSON.
    json_bytes: usize,
}

impl PackedSnapshot {
    /// Encodes the engine's state, series by series. `window` is the
    /// store's window length.
    pub fn of_engine(engine: &Engine, window: Duration) -> Result<Self, HistoryError> {
        let head = engine.snapshot_head(window);
        let mut packed = PackedSnapshot::head(&head)?;
        let mut json = Vec::new();
        for saved in engine.snapshot_series(window) {
            packed.push(
                saved.series,
                saved.last_data_unix_nanos,
                saved.detector,
                &mut json,
            )?;
        }
        Ok(packed)
    }

    /// Encodes a snapshot copied already.
    pub fn of(snapshot: &EngineSnapshot) -> Result<Self, HistoryError> {
        let mut packed = PackedSnapshot::head(snapshot)?;
        let mut json = Vec::new();
        for saved in &snapshot.series {
            packed.push(
                saved.series.clone(),
                saved.last_data_unix_nanos,
                &saved.detector,
                &mut json,
            )?;
        }
        Ok(packed)
    }

    /// Series in the snapshot.
    pub fn n_series(&self) -> usize {
        self.series.len()
    }

    /// Bytes of encoded state it holds.
    pub fn bytes(&self) -> usize {
        self.incidents.len()
            + self
                .series
                .iter()
                .map(|series| series.detector.len())
                .sum::<usize>()
    }

    fn head(snapshot: &EngineSnapshot) -> Result<Self, HistoryError> {
        Ok(PackedSnapshot {
            window_nanos: snapshot.window_nanos,
            next_window_unix_nanos: snapshot.next_window_unix_nanos,
            incidents: serde_json::to_string(&snapshot.incidents)?,
            series: Vec::new(),
        })
    }

    fn push(
        &mut self,
        key: KeyRecord,
        last_data_unix_nanos: u64,
        detector: &SeriesDetector,
        json: &mut Vec<u8>,
    ) -> Result<(), HistoryError> {
        json.clear();
        serde_json::to_writer(&mut *json, detector)?;
        self.series.push(PackedSeries {
            key,
            last_data_unix_nanos,
            detector: compress(json)?.into_boxed_slice(),
            json_bytes: json.len(),
        });
        Ok(())
    }
}

fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(json)?;
    encoder.finish()
}

/// The inverse of [`compress`].
fn decompress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut json = Vec::with_capacity(data.len() * 8);
    // Bounded, so a hand-edited row cannot make the reader allocate without
    // limit.
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_DETECTOR_JSON)
        .read_to_end(&mut json)?;
    Ok(json)
}

/// Decodes the JSON in a row's first column; `None` when it is not text or
/// not the JSON of a `T`.
fn decode_json<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Option<T>> {
    Ok(row
        .get_ref(0)?
        .as_str()
        .ok()
        .and_then(|text| serde_json::from_str(text).ok()))
}

/// Collects decoded rows, skipping those that could not be decoded. The
/// whole-row reads at start (changes, open incidents) use it: bytes changed
/// inside a value pass `PRAGMA quick_check`, and one unreadable row must
/// not cost the rest, nor stop start-up. An error reading the table itself
/// is still an error.
fn decode_rows<T>(
    rows: impl Iterator<Item = rusqlite::Result<Option<T>>>,
    what: &'static str,
) -> Result<Vec<T>, HistoryError> {
    let mut decoded = Vec::new();
    let mut unreadable = 0usize;
    for row in rows {
        match row? {
            Some(value) => decoded.push(value),
            None => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            what,
            unreadable,
            "skipped history rows that could not be read (damaged or hand-edited)"
        );
    }
    Ok(decoded)
}

/// Reads one `incident_events` row.
fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, i64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

/// Decodes event rows.
fn collect_events(
    rows: impl Iterator<Item = rusqlite::Result<(i64, String, i64, String)>>,
) -> Result<Vec<StoredEvent>, HistoryError> {
    let mut events = Vec::new();
    for row in rows {
        let (seq, kind, at, json) = row?;
        // Only this module writes the column, so an unknown kind means a
        // hand-edited database; such a row is skipped, not fatal.
        let Some(kind) = EventKind::parse(&kind) else {
            tracing::warn!(seq, kind, "skipping an incident event of unknown kind");
            continue;
        };
        events.push(StoredEvent {
            seq: from_sql(seq),
            kind,
            at_unix_nanos: from_sql(at),
            incident: serde_json::from_str(&json)?,
        });
    }
    Ok(events)
}

/// The serde name of a unit enum variant (`open`, `critical`, `deploy`).
fn enum_name<T: Serialize>(value: &T) -> Result<String, HistoryError> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(name) => Ok(name),
        other => Ok(other.to_string()),
    }
}

/// A page token: the last incident's onset and id, hex-encoded so that it
/// reads as opaque and survives any transport.
fn encode_token(onset_unix_nanos: u64, id: &str) -> String {
    hex::encode(format!("{onset_unix_nanos}:{id}"))
}

fn decode_token(token: &str) -> Result<(u64, String), HistoryError> {
    let bytes = hex::decode(token).map_err(|_| HistoryError::BadPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| HistoryError::BadPageToken)?;
    let (onset, id) = text.split_once(':').ok_or(HistoryError::BadPageToken)?;
    let onset = onset.parse().map_err(|_| HistoryError::BadPageToken)?;
    Ok((onset, id.to_string()))
}

/// SQLite integers are signed 64-bit; Unix nanoseconds fit until 2262.
fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The wall clock, Unix nanoseconds.
pub fn wall_clock_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

#[cfg(test)]
mod tests;
