//! Alert delivery: incident events become Prometheus Alertmanager alerts
//! (v2 API) and generic JSON webhook posts.
//!
//! ```text
//!  incident events ──> dispatcher ──┬─> queue ─> delivery loop ─> Alertmanager 1
//!  (broadcast)        (Tracker:     ├─> queue ─> delivery loop ─> Alertmanager 2
//!                      labels,      └─> queue ─> delivery loop ─> webhook
//!                      resends)
//! ```
//!
//! - [`config`]: the typed `alerting:` settings and the checks of its values.
//! - `mapping`: incident -> labels and annotations (pure).
//! - [`alertmanager`]: which alerts are live, resend and `endsAt` rules, and
//!   the v2 request.
//! - `webhook`: the JSON webhook.
//! - `queue`, `sender`: the bounded per-target queue and the delivery loop
//!   with backoff.
//!
//! Invariants: every alert goes to every Alertmanager (they deduplicate
//! among themselves; delivery is never load-balanced); one slow or
//! unreachable target never delays another (each has its own queue and
//! loop); detection never waits for delivery (events come over a broadcast
//! channel, and a lagging dispatcher is told how many it missed); nothing
//! is dropped without being counted in the self-metrics.

pub mod alertmanager;
pub mod config;

mod client;
mod mapping;
mod queue;
mod sender;
mod webhook;

#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use reqwest::Url;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use alertmanager::{ends_at, AlertStatus, PendingAlert, Tracker};
pub use client::{ClientError, SendError};
pub use config::{AlertConfig, Auth, Secret, TargetConfig, TlsConfig};
pub use mapping::{alertname, Mapping};
pub use sender::Backoff;

use alertmanager::{AlertKey, AlertmanagerSink};
use sender::{Outbox, Sink};
use webhook::WebhookSink;

use crate::model::IncidentEvent;
use crate::telemetry;

/// Why alert delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A target's client could not be set up (unreadable file, bad
    /// certificate).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The queue of one Alertmanager.
type AlertmanagerOutbox = Outbox<AlertKey, PendingAlert>;
/// The queue of one webhook: events by sequence number.
type WebhookOutbox = Outbox<u64, Arc<IncidentEvent>>;

/// The alert delivery of one process: built from the settings at start-up,
/// then [`Alerter::run`] until shutdown.
pub struct Alerter {
    /// Labels and resend state of Alertmanager alerts; `None` without
    /// Alertmanagers.
    tracker: Option<Tracker>,
    alertmanagers: Vec<(Arc<AlertmanagerOutbox>, AlertmanagerSink)>,
    webhooks: Vec<(Arc<WebhookOutbox>, WebhookSink)>,
    resend_interval: Duration,
    backoff: Backoff,
    /// How long the shutdown flush may take.
    flush_for: Duration,
    /// Events of incidents still open at the last stop, replayed into the
    /// dispatcher before any live event (see [`Alerter::restore`]).
    restored: Vec<IncidentEvent>,
}

/// Default bound of the shutdown flush.
const FLUSH_FOR: Duration = Duration::from_secs(3);

impl Alerter {
    /// Sets up delivery to the configured targets; `None` when there are
    /// none. `admin` is the admin server's address, the default base of
    /// `generatorURL` links. Fails when a file named in the config cannot be
    /// used.
    pub fn new(config: &AlertConfig, admin: SocketAddr) -> Result<Option<Alerter>, AlertError> {
        if !config.enabled() {
            return Ok(None);
        }
        let base = match &config.external_url {
            Some(url) => url.as_str().to_owned(),
            None => format!("http://{admin}"),
        };
        let mapping = Mapping::new(config.labels.clone(), config.runbook_url.clone(), &base);
        let mut alertmanagers = Vec::with_capacity(config.alertmanagers.len());
        for (index, target) in config.alertmanagers.iter().enumerate() {
            let field = format!("alerting.alertmanagers[{index}]");
            let client = client::Client::new(target, api_url(&target.url), &field)?;
            let outbox = Outbox::new(
                "alertmanager",
                client.name().to_owned(),
                config.queue_capacity,
            );
            alertmanagers.push((
                Arc::new(outbox),
                AlertmanagerSink {
                    client,
                    resend_interval: config.resend_interval,
                },
            ));
        }
        let mut webhooks = Vec::with_capacity(config.webhooks.len());
        for (index, target) in config.webhooks.iter().enumerate() {
            let field = format!("alerting.webhooks[{index}]");
            let client = client::Client::new(target, target.url.clone(), &field)?;
            let outbox = Outbox::new("webhook", client.name().to_owned(), config.queue_capacity);
            webhooks.push((Arc::new(outbox), WebhookSink { client }));
        }
        Ok(Some(Alerter {
            tracker: (!alertmanagers.is_empty())
                .then(|| Tracker::new(mapping, config.resolved_resend_for)),
            alertmanagers,
            webhooks,
            resend_interval: config.resend_interval,
            backoff: Backoff::default(),
            flush_for: FLUSH_FOR,
            restored: Vec::new(),
        }))
    }

    /// Uses `backoff` between attempts on a failing target.
    pub fn with_backoff(mut self, backoff: Backoff) -> Alerter {
        self.backoff = backoff;
        self
    }

    /// Bounds the shutdown flush by `flush_for` (default 3 s).
    pub fn with_flush_timeout(mut self, flush_for: Duration) -> Alerter {
        self.flush_for = flush_for;
        self
    }

