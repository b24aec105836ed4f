//! Incidents: hysteresis over per-series anomalies, and grouping per service.
//!
//! A series *fires* after `open_after` consecutive anomalous windows (one
//! window when an anomaly is severe) and stops firing after `resolve_after`
//! consecutive normal windows. All firing series of one service belong to one
//! open incident: anomalies of several kinds on the same service at the same
//! time are one incident, not one per kind. The incident resolves when none
//! of its series fires any more.
//!
//! # Onset and id
//!
//! An incident's onset is the earliest onset of its series' anomalous runs,
//! each placed by `detect::onset` to a sub-window (2 s at the default 10 s
//! windows) of the run's first window, or of the window before when the
//! anomaly began late in it; the window start when the sub-windows cannot
//! tell. The id, `service@seconds`, keeps using the
//! start of the first anomalous *window*, not the refined onset: the window
//! grid is what two collectors fed the same traffic (a high-availability
//! pair behind one Alertmanager) agree on even when a few late spans
//! reach one of them and not the other and move the refined onset by a
//! sub-window, and the id is the `incident` label Alertmanager
//! deduplicates on. A restored or reconciled incident keeps the id it was
//! published with, whatever its onset.
//!
//! # Context, not pages
//!
//! A traffic spike alone is not user pain: more requests matter through
//! their effects, and when latency, errors or saturation follow, those open
//! the incident. So a spike never makes a series fire. It is context: kept
//! on the open incident of its service (as a warning, whatever its size),
//! where analysis and people can see that load rose, and counted
//! ([`IncidentTracker::traffic_spikes`]) for the self-metrics. A drop still
//! fires: lost traffic is an outage of something.
//!
//! The tracker is a pure state machine over closed windows: it emits
//! [`IncidentEvent`]s (opened, updated, resolved) and never reads a clock, so
//! a replay of the same data gives the same events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{rfc3339, Incident, IncidentEvent, IncidentState, SeriesAnomaly};
use crate::model::{Anomaly, AnomalyKind, Severity};
use crate::model::{SeriesKey, SeriesKind};

/// Most exemplar trace ids an incident carries.
const MAX_EXEMPLARS: usize = 8;

/// When series start and stop counting as firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Consecutive anomalous windows before a series fires.
    pub open_after: usize,
    /// The same when the window's anomaly is severe.
    pub open_after_severe: usize,
    /// Consecutive normal windows before a firing series stops.
    pub resolve_after: usize,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            open_after: 2,
            open_after_severe: 1,
            resolve_after: 3,
        }
    }
}

/// What one series found in one closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub key: SeriesKey,
    pub anomalies: Vec<Anomaly>,
    pub exemplars: Vec<u128>,
    /// When the anomalies began inside the window (`detect::onset`), Unix
    /// nanoseconds; `None` means the window start.
    pub onset_unix_nanos: Option<u64>,
}

#[derive(Debug, Default)]
struct SeriesTrack {
    anomalous_run: usize,
    normal_run: usize,
    firing: bool,
    /// Window index of the first window of the current anomalous run.
    run_start: i64,
    /// The run's onset inside that window, Unix nanoseconds (0: the window
    /// start).
    run_onset: u64,
}

/// An open incident and what it is made of.
#[derive(Debug)]
struct OpenIncident {
    incident: Incident,
    series: BTreeMap<SeriesKey, SeriesAnomaly>,
    exemplars: Vec<u128>,
}

/// The hysteresis and grouping state machine.
#[derive(Debug, Default)]
pub struct IncidentTracker {
    hysteresis: Hysteresis,
    tracks: BTreeMap<SeriesKey, SeriesTrack>,
    open: BTreeMap<Arc<str>, OpenIncident>,
    /// Windows in which a series spiked (context, never a page), since
    /// start.
    traffic_spikes: u64,
}

impl IncidentTracker {
    pub fn new(hysteresis: Hysteresis) -> Self {
        IncidentTracker {
            hysteresis,
            ..IncidentTracker::default()
        }
    }

