//! (temporary stub while the OTLP/HTTP receiver is written in a scratch crate)
use std::sync::Arc;

use super::Sink;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_request_body_size: usize,
}

pub fn router(_sink: Arc<dyn Sink>, _config: HttpConfig) -> axum::Router {
    axum::Router::new()
}
