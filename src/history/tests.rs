use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::detect::engine::Engine;
use crate::detect::DetectConfig;
use crate::model::SeriesAnomaly;
use crate::model::{Anomaly, AnomalyKind, Severity};
use crate::model::{ChangeKind, ChangeSource};
use crate::store::{ManualClock, Sample, Store, StoreConfig};

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SECOND;
const DAY: u64 = 86_400 * SECOND;

/// Runs `check` against an in-memory history and one in a file.
fn both(check: impl Fn(&History)) {
    check(&History::in_memory());
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open(&file_config(dir.path())).expect("open");
    check(&history);
}

fn file_config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.join("data"),
        ..StorageConfig::default()
    }
}

fn incident(service: &str, onset_secs: u64, state: IncidentState) -> Incident {
    let onset = START + onset_secs * SECOND;
    let resolved = (state == IncidentState::Resolved).then_some(onset + 60 * SECOND);
    let id = format!("{service}@{}", onset / SECOND);
    Incident {
        state,
        operations: vec!["POST /pay".to_string()],
        kinds: vec![AnomalyKind::Latency],
        resolved_unix_nanos: resolved,
        resolved: resolved.map(crate::model::rfc3339),
        anomalies: vec![SeriesAnomaly {
            series_kind: "operation".to_string(),
            series: "POST /pay".to_string(),
            anomaly: Anomaly {
                kind: AnomalyKind::Latency,
                severity: Severity::Warning,
                severe: false,
                measure: "p95".to_string(),
                current: 320.0,
                baseline: 40.0,
                unit: "ms".to_string(),
                summary: "p95 320 ms vs 40 ms baseline".to_string(),
                time_to_limit_secs: None,
            },
        }],
        exemplar_trace_ids: vec![format!("{:032x}", 7u128)],
        summary: format!("{service}: slow"),
        ..Incident::open(id, service, onset, onset + 20 * SECOND)
    }
}

fn change(id: u64, service: &str, at_secs: u64) -> Change {
    Change {
        id,
        service: service.to_string(),
        kind: ChangeKind::Deploy,
        version: Some("v2".to_string()),
        key: None,
        value: None,
        description: format!("{service}: new version v2"),
        time_unix_nanos: START + at_secs * SECOND,
        link: Some("https://ci.example/run/1".to_string()),
        external_id: None,
        source: ChangeSource::Api,
    }
}

/// Opens then resolves an incident of `service` (onset at `onset_secs`).
fn open_and_resolve(history: &History, service: &str, onset_secs: u64) {
    let open = incident(service, onset_secs, IncidentState::Open);
    let resolved = incident(service, onset_secs, IncidentState::Resolved);
    let at = START + onset_secs * SECOND;
    history
        .record_event(&IncidentEvent::Opened(open), at + 20 * SECOND)
        .expect("record opened");
    history
        .record_event(&IncidentEvent::Resolved(resolved), at + 60 * SECOND)
        .expect("record resolved");
}

#[test]
fn events_get_increasing_seqs_and_update_the_incident() {
    both(|history| {
        let mut live = history.subscribe();
        let opened = IncidentEvent::Opened(incident("payment", 100, IncidentState::Open));
        let mut updated = incident("payment", 100, IncidentState::Open);
        updated.severity = Severity::Critical;
        let updated = IncidentEvent::Updated(updated);
        let first = history.record_event(&opened, START + 120 * SECOND).unwrap();
        let second = history
            .record_event(&updated, START + 130 * SECOND)
            .unwrap();
        assert!(second.seq > first.seq);
        assert_eq!(
            (first.kind, second.kind),
            (EventKind::Opened, EventKind::Updated)
        );
        // Subscribers see the same stored events, in order.
        assert_eq!(live.try_recv().unwrap(), first);
        assert_eq!(live.try_recv().unwrap(), second);

        let (stored, events) = history.get_incident("payment@1700000100").unwrap().unwrap();
        assert_eq!(
            stored.severity,
            Severity::Critical,
            "the row holds the latest"
        );
        assert_eq!(events, vec![first.clone(), second.clone()]);
        assert!(history.get_incident("nobody@1").unwrap().is_none());
        assert_eq!(history.open_incidents().unwrap(), vec![stored]);

        let resolved = IncidentEvent::Resolved(incident("payment", 100, IncidentState::Resolved));
        history
            .record_event(&resolved, START + 200 * SECOND)
            .unwrap();
        assert!(history.open_incidents().unwrap().is_empty());
    });
}

#[test]
fn events_resume_after_a_seq_or_from_a_time() {
    both(|history| {
        let mut recorded = Vec::new();
        for (i, service) in ["a", "b", "c", "d"].iter().enumerate() {
            let event =
                IncidentEvent::Opened(incident(service, 10 * i as u64, IncidentState::Open));
            recorded.push(
                history
                    .record_event(&event, START + i as u64 * SECOND)
                    .unwrap(),
            );
        }
        let after = history.events_after(recorded[1].seq, 100).unwrap();
        assert_eq!(after, recorded[2..].to_vec());
        assert_eq!(history.events_after(0, 2).unwrap(), recorded[..2].to_vec());
        assert!(history
            .events_after(recorded[3].seq, 10)
            .unwrap()
            .is_empty());
        let since = history.events_since(START + 2 * SECOND, 100).unwrap();
        assert_eq!(since, recorded[2..].to_vec());
        assert_eq!(history.events_since(0, 1).unwrap(), recorded[..1].to_vec());
    });
}