    /// Open incidents, by service.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.open.values().map(|open| &open.incident).collect()
    }

    /// Windows in which some series' traffic spiked, since start: context
    /// kept on incidents, never a page on its own.
    pub fn traffic_spikes(&self) -> u64 {
        self.traffic_spikes
    }

    /// Series the tracker has seen.
    pub fn tracked_keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.tracks.keys()
    }

    /// Forgets a series (it expired from the store).
    pub fn forget(&mut self, key: &SeriesKey) {
        self.tracks.remove(key);
    }

    /// Takes the results of window `index` (covering `[start, end)` in Unix
    /// nanoseconds) for every evaluated series, and returns the events.
    pub fn window(
        &mut self,
        index: i64,
        start: u64,
        end: u64,
        results: Vec<SeriesResult>,
    ) -> Vec<IncidentEvent> {
        let window_nanos = end.saturating_sub(start);
        let mut touched: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut opened: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut context: Vec<(SeriesKey, Anomaly)> = Vec::new();
        for mut result in results {
            // A spike is context, not a page (see the module docs): it
            // leaves the series' hysteresis alone.
            result.anomalies.retain(|anomaly| {
                if anomaly.kind != AnomalyKind::TrafficSpike {
                    return true;
                }
                context.push((result.key.clone(), anomaly.clone()));
                false
            });
            let track = self.tracks.entry(result.key.clone()).or_default();
            if result.anomalies.is_empty() {
                track.anomalous_run = 0;
                if track.firing {
                    track.normal_run += 1;
                    if track.normal_run >= self.hysteresis.resolve_after {
                        track.firing = false;
                        touched.insert(Arc::clone(&result.key.service));
                    }
                }
                continue;
            }
            if track.anomalous_run == 0 {
                track.run_start = index;
                track.run_onset = result.onset_unix_nanos.unwrap_or(start);
            }
            track.anomalous_run += 1;
            track.normal_run = 0;
            let severe = result.anomalies.iter().any(|anomaly| anomaly.severe);
            let needed = if severe {
                self.hysteresis.open_after_severe
            } else {
                self.hysteresis.open_after
            };
            if !track.firing && track.anomalous_run >= needed {
                track.firing = true;
            }
            if !track.firing {
                continue;
            }
            let run_window = (track.run_start.max(0) as u64).saturating_mul(window_nanos);
            // A refined onset lies inside the run's first window or the
            // window before it (`detect::onset`), or where the accumulated
            // evidence of a sparse series begins (at most its two minutes
            // before); anything else (a snapshot from before the
            // refinement) means the window start.
            let reach = sparse_reach(window_nanos);
            let onset = if (run_window.saturating_sub(reach)
                ..run_window.saturating_add(window_nanos))
                .contains(&track.run_onset)
            {
                track.run_onset
            } else {
                run_window
            };
            let service = Arc::clone(&result.key.service);
            let entry = self.open.entry(Arc::clone(&service)).or_insert_with(|| {
                opened.insert(Arc::clone(&service));
                OpenIncident {
                    incident: new_incident(&service, run_window, onset, end),
                    series: BTreeMap::new(),
                    exemplars: Vec::new(),
                }
            });
            entry.incident.onset_unix_nanos = entry.incident.onset_unix_nanos.min(onset);
            for anomaly in result.anomalies {
                entry.series.insert(
                    result.key.clone(),
                    SeriesAnomaly {
                        series_kind: result.key.kind.as_str().to_string(),
                        series: result.key.name.to_string(),
                        anomaly,
                    },
                );
            }
            for id in result.exemplars {
                if !entry.exemplars.contains(&id) {
                    entry.exemplars.push(id);
                }
            }
            if entry.exemplars.len() > MAX_EXEMPLARS {
                let excess = entry.exemplars.len() - MAX_EXEMPLARS;
                entry.exemplars.drain(..excess);
            }
            touched.insert(service);
        }
        self.traffic_spikes += context.len() as u64;
        for (key, anomaly) in context {
            let Some(entry) = self.open.get_mut(&key.service) else {
                continue;
            };
            // A series' own paging anomaly says more than its load.
            if entry
                .series
                .get(&key)
                .is_some_and(|held| held.anomaly.kind != AnomalyKind::TrafficSpike)
            {
                continue;
            }
            entry.series.insert(
                key.clone(),
                SeriesAnomaly {
                    series_kind: key.kind.as_str().to_string(),
                    series: key.name.to_string(),
                    anomaly: Anomaly {
                        severity: Severity::Warning,
                        severe: false,
                        ..anomaly
                    },
                },
            );
            touched.insert(Arc::clone(&key.service));
        }

        let mut events = Vec::new();
        for service in touched {
            let still_firing = self
                .tracks
                .iter()
                .any(|(key, track)| track.firing && key.service == service);
            let Some(mut open) = self.open.remove(&service) else {
                continue;
            };
            let before = open.incident.clone();
            refresh(&mut open);
            if !still_firing {
                open.incident.state = IncidentState::Resolved;
                open.incident.resolved_unix_nanos = Some(end);
                open.incident.resolved = Some(rfc3339(end));
                events.push(IncidentEvent::Resolved(open.incident));
                continue;
            }
            if opened.contains(&service) {
                events.push(IncidentEvent::Opened(open.incident.clone()));
            } else if changed(&before, &open.incident) {
                events.push(IncidentEvent::Updated(open.incident.clone()));
            }
            self.open.insert(service, open);
        }
        events
    }
}

