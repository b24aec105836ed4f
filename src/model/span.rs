//! The span and resource views every stage reads, and what spans mean:
//! the operation a span is recorded under, the callee a client span names,
//! and whether a span is usable at all.
//!
//! The views borrow from the request they were read from (the protobuf
//! wire reader and the JSON readers in `receiver` build them; nothing here
//! knows an encoding), so recording allocates nothing per span.

use std::ops::Range;

/// Span kinds as the OTLP protocol numbers them (`Span.SpanKind`).
pub mod kind {
    pub const UNSPECIFIED: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const SERVER: i32 = 2;
    pub const CLIENT: i32 = 3;
    pub const PRODUCER: i32 = 4;
    pub const CONSUMER: i32 = 5;
}

/// Service name used when a resource has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Callee name for client spans whose peer could not be identified.
pub const UNKNOWN_PEER: &str = "unknown";

/// A borrowed attribute value, for the few types recording reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Bytes, arrays, key-value lists, string-table references: not read.
    Other,
}

/// The span attributes recording reads, borrowed from the request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SpanAttributes<'a> {
    pub http_route: Option<&'a str>,
    pub http_status: Option<i64>,
    pub peer_service: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub db_system: Option<&'a str>,
    pub db_namespace: Option<&'a str>,
    pub messaging_destination: Option<&'a str>,
    /// `rpc.method`.
    pub rpc_method: Option<&'a str>,
    /// `feature_flag.key`, from the span's attributes or its first
    /// `feature_flag.evaluation` event.
    pub feature_flag_key: Option<&'a str>,
    /// `feature_flag.result.variant` (or the older `feature_flag.variant`),
    /// from the same place as the key.
    pub feature_flag_variant: Option<&'a str>,
}

impl<'a> SpanAttributes<'a> {
    /// Whether recording reads the attribute `key`.
    pub fn reads(key: &[u8]) -> bool {
        matches!(
            key,
            b"http.route"
                | b"http.response.status_code"
                | b"http.status_code"
                | b"peer.service"
                | b"server.address"
                | b"net.peer.name"
                | b"db.system.name"
                | b"db.system"
                | b"db.namespace"
                | b"db.name"
                | b"messaging.destination.name"
                | b"rpc.method"
                | b"feature_flag.key"
                | b"feature_flag.result.variant"
                | b"feature_flag.variant"
        )
    }

    /// Takes note of one attribute if recording reads it.
    pub fn note(&mut self, key: &[u8], value: ValueRef<'a>) {
        let text = match value {
            ValueRef::Str(text) => Some(text),
            _ => None,
        };
        match key {
            b"http.route" => self.http_route = text,
            b"http.response.status_code" | b"http.status_code" => {
                self.http_status = match value {
                    ValueRef::Int(code) => Some(code),
                    ValueRef::Str(text) => text.parse().ok(),
                    ValueRef::Double(code) => Some(code as i64),
                    _ => None,
                }
            }
            b"peer.service" => self.peer_service = text,
            b"server.address" | b"net.peer.name" => {
                self.server_address = self.server_address.or(text)
            }
            b"db.system.name" | b"db.system" => self.db_system = self.db_system.or(text),
            b"db.namespace" | b"db.name" => self.db_namespace = self.db_namespace.or(text),
            b"messaging.destination.name" => self.messaging_destination = text,
            b"rpc.method" => self.rpc_method = text,
            b"feature_flag.key" => self.feature_flag_key = text,
            b"feature_flag.result.variant" => self.feature_flag_variant = text,
            b"feature_flag.variant" => {
                self.feature_flag_variant = self.feature_flag_variant.or(text)
            }
            _ => {}
        }
    }

    /// Takes the flag of a `feature_flag.evaluation` event, unless the span
    /// already names one (its own attributes win; then the first event).
    pub fn note_flag_event(&mut self, key: Option<&'a str>, variant: Option<&'a str>) {
        if self.feature_flag_key.is_none() && key.is_some() {
            self.feature_flag_key = key;
            self.feature_flag_variant = variant;
        }
    }
}