#[test]
fn listing_pages_newest_onset_first_with_filters() {
    both(|history| {
        for i in 0..7u64 {
            let service = if i % 2 == 0 { "payment" } else { "cart" };
            let event = IncidentEvent::Opened(incident(service, i * 100, IncidentState::Open));
            history
                .record_event(&event, START + i * 100 * SECOND)
                .unwrap();
        }
        open_and_resolve(history, "payment", 5_000);

        // Pages of 3 walk through all 8, newest onset first, no repeats.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = history
                .list_incidents(&IncidentFilter::default(), 3, token.as_deref())
                .unwrap();
            assert!(page.len() <= 3);
            seen.extend(page.into_iter().map(|incident| incident.onset_unix_nanos));
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut expected = seen.clone();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 8);

        let filter = |filter: IncidentFilter| {
            let (page, next) = history.list_incidents(&filter, 100, None).unwrap();
            assert!(next.is_none());
            page.into_iter()
                .map(|incident| incident.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            filter(IncidentFilter {
                state: Some(IncidentState::Resolved),
                ..IncidentFilter::default()
            }),
            vec!["payment@1700005000"]
        );
        assert_eq!(
            filter(IncidentFilter {
                service: Some("cart".to_string()),
                ..IncidentFilter::default()
            }),
            vec!["cart@1700000500", "cart@1700000300", "cart@1700000100"]
        );
        assert_eq!(
            filter(IncidentFilter {
                state: Some(IncidentState::Open),
                since_unix_nanos: Some(START + 200 * SECOND),
                until_unix_nanos: Some(START + 400 * SECOND),
                ..IncidentFilter::default()
            }),
            vec!["cart@1700000300", "payment@1700000200"]
        );
        let bad = history.list_incidents(&IncidentFilter::default(), 3, Some("not hex"));
        assert!(matches!(bad, Err(HistoryError::BadPageToken)), "{bad:?}");
        // A page size of 0 means the cap, not nothing.
        let (all, _) = history
            .list_incidents(&IncidentFilter::default(), 0, None)
            .unwrap();
        assert_eq!(all.len(), 8);
    });
}

#[test]
fn changes_round_trip_and_replace_by_id() {
    both(|history| {
        history.record_change(&change(1, "payment", 100)).unwrap();
        history.record_change(&change(2, "cart", 50)).unwrap();
        let mut flag = change(3, "cart", 300);
        flag.kind = ChangeKind::FeatureFlag;
        flag.key = Some("new-checkout".to_string());
        flag.value = Some("on".to_string());
        flag.source = ChangeSource::Telemetry;
        history.record_change(&flag).unwrap();
        let all = history.changes(0).unwrap();
        assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2, 1, 3]);
        assert_eq!(all[2], flag);
        let recent = history.changes(START + 100 * SECOND).unwrap();
        assert_eq!(recent.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 3]);
        // The same id again replaces the row (the change log owns ids).
        let mut again = change(1, "payment", 100);
        again.description = "edited".to_string();
        history.record_change(&again).unwrap();
        assert_eq!(history.changes(0).unwrap().len(), 3);
        assert_eq!(history.changes(0).unwrap()[1].description, "edited");
    });
}

#[test]
fn prune_drops_old_resolved_incidents_their_events_and_old_changes() {
    both(|history| {
        open_and_resolve(history, "old", 0);
        open_and_resolve(history, "recent", 20 * 86_400);
        // Open incidents stay however old they are.
        let stuck = IncidentEvent::Opened(incident("stuck", 10, IncidentState::Open));
        history.record_event(&stuck, START + 30 * SECOND).unwrap();
        history.record_change(&change(1, "old", 0)).unwrap();
        history
            .record_change(&change(2, "recent", 20 * 86_400))
            .unwrap();
        let snapshot = trained_engine().1.snapshot(StoreConfig::default().window);
        history.save_snapshot(START, &snapshot).unwrap();

        let now = START + 30 * DAY;
        let counts = history.prune(now).unwrap();
        assert_eq!(
            counts,
            PruneCounts {
                incidents: 1,
                events: 2,
                changes: 1,
                snapshots: 1,
            }
        );
        assert!(history.get_incident("old@1700000000").unwrap().is_none());
        let recent_id = format!("recent@{}", 1_700_000_000 + 20 * 86_400);
        assert_eq!(
            history.get_incident(&recent_id).unwrap().unwrap().1.len(),
            2
        );
        assert_eq!(history.open_incidents().unwrap().len(), 1);
        assert_eq!(history.changes(0).unwrap().len(), 1);
        assert!(history.latest_snapshot().unwrap().is_none());
        // Nothing more to do the second time.
        assert_eq!(history.prune(now).unwrap(), PruneCounts::default());
        // Sequence numbers are not reused after pruning.
        let next = history
            .record_event(
                &IncidentEvent::Opened(incident("new", 40, IncidentState::Open)),
                now,
            )
            .unwrap();
        assert!(next.seq > 5, "{next:?}");
    });
}

