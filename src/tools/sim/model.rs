//! The simulated system: services, their operations, what each operation
//! calls, and the databases, caches, queue and external APIs behind them.
//!
//! The model is built once (see [`model`]) and never changes; everything that
//! varies during a run (pods, versions, faults) lives in the engine's state.
//! Building it also precomputes the span name and the static attributes of
//! every server and client span, so that generating a span clones a template
//! instead of formatting strings.
//!
//! Invariants: operation ids are indices into `Model::ops` and are only ever
//! called by operations of *other* services defined after them, so the call
//! graph is acyclic and every call between services crosses a service
//! boundary (a CLIENT span in the caller, a SERVER span in the callee).

use std::sync::OnceLock;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

mod stays;

pub type ServiceId = usize;
pub type OpId = usize;
pub type DbOpId = usize;

/// Per-call timeouts (client side).
const TIMEOUT_SHORT_MS: f64 = 1_000.0;
const TIMEOUT_LONG_MS: f64 = 5_000.0;
const TIMEOUT_ENTRY_MS: f64 = 10_000.0;

/// How many variants of each templated URL path are pre-formatted.
const PATH_VARIANTS: usize = 48;

/// The two regions the first shop's traffic is split between, with their
/// shares.
pub const REGIONS: [(&str, f64); 2] = [("us-east-1", 0.6), ("eu-west-1", 0.4)];

/// Which simulated system runs: the original shop the detectors were tuned
/// on, or the second one, which shares nothing with it (its own topology,
/// names, rates, request mix, latency shapes and traffic shape) and exists
/// to judge detection on traffic it was not built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Shop {
    /// The web shop: 12 services behind `frontend` (the default).
    #[default]
    First,
    /// `stays`, a travel-booking platform: 15 services behind
    /// `edge-gateway`, plus a webhook receiver, a back office and a
    /// reporting job with traffic of their own.
    Second,
}

impl Shop {
    pub const ALL: [Shop; 2] = [Shop::First, Shop::Second];

    /// The name used on the command line (`--shop`).
    pub fn name(self) -> &'static str {
        match self {
            Shop::First => "first",
            Shop::Second => "second",
        }
    }

    /// Reads `first`/`shop1`/`1` or `second`/`shop2`/`2`/`stays`.
    pub fn parse(text: &str) -> Option<Shop> {
        match text.trim().to_ascii_lowercase().as_str() {
            "first" | "shop1" | "1" | "shop" | "default" => Some(Shop::First),
            "second" | "shop2" | "2" | "stays" => Some(Shop::Second),
            _ => None,
        }
    }
}

/// How the entry rate moves over the day (UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DailyShape {
    /// A sine: trough at 04:00 (0.5x), peak at 16:00 (1.5x).
    Sine,
    /// A lunchtime and a larger evening peak over a night trough:
    /// about 0.5x at 04:00, 1.6x at 11:30 and 2x at 19:30.
    TwoPeaks,
}

/// The shape of a shop's traffic over time, and how often harmless changes
/// happen.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficProfile {
    /// The entry rate a scenario of this shop uses unless told otherwise.
    pub default_rate: f64,
    pub daily: DailyShape,
    /// Factor per day of the week (Monday first), eased across midnight;
    /// `None`: every day alike.
    pub weekly: Option<[f64; 7]>,
    /// Bursts: mean time between them, length range (s) and factor range.
    pub burst_gap_seconds: f64,
    pub burst_seconds: (u64, u64),
    pub burst_factor: (f64, f64),
    /// Mean time between random benign deploys (across all services).
    pub benign_deploy_gap_seconds: f64,
    /// Mean time between benign configuration changes (announced in logs),
    /// `None` for none.
    pub config_change_gap_seconds: Option<f64>,
}

/// Where pods run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A node drawn at random for each pod (the first shop).
    Random,
    /// A fixed pool of nodes per region; the pod in slot (service, replica)
    /// always runs on the same node, so replacements stay there, and the
    /// replicas of one service run on different nodes.
    Pool { nodes_per_region: usize },
}

