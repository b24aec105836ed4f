//! Changes seen in the telemetry: a new `service.version`, a rollout or a
//! scaling (the set of a service's instances turning over), a feature flag
//! serving a new variant or shifting its variant shares, and Kubernetes
//! events (OOM kills, back-offs, failing probes, scaling) arriving as logs.
//!
//! The [`ChangeDetector`] sits on the ingest path. It is called once per
//! resource of a trace request ([`ChangeDetector::observe_resource`]), once
//! per span that carries a flag evaluation ([`ChangeDetector::observe_flag`])
//! and once per Kubernetes event log record
//! ([`ChangeDetector::observe_k8s_event`]). Each call takes one shard read
//! lock of the service map and the service's own mutex for a few
//! comparisons; it allocates only when it meets something new (a service,
//! version, instance, flag key or variant).
//!
//! Invariants:
//! - Time is event time (span end, log time), never the wall clock, so the
//!   same input gives the same changes in live mode and in replay.
//! - The first sighting of a service (and of a flag key) starts a baseline
//!   period: versions, instances and variants seen in it were there before
//!   the collector started watching and are not changes.
//! - Everything is bounded: services, versions and instances per service,
//!   flag keys per service and variants per key. What does not fit is
//!   counted in [`DetectorCounters::overflow`] and otherwise ignored.
//! - A rollout is one change, however many pods it replaces: instance
//!   arrivals and departures are gathered into an episode that is reported
//!   once nothing has come or gone for the debounce time.

pub mod config;

pub use config::{ApiToken, ChangesConfig};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::model::{Change, ChangeKind, ChangeSource};
use crate::store::changes::ChangeLog;
use crate::telemetry;

/// Most services tracked; more are counted as overflow.
const MAX_SERVICES: usize = 5_000;
/// Most versions remembered per service; the least recently seen one is
/// forgotten to make room.
const MAX_VERSIONS: usize = 32;
/// Most instances (pods) tracked per service.
const MAX_INSTANCES: usize = 1_024;
/// Departed instances remembered per service, so one that was only quiet
/// and comes back is not counted as new.
const MAX_DEPARTED: usize = 256;
/// Most flag keys tracked per service.
const MAX_FLAG_KEYS: usize = 64;
/// Most variants tracked per flag key.
const MAX_VARIANTS: usize = 16;
/// Evaluations a period needs before variant shares in it mean anything.
const MIN_FLAG_EVALUATIONS: u64 = 20;
/// A variant below this share of a period's evaluations counts as rare.
pub const RARE_SHARE: f64 = 0.05;
/// Kubernetes event reasons remembered per service for deduplication.
const MAX_RECENT_EVENTS: usize = 32;
/// Longest string kept from telemetry in a change (versions, names).
const MAX_VALUE_LEN: usize = 256;
/// Longest Kubernetes event message kept in a description.
const MAX_MESSAGE_LEN: usize = 300;

/// What the detector counted, for the self-metrics.
#[derive(Debug, Default)]
pub struct DetectorCounters {
    /// Services, versions, instances, flag keys or variants not tracked
    /// because a cap was reached.
    pub overflow: AtomicU64,
    /// Kubernetes events folded into a change of the same service and
    /// reason recorded within the debounce time.
    pub deduplicated: AtomicU64,
    /// Rollouts not reported on their own because a version change of the
    /// same service already describes them.
    pub merged_rollouts: AtomicU64,
}

/// A Kubernetes event, as read from an OTLP log record by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct K8sEvent<'a> {
    /// `Killing`, `BackOff`, `ScalingReplicaSet`, ...
    pub reason: &'a str,
    /// The event's message (the log body).
    pub message: &'a str,
    /// Kind of the involved object: `Pod`, `ReplicaSet`, `Deployment`, ...
    pub object_kind: &'a str,
    /// Name of the involved object: `payment-7d9f8c6b5-x2k4q`.
    pub object_name: &'a str,
    /// The service when the record says it (`service.name`,
    /// `k8s.deployment.name`); otherwise it is worked out from the object name.
    pub service: Option<&'a str>,
    /// Event time, Unix nanoseconds.
    pub time_unix_nanos: u64,
}