/// Name of the span event that records a feature flag evaluation.
pub const FLAG_EVENT: &str = "feature_flag.evaluation";

/// Whether an event attribute key is one a flag evaluation is read from.
pub fn is_flag_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"feature_flag.key" | b"feature_flag.result.variant" | b"feature_flag.variant"
    )
}

/// Resource attributes the analysis and change detection read, borrowed
/// from the request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ResourceAttributes<'a> {
    /// `service.version`.
    pub service_version: Option<&'a str>,
    /// `service.instance.id`.
    pub service_instance_id: Option<&'a str>,
    /// `k8s.pod.name`.
    pub k8s_pod_name: Option<&'a str>,
    /// `host.name`.
    pub host_name: Option<&'a str>,
    /// `k8s.node.name`.
    pub k8s_node_name: Option<&'a str>,
    /// `cloud.region`.
    pub cloud_region: Option<&'a str>,
    /// `cloud.availability_zone`.
    pub cloud_availability_zone: Option<&'a str>,
    /// `deployment.environment.name`, or the older `deployment.environment`.
    pub deployment_environment: Option<&'a str>,
}

impl<'a> ResourceAttributes<'a> {
    /// Whether the reader keeps the resource attribute `key`.
    pub fn reads(key: &[u8]) -> bool {
        matches!(
            key,
            b"service.version"
                | b"service.instance.id"
                | b"k8s.pod.name"
                | b"host.name"
                | b"k8s.node.name"
                | b"cloud.region"
                | b"cloud.availability_zone"
                | b"deployment.environment.name"
                | b"deployment.environment"
        )
    }

    /// Takes note of one resource attribute if it is one of those read.
    /// Only string values are kept: these attributes are strings by
    /// convention.
    pub fn note(&mut self, key: &[u8], value: ValueRef<'a>) {
        let ValueRef::Str(text) = value else {
            return;
        };
        let text = Some(text);
        match key {
            b"service.version" => self.service_version = text,
            b"service.instance.id" => self.service_instance_id = text,
            b"k8s.pod.name" => self.k8s_pod_name = text,
            b"host.name" => self.host_name = text,
            b"k8s.node.name" => self.k8s_node_name = text,
            b"cloud.region" => self.cloud_region = text,
            b"cloud.availability_zone" => self.cloud_availability_zone = text,
            b"deployment.environment.name" => self.deployment_environment = text,
            // The older key yields to the newer one, whatever the order.
            b"deployment.environment" => {
                self.deployment_environment = self.deployment_environment.or(text)
            }
            _ => {}
        }
    }
}

/// Most extra attribute keys a reader looks for (`analyze.attributes`).
pub const MAX_EXTRA_KEYS: usize = 8;

/// One configured extra key: exact, or `*suffix` (e.g. `*.tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExtraKey {
    Exact(Box<[u8]>),
    Suffix(Box<[u8]>),
}

/// The extra span attribute keys whose values the readers collect, at most
/// [`MAX_EXTRA_KEYS`]. A key is matched exactly, or, when it starts with
/// `*`, as a suffix (`*.tenant` matches `app.tenant` and `shop.tenant`).
/// With no keys the lookup is one branch per attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraKeys {
    keys: Vec<ExtraKey>,
    /// Shortest length a matching key can have: rejects most keys at once.
    min_len: usize,
}

impl ExtraKeys {
    /// No extra keys.
    pub fn none() -> Self {
        ExtraKeys::default()
    }