    /// Takes up the incidents a previous run left open, so a restarted
    /// collector keeps their alerts firing at once instead of waiting for
    /// their next update (Alertmanager would otherwise let them expire
    /// after `endsAt`). `events` replay each as it was opened, then as it
    /// was last recorded (`history::tasks::open_incident_events` reads
    /// them): the labels are those it first fired with (the same alert, not
    /// a new one), an escalation is taken up again, and the annotations are
    /// the latest.
    pub fn restore(&mut self, events: Vec<IncidentEvent>) {
        self.restored.extend(events);
    }

    /// Delivers `events` until `stop` is cancelled; then takes the events
    /// still in the channel, and flushes every queue for at most the flush
    /// bound. Cancel `stop` after detection has stopped, so its last events
    /// are in the channel.
    pub async fn run(
        self,
        mut events: broadcast::Receiver<IncidentEvent>,
        stop: CancellationToken,
    ) {
        let Alerter {
            tracker,
            alertmanagers,
            webhooks,
            resend_interval,
            backoff,
            flush_for,
            restored,
        } = self;
        let senders_stop = CancellationToken::new();
        let mut loops = JoinSet::new();
        let senders = Senders {
            backoff,
            stop: &senders_stop,
            flush_for,
        };
        let am_outboxes = senders.spawn(alertmanagers, &mut loops);
        let hook_outboxes = senders.spawn(webhooks, &mut loops);
        let mut dispatch = Dispatch {
            tracker,
            alertmanagers: am_outboxes,
            webhooks: hook_outboxes,
            sequence: 0,
        };
        // Restored incidents go to the Alertmanagers only: webhook
        // receivers already had their events, and a webhook post is an
        // event, not a state that expires.
        for event in restored {
            dispatch.send_to_alertmanagers(&event);
        }

        let mut resend =
            tokio::time::interval_at(Instant::now() + resend_interval, resend_interval);
        resend.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                received = events.recv(), if events_open => match received {
                    Ok(event) => dispatch.event(event),
                    Err(RecvError::Lagged(missed)) => dispatch.missed(missed),
                    // Detection has gone; firing alerts are still re-sent
                    // until shutdown.
                    Err(RecvError::Closed) => events_open = false,
                },
                _ = resend.tick() => dispatch.resend(),
            }
        }
        loop {
            match events.try_recv() {
                Ok(event) => dispatch.event(event),
                Err(TryRecvError::Lagged(missed)) => dispatch.missed(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        senders_stop.cancel();
        while loops.join_next().await.is_some() {}
    }
}

/// The queue of a sink's target.
type SinkOutbox<S> = Outbox<<S as Sink>::Key, <S as Sink>::Item>;

/// How the delivery loops run: their backoff, stop and flush bound.
struct Senders<'a> {
    backoff: Backoff,
    stop: &'a CancellationToken,
    flush_for: Duration,
}

impl Senders<'_> {
    /// Starts one delivery loop per target; returns their queues.
    fn spawn<S: Sink>(
        &self,
        targets: Vec<(Arc<SinkOutbox<S>>, S)>,
        loops: &mut JoinSet<()>,
    ) -> Vec<Arc<SinkOutbox<S>>> {
        let mut outboxes = Vec::with_capacity(targets.len());
        for (outbox, sink) in targets {
            outboxes.push(Arc::clone(&outbox));
            loops.spawn(sender::deliver(
                sink,
                outbox,
                self.backoff,
                self.stop.clone(),
                self.flush_for,
            ));
        }
        outboxes
    }
}

/// The dispatcher's state: turns events into queued items for each target.
struct Dispatch {
    tracker: Option<Tracker>,
    alertmanagers: Vec<Arc<AlertmanagerOutbox>>,
    webhooks: Vec<Arc<WebhookOutbox>>,
    /// Queue keys of webhook events (each event is its own entry).
    sequence: u64,
}

impl Dispatch {
    fn event(&mut self, event: IncidentEvent) {
        self.send_to_alertmanagers(&event);
        if !self.webhooks.is_empty() {
            let event = Arc::new(event);
            let sequence = self.sequence;
            self.sequence = self.sequence.wrapping_add(1);
            for outbox in &self.webhooks {
                outbox.push([(sequence, Arc::clone(&event))]);
            }
        }
    }

    fn send_to_alertmanagers(&mut self, event: &IncidentEvent) {
        if let Some(tracker) = &mut self.tracker {
            let due = tracker.apply(event, Instant::now(), alertmanager::wall_now());
            for outbox in &self.alertmanagers {
                outbox.push(due.iter().cloned());
            }
        }
    }

    fn resend(&mut self) {
        if let Some(tracker) = &mut self.tracker {
            let due = tracker.resend(Instant::now());
            if due.is_empty() {
                return;
            }
            for outbox in &self.alertmanagers {
                outbox.push(due.iter().cloned());
            }
        }
    }

    fn missed(&self, missed: u64) {
        counter!(telemetry::ALERTS_EVENTS_MISSED).increment(missed);
        tracing::warn!(
            missed,
            "alerting fell behind the incident events and missed some"
        );
    }
}

/// `POST /api/v2/alerts` under an Alertmanager's base URL (which may have a
/// path prefix, e.g. behind a proxy).
fn api_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_path_goes_under_the_base() {
        let url = |text: &str| api_url(&Url::parse(text).expect("url")).to_string();
        assert_eq!(url("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(url("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(url("https://x/am/"), "https://x/am/api/v2/alerts");
    }
}