// === snapshots ===

/// A series key in a form storage can hold: the kind as its stable name
/// (`SeriesKind::as_str`), the service and the series name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `operation`, `edge`, `metric`, `log`, ...
    pub kind: String,
    /// The service the series belongs to.
    pub service: String,
    /// The operation, callee, metric or log class.
    pub name: String,
}

impl KeyRecord {
    /// The record of `key`.
    pub fn of(key: &SeriesKey) -> Self {
        KeyRecord {
            kind: key.kind.as_str().to_string(),
            service: key.service.to_string(),
            name: key.name.to_string(),
        }
    }

    /// The key again; `None` when the kind is not one this build knows
    /// (a snapshot written by a newer version).
    pub fn key(&self) -> Option<SeriesKey> {
        let kind = SeriesKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == self.kind)?;
        Some(SeriesKey::new(kind, &self.service, &self.name))
    }
}

/// The hysteresis state of one series, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackSnapshot {
    /// Which series.
    pub series: KeyRecord,
    /// Consecutive anomalous windows so far.
    pub anomalous_run: usize,
    /// Consecutive normal windows since the series last fired.
    pub normal_run: usize,
    /// Whether the series counts as firing.
    pub firing: bool,
    /// Start of the first window of the current anomalous run, Unix
    /// nanoseconds. Saved as a time, not a window index, so a snapshot
    /// stays meaningful if the window length changes.
    pub run_start_unix_nanos: u64,
    /// The run's onset inside that window (see `detect::onset`), Unix
    /// nanoseconds; absent in snapshots from before onsets were refined,
    /// which then use the window start.
    #[serde(default)]
    pub run_onset_unix_nanos: Option<u64>,
}

/// One anomalous series of an open incident, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSeriesSnapshot {
    /// Which series.
    pub series: KeyRecord,
    /// Its latest anomaly.
    pub anomaly: SeriesAnomaly,
}

/// An open incident with what it is made of, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSnapshot {
    /// The incident as last published.
    pub incident: Incident,
    /// The latest anomaly of each series involved.
    pub series: Vec<OpenSeriesSnapshot>,
    /// Exemplar trace ids (32 hex digits), oldest first.
    pub exemplars: Vec<String>,
}

/// Everything the tracker needs to carry on after a restart: the
/// hysteresis runs and firing flags of every series, and the open incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackerSnapshot {
    /// Per-series hysteresis state.
    pub tracks: Vec<TrackSnapshot>,
    /// Open incidents, one per service.
    pub open: Vec<OpenSnapshot>,
}

/// What [`IncidentTracker::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Incidents recorded as open that the tracker did not have: taken back
    /// in, their series firing again.
    pub adopted: Vec<String>,
    /// Incidents the tracker had open but the record says resolved: dropped.
    pub dropped: Vec<String>,
    /// Incidents the tracker has open that the record never heard of (the
    /// process stopped before the event was written): kept; the caller
    /// should record them.
    pub unrecorded: Vec<Incident>,
    /// Incidents recorded as open that cannot be taken back (another open
    /// incident holds their service, or none of their series is one this
    /// build can track): the caller should record them as resolved so they
    /// do not stay open forever.
    pub superseded: Vec<Incident>,
}