#[test]
fn opening_creates_the_directory_and_reopens_with_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        data_dir: dir.path().join("nested").join("data"),
        ..StorageConfig::default()
    };
    {
        let history = History::open(&config).expect("open");
        assert_eq!(
            history.path(),
            Some(config.data_dir.join(DB_FILE).as_path())
        );
        open_and_resolve(&history, "payment", 100);
        history.record_change(&change(4, "payment", 90)).unwrap();
    }
    let history = History::open(&config).expect("reopen");
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    assert_eq!(history.changes(0).unwrap()[0].id, 4);
    let connection = history.connection.lock();
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = connection
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
    assert_eq!(schema_version(&connection).unwrap(), 2);
}

#[test]
fn storage_disabled_touches_nothing_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        enabled: false,
        ..file_config(dir.path())
    };
    let history = History::open(&config).expect("open");
    assert!(history.path().is_none());
    open_and_resolve(&history, "payment", 100);
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    assert!(!config.data_dir.exists());
}

#[test]
fn an_unusable_data_dir_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the directory should be: it cannot be created.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let config = StorageConfig {
        data_dir: blocker.join("data"),
        ..StorageConfig::default()
    };
    let error = History::open(&config).expect_err("cannot create");
    assert!(matches!(error, HistoryError::CreateDir { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*blocker.to_string_lossy()),
        "{error}"
    );

    // A directory where the file should be: SQLite cannot open it.
    let config = file_config(dir.path());
    std::fs::create_dir_all(config.data_dir.join(DB_FILE)).unwrap();
    let error = History::open(&config).expect_err("cannot open");
    assert!(matches!(error, HistoryError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains(DB_FILE), "{error}");
}

#[test]
fn an_older_schema_is_migrated_keeping_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let path = config.data_dir.join(DB_FILE);
    {
        // A database as the first release left it: migration 1 only.
        let mut connection = Connection::open(&path).unwrap();
        migrate_to(&mut connection, &path, 1).unwrap();
        assert_eq!(schema_version(&connection).unwrap(), 1);
        let has_snapshots: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'snapshots'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(has_snapshots, 0);
        let history = History::with_connection(connection, config.retention, None);
        open_and_resolve(&history, "payment", 100);
    }
    let history = History::open(&config).expect("open migrates");
    assert_eq!(schema_version(&history.connection.lock()).unwrap(), 2);
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    let snapshot = trained_engine().1.snapshot(StoreConfig::default().window);
    history.save_snapshot(START, &snapshot).unwrap();
    assert!(history.latest_snapshot().unwrap().is_some());
}

#[test]
fn processes_opening_one_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    let opened: Vec<Result<History, HistoryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| History::open(&config)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("no panic"))
            .collect()
    });
    for history in &opened {
        let history = history.as_ref().expect("every opener succeeds");
        assert_eq!(schema_version(&history.connection.lock()).unwrap(), 2);
    }
    let rows: i64 = opened[0]
        .as_ref()
        .unwrap()
        .connection
        .lock()
        .query_row("SELECT COUNT(*) FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    drop(History::open(&config).unwrap());
    let path = config.data_dir.join(DB_FILE);
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_unix_nanos) VALUES (99, 0)",
            [],
        )
        .unwrap();
    let error = History::open(&config).expect_err("newer schema");
    assert!(
        matches!(
            error,
            HistoryError::NewerSchema {
                found: 99,
                known: 2,
                ..
            }
        ),
        "{error:?}"
    );
}

// === snapshots of a real engine ===

/// Records one second of checkout -> payment traffic ending in `second`.
fn second_of_traffic(store: &Store, second: u64, rate: u64, millis: u64) {
    let payment = store.service("payment");
    for i in 0..rate {
        let jitter = (i * 7 + second * 13) % 5;
        let sample = Sample {
            end_unix_nanos: START + second * SECOND + i * (SECOND / rate.max(1)),
            duration_nanos: (millis + jitter) * 1_000_000,
            error: false,
            trace_id: u128::from(second * 1_000 + i + 1),
        };
        store.record_operation(&payment, "POST /pay", sample);
    }
}

fn new_store() -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let store = Store::with_clock(StoreConfig::default(), clock.clone());
    (store, clock)
}

fn new_engine() -> Engine {
    Engine::new(DetectConfig::default())
}

/// Feeds seconds `from..to` of traffic shaped by `millis(second)` (0 = no
/// traffic), advancing every engine each second; returns each engine's
/// events.
fn drive(
    store: &Store,
    clock: &ManualClock,
    engines: &mut [&mut Engine],
    seconds: std::ops::Range<u64>,
    millis: impl Fn(u64) -> u64,
) -> Vec<Vec<IncidentEvent>> {
    let mut events = vec![Vec::new(); engines.len()];
    for second in seconds {
        let now = START + (second + 1) * SECOND;
        clock.set(now);
        let latency = millis(second);
        if latency > 0 {
            second_of_traffic(store, second, 20, latency);
        }
        for (engine, found) in engines.iter_mut().zip(events.iter_mut()) {
            found.extend(engine.advance(store, now));
        }
    }
    events
}