    /// The keys as configured; past [`MAX_EXTRA_KEYS`] the rest are ignored
    /// (configuration refuses more, so this only guards direct callers).
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        let keys: Vec<ExtraKey> = keys
            .iter()
            .take(MAX_EXTRA_KEYS)
            .map(|key| match key.as_ref().strip_prefix('*') {
                Some(suffix) => ExtraKey::Suffix(suffix.as_bytes().into()),
                None => ExtraKey::Exact(key.as_ref().as_bytes().into()),
            })
            .collect();
        let min_len = keys
            .iter()
            .map(|key| match key {
                ExtraKey::Exact(bytes) | ExtraKey::Suffix(bytes) => bytes.len(),
            })
            .min()
            .unwrap_or(usize::MAX);
        ExtraKeys { keys, min_len }
    }

    /// Whether there are no extra keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of extra keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The slot (position in the configured list) an attribute key matches.
    #[inline]
    pub fn slot(&self, key: &[u8]) -> Option<u8> {
        if key.len() < self.min_len {
            return None;
        }
        self.keys
            .iter()
            .position(|candidate| match candidate {
                ExtraKey::Exact(bytes) => key == &bytes[..],
                // The last byte first: most keys differ there, and it
                // spares a call to compare the rest.
                ExtraKey::Suffix(bytes) => match bytes.last() {
                    Some(last) => key.last() == Some(last) && key.ends_with(bytes),
                    None => true,
                },
            })
            .map(|slot| slot as u8)
    }
}

/// The value of an extra key on one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtraValue<'a> {
    /// Index of the span in [`TraceBatch::spans`].
    pub span: u32,
    /// Which configured key matched ([`ExtraKeys::slot`]).
    pub slot: u8,
    /// The attribute's own key (a `*.tenant` pattern matches several).
    pub key: &'a [u8],
    pub value: ValueRef<'a>,
}

/// The fields of one span that recording reads.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub attributes: SpanAttributes<'a>,
}

/// Spans of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceView<'a> {
    /// `service.name`, if the resource has one.
    pub service_name: Option<&'a str>,
    /// The other resource attributes read.
    pub attributes: ResourceAttributes<'a>,
    /// This resource's spans in [`TraceBatch::spans`].
    pub spans: Range<usize>,
}

/// A whole trace request, read and checked, borrowing from its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceBatch<'a> {
    pub resources: Vec<ResourceView<'a>>,
    pub spans: Vec<SpanView<'a>>,
    /// Values of the configured extra keys, in span order (empty unless
    /// the batch was read with [`ExtraKeys`]).
    pub extras: Vec<ExtraValue<'a>>,
}

/// The callee a client span names itself, when no traced server answered
/// it: `peer.service`, else the messaging destination, else
/// `server.address` (a database or cache host, an external API), else the
/// database system. A database's `db.namespace` is not a callee: five
/// Redis caches all have namespace `0`, and a database is often named like
/// the service that owns it, which would make an edge to itself.
pub fn peer<'a>(attributes: &SpanAttributes<'a>) -> &'a str {
    [
        attributes.peer_service,
        attributes.messaging_destination,
        attributes.server_address,
        attributes.db_system,
    ]
    .into_iter()
    .flatten()
    .find(|name| !name.is_empty())
    .unwrap_or(UNKNOWN_PEER)
}

/// Why a span cannot be used, or `None` if it can.
pub fn invalid_span(span: &SpanView<'_>) -> Option<String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|byte| *byte == 0) {
        return Some(format!(
            "span {:?}: invalid trace_id (must be 16 bytes, not all zero)",
            span.name
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|byte| *byte == 0) {
        return Some(format!(
            "span {:?}: invalid span_id (must be 8 bytes, not all zero)",
            span.name
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Some(format!(
            "span {:?}: invalid parent_span_id (must be empty or 8 bytes)",
            span.name
        ));
    }
    if span.end_time_unix_nano == 0 {
        return Some(format!(
            "span {:?}: end_time_unix_nano is missing",
            span.name
        ));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Some(format!(
            "span {:?}: end_time_unix_nano is before start_time_unix_nano",
            span.name
        ));
    }
    None
}

/// The operation a handled span is recorded under: HTTP server spans by
/// `http.route`, others by name.
pub fn operation_name<'a>(span: &SpanView<'a>) -> &'a str {
    match (span.kind, span.attributes.http_route) {
        // "GET /users/{id}" already names the route and keeps the method; a
        // span named after the raw path does not.
        (span_kind, Some(route))
            if span_kind == kind::SERVER && !route.is_empty() && !span.name.ends_with(route) =>
        {
            route
        }
        _ => span.name,
    }
}