impl IncidentTracker {
    /// The state to save, with window indices turned into times using the
    /// window length `window_nanos`.
    pub fn snapshot(&self, window_nanos: u64) -> TrackerSnapshot {
        TrackerSnapshot {
            tracks: self
                .tracks
                .iter()
                .map(|(key, track)| TrackSnapshot {
                    series: KeyRecord::of(key),
                    anomalous_run: track.anomalous_run,
                    normal_run: track.normal_run,
                    firing: track.firing,
                    run_start_unix_nanos: (track.run_start.max(0) as u64)
                        .saturating_mul(window_nanos),
                    run_onset_unix_nanos: (track.run_onset != 0).then_some(track.run_onset),
                })
                .collect(),
            open: self
                .open
                .values()
                .map(|open| OpenSnapshot {
                    incident: open.incident.clone(),
                    series: open
                        .series
                        .iter()
                        .map(|(key, anomaly)| OpenSeriesSnapshot {
                            series: KeyRecord::of(key),
                            anomaly: anomaly.clone(),
                        })
                        .collect(),
                    exemplars: open
                        .exemplars
                        .iter()
                        .map(|id| format!("{id:032x}"))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Replaces the state with a saved one (the hysteresis settings stay the
    /// configured ones). Series of a kind this build does not know are
    /// skipped; returns how many were.
    pub fn restore(&mut self, snapshot: TrackerSnapshot, window_nanos: u64) -> usize {
        let window_nanos = window_nanos.max(1);
        let mut skipped = 0;
        self.tracks.clear();
        self.open.clear();
        for track in snapshot.tracks {
            let Some(key) = track.series.key() else {
                skipped += 1;
                continue;
            };
            let run_start = i64::try_from(track.run_start_unix_nanos / window_nanos).unwrap_or(0);
            self.tracks.insert(
                key,
                SeriesTrack {
                    anomalous_run: track.anomalous_run,
                    normal_run: track.normal_run,
                    firing: track.firing,
                    run_start,
                    run_onset: track.run_onset_unix_nanos.unwrap_or(0),
                },
            );
        }
        for open in snapshot.open {
            let mut series = BTreeMap::new();
            for entry in open.series {
                match entry.series.key() {
                    Some(key) => {
                        series.insert(key, entry.anomaly);
                    }
                    None => skipped += 1,
                }
            }
            let exemplars = open
                .exemplars
                .iter()
                .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
                .collect();
            let service: Arc<str> = Arc::from(open.incident.service.as_str());
            self.open.insert(
                service,
                OpenIncident {
                    incident: open.incident,
                    series,
                    exemplars,
                },
            );
        }
        skipped
    }

    /// Makes the open incidents agree with what was recorded (delivered to
    /// alerting, the API and storage), which is the authority after a
    /// restart: the saved state may be older than the last events.
    ///
    /// - Open here, recorded as resolved (`resolved_ids`): dropped, and the
    ///   service's series stop firing, so a fault that lasts opens a new
    ///   incident after the usual hysteresis.
    /// - Recorded as open (`recorded_open`), unknown here: taken back in with
    ///   the series of its anomalies firing, so it resolves after
    ///   `resolve_after` normal windows like any other.
    /// - Open here, never recorded: kept, and returned so the caller records
    ///   it.
    pub fn reconcile(
        &mut self,
        recorded_open: &[Incident],
        resolved_ids: &BTreeSet<String>,
    ) -> Reconciled {
        let mut reconciled = Reconciled::default();
        let dropped: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|(_, open)| resolved_ids.contains(&open.incident.id))
            .map(|(service, _)| Arc::clone(service))
            .collect();
        for service in dropped {
            if let Some(open) = self.open.remove(&service) {
                reconciled.dropped.push(open.incident.id);
            }
            for (_, track) in self
                .tracks
                .iter_mut()
                .filter(|(key, _)| key.service == service)
            {
                *track = SeriesTrack::default();
            }
        }
        for incident in recorded_open {
            let service: Arc<str> = Arc::from(incident.service.as_str());
            match self.open.get(&service) {
                Some(open) if open.incident.id == incident.id => continue,
                Some(_) => {
                    reconciled.superseded.push(incident.clone());
                    continue;
                }
                None => {}
            }
            let mut series = BTreeMap::new();
            for anomaly in &incident.anomalies {
                let record = KeyRecord {
                    kind: anomaly.series_kind.clone(),
                    service: incident.service.clone(),
                    name: anomaly.series.clone(),
                };
                if let Some(key) = record.key() {
                    series.insert(key, anomaly.clone());
                }
            }
            // Without a series to watch, nothing would ever resolve it.
            if series.is_empty() {
                reconciled.superseded.push(incident.clone());
                continue;
            }
            for key in series.keys() {
                let track = self.tracks.entry(key.clone()).or_default();
                track.firing = true;
                track.normal_run = 0;
            }
            let exemplars = incident
                .exemplar_trace_ids
                .iter()
                .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
                .collect();
            reconciled.adopted.push(incident.id.clone());
            self.open.insert(
                service,
                OpenIncident {
                    incident: incident.clone(),
                    series,
                    exemplars,
                },
            );
        }
        let recorded: BTreeSet<&str> = recorded_open.iter().map(|i| i.id.as_str()).collect();
        reconciled.unrecorded = self
            .open
            .values()
            .filter(|open| !recorded.contains(open.incident.id.as_str()))
            .map(|open| open.incident.clone())
            .collect();
        reconciled
    }
}

/// A new incident: its id from the start of the first anomalous window
/// (`window_start`), its onset refined (`onset`).
fn new_incident(service: &str, window_start: u64, onset: u64, opened: u64) -> Incident {
    let id = format!("{service}@{}", window_start / 1_000_000_000);
    Incident::open(id, service, onset, opened)
}

/// Recomputes the derived fields of an incident from its series.
fn refresh(open: &mut OpenIncident) {
    let incident = &mut open.incident;
    incident.onset = rfc3339(incident.onset_unix_nanos);
    let mut anomalies: Vec<SeriesAnomaly> = open.series.values().cloned().collect();
    anomalies.sort_by(|a, b| {
        b.anomaly
            .severity
            .cmp(&a.anomaly.severity)
            .then_with(|| a.anomaly.kind.cmp(&b.anomaly.kind))
            .then_with(|| a.series.cmp(&b.series))
    });
    incident.kinds = anomalies
        .iter()
        .map(|anomaly| anomaly.anomaly.kind)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    incident.severity = anomalies
        .iter()
        .map(|anomaly| anomaly.anomaly.severity)
        .max()
        .unwrap_or(Severity::Warning);
    incident.operations = open
        .series
        .keys()
        .filter_map(|key| match key.kind {
            SeriesKind::Operation => Some(key.name.to_string()),
            SeriesKind::Edge => Some(format!("{} -> {}", key.service, key.name)),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    incident.exemplar_trace_ids = open
        .exemplars
        .iter()
        .map(|id| format!("{id:032x}"))
        .collect();
    incident.summary = match anomalies.first() {
        Some(first) => {
            let more = anomalies.len() - 1;
            let subject = match first.series_kind.as_str() {
                "operation" => format!("{} {}", incident.service, first.series),
                "edge" => format!("{} -> {}", incident.service, first.series),
                _ => incident.service.clone(),
            };
            if more == 0 {
                format!("{subject}: {}", first.anomaly.summary)
            } else {
                format!("{subject}: {} (+{more} more)", first.anomaly.summary)
            }
        }
        None => format!("{}: anomalous", incident.service),
    };
    incident.anomalies = anomalies;
}

/// How far before its run's first window an onset may lie: the span of
/// the sparse judge's accumulated evidence, and at least one window.
fn sparse_reach(window_nanos: u64) -> u64 {
    let span = (super::sparse::SPAN_SECS * 1e9) as u64;
    span.max(window_nanos).saturating_add(window_nanos)
}

#[cfg(test)]
mod tests;

/// Whether an update is worth an event: new kinds, series or severity (not
/// every change of a number, which would flood consumers every window).
fn changed(before: &Incident, after: &Incident) -> bool {
    before.kinds != after.kinds
        || before.severity != after.severity
        || before.operations != after.operations
        || before.anomalies.len() != after.anomalies.len()
}