/// An engine that has learned 10 minutes of steady traffic (past its
/// warm-up), with the store it learned from.
fn trained_engine() -> ((Store, Arc<ManualClock>), Engine) {
    let (store, clock) = new_store();
    let mut engine = new_engine();
    let events = drive(&store, &clock, &mut [&mut engine], 0..600, |_| 40);
    assert!(events[0].is_empty(), "{:?}", events[0]);
    ((store, clock), engine)
}

#[test]
fn a_restored_engine_judges_the_next_windows_like_the_original() {
    let ((store, clock), mut original) = trained_engine();
    let window = store.config().window;
    let (series, ready) = original.readiness();
    assert_eq!((series, ready), (1, 1));

    // Through the database, as after a restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open(&file_config(dir.path())).unwrap();
    history
        .save_snapshot(START + 600 * SECOND, &original.snapshot(window))
        .unwrap();
    let saved = history.latest_snapshot().unwrap().expect("a snapshot");
    let resume =
        saved.next_window_unix_nanos.expect("next window") as i64 / window.as_nanos() as i64;
    let mut restored = new_engine();
    let counts = restored.restore(saved, window, resume);
    assert_eq!((counts.series, counts.skipped), (1, 0));
    assert_eq!(restored.readiness(), (1, 1), "no new warm-up");
    let mut fresh = new_engine();

    // Three minutes at 8x latency, then healthy again.
    let events = drive(
        &store,
        &clock,
        &mut [&mut original, &mut restored, &mut fresh],
        600..900,
        |second| {
            if (620..800).contains(&second) {
                320
            } else {
                40
            }
        },
    );
    assert!(
        matches!(events[0].first(), Some(IncidentEvent::Opened(_))),
        "{:?}",
        events[0]
    );
    assert!(matches!(events[0].last(), Some(IncidentEvent::Resolved(_))));
    assert_eq!(events[1], events[0], "the restored engine saw the same");
    assert!(events[2].is_empty(), "a fresh engine is still warming up");
}

#[test]
fn a_restart_does_not_judge_the_windows_it_missed() {
    let ((_, _), original) = trained_engine();
    let window = StoreConfig::default().window;
    let saved = original.snapshot(window);
    // Down for two minutes: a new process with a new, empty store.
    let (store, clock) = new_store();
    let restart = START + 720 * SECOND;
    clock.set(restart);
    let resume = store.window_index(restart) + 1;

    let mut restored = new_engine();
    restored.restore(saved.clone(), window, resume);
    // Resuming where the snapshot left off would judge the empty windows.
    let mut naive = new_engine();
    let saved_next = saved.next_window_unix_nanos.unwrap() as i64 / window.as_nanos() as i64;
    naive.restore(saved, window, saved_next);

    let events = drive(
        &store,
        &clock,
        &mut [&mut restored, &mut naive],
        720..900,
        |_| 40,
    );
    assert!(events[0].is_empty(), "{:?}", events[0]);
    assert!(
        events[1]
            .iter()
            .any(|event| event.incident().kinds.contains(&AnomalyKind::TrafficDrop)),
        "judging the gap would report a traffic drop: {:?}",
        events[1]
    );
}

#[test]
fn open_incidents_come_back_and_agree_with_the_record() {
    let ((store, clock), mut original) = trained_engine();
    let window = store.config().window;
    let history = History::in_memory();
    let events = drive(&store, &clock, &mut [&mut original], 600..660, |_| 320);
    let opened = events[0]
        .iter()
        .find(|event| matches!(event, IncidentEvent::Opened(_)))
        .expect("an incident opened")
        .incident()
        .clone();
    for event in &events[0] {
        history.record_event(event, START).unwrap();
    }
    let snapshot = original.snapshot(window);
    assert_eq!(snapshot.incidents.open.len(), 1);
    let resume =
        original.snapshot(window).next_window_unix_nanos.unwrap() as i64 / window.as_nanos() as i64;

    // Restored and in agreement with the record: nothing to fix.
    let mut restored = new_engine();
    assert_eq!(
        restored
            .restore(snapshot.clone(), window, resume)
            .open_incidents,
        1
    );
    let recorded = history.open_incidents().unwrap();
    let reconciled = restored.reconcile(&recorded, &BTreeSet::new(), resume);
    assert!(reconciled.adopted.is_empty() && reconciled.unrecorded.is_empty());
    assert_eq!(
        restored.incidents().open_incidents()[0].id,
        opened.id,
        "the incident is open again"
    );

    // A snapshot older than the incident: the record brings it back, and it
    // resolves with its own id once traffic is healthy.
    let mut adopted = new_engine();
    let older = trained_engine().1.snapshot(window);
    adopted.restore(older, window, resume);
    let reconciled = adopted.reconcile(&recorded, &BTreeSet::new(), resume);
    assert_eq!(reconciled.adopted, vec![opened.id.clone()]);
    // The record says resolved: the restored incident is dropped.
    let mut dropped = new_engine();
    dropped.restore(snapshot, window, resume);
    let resolved: BTreeSet<String> = [opened.id.clone()].into();
    let reconciled = dropped.reconcile(&[], &resolved, resume);
    assert_eq!(reconciled.dropped, vec![opened.id.clone()]);
    assert!(dropped.incidents().open_incidents().is_empty());

    let after = drive(
        &store,
        &clock,
        &mut [&mut restored, &mut adopted, &mut dropped],
        660..760,
        |_| 40,
    );
    for found in &after[..2] {
        let resolved = found
            .iter()
            .find(|event| matches!(event, IncidentEvent::Resolved(_)))
            .unwrap_or_else(|| panic!("resolves: {found:?}"));
        assert_eq!(resolved.incident().id, opened.id);
    }
    // The dropped incident is not touched again (the fault's last window,
    // judged after the restart, may open a new one).
    assert!(
        after[2]
            .iter()
            .all(|event| event.incident().id != opened.id),
        "{:?}",
        after[2]
    );
}

