//! The generic JSON webhook: each incident event (opened, updated,
//! resolved) is POSTed, as the same JSON the rest of triage uses
//! (`{"event": "opened", "incident": {...}}`), to every configured URL.
//!
//! Unlike Alertmanager alerts, events are not re-sent on an interval and
//! are not merged in the queue: a webhook consumer sees every transition
//! once, in order, with the same queue, retry and auth behaviour.

use std::sync::Arc;

use super::client::{Client, SendError};
use super::sender::Sink;
use crate::model::IncidentEvent;

/// Posts incident events to one webhook, one event per request.
#[derive(Debug)]
pub(crate) struct WebhookSink {
    pub(crate) client: Client,
}

impl Sink for WebhookSink {
    /// A sequence number: every event is its own queue entry.
    type Key = u64;
    type Item = Arc<IncidentEvent>;
    // One event per request keeps the body the plain event JSON, which is
    // what most tools accepting webhooks can parse without a template.
    const BATCH: usize = 1;
    const KIND: &'static str = "webhook";

    async fn send(&self, batch: &[&Arc<IncidentEvent>]) -> Result<(), SendError> {
        for event in batch {
            let body = serde_json::to_vec(&***event)
                .map_err(|error| SendError::Rejected(format!("cannot encode event: {error}")))?;
            self.client.post_json(body).await?;
        }
        Ok(())
    }
}