/// Entry traffic that does not come through the entry service: a webhook
/// receiver, an admin console, a scheduled job.
#[derive(Debug, Clone)]
pub struct Source {
    /// Operations with their cumulative weights.
    pub ops: Vec<(OpId, f64)>,
    pub rate: SourceRate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SourceRate {
    /// This share of the entry rate (after the daily shape and bursts).
    Share(f64),
    /// A fixed rate per second, whatever the time and the entry rate.
    Fixed(f64),
}

/// A heavy tail: with probability `share`, a duration is multiplied by a
/// Pareto factor (minimum 1, shape `alpha`, capped at `cap`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tail {
    pub share: f64,
    pub alpha: f64,
    pub cap: f64,
}

/// A configuration key a service reloads at run time, with the values it
/// can take (benign configuration changes pick from them).
#[derive(Debug, Clone)]
pub struct ConfigKey {
    pub service: ServiceId,
    pub key: &'static str,
    pub values: &'static [&'static str],
}

/// A service, as run in the simulation.
#[derive(Debug)]
pub struct ServiceDef {
    pub name: &'static str,
    /// The version deployed when the run starts.
    pub version: (u32, u32, u32),
    /// Pods per region.
    pub replicas: usize,
    /// Resident memory of a fresh pod, and the container limit, in bytes.
    pub memory_base: f64,
    pub memory_limit: f64,
    /// CPU limit in cores; own time of requests is what uses CPU.
    pub cpu_limit: f64,
    /// Connection pool size per pod, when the service uses PostgreSQL.
    pub pool_max: Option<u32>,
    /// The pool's name (`db.client.connection.pool.name`).
    pub pool_name: &'static str,
    pub protocol: Protocol,
    pub ops: Vec<OpId>,
    /// Databases, caches and external APIs the service uses.
    pub dbs: Vec<usize>,
    /// Resource attribute template (everything but the per-pod attributes).
    pub resource_attrs: Vec<KeyValue>,
    /// The public host name, for a service reached from the internet.
    pub public_host: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
    Messaging,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Messaging => "messaging",
        }
    }
}

/// What kind of endpoint an operation is.
#[derive(Debug, Clone, Copy)]
pub enum OpKind {
    Http {
        method: &'static str,
        route: &'static str,
    },
    Grpc {
        service: &'static str,
        method: &'static str,
    },
    /// Processing of a message from the queue (a CONSUMER span).
    Consume { topic: &'static str },
}

/// One endpoint of a service.
#[derive(Debug)]
pub struct OpDef {
    pub service: ServiceId,
    pub kind: OpKind,
    /// Median and log-space spread of the operation's own time, in ms.
    pub own_ms: f64,
    pub own_sigma: f64,
    /// Probability that a request fails locally (5xx / INTERNAL).
    pub error_rate: f64,
    /// Probability and HTTP status of a client error (4xx, not a server
    /// failure).
    pub client_error: Option<(f64, i64)>,
    /// Share of entry traffic (entry service only).
    pub weight: f64,
    /// Sequential steps; the calls of one step run in parallel.
    pub steps: Vec<Vec<Call>>,
    pub server_name: String,
    pub server_attrs: Vec<KeyValue>,
    pub client_name: String,
    pub client_attrs: Vec<KeyValue>,
    /// Pre-formatted `url.path` (server) and `url.full` (client) variants,
    /// index-aligned.
    pub paths: Vec<String>,
    pub urls: Vec<String>,
    /// A heavy tail on the own time, if any.
    pub tail: Option<Tail>,
}

impl OpDef {
    /// The route or method this operation is known by: `http.route` for HTTP,
    /// `rpc.method` for gRPC.
    pub fn route(&self) -> &'static str {
        match self.kind {
            OpKind::Http { route, .. } => route,
            OpKind::Grpc { method, .. } => method,
            OpKind::Consume { topic } => topic,
        }
    }
}

/// One call made by an operation.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub target: Target,
    /// Probability that the call is made at all (cache misses, optional
    /// lookups).
    pub probability: f64,
    /// When true, the caller degrades gracefully if the call fails.
    pub optional: bool,
    pub timeout_ms: f64,
    /// Attempts after a failed one (the client's retry policy; 0: none).
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An operation of another service.
    Op(OpId),
    /// A query or command against a database, cache or external API.
    Db(DbOpId),
    /// Publishing to the shop's queue (consumed by `Model::queue`).
    Publish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbSystem {
    Postgresql,
    Redis,
    /// A search index.
    Elasticsearch,
    /// A third-party HTTP API.
    External,
}