#[test]
fn snapshots_keep_only_the_newest_few() {
    both(|history| {
        let engine = trained_engine().1;
        let window = StoreConfig::default().window;
        for i in 0..5 {
            history
                .save_snapshot(START + i * SECOND, &engine.snapshot(window))
                .unwrap();
        }
        let connection = history.connection.lock();
        let count = |table: &str| -> i64 {
            connection
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap()
        };
        assert_eq!(count("snapshots"), SNAPSHOTS_KEPT);
        assert_eq!(count("snapshot_series"), SNAPSHOTS_KEPT);
    });
}

/// Size and time of a snapshot of many series with a full hour of history
/// and an allocated time-of-day profile, through a database file: 200 series
/// in the test suite; docs/HISTORY.md quotes a release run of 2,000 with
/// `TRIAGE_SNAPSHOT_SERIES=2000 cargo test --release --lib
/// snapshot_of_many_series -- --nocapture`.
#[test]
fn snapshot_of_many_series_round_trips_and_is_measured() {
    let n_series: usize = std::env::var("TRIAGE_SNAPSHOT_SERIES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    // One series that has learned 70 minutes of 10 s windows: its history
    // ring is full (360 windows) and its profile allocated. Rates and
    // latencies wander like real traffic (a fixed pseudo-random walk), since
    // repetitive numbers would compress unrealistically well.
    let (store, clock) = new_store();
    let mut engine = new_engine();
    let payment = store.service("payment");
    let mut noise: u64 = 0x9e37_79b9_7f4a_7c15;
    for second in 0..4_200u64 {
        let now = START + (second + 1) * SECOND;
        clock.set(now);
        noise = noise
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let rate = 15 + (noise >> 60);
        for i in 0..rate {
            let spread = (noise >> (i % 40)) % 30;
            store.record_operation(
                &payment,
                "POST /pay",
                Sample {
                    end_unix_nanos: START + second * SECOND + i * (SECOND / rate),
                    duration_nanos: (30 + spread) * 1_000_000 + (noise >> 20) % 1_000_000,
                    error: (noise >> 8) % 500 == i,
                    trace_id: u128::from(second * 1_000 + i + 1),
                },
            );
        }
        engine.advance(&store, now);
    }
    let window = store.config().window;
    let one = engine.snapshot(window);
    let template = one.series[0].clone();
    let mut snapshot = one;
    snapshot.series = (0..n_series)
        .map(|i| {
            let mut series = template.clone();
            series.series.service = format!("service-{}", i / 20);
            series.series.name = format!("GET /route/{i}");
            series
        })
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open(&file_config(dir.path())).unwrap();
    let started = std::time::Instant::now();
    history.save_snapshot(START, &snapshot).unwrap();
    let save = started.elapsed();
    let started = std::time::Instant::now();
    let loaded = history.latest_snapshot().unwrap().expect("snapshot");
    let load = started.elapsed();
    assert_eq!(loaded.series.len(), n_series);
    assert_eq!(
        serde_json::to_string(&loaded.series[n_series - 1].detector).unwrap(),
        serde_json::to_string(&template.detector).unwrap()
    );
    let (stored, json): (i64, i64) = history
        .connection
        .lock()
        .query_row(
            "SELECT SUM(LENGTH(detector)), SUM(detector_bytes) FROM snapshot_series",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    // What the check at every start costs on this database, and what the
    // full check would, each on a new connection as at start (its page cache
    // empty; the operating system's is warm).
    // The best of three, since the first read also warms the files.
    let time_check = |pragma: &str| {
        (0..3)
            .map(|_| {
                let connection = Connection::open(dir.path().join("data").join(DB_FILE)).unwrap();
                let started = std::time::Instant::now();
                let result: String = connection.query_row(pragma, [], |row| row.get(0)).unwrap();
                assert_eq!(result, "ok");
                started.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let quick = time_check("PRAGMA quick_check");
    let integrity = time_check("PRAGMA integrity_check");
    let file = std::fs::metadata(dir.path().join("data").join(DB_FILE))
        .map(|meta| meta.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("data").join("triage.db-wal"))
            .map(|meta| meta.len())
            .unwrap_or(0);
    eprintln!(
        "snapshot of {n_series} series: {:.1} MB of baseline JSON ({} bytes per series), \
         stored compressed in {:.1} MB ({} bytes per series), {:.1} MB on disk; \
         saved in {save:?}, loaded in {load:?}; quick_check {quick:?}, integrity_check \
         {integrity:?}",
        json as f64 / 1e6,
        json / n_series as i64,
        stored as f64 / 1e6,
        stored / n_series as i64,
        file as f64 / 1e6,
    );
}

#[test]
fn a_snapshot_from_a_clock_far_ahead_does_not_stall_detection() {
    let ((_, _), original) = trained_engine();
    let window = StoreConfig::default().window;
    let window_nanos = window.as_nanos() as u64;
    let (store, clock) = new_store();
    let restart = START + 700 * SECOND;
    clock.set(restart);
    let resume = store.window_index(restart) + 1;
    let resume_start = resume as u64 * window_nanos;

    // Saved by a process whose clock was an hour ahead: not waited for.
    let mut far = original.snapshot(window);
    far.next_window_unix_nanos = Some(resume_start + 3_600 * SECOND);
    let mut restored = new_engine();
    restored.restore(far, window, resume);
    drive(&store, &clock, &mut [&mut restored], 700..760, |_| 40);
    assert!(store.closed_through().is_some(), "detection goes on");

    // A minute ahead: those windows were judged already, so they are
    // waited for rather than judged twice.
    let (store, clock) = new_store();
    clock.set(restart);
    let mut near = original.snapshot(window);
    near.next_window_unix_nanos = Some(resume_start + 60 * SECOND);
    let mut restored = new_engine();
    restored.restore(near, window, resume);
    drive(&store, &clock, &mut [&mut restored], 700..800, |_| 40);
    let closed = store.closed_through().expect("closed after the wait");
    assert!(
        store.window_start(closed) >= resume_start + 60 * SECOND,
        "nothing before the saved next window is closed again"
    );
}

// === damaged databases ===

/// A database as a collector leaves it after a clean stop: incidents with
/// their events, enough changes to fill several pages, and a snapshot.
/// Returns its config and the file.
fn written_database(dir: &Path) -> (StorageConfig, PathBuf) {
    let config = file_config(dir);
    let history = History::open(&config).expect("open");
    for i in 0..20 {
        open_and_resolve(&history, &format!("service-{i}"), i * 100);
    }
    for id in 0..200 {
        let mut change = change(id, "payment", id);
        change.description = format!(
            "payment v{id} rolled out by pipeline {id} {}",
            "x".repeat(200)
        );
        history.record_change(&change).expect("record change");
    }
    let snapshot = trained_engine().1.snapshot(StoreConfig::default().window);
    history.save_snapshot(START, &snapshot).expect("snapshot");
    drop(history);
    let path = config.data_dir.join(DB_FILE);
    assert!(
        !sidecar(&path, "-wal").exists(),
        "a clean close checkpoints the WAL into the file"
    );
    (config, path)
}

/// Files in `dir` named `triage.db.corrupt-*`, without their `-wal` and
/// `-shm` (opening a WAL database makes them, so they are there too).
fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name().is_some_and(|name| {
                let name = name.to_string_lossy();
                name.starts_with("triage.db.corrupt-")
                    && !name.ends_with("-wal")
                    && !name.ends_with("-shm")
            })
        })
        .collect();
    found.sort();
    found
}

/// Opens the history over a file damaged to `damaged` bytes and checks that
/// it was moved aside untouched, that the new history is empty and works,
/// and that health and a reopen say so.
fn check_recovery(config: &StorageConfig, damaged: &[u8], reason: &str) -> Recovery {
    let path = config.data_dir.join(DB_FILE);
    std::fs::write(&path, damaged).expect("write the damaged file");

    let history = History::open(config).expect("a damaged database does not stop start-up");
    let health = history.health();
    let recovery = health.recovered.clone().expect("a recovery is reported");
    assert_eq!(recovery.reason, reason, "{recovery:?}");
    assert_eq!(
        moved_aside(&config.data_dir),
        vec![recovery.moved_to.clone()]
    );
    assert_eq!(
        std::fs::read(&recovery.moved_to).expect("the damaged file is kept"),
        damaged,
        "moved aside as it was found"
    );
    assert_eq!(health.write_failures, 0);
    let problem = health.problem().expect("health names the recovery");
    assert!(
        problem.contains(&*recovery.moved_to.to_string_lossy()),
        "{problem}"
    );

    // The new history starts empty and records and reads back.
    assert!(history.events_after(0, 10).unwrap().is_empty());
    assert!(history.changes(0).unwrap().is_empty());
    open_and_resolve(&history, "payment", 100);
    history.record_change(&change(7, "payment", 90)).unwrap();
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    assert_eq!(history.changes(0).unwrap()[0].id, 7);
    drop(history);

    // Sound now: the next start keeps it and moves nothing more.
    let history = History::open(config).expect("reopen");
    assert_eq!(history.health(), HistoryHealth::default());
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    assert_eq!(moved_aside(&config.data_dir).len(), 1);
    recovery
}

#[test]
fn a_truncated_database_is_moved_aside() {
    // Cut in half, after the first page, inside the header.
    for keep in [|len: usize| len / 2, |_| 4096, |_| 50] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, path) = written_database(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 16 * 4096, "{} bytes", bytes.len());
        bytes.truncate(keep(bytes.len()));
        check_recovery(&config, &bytes, "corrupt");
    }
}