/// The change kind of a Kubernetes event reason, or `None` for routine
/// events (image pulled, container started) that are not changes.
pub fn k8s_reason_kind(reason: &str) -> Option<ChangeKind> {
    match reason {
        "ScalingReplicaSet" | "SuccessfulRescale" => Some(ChangeKind::Scale),
        "OOMKilled"
        | "OOMKilling"
        | "SystemOOM"
        | "BackOff"
        | "CrashLoopBackOff"
        | "Killing"
        | "Unhealthy"
        | "Evicted"
        | "Evicting"
        | "Preempting"
        | "FailedScheduling"
        | "NodeNotReady"
        | "FailedMount"
        | "FailedAttachVolume"
        | "FailedCreatePodSandBox"
        | "ProbeWarning"
        | "FailedKillPod" => Some(ChangeKind::Infra),
        _ => None,
    }
}

/// Infers changes from telemetry and records them in a [`ChangeLog`].
/// Send + Sync; share it as `Arc<ChangeDetector>`.
#[derive(Debug)]
pub struct ChangeDetector {
    /// Where detected changes go.
    log: Arc<ChangeLog>,
    /// Debounce, timeouts and the flag share-shift threshold.
    config: Settings,
    /// Per service state. A `DashMap` so that requests of different services
    /// never contend; each entry has its own mutex because one call updates
    /// several fields of it together.
    services: DashMap<Box<str>, Mutex<ServiceState>, foldhash::fast::RandomState>,
    /// What was not tracked or not reported, for the self-metrics.
    counters: DetectorCounters,
}

/// The detector's settings in nanoseconds of event time.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rollout_debounce: u64,
    instance_timeout: u64,
    flag_window: u64,
    flag_shift: f64,
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What is known about one service.
#[derive(Debug)]
struct ServiceState {
    /// Latest event time seen from the service. Instances are judged gone
    /// against it, not against the wall clock, so a service whose telemetry
    /// stops altogether does not look like it scaled to zero.
    latest: u64,
    /// End of the baseline period: versions and instances first seen before
    /// it were already there.
    baseline_until: u64,
    /// Versions seen, with when each was last seen.
    versions: Vec<(Box<str>, u64)>,
    /// The version the service runs as far as we know: the last new one.
    current_version: Option<Box<str>>,
    /// When a version change was last recorded; a rollout episode around it
    /// is the same deploy and not reported again.
    last_version_change: Option<u64>,
    /// Instances (pod names or instance ids) with when each was last seen.
    instances: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
    /// Instances judged gone, with when they were last seen.
    departed: Vec<(Box<str>, u64)>,
    /// The instance turnover being gathered, if any.
    rollout: Option<Rollout>,
    /// Event time of the next check for departed instances.
    next_sweep: u64,
    /// Flag keys evaluated by the service.
    flags: Vec<FlagState>,
    /// Kubernetes event reasons recently recorded, with their time.
    recent_events: Vec<(Box<str>, u64)>,
}

/// Instance arrivals and departures not yet reported.
#[derive(Debug, Clone, Copy)]
struct Rollout {
    /// Earliest arrival or departure: when the change began.
    start: u64,
    /// Latest arrival or departure detected; the episode is reported once
    /// nothing happened for the debounce time after it.
    last_activity: u64,
    /// Instances before the episode began.
    instances_before: usize,
    added: usize,
    removed: usize,
}

/// One flag key's variants, counted in consecutive event-time periods.
#[derive(Debug)]
struct FlagState {
    key: Box<str>,
    /// First evaluation seen; the first period is the baseline.
    first_seen: u64,
    /// Index of the current period (event time / flag window).
    period: u64,
    variants: Vec<Variant>,
    /// Evaluations in the current and the previous period.
    current_total: u64,
    previous_total: u64,
}

#[derive(Debug)]
struct Variant {
    name: Box<str>,
    current: u64,
    previous: u64,
    /// Period in which a change about this variant was last recorded, so a
    /// shift is reported once.
    reported_period: Option<u64>,
}

