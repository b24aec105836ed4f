//! The span analysis of one window as plain counts, and counts added back:
//! what an agent sends its gateway (`crate::agent`) and what the gateway
//! records (`crate::ingest::summary`), so the gateway's drill-down, cohorts
//! and repeated-call counts are those of the spans the agents saw.
//!
//! Counts are additive: the summaries of several agents for one service
//! and window add up to what one analyzer would have counted, except where
//! a sketch was full (a key with more values than `sketch_size`): then the
//! counts are the sketch's upper bounds, as the analysis reads them anyway.

use std::sync::Arc;

use super::sketch::SpaceSaving;
use super::{
    ring_slot, CallStats, CallWindow, DrillWindow, SpanAnalyzer, DRILL_DOWN_KEYS, FLAG_KEY,
    FLAG_SEPARATOR, MAX_CALLEES,
};
use crate::store::OVERFLOW;

/// One service's span analysis in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSummary {
    /// Entry spans counted by the drill-down, and the bad ones among them.
    pub spans: u64,
    pub bad: u64,
    /// Attribute values of the entry spans: (key as reported, value, spans,
    /// bad spans, spans slower than their operation's median; the last is
    /// counted for the cohort keys only). Flags are `feature_flag.<key>`
    /// with the variant as value.
    pub values: Vec<(String, String, u64, u64, u64)>,
    /// Calls per callee.
    pub calls: Vec<(Arc<str>, CallStats)>,
}

impl SpanAnalyzer {
    /// Services the analysis holds state for.
    pub fn service_names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .services
            .iter()
            .map(|entry| Arc::clone(entry.key()))
            .collect();
        names.sort();
        names
    }

    /// What the analysis counted for `service` in `window`, if anything.
    pub fn window_summary(&self, service: &str, window: i64) -> Option<WindowSummary> {
        let state = self.services.get(service).map(|state| Arc::clone(&state))?;
        let mut summary = WindowSummary::default();
        {
            let drill = state.drill.lock();
            if let Some(slot) = drill.windows.iter().find(|slot| slot.index == Some(window)) {
                summary.spans = slot.spans;
                summary.bad = slot.bad;
                for (key, sketches) in slot.keys.iter().enumerate() {
                    let Some(sketches) = sketches else {
                        continue;
                    };
                    let count_in = |sketch: &SpaceSaving, value: &str| {
                        sketch
                            .counters()
                            .iter()
                            .find(|counter| counter.value == value)
                            .map_or(0, |counter| counter.count)
                    };
                    for counter in sketches.all.counters() {
                        let bad = count_in(&sketches.bad, &counter.value);
                        let slower = sketches
                            .slower
                            .as_ref()
                            .map_or(0, |sketch| count_in(sketch, &counter.value));
                        let (name, value) = self.key_name(key, &counter.value);
                        summary
                            .values
                            .push((name, value, counter.count, bad, slower));
                    }
                }
            }
        }
        {
            let ring = state.calls.lock();
            if let Some(slot) = ring.iter().find(|slot| slot.index == Some(window)) {
                summary.calls = slot.callees.clone();
            }
        }
        let empty = summary.spans == 0 && summary.values.is_empty() && summary.calls.is_empty();
        (!empty).then_some(summary)
    }

    /// The sketch key (index) and stored value of a reported key and value:
    /// the inverse of `key_name`. `None` for a key this analyzer does not
    /// count (an extra key configured on the agent only).
    fn key_index(&self, name: &str, value: &str) -> Option<(usize, String)> {
        if let Some(index) = DRILL_DOWN_KEYS[..FLAG_KEY]
            .iter()
            .position(|key| *key == name)
        {
            return Some((index, value.to_owned()));
        }
        if let Some(flag) = name.strip_prefix("feature_flag.") {
            return Some((FLAG_KEY, format!("{flag}{FLAG_SEPARATOR}{value}")));
        }
        let extra = &self.config.attributes;
        if let Some(slot) = extra.iter().position(|key| key == name) {
            return Some((DRILL_DOWN_KEYS.len() + slot, value.to_owned()));
        }
        // A pattern (`*.tenant`) keeps the matching key with the value.
        let slot = extra.iter().position(|key| {
            key.strip_prefix('*')
                .is_some_and(|suffix| name.ends_with(suffix))
        })?;
        Some((
            DRILL_DOWN_KEYS.len() + slot,
            format!("{name}{FLAG_SEPARATOR}{value}"),
        ))
    }

    /// Adds entry-span totals of `service` in `window` (a summary's).
    /// Returns false when the window is older than the analysis keeps.
    pub fn add_entry_spans(
        &self,
        service: &Arc<str>,
        window: i64,
        spans: u64,
        bad: u64,
        now: u64,
    ) -> bool {
        let state = self.state(service, now);
        let mut drill = state.drill.lock();
        let Some(slot) = ring_slot(
            &mut drill.windows,
            self.n_windows,
            window,
            |slot: &DrillWindow| slot.index,
            DrillWindow::reset,
        ) else {
            return false;
        };
        slot.spans = slot.spans.saturating_add(spans);
        slot.bad = slot.bad.saturating_add(bad);
        true
    }

    /// Adds the count of one attribute value of `service`'s entry spans in
    /// `window`. Returns false when the key is not one this analysis
    /// counts, or the window is too old.
    #[allow(clippy::too_many_arguments)] // each is one plain fact of the count
    pub fn add_value(
        &self,
        service: &Arc<str>,
        window: i64,
        key: &str,
        value: &str,
        (spans, bad, slower): (u64, u64, u64),
        now: u64,
    ) -> bool {
        let Some((index, stored)) = self.key_index(key, value) else {
            return false;
        };
        let sketch_size = self.config.sketch_size.get();
        let state = self.state(service, now);
        let mut drill = state.drill.lock();
        let Some(slot) = ring_slot(
            &mut drill.windows,
            self.n_windows,
            window,
            |slot: &DrillWindow| slot.index,
            DrillWindow::reset,
        ) else {
            return false;
        };
        slot.add(index, &stored, spans, bad, slower, sketch_size);
        true
    }

    /// Adds calls from `caller` to `callee` in `window`. Returns false when
    /// the window is too old.
    pub fn add_calls(
        &self,
        caller: &Arc<str>,
        callee: &str,
        window: i64,
        stats: CallStats,
        now: u64,
    ) -> bool {
        let state = self.state(caller, now);
        let mut ring = state.calls.lock();
        let Some(slot) = ring_slot(
            &mut ring,
            self.n_windows,
            window,
            |slot: &CallWindow| slot.index,
            |slot, index| {
                slot.index = Some(index);
                slot.callees.clear();
            },
        ) else {
            return false;
        };
        match slot.callees.iter().position(|(name, _)| &**name == callee) {
            Some(position) => slot.callees[position].1.add(stats),
            None if slot.callees.len() < MAX_CALLEES => {
                slot.callees.push((Arc::from(callee), stats))
            }
            None => match slot
                .callees
                .iter_mut()
                .find(|(name, _)| &**name == OVERFLOW)
            {
                Some((_, total)) => total.add(stats),
                None => slot.callees.push((Arc::from(OVERFLOW), stats)),
            },
        }
        true
    }
}