#[test]
fn garbage_in_a_data_page_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, path) = written_database(dir.path());
    // The root page of `changes`: it holds the table's rows or the
    // pointers to them.
    let (page, page_size): (i64, i64) = {
        let connection = Connection::open(&path).unwrap();
        let page = connection
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'changes'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let size = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        (page, size)
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = ((page - 1) * page_size) as usize;
    assert!(offset > 0 && offset + 1024 < bytes.len());
    // A kilobyte of junk (a fixed pseudo-random pattern) over the page's
    // header, cell pointers and first cells, as a bad sector or a stray
    // write would leave it.
    let mut noise: u32 = 0x2545_f491;
    for byte in &mut bytes[offset..offset + 1024] {
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        *byte = noise as u8;
    }
    let recovery = check_recovery(&config, &bytes, "corrupt");
    // Found by the check, not by a failed read.
    assert!(
        recovery.problem.contains(&format!("page {page}")),
        "{recovery:?}"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    // A config file written to the wrong path, longer than SQLite's header.
    let long = "storage:\n  data_dir: /var/lib/triage\n".repeat(20);
    check_recovery(&config, long.as_bytes(), "not_a_database");
    // And one shorter than the header.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    check_recovery(&config, b"hello\n", "not_a_database");
}

#[test]
fn an_empty_file_is_a_new_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    std::fs::write(config.data_dir.join(DB_FILE), b"").unwrap();
    let history = History::open(&config).expect("open");
    assert_eq!(history.health(), HistoryHealth::default(), "not a recovery");
    assert!(moved_aside(&config.data_dir).is_empty());
    open_and_resolve(&history, "payment", 100);
    assert_eq!(history.events_after(0, 10).unwrap().len(), 2);
    assert_eq!(schema_version(&history.connection.lock()).unwrap(), 2);
}