impl ServiceState {
    fn new(time: u64, settings: &Settings) -> Self {
        ServiceState {
            latest: time,
            baseline_until: time.saturating_add(settings.instance_timeout),
            versions: Vec::new(),
            current_version: None,
            last_version_change: None,
            instances: HashMap::default(),
            departed: Vec::new(),
            rollout: None,
            next_sweep: time,
            flags: Vec::new(),
            recent_events: Vec::new(),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

fn telemetry_change(service: &str, kind: ChangeKind, time: u64, description: String) -> Change {
    Change {
        id: 0,
        service: service.to_owned(),
        kind,
        version: None,
        key: None,
        value: None,
        description,
        time_unix_nanos: time,
        link: None,
        external_id: None,
        source: ChangeSource::Telemetry,
    }
}

// === impl ChangeDetector ===

impl ChangeDetector {
    /// A detector recording into `log`, with the debounce, timeouts and
    /// flag threshold of `config`.
    pub fn new(log: Arc<ChangeLog>, config: &ChangesConfig) -> Self {
        ChangeDetector {
            log,
            config: Settings {
                rollout_debounce: nanos(config.rollout_debounce),
                instance_timeout: nanos(config.instance_timeout).max(1),
                flag_window: nanos(config.flag_window).max(1),
                flag_shift: config.flag_shift,
            },
            services: DashMap::default(),
            counters: DetectorCounters::default(),
        }
    }

    /// The log changes are recorded into.
    pub fn log(&self) -> &Arc<ChangeLog> {
        &self.log
    }

    /// Mirrors the change log's and this detector's counters into
    /// self-metrics; called on every tick of the live pipeline.
    pub fn report_metrics(&self) {
        for source in [ChangeSource::Api, ChangeSource::Telemetry] {
            metrics::counter!(telemetry::CHANGES_RECORDED, "source" => source.as_str())
                .absolute(self.log().recorded(source));
        }
        metrics::counter!(telemetry::CHANGES_DROPPED).absolute(self.log().dropped());
        let counters = self.counters();
        for (reason, value) in [
            ("overflow", &counters.overflow),
            ("deduplicated", &counters.deduplicated),
            ("merged_rollout", &counters.merged_rollouts),
        ] {
            metrics::counter!(telemetry::CHANGES_DETECTOR_SKIPPED, "reason" => reason)
                .absolute(value.load(Ordering::Relaxed));
        }
    }

    /// What was not tracked or not reported.
    pub fn counters(&self) -> &DetectorCounters {
        &self.counters
    }

    /// Runs `update` on the state of `service`, creating it (as of `time`)
    /// when it is new and there is room. Returns `None` when it did not run.
    fn with_service<T>(
        &self,
        service: &str,
        time: u64,
        update: impl FnOnce(&mut ServiceState) -> T,
    ) -> Option<T> {
        if let Some(entry) = self.services.get(service) {
            return Some(update(&mut entry.lock()));
        }
        if self.services.len() >= MAX_SERVICES {
            self.counters.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let entry = self
            .services
            .entry(bounded(service, MAX_VALUE_LEN).into())
            .or_insert_with(|| Mutex::new(ServiceState::new(time, &self.config)));
        let result = update(&mut entry.lock());
        Some(result)
    }

    /// Notes that `service` sent spans ending at `time` (the latest end time
    /// of the resource's spans) from an instance running `version`. Either
    /// may be unknown. `instance` is `k8s.pod.name`, else
    /// `service.instance.id`.
    pub fn observe_resource(
        &self,
        service: &str,
        version: Option<&str>,
        instance: Option<&str>,
        time: u64,
    ) {
        let version = version.filter(|version| !version.is_empty());
        let instance = instance.filter(|instance| !instance.is_empty());
        if (version.is_none() && instance.is_none()) || time == 0 {
            return;
        }
        self.with_service(service, time, |state| {
            state.latest = state.latest.max(time);
            if let Some(version) = version {
                self.note_version(service, state, version, time);
            }
            if let Some(instance) = instance {
                self.note_instance(state, instance, time);
            }
            if state.latest >= state.next_sweep {
                self.sweep_instances(state);
            }
            self.close_rollout(service, state, state.latest);
        });
    }

    fn note_version(&self, service: &str, state: &mut ServiceState, version: &str, time: u64) {
        let timeout = self.config.instance_timeout;
        let in_baseline = time < state.baseline_until;
        if let Some(seen) = state
            .versions
            .iter_mut()
            .find(|(name, _)| &**name == version)
        {
            // A version that had gone quiet and is back (a rollback, or a
            // deploy of an older build) is a change too, unless it is the
            // version the service is already known to run.
            let was_active = seen.1.saturating_add(timeout) >= time;
            seen.1 = seen.1.max(time);
            let is_current = state.current_version.as_deref() == Some(version);
            if !was_active && !is_current && !in_baseline {
                let previous = state.current_version.replace(version.into());
                let description = format!(
                    "{service}: version {version} is back{}",
                    previous
                        .as_deref()
                        .map(|previous| format!(" (was {previous})"))
                        .unwrap_or_default()
                );
                self.record_version(service, state, version, time, description);
            }
            return;
        }
        if state.versions.len() >= MAX_VERSIONS {
            self.counters.overflow.fetch_add(1, Ordering::Relaxed);
            // Forget the least recently seen version other than the current
            // one, so a long-lived service keeps noticing new versions.
            let current = state.current_version.clone();
            let oldest = state
                .versions
                .iter()
                .enumerate()
                .filter(|(_, (name, _))| Some(name) != current.as_ref())
                .min_by_key(|(_, (_, last))| *last)
                .map(|(index, _)| index);
            match oldest {
                Some(index) => {
                    state.versions.swap_remove(index);
                }
                None => return,
            }
        }
        let version = bounded(version, MAX_VALUE_LEN);
        state.versions.push((version.into(), time));
        let previous = state.current_version.replace(version.into());
        if in_baseline {
            return;
        }
        let description = match previous {
            Some(previous) => format!("{service}: new version {version} (was {previous})"),
            None => format!("{service}: new version {version}"),
        };
        self.record_version(service, state, version, time, description);
    }

    fn record_version(
        &self,
        service: &str,
        state: &mut ServiceState,
        version: &str,
        time: u64,
        description: String,
    ) {
        state.last_version_change = Some(time);
        let mut change = telemetry_change(service, ChangeKind::Deploy, time, description);
        change.version = Some(version.to_owned());
        self.log.record(change);
    }

    fn note_instance(&self, state: &mut ServiceState, instance: &str, time: u64) {
        if let Some(last) = state.instances.get_mut(instance) {
            *last = (*last).max(time);
            return;
        }
        if state.instances.len() >= MAX_INSTANCES {
            self.counters.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let instance = bounded(instance, MAX_VALUE_LEN);
        state.instances.insert(instance.into(), time);
        if time < state.baseline_until {
            return;
        }
        // An instance judged gone that reports again was only quiet: undo
        // its departure instead of counting an arrival. Pod names are unique,
        // so a real rollout never brings a name back.
        if let Some(index) = state
            .departed
            .iter()
            .position(|(name, _)| &**name == instance)
        {
            state.departed.swap_remove(index);
            if let Some(rollout) = state.rollout.as_mut().filter(|rollout| rollout.removed > 0) {
                rollout.removed -= 1;
                return;
            }
            // Its departure was already reported; its return is an arrival.
        }
        let before = state.instances.len() - 1;
        let rollout = state.rollout.get_or_insert(Rollout {
            start: time,
            last_activity: time,
            instances_before: before,
            added: 0,
            removed: 0,
        });
        rollout.start = rollout.start.min(time);
        rollout.last_activity = rollout.last_activity.max(time);
        rollout.added += 1;
    }

    /// Moves instances silent for the instance timeout (against the
    /// service's latest event time) to the departed list.
    fn sweep_instances(&self, state: &mut ServiceState) {
        let timeout = self.config.instance_timeout;
        state.next_sweep = state.latest.saturating_add(timeout / 4);
        let latest = state.latest;
        let count_before = state.instances.len();
        let mut gone: Vec<(Box<str>, u64)> = Vec::new();
        state.instances.retain(|name, last| {
            let alive = last.saturating_add(timeout) >= latest;
            if !alive {
                gone.push((name.clone(), *last));
            }
            alive
        });
        if gone.is_empty() {
            return;
        }
        for (name, last) in gone {
            let rollout = state.rollout.get_or_insert(Rollout {
                start: last,
                last_activity: latest,
                instances_before: count_before,
                added: 0,
                removed: 0,
            });
            rollout.start = rollout.start.min(last);
            rollout.last_activity = rollout.last_activity.max(latest);
            rollout.removed += 1;
            if state.departed.len() >= MAX_DEPARTED {
                state.departed.remove(0);
            }
            state.departed.push((name, last));
        }
    }

    /// Reports the rollout episode of `state` if nothing came or went for
    /// the debounce time before `now`.
    fn close_rollout(&self, service: &str, state: &mut ServiceState, now: u64) {
        let Some(rollout) = state.rollout else {
            return;
        };
        if rollout
            .last_activity
            .saturating_add(self.config.rollout_debounce)
            > now
        {
            return;
        }
        state.rollout = None;
        let (added, removed) = (rollout.added, rollout.removed);
        if added == 0 && removed == 0 {
            return;
        }
        let running = state.instances.len();
        let before = rollout.instances_before;
        let version_changed = state.last_version_change.is_some_and(|time| {
            time.saturating_add(self.config.instance_timeout) >= rollout.start
                && time <= rollout.last_activity
        });
        let (kind, description) = if added > 0 && removed > 0 {
            if version_changed {
                // The version change already stands for this deploy.
                self.counters
                    .merged_rollouts
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            let version = state
                .current_version
                .as_deref()
                .map(|version| format!(", version {version} unchanged"))
                .unwrap_or_default();
            (
                ChangeKind::Deploy,
                format!(
                    "{service}: rollout replaced instances ({added} new, {removed} gone, \
                     {running} running{version})"
                ),
            )
        } else if added > 0 {
            (
                ChangeKind::Scale,
                format!("{service}: scaled out from {before} to {running} instances"),
            )
        } else {
            (
                ChangeKind::Scale,
                format!("{service}: scaled in from {before} to {running} instances"),
            )
        };
        let mut change = telemetry_change(service, kind, rollout.start, description);
        change.value = Some(running.to_string());
        self.log.record(change);
    }

    /// Reports rollout episodes that have been quiet for the debounce time
    /// as of `now` (the store's clock: event time in replay, the wall clock
    /// live), for services that stopped sending before theirs closed.
    pub fn advance(&self, now: u64) {
        for entry in self.services.iter() {
            let mut state = entry.value().lock();
            if state.rollout.is_some() {
                self.close_rollout(entry.key(), &mut state, now);
            }
        }
    }

    /// Notes one evaluation of flag `key` on a span of `service` that
    /// ended at `time`, serving `variant`.
    pub fn observe_flag(&self, service: &str, key: &str, variant: &str, time: u64) {
        self.observe_flags(service, key, variant, time, 1);
    }

    /// Notes `count` evaluations of flag `key` serving `variant` at `time`
    /// at once (an agent's summary of a window, `crate::ingest::summary`).
    pub fn observe_flags(&self, service: &str, key: &str, variant: &str, time: u64, count: u64) {
        if key.is_empty() || variant.is_empty() || time == 0 || count == 0 {
            return;
        }
        self.with_service(service, time, |state| {
            state.latest = state.latest.max(time);
            self.note_flag(service, state, key, variant, time, count);
        });
    }

    fn note_flag(
        &self,
        service: &str,
        state: &mut ServiceState,
        key: &str,
        variant: &str,
        time: u64,
        count: u64,
    ) {
        let window = self.config.flag_window;
        let period = time / window;
        let flag = match state.flags.iter().position(|flag| &*flag.key == key) {
            Some(index) => &mut state.flags[index],
            None => {
                if state.flags.len() >= MAX_FLAG_KEYS {
                    self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                state.flags.push(FlagState {
                    key: bounded(key, MAX_VALUE_LEN).into(),
                    first_seen: time,
                    period,
                    variants: Vec::new(),
                    current_total: 0,
                    previous_total: 0,
                });
                let last = state.flags.len() - 1;
                &mut state.flags[last]
            }
        };
        // Move the periods on; a late evaluation from the previous period
        // still counts there, older ones only make their variant known.
        let slot = if period > flag.period {
            let adjacent = period == flag.period + 1;
            for variant in &mut flag.variants {
                variant.previous = if adjacent { variant.current } else { 0 };
                variant.current = 0;
            }
            flag.previous_total = if adjacent { flag.current_total } else { 0 };
            flag.current_total = 0;
            flag.period = period;
            Some(true)
        } else if period == flag.period {
            Some(true)
        } else if period + 1 == flag.period {
            Some(false)
        } else {
            None
        };
        let in_baseline = time < flag.first_seen.saturating_add(window);
        let index = match flag
            .variants
            .iter()
            .position(|known| &*known.name == variant)
        {
            Some(index) => index,
            None => {
                if flag.variants.len() >= MAX_VARIANTS {
                    self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                flag.variants.push(Variant {
                    name: bounded(variant, MAX_VALUE_LEN).into(),
                    current: 0,
                    previous: 0,
                    reported_period: None,
                });
                let index = flag.variants.len() - 1;
                if !in_baseline {
                    flag.variants[index].reported_period = Some(flag.period);
                    let description = format!(
                        "{service}: flag {} serves a new variant {}",
                        flag.key, flag.variants[index].name
                    );
                    self.record_flag(service, &flag.key, variant, time, description);
                }
                index
            }
        };
        match slot {
            Some(true) => {
                flag.variants[index].current += count;
                flag.current_total += count;
            }
            Some(false) => {
                flag.variants[index].previous += count;
                flag.previous_total += count;
            }
            None => {}
        }
        if slot != Some(true)
            || flag.current_total < MIN_FLAG_EVALUATIONS
            || flag.previous_total < MIN_FLAG_EVALUATIONS
        {
            return;
        }
        let known = &flag.variants[index];
        // Reported in this period or the one before: a flip that straddles
        // a period boundary is one change, not a new variant and a shift.
        if known
            .reported_period
            .is_some_and(|reported| reported + 1 >= flag.period)
        {
            return;
        }
        let previous_share = known.previous as f64 / flag.previous_total as f64;
        let current_share = known.current as f64 / flag.current_total as f64;
        if previous_share < RARE_SHARE && current_share >= self.config.flag_shift {
            flag.variants[index].reported_period = Some(flag.period);
            let description = format!(
                "{service}: flag {} variant {} rose from {:.0}% to {:.0}% of evaluations",
                flag.key,
                flag.variants[index].name,
                previous_share * 100.0,
                current_share * 100.0
            );
            self.record_flag(service, &flag.key, variant, time, description);
        }
    }

    fn record_flag(&self, service: &str, key: &str, variant: &str, time: u64, description: String) {
        let mut change = telemetry_change(service, ChangeKind::FeatureFlag, time, description);
        change.key = Some(key.to_owned());
        change.value = Some(bounded(variant, MAX_VALUE_LEN).to_owned());
        self.log.record(change);
    }

    /// Records a Kubernetes event as a change when its reason is one that
    /// matters (see [`k8s_reason_kind`]). Events of one service and reason
    /// within the debounce time are one change (a crash-looping pod emits
    /// `BackOff` every few seconds; a rollout emits `Killing` per pod).
    /// Returns whether a change was recorded.
    pub fn observe_k8s_event(&self, event: &K8sEvent<'_>) -> bool {
        let Some(kind) = k8s_reason_kind(event.reason) else {
            return false;
        };
        let service = match event.service.filter(|service| !service.is_empty()) {
            Some(service) => service.to_owned(),
            None => match self.service_of_object(event.object_kind, event.object_name) {
                Some(service) => service,
                None => return false,
            },
        };
        let time = event.time_unix_nanos;
        let debounce = self.config.rollout_debounce;
        let fresh = self.with_service(&service, time, |state| {
            let recent = state
                .recent_events
                .iter_mut()
                .find(|(reason, _)| &**reason == event.reason);
            match recent {
                Some((_, last)) if last.abs_diff(time) < debounce => false,
                Some((_, last)) => {
                    *last = (*last).max(time);
                    true
                }
                None => {
                    if state.recent_events.len() >= MAX_RECENT_EVENTS {
                        state.recent_events.remove(0);
                    }
                    state
                        .recent_events
                        .push((bounded(event.reason, MAX_VALUE_LEN).into(), time));
                    true
                }
            }
        });
        match fresh {
            Some(true) => {}
            Some(false) => {
                self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            None => return false,
        }
        let object = format!(
            "{}/{}",
            bounded(event.object_kind, MAX_VALUE_LEN),
            bounded(event.object_name, MAX_VALUE_LEN)
        );
        let message = bounded(event.message.trim(), MAX_MESSAGE_LEN);
        let description = if message.is_empty() {
            format!("{service}: Kubernetes {} on {object}", event.reason)
        } else {
            format!(
                "{service}: Kubernetes {} on {object}: {message}",
                event.reason
            )
        };
        let mut change = telemetry_change(&service, kind, time, description);
        change.key = Some(bounded(event.reason, MAX_VALUE_LEN).to_owned());
        change.value = Some(object);
        self.log.record(change);
        true
    }

    /// The service a Kubernetes object belongs to: the longest known service
    /// name that the object's name is or starts with (followed by `-`),
    /// else the name without the suffixes Kubernetes adds to pods and
    /// replica sets. Nodes and other cluster objects belong to no service.
    fn service_of_object(&self, kind: &str, name: &str) -> Option<String> {
        if name.is_empty() || matches!(kind, "Node" | "Namespace" | "PersistentVolume") {
            return None;
        }
        let known = self
            .services
            .iter()
            .map(|entry| entry.key().to_string())
            .filter(|service| {
                name == service
                    || name
                        .strip_prefix(service.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|service| service.len());
        if known.is_some() {
            return known;
        }
        Some(workload_name(kind, name).to_owned())
    }
}

/// The characters Kubernetes draws generated name suffixes from: no vowels
/// (so no words are spelt by chance) and no look-alike digits.
const GENERATED_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Whether `segment` looks like a suffix Kubernetes generates, of a length
/// it uses for pods (5) or replica-set template hashes (6 to 10). Words such
/// as `proxy` or `worker` have vowels and are kept.
fn generated(segment: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&segment.len())
        && segment
            .bytes()
            .all(|byte| GENERATED_ALPHABET.contains(&byte))
}

/// The workload (deployment, stateful set, daemon set) name of a pod or
/// replica set name: `payment-7d9f8c6b5-x2k4q` -> `payment`, `db-0` -> `db`.
pub fn workload_name<'a>(kind: &str, name: &'a str) -> &'a str {
    let strip = |name: &'a str, lengths: std::ops::RangeInclusive<usize>| {
        name.rsplit_once('-')
            .filter(|(head, tail)| !head.is_empty() && generated(tail, lengths.clone()))
            .map(|(head, _)| head)
    };
    match kind {
        "Pod" => {
            if let Some(head) = strip(name, 5..=5) {
                // A deployment's pod also carries the replica set's hash.
                return strip(head, 6..=10).unwrap_or(head);
            }
            // A stateful set's pod ends in its ordinal.
            name.rsplit_once('-')
                .filter(|(head, tail)| {
                    !head.is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
                })
                .map_or(name, |(head, _)| head)
        }
        "ReplicaSet" => strip(name, 6..=10).unwrap_or(name),
        _ => name,
    }
}

#[cfg(test)]
mod tests;