impl DbSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Redis => "redis",
            DbSystem::Elasticsearch => "elasticsearch",
            DbSystem::External => "http",
        }
    }
}

/// A database, cache or external API used by one service.
#[derive(Debug)]
pub struct DbDef {
    pub system: DbSystem,
    /// `server.address` of the database.
    pub address: &'static str,
    pub namespace: &'static str,
}

/// One kind of query or request against a [`DbDef`].
#[derive(Debug)]
pub struct DbOpDef {
    pub db: usize,
    pub median_ms: f64,
    pub sigma: f64,
    pub error_rate: f64,
    pub name: String,
    pub attrs: Vec<KeyValue>,
    /// A heavy tail on the call time, if any.
    pub tail: Option<Tail>,
}

/// The shop's queue (`orders` between `checkout` and `notification` in the
/// first shop).
#[derive(Debug)]
pub struct QueueDef {
    pub consumer: OpId,
    pub producer_name: String,
    pub producer_attrs: Vec<KeyValue>,
}

/// The whole simulated system.
#[derive(Debug)]
pub struct Model {
    pub services: Vec<ServiceDef>,
    pub ops: Vec<OpDef>,
    pub dbs: Vec<DbDef>,
    pub db_ops: Vec<DbOpDef>,
    pub queue: QueueDef,
    pub entry: ServiceId,
    /// Entry operations with their cumulative weights.
    pub entry_ops: Vec<(OpId, f64)>,
    pub topology: super::Topology,
    /// The regions traffic is split between, with their shares.
    pub regions: &'static [(&'static str, f64)],
    /// `service.namespace` and `k8s.namespace.name`; also in change links.
    pub namespace: &'static str,
    /// Entry traffic besides the entry service's.
    pub sources: Vec<Source>,
    pub traffic: TrafficProfile,
    pub placement: Placement,
    /// Keys that benign configuration changes touch.
    pub config_keys: Vec<ConfigKey>,
}

/// The first shop's model, built on first use.
pub fn model() -> &'static Model {
    model_of(Shop::First)
}

/// The model of `shop`, built on first use.
pub fn model_of(shop: Shop) -> &'static Model {
    static FIRST: OnceLock<Model> = OnceLock::new();
    static SECOND: OnceLock<Model> = OnceLock::new();
    match shop {
        Shop::First => FIRST.get_or_init(build),
        Shop::Second => SECOND.get_or_init(stays::build),
    }
}

/// A Pareto factor (minimum 1) at `pick` in [0, 1).
pub fn pareto(pick: f64, alpha: f64, cap: f64) -> f64 {
    (1.0 - pick).max(1e-12).powf(-1.0 / alpha).min(cap)
}

// === attribute helpers ===

pub fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

// === impl Model ===