#[test]
fn a_damaged_database_goes_aside_with_its_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, path) = written_database(dir.path());
    // A copy taken while a collector runs, as a crash leaves the files: the
    // latest writes are in the WAL only.
    let crashed = dir.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let copy = crashed.join(DB_FILE);
    {
        let history = History::open(&config).expect("open");
        history.record_change(&change(500, "cart", 0)).unwrap();
        for suffix in ["", "-wal"] {
            std::fs::copy(sidecar(&path, suffix), sidecar(&copy, suffix)).unwrap();
        }
    }
    let wal = std::fs::read(sidecar(&copy, "-wal")).unwrap();
    assert!(!wal.is_empty());
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&copy, &bytes).unwrap();

    let config = StorageConfig {
        data_dir: crashed,
        ..config
    };
    let history = History::open(&config).expect("open");
    let moved_to = history.health().recovered.expect("recovered").moved_to;
    assert_eq!(std::fs::read(&moved_to).unwrap(), bytes);
    assert_eq!(
        std::fs::read(sidecar(&moved_to, "-wal")).expect("the WAL went along"),
        wal,
        "as it was found"
    );
    // The new database did not take the old WAL's frames.
    assert!(history.changes(0).unwrap().is_empty());
}

#[test]
fn failed_writes_are_counted_until_one_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = History::open(&file_config(dir.path())).expect("open");
    assert_eq!(history.health().problem(), None);
    // Writes refused as a read-only or full disk would refuse them.
    history
        .connection
        .lock()
        .execute_batch("PRAGMA query_only = ON")
        .unwrap();
    history
        .record_change(&change(1, "payment", 0))
        .expect_err("refused");
    let event = IncidentEvent::Opened(incident("payment", 100, IncidentState::Open));
    history.record_event(&event, START).expect_err("refused");
    let health = history.health();
    assert_eq!(health.write_failures, 2);
    assert!(health.failing && !health.damaged, "{health:?}");
    let error = health.last_write_error.clone().expect("the error");
    assert!(error.starts_with("incident_event: "), "{error}");
    assert!(health.last_write_error_unix_nanos.is_some());
    assert!(
        health
            .problem()
            .expect("a problem")
            .contains("writes are failing"),
        "{health:?}"
    );

    history
        .connection
        .lock()
        .execute_batch("PRAGMA query_only = OFF")
        .unwrap();
    history.record_change(&change(1, "payment", 0)).unwrap();
    let health = history.health();
    assert_eq!(health.write_failures, 2, "the total stays");
    assert!(!health.failing, "the latest write succeeded");
    assert_eq!(health.last_write_error.as_deref(), Some(error.as_str()));
    // Failures outside the history's own methods count the same way.
    history.write_failed("change", 3, &"the history fell behind");
    assert_eq!(history.health().write_failures, 5);
}

#[test]
fn only_errors_that_mean_a_damaged_file_are_damage() {
    let sqlite = |code| {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("said".to_owned()))
    };
    let open = |code| HistoryError::Open {
        path: PathBuf::from("triage.db"),
        error: sqlite(code),
    };
    let reason = |error: &HistoryError| damage(error).map(|(reason, _)| reason);
    assert_eq!(
        reason(&open(rusqlite::ffi::SQLITE_CORRUPT)),
        Some("corrupt")
    );
    assert_eq!(
        reason(&open(rusqlite::ffi::SQLITE_NOTADB)),
        Some("not_a_database")
    );
    assert_eq!(
        reason(&HistoryError::Sqlite(sqlite(rusqlite::ffi::SQLITE_CORRUPT))),
        Some("corrupt"),
        "a write that finds the file damaged"
    );
    assert_eq!(
        reason(&HistoryError::Damaged {
            path: PathBuf::from("triage.db"),
            problems: "Page 7: invalid page type".to_owned(),
        }),
        Some("corrupt")
    );
    // Permissions, a full disk, a lock held elsewhere, a newer build: the
    // file is fine, and moving it aside would lose it.
    for code in [
        rusqlite::ffi::SQLITE_CANTOPEN,
        rusqlite::ffi::SQLITE_READONLY,
        rusqlite::ffi::SQLITE_PERM,
        rusqlite::ffi::SQLITE_FULL,
        rusqlite::ffi::SQLITE_BUSY,
        rusqlite::ffi::SQLITE_IOERR,
    ] {
        assert_eq!(reason(&open(code)), None, "{code}");
    }
    let newer = HistoryError::NewerSchema {
        path: PathBuf::from("triage.db"),
        found: 9,
        known: 2,
    };
    assert_eq!(reason(&newer), None);
}

#[test]
fn unreadable_rows_are_skipped_at_restore() {
    both(|history| {
        history.record_change(&change(1, "payment", 10)).unwrap();
        history.record_change(&change(2, "payment", 20)).unwrap();
        history.record_change(&change(3, "payment", 30)).unwrap();
        for service in ["a", "b", "c"] {
            let event = IncidentEvent::Opened(incident(service, 10, IncidentState::Open));
            history.record_event(&event, START).unwrap();
        }
        // Bytes changed inside values: not JSON, and not even UTF-8.
        history
            .connection
            .lock()
            .execute_batch(
                "UPDATE changes SET change = '{\"id\": 1, garbage' WHERE id = 1;
                 UPDATE changes SET change = CAST(x'7bff22' AS TEXT) WHERE id = 3;
                 UPDATE incidents SET incident = CAST(x'ff' AS TEXT) WHERE service = 'b';",
            )
            .unwrap();
        let changes = history.changes(0).unwrap();
        assert_eq!(changes.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2]);
        let open = history.open_incidents().unwrap();
        assert_eq!(
            open.iter().map(|i| i.service.as_str()).collect::<Vec<_>>(),
            vec!["a", "c"]
        );
    });
}

#[test]
fn a_file_damaged_while_open_is_reported_as_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    let history = History::open(&config).expect("open");
    for id in 0..50 {
        history.record_change(&change(id, "payment", id)).unwrap();
    }
    // Everything in the main file, and nothing of it in SQLite's cache, so
    // the next write reads the pages from disk.
    let (page, page_size): (i64, i64) = {
        let connection = history.connection.lock();
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let page = connection
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'changes'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let size = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        (page, size)
    };
    let path = config.data_dir.join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = ((page - 1) * page_size) as usize;
    bytes[offset..offset + 512].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();
    history
        .connection
        .lock()
        .execute_batch("PRAGMA shrink_memory")
        .unwrap();

    history
        .record_change(&change(99, "payment", 99))
        .expect_err("the page is junk");
    let health = history.health();
    assert!(health.damaged && health.failing, "{health:?}");
    assert!(
        health.problem().expect("a problem").contains("restart"),
        "{health:?}"
    );
    drop(history);
    // The restart moves it aside.
    let history = History::open(&config).expect("reopen");
    assert!(history.health().recovered.is_some());
}

/// The server's snapshots are encoded series by series from the engine
/// (`PackedSnapshot::of_engine`) instead of from a copy of every detector:
/// the same bytes as encoding a copy, read back as the same state, and
/// holding a fraction of the detection state it saves.
#[test]
fn snapshots_are_encoded_from_the_engine_without_a_copy() {
    let (_, engine) = trained_engine();
    let window = StoreConfig::default().window;
    let packed = PackedSnapshot::of_engine(&engine, window).expect("pack");
    let copied = PackedSnapshot::of(&engine.snapshot(window)).expect("pack a copy");
    assert_eq!(packed.n_series(), 1);
    assert_eq!(format!("{packed:?}"), format!("{copied:?}"));
    assert!(
        packed.bytes() * 4 < engine.state_bytes(),
        "encoded {} bytes of {} bytes of state",
        packed.bytes(),
        engine.state_bytes()
    );

    let history = History::in_memory();
    history.save_packed(START, &packed).expect("save");
    let saved = history
        .latest_snapshot()
        .expect("read")
        .expect("a snapshot");
    let original = engine.snapshot(window);
    assert_eq!(
        saved.next_window_unix_nanos,
        original.next_window_unix_nanos
    );
    assert_eq!(saved.series.len(), 1);
    assert_eq!(saved.series[0].series, original.series[0].series);
    assert_eq!(
        serde_json::to_string(&saved.series[0].detector).expect("json"),
        serde_json::to_string(&original.series[0].detector).expect("json")
    );
}