impl Model {
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services
            .iter()
            .position(|service| service.name == name)
    }

    /// The operation of `service` known as `route`: its `http.route`, its
    /// gRPC method (short or `Service/Method`) or its span name.
    pub fn op_by_route(&self, service: ServiceId, route: &str) -> Option<OpId> {
        self.services[service].ops.iter().copied().find(|&op| {
            let def = &self.ops[op];
            def.route() == route
                || def.server_name == route
                || matches!(def.kind, OpKind::Grpc { service, method }
                    if route.split_once('/') == Some((service, method)))
        })
    }

    /// Whether any operation of `caller` calls an operation of `callee`.
    pub fn calls(&self, caller: ServiceId, callee: ServiceId) -> bool {
        self.services[caller].ops.iter().any(|&op| {
            self.ops[op].steps.iter().flatten().any(
                |call| matches!(call.target, Target::Op(target) if self.ops[target].service == callee),
            )
        })
    }

    /// Whether the service has a pooled (PostgreSQL) database.
    pub fn has_pool(&self, service: ServiceId) -> bool {
        self.services[service].pool_max.is_some()
    }

    pub fn has_dependency(&self, service: ServiceId) -> bool {
        !self.services[service].dbs.is_empty()
    }

    pub fn service_names(&self) -> String {
        self.services
            .iter()
            .map(|service| service.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// === the system ===

struct ServiceSpec {
    name: &'static str,
    /// Reached from the internet at this host (HTTPS on 443).
    public_host: Option<&'static str>,
    language: &'static str,
    version: (u32, u32, u32),
    replicas: usize,
    memory_mb: f64,
    limit_mb: f64,
    cpu_limit: f64,
    pool_max: Option<u32>,
    pool_name: &'static str,
    protocol: Protocol,
}

struct Builder {
    services: Vec<ServiceDef>,
    ops: Vec<OpDef>,
    dbs: Vec<DbDef>,
    db_ops: Vec<DbOpDef>,
    /// `service.namespace` and `k8s.namespace.name`.
    namespace: &'static str,
    /// `cloud.provider`.
    provider: &'static str,
    /// The message broker: `messaging.system`, its address and port.
    broker: (&'static str, &'static str, i64),
}

fn call(target: Target) -> Call {
    Call {
        target,
        probability: 1.0,
        optional: false,
        timeout_ms: TIMEOUT_SHORT_MS,
        retries: 0,
    }
}

fn op(op: OpId) -> Call {
    call(Target::Op(op))
}

fn db(db_op: DbOpId) -> Call {
    Call {
        timeout_ms: TIMEOUT_LONG_MS,
        ..call(Target::Db(db_op))
    }
}

impl Call {
    fn sometimes(self, probability: f64) -> Self {
        Call {
            probability,
            ..self
        }
    }

    fn optional(self) -> Self {
        Call {
            optional: true,
            ..self
        }
    }

    fn timeout(self, timeout_ms: f64) -> Self {
        Call { timeout_ms, ..self }
    }

    fn retries(self, retries: u32) -> Self {
        Call { retries, ..self }
    }
}

impl Builder {
    fn service(&mut self, spec: ServiceSpec) -> ServiceId {
        let resource_attrs = vec![
            kv_str("service.name", spec.name),
            kv_str("service.namespace", self.namespace),
            kv_str("deployment.environment.name", "production"),
            kv_str("telemetry.sdk.language", spec.language),
            kv_str("telemetry.sdk.name", "opentelemetry"),
            kv_str("cloud.provider", self.provider),
            kv_str("k8s.namespace.name", self.namespace),
            kv_str("k8s.deployment.name", spec.name),
            kv_str("k8s.container.name", spec.name),
        ];
        self.services.push(ServiceDef {
            name: spec.name,
            version: spec.version,
            replicas: spec.replicas,
            memory_base: spec.memory_mb * MIB,
            memory_limit: spec.limit_mb * MIB,
            cpu_limit: spec.cpu_limit,
            pool_max: spec.pool_max,
            pool_name: spec.pool_name,
            protocol: spec.protocol,
            ops: Vec::new(),
            dbs: Vec::new(),
            resource_attrs,
            public_host: spec.public_host,
        });
        self.services.len() - 1
    }

    fn db(
        &mut self,
        service: ServiceId,
        system: DbSystem,
        address: &'static str,
        namespace: &'static str,
    ) -> usize {
        self.dbs.push(DbDef {
            system,
            address,
            namespace,
        });
        let id = self.dbs.len() - 1;
        self.services[service].dbs.push(id);
        id
    }

    /// A query (`operation` on `collection`) or, for external APIs, a request
    /// (`operation` is the method, `collection` the path).
    fn db_op(
        &mut self,
        db: usize,
        operation: &'static str,
        collection: &'static str,
        median_ms: f64,
        sigma: f64,
    ) -> DbOpId {
        let def = &self.dbs[db];
        let (name, attrs) = match def.system {
            DbSystem::Postgresql | DbSystem::Redis | DbSystem::Elasticsearch => {
                let port = match def.system {
                    DbSystem::Redis => 6379,
                    DbSystem::Elasticsearch => 9200,
                    _ => 5432,
                };
                let mut attrs = vec![
                    kv_str("db.system.name", def.system.as_str()),
                    kv_str("db.namespace", def.namespace),
                    kv_str("db.operation.name", operation),
                ];
                let name = if collection.is_empty() {
                    operation.to_owned()
                } else {
                    attrs.push(kv_str("db.collection.name", collection));
                    format!("{operation} {collection}")
                };
                attrs.push(kv_str("server.address", def.address));
                attrs.push(kv_int("server.port", port));
                (name, attrs)
            }
            DbSystem::External => {
                let attrs = vec![
                    kv_str("http.request.method", operation),
                    kv_str("server.address", def.address),
                    kv_int("server.port", 443),
                    kv_str(
                        "url.full",
                        &format!("https://{}{}", def.address, collection),
                    ),
                    kv_str("url.template", collection),
                ];
                (format!("{operation} {collection}"), attrs)
            }
        };
        self.db_ops.push(DbOpDef {
            db,
            median_ms,
            sigma,
            error_rate: 0.0002,
            name,
            attrs,
            tail: None,
        });
        self.db_ops.len() - 1
    }

    fn add_op(&mut self, service: ServiceId, kind: OpKind, own_ms: f64, own_sigma: f64) -> OpId {
        let host = self.services[service].name;
        let public_host = self.services[service].public_host;
        let (broker, broker_address, broker_port) = self.broker;
        let mut paths = Vec::new();
        let mut urls = Vec::new();
        let (server_name, server_attrs, client_name, client_attrs) = match kind {
            OpKind::Http { method, route } => {
                // The entry service is reached from the internet, the others
                // inside the cluster.
                let (scheme, address, port, base) = if let Some(public) = public_host {
                    ("https", public, 443, format!("https://{public}"))
                } else {
                    ("http", host, 8080, format!("http://{host}:8080"))
                };
                paths = match route.find('{') {
                    Some(open) => (0..PATH_VARIANTS)
                        .map(|i| format!("{}{}", &route[..open], 1000 + i * 37))
                        .collect(),
                    None => vec![route.to_owned()],
                };
                urls = paths.iter().map(|path| format!("{base}{path}")).collect();
                let name = format!("{method} {route}");
                let server = vec![
                    kv_str("http.request.method", method),
                    kv_str("http.route", route),
                    kv_str("url.scheme", scheme),
                    kv_str("server.address", address),
                    kv_int("server.port", port),
                    kv_str("network.protocol.version", "1.1"),
                ];
                let client = vec![
                    kv_str("http.request.method", method),
                    kv_str("url.template", route),
                    kv_str("server.address", address),
                    kv_int("server.port", port),
                    kv_str("network.protocol.version", "1.1"),
                ];
                (name.clone(), server, name, client)
            }
            OpKind::Grpc {
                service: rpc_service,
                method,
            } => {
                let name = format!("{rpc_service}/{method}");
                let common = vec![
                    kv_str("rpc.system", "grpc"),
                    kv_str("rpc.service", rpc_service),
                    kv_str("rpc.method", method),
                    kv_str("server.address", host),
                    kv_int("server.port", 50051),
                ];
                (name.clone(), common.clone(), name, common)
            }
            OpKind::Consume { topic } => {
                let server = vec![
                    kv_str("messaging.system", broker),
                    kv_str("messaging.destination.name", topic),
                    kv_str("messaging.operation.type", "process"),
                    kv_str("messaging.operation.name", "process"),
                    kv_str("messaging.consumer.group.name", host),
                    kv_str("server.address", broker_address),
                    kv_int("server.port", broker_port),
                ];
                // Nobody calls a consumer: the producer's span is its parent.
                (
                    format!("process {topic}"),
                    server,
                    String::new(),
                    Vec::new(),
                )
            }
        };
        self.ops.push(OpDef {
            service,
            kind,
            own_ms,
            own_sigma,
            error_rate: 0.001,
            client_error: None,
            weight: 0.0,
            steps: Vec::new(),
            server_name,
            server_attrs,
            client_name,
            client_attrs,
            paths,
            urls,
            tail: None,
        });
        let id = self.ops.len() - 1;
        self.services[service].ops.push(id);
        id
    }

    fn http(
        &mut self,
        service: ServiceId,
        method: &'static str,
        route: &'static str,
        own_ms: f64,
        steps: Vec<Vec<Call>>,
    ) -> OpId {
        let id = self.add_op(service, OpKind::Http { method, route }, own_ms, 0.4);
        self.ops[id].steps = steps;
        id
    }

    fn grpc(
        &mut self,
        service: ServiceId,
        rpc_service: &'static str,
        method: &'static str,
        own_ms: f64,
        steps: Vec<Vec<Call>>,
    ) -> OpId {
        let kind = OpKind::Grpc {
            service: rpc_service,
            method,
        };
        let id = self.add_op(service, kind, own_ms, 0.4);
        self.ops[id].steps = steps;
        id
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn spec(
    name: &'static str,
    language: &'static str,
    version: (u32, u32, u32),
    protocol: Protocol,
) -> ServiceSpec {
    ServiceSpec {
        name,
        public_host: None,
        language,
        version,
        replicas: 1,
        memory_mb: 180.0,
        limit_mb: 512.0,
        cpu_limit: 1.0,
        pool_max: None,
        pool_name: "",
        protocol,
    }
}

/// The simulated shop. Services are defined leaves first, because an
/// operation can only call operations that already exist.
fn build() -> Model {
    use DbSystem::{External, Postgresql, Redis};
    use Protocol::{Grpc, Http, Messaging};

    let mut b = Builder {
        services: Vec::new(),
        ops: Vec::new(),
        dbs: Vec::new(),
        db_ops: Vec::new(),
        namespace: "shop",
        provider: "aws",
        broker: ("kafka", "kafka", 9092),
    };

    // Level 4: currency, which asks an external rates API on cache misses.
    let currency = b.service(ServiceSpec {
        memory_mb: 90.0,
        limit_mb: 256.0,
        cpu_limit: 0.5,
        ..spec("currency", "cpp", (1, 2, 0), Grpc)
    });
    let fx_api = b.db(currency, External, "api.fx-rates.example", "");
    let fx_rates = b.db_op(fx_api, "GET", "/v1/latest", 80.0, 0.5);
    let convert = b.grpc(
        currency,
        "oteldemo.CurrencyService",
        "Convert",
        1.5,
        vec![vec![call(Target::Db(fx_rates))
            // A rates cache in front of it: 2% misses (not ~5%, which would
            // put p95 on the edge between cache hits and misses).
            .sometimes(0.02)
            .timeout(2_000.0)]],
    );

    // Level 3: services with their own databases.
    let inventory = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 140.0,
        pool_max: Some(10),
        pool_name: "inventory-db:5432/inventory",
        ..spec("inventory", "rust", (2, 0, 3), Http)
    });
    let inventory_db = b.db(inventory, Postgresql, "inventory-db", "inventory");
    let stock_select = b.db_op(inventory_db, "SELECT", "stock", 2.0, 0.4);
    let stock_update = b.db_op(inventory_db, "UPDATE", "stock", 3.5, 0.4);
    let inventory_get = b.http(
        inventory,
        "GET",
        "/inventory/{sku}",
        2.0,
        vec![vec![db(stock_select)]],
    );
    let inventory_reserve = b.http(
        inventory,
        "POST",
        "/inventory/reserve",
        4.0,
        vec![vec![db(stock_select)], vec![db(stock_update)]],
    );

    let payment = b.service(ServiceSpec {
        memory_mb: 260.0,
        pool_max: Some(8),
        pool_name: "payment-db:5432/payments",
        ..spec("payment", "nodejs", (1, 4, 1), Grpc)
    });
    let payment_db = b.db(payment, Postgresql, "payment-db", "payments");
    let payment_insert = b.db_op(payment_db, "INSERT", "payments", 3.0, 0.4);
    let charge = b.grpc(
        payment,
        "oteldemo.PaymentService",
        "Charge",
        30.0,
        vec![vec![db(payment_insert)]],
    );

    let shipping = b.service(ServiceSpec {
        memory_mb: 120.0,
        pool_max: Some(8),
        pool_name: "shipping-db:5432/shipping",
        ..spec("shipping", "go", (0, 8, 5), Grpc)
    });
    let shipping_db = b.db(shipping, Postgresql, "shipping-db", "shipping");
    let shipment_insert = b.db_op(shipping_db, "INSERT", "shipments", 3.0, 0.4);
    let rates_select = b.db_op(shipping_db, "SELECT", "rates", 1.5, 0.4);
    let quote = b.grpc(
        shipping,
        "oteldemo.ShippingService",
        "GetQuote",
        3.0,
        vec![vec![db(rates_select)]],
    );
    let ship = b.grpc(
        shipping,
        "oteldemo.ShippingService",
        "ShipOrder",
        8.0,
        vec![vec![db(shipment_insert)]],
    );

    let user = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 420.0,
        limit_mb: 1024.0,
        pool_max: Some(10),
        pool_name: "user-db:5432/users",
        ..spec("user", "java", (5, 2, 0), Http)
    });
    let user_db = b.db(user, Postgresql, "user-db", "users");
    let session_cache = b.db(user, Redis, "session-cache", "0");
    let session_get = b.db_op(session_cache, "GET", "", 0.5, 0.3);
    let user_select = b.db_op(user_db, "SELECT", "users", 2.0, 0.4);
    let user_update = b.db_op(user_db, "UPDATE", "users", 3.0, 0.4);
    let user_get = b.http(
        user,
        "GET",
        "/users/{id}",
        3.0,
        vec![vec![db(session_get)], vec![db(user_select).sometimes(0.3)]],
    );
    let login = b.http(
        user,
        "POST",
        "/users/login",
        20.0,
        vec![vec![db(user_select)], vec![db(user_update)]],
    );
    b.ops[login].own_sigma = 0.2;
    b.ops[login].client_error = Some((0.03, 401));

    let pricing = b.service(ServiceSpec {
        memory_mb: 110.0,
        ..spec("pricing", "go", (0, 14, 2), Grpc)
    });
    let pricing_cache = b.db(pricing, Redis, "pricing-cache", "0");
    let price_get = b.db_op(pricing_cache, "GET", "", 0.5, 0.3);
    let price_mget = b.db_op(pricing_cache, "MGET", "", 0.8, 0.3);
    let get_price = b.grpc(
        pricing,
        "oteldemo.PricingService",
        "GetPrice",
        2.0,
        vec![vec![db(price_get)], vec![op(convert).sometimes(0.5)]],
    );
    let get_prices = b.grpc(
        pricing,
        "oteldemo.PricingService",
        "GetPrices",
        4.0,
        vec![vec![db(price_mget)], vec![op(convert)]],
    );

    // Level 2.
    let catalog = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 160.0,
        pool_max: Some(10),
        pool_name: "catalog-db:5432/catalog",
        ..spec("catalog", "go", (1, 7, 4), Http)
    });
    let catalog_db = b.db(catalog, Postgresql, "catalog-db", "catalog");
    let catalog_cache = b.db(catalog, Redis, "catalog-cache", "0");
    let products_select = b.db_op(catalog_db, "SELECT", "products", 3.0, 0.5);
    let product_select = b.db_op(catalog_db, "SELECT", "products", 1.5, 0.4);
    let product_cached = b.db_op(catalog_cache, "GET", "", 0.4, 0.3);
    let catalog_list = b.http(
        catalog,
        "GET",
        "/products",
        4.0,
        vec![vec![db(products_select)]],
    );
    let catalog_get = b.http(
        catalog,
        "GET",
        "/products/{id}",
        3.0,
        vec![
            vec![db(product_cached)],
            vec![db(product_select).sometimes(0.2)],
            vec![op(inventory_get)],
        ],
    );
    b.ops[catalog_get].client_error = Some((0.005, 404));

    let cart = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 200.0,
        ..spec("cart", "dotnet", (3, 1, 0), Grpc)
    });
    let cart_cache = b.db(cart, Redis, "cart-cache", "0");
    let cart_read = b.db_op(cart_cache, "HGETALL", "", 0.6, 0.3);
    let cart_write = b.db_op(cart_cache, "HSET", "", 0.6, 0.3);
    let cart_delete = b.db_op(cart_cache, "DEL", "", 0.5, 0.3);
    let get_cart = b.grpc(
        cart,
        "oteldemo.CartService",
        "GetCart",
        2.0,
        vec![vec![db(cart_read)]],
    );
    let add_item = b.grpc(
        cart,
        "oteldemo.CartService",
        "AddItem",
        3.0,
        vec![vec![op(inventory_get)], vec![db(cart_write)]],
    );
    let empty_cart = b.grpc(
        cart,
        "oteldemo.CartService",
        "EmptyCart",
        2.0,
        vec![vec![db(cart_delete)]],
    );

    let recommendation = b.service(ServiceSpec {
        memory_mb: 300.0,
        limit_mb: 768.0,
        ..spec("recommendation", "python", (0, 9, 2), Grpc)
    });
    let recs_cache = b.db(recommendation, Redis, "recommendation-cache", "0");
    let recs_get = b.db_op(recs_cache, "GET", "", 0.5, 0.3);
    let recommend = b.grpc(
        recommendation,
        "oteldemo.RecommendationService",
        "ListRecommendations",
        15.0,
        vec![vec![db(recs_get)], vec![op(catalog_list).sometimes(0.3)]],
    );
    b.ops[recommend].own_sigma = 0.5;

    let notification = b.service(ServiceSpec {
        memory_mb: 150.0,
        pool_max: Some(5),
        pool_name: "notification-db:5432/notifications",
        ..spec("notification", "python", (0, 5, 0), Messaging)
    });
    let notification_db = b.db(notification, Postgresql, "notification-db", "notifications");
    let notification_insert = b.db_op(notification_db, "INSERT", "notifications", 2.5, 0.4);
    let consume = b.add_op(notification, OpKind::Consume { topic: "orders" }, 5.0, 0.4);
    b.ops[consume].steps = vec![vec![op(user_get)], vec![db(notification_insert)]];

    let checkout = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 600.0,
        limit_mb: 1024.0,
        ..spec("checkout", "java", (1, 12, 0), Http)
    });
    let place_order = b.http(
        checkout,
        "POST",
        "/api/checkout",
        12.0,
        vec![
            vec![op(get_cart)],
            vec![op(user_get), op(get_prices), op(quote)],
            vec![op(inventory_reserve)],
            vec![op(charge).timeout(TIMEOUT_LONG_MS)],
            vec![op(ship)],
            vec![call(Target::Publish)],
            vec![op(empty_cart)],
        ],
    );
    b.ops[place_order].own_sigma = 0.35;

    // Level 1: the entry service.
    let frontend = b.service(ServiceSpec {
        replicas: 3,
        memory_mb: 220.0,
        public_host: Some("shop.example.com"),
        ..spec("frontend", "nodejs", (2, 3, 1), Http)
    });
    let entry = |b: &mut Builder, method, route, own_ms, weight, steps| {
        let id = b.http(frontend, method, route, own_ms, steps);
        b.ops[id].weight = weight;
        id
    };
    entry(
        &mut b,
        "GET",
        "/",
        6.0,
        0.20,
        vec![vec![op(catalog_list), op(recommend).optional()]],
    );
    entry(
        &mut b,
        "GET",
        "/products/{id}",
        5.0,
        0.30,
        vec![
            vec![op(catalog_get)],
            vec![op(get_price), op(recommend).optional()],
        ],
    );
    entry(
        &mut b,
        "GET",
        "/cart",
        4.0,
        0.15,
        vec![vec![op(get_cart)], vec![op(get_prices)]],
    );
    entry(&mut b, "POST", "/cart", 5.0, 0.15, vec![vec![op(add_item)]]);
    entry(
        &mut b,
        "POST",
        "/checkout",
        8.0,
        0.12,
        vec![vec![op(place_order).timeout(TIMEOUT_ENTRY_MS)]],
    );
    entry(&mut b, "POST", "/login", 6.0, 0.08, vec![vec![op(login)]]);

    let producer_attrs = vec![
        kv_str("messaging.system", "kafka"),
        kv_str("messaging.destination.name", "orders"),
        kv_str("messaging.operation.type", "send"),
        kv_str("messaging.operation.name", "send"),
        kv_str("server.address", "kafka"),
        kv_int("server.port", 9092),
    ];
    let queue = QueueDef {
        consumer: consume,
        producer_name: "send orders".to_owned(),
        producer_attrs,
    };

    let mut total = 0.0;
    let entry_ops = b.services[frontend]
        .ops
        .iter()
        .map(|&op| {
            total += b.ops[op].weight;
            (op, total)
        })
        .collect();

    let mut model = Model {
        services: b.services,
        ops: b.ops,
        dbs: b.dbs,
        db_ops: b.db_ops,
        queue,
        entry: frontend,
        entry_ops,
        topology: super::Topology::default(),
        regions: &REGIONS,
        namespace: "shop",
        sources: Vec::new(),
        traffic: TrafficProfile {
            default_rate: 20.0,
            daily: DailyShape::Sine,
            weekly: None,
            burst_gap_seconds: 20.0 * 60.0,
            burst_seconds: (5, 20),
            burst_factor: (1.2, 1.6),
            benign_deploy_gap_seconds: 30.0 * 60.0,
            config_change_gap_seconds: None,
        },
        placement: Placement::Random,
        config_keys: Vec::new(),
    };
    model.topology = super::Topology::from_model(&model);
    model
}
