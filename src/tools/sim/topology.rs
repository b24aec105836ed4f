//! The public view of the simulated system: who calls whom, so that an
//! evaluation can tell an origin from the services that only inherit its
//! symptoms.

use crate::tools::sim::model::{DbSystem, Model, OpKind, Target};

/// The simulated services and the calls between them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// The service that receives the entry (user) traffic.
    pub entry: String,
    /// Every service that receives traffic from outside: the entry first,
    /// then those with traffic of their own (a webhook receiver, an admin
    /// console, a scheduled job).
    pub entries: Vec<String>,
    pub services: Vec<ServiceInfo>,
    /// Caller -> callee edges, one per (caller, callee, kind).
    pub edges: Vec<Edge>,
}

/// One service of the simulated system.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    pub name: String,
    /// "http", "grpc" or "messaging" (how it is called).
    pub protocol: &'static str,
    /// `service.version` at the start of a run.
    pub version: String,
    /// Pods across both regions.
    pub pods: usize,
    /// Span names of its SERVER (or CONSUMER) spans.
    pub operations: Vec<String>,
    /// `http.route` or `rpc.method` of each operation, in the same order.
    pub routes: Vec<String>,
    /// `server.address` of its databases, caches and external APIs.
    pub dependencies: Vec<String>,
    /// Whether it has a PostgreSQL connection pool (`db.client.connection.*`).
    pub pool: bool,
}

/// A dependency edge, as the collector sees it from CLIENT/PRODUCER spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub caller: String,
    /// A service name, or the `server.address` of a database or API.
    pub callee: String,
    pub kind: EdgeKind,
    /// The caller degrades gracefully when this call fails.
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Http,
    Grpc,
    /// Through the shop's queue (PRODUCER -> CONSUMER).
    Messaging,
    /// PostgreSQL or a search index (CLIENT spans with `db.system.name`).
    Database,
    /// Redis.
    Cache,
    /// A third-party HTTP API (CLIENT spans with no SERVER child).
    External,
}

impl EdgeKind {
    /// Whether the callee is a simulated service (which emits SERVER spans).
    pub fn is_service(self) -> bool {
        matches!(self, EdgeKind::Http | EdgeKind::Grpc | EdgeKind::Messaging)
    }
}

// === impl Topology ===

impl Topology {
    pub fn service(&self, name: &str) -> Option<&ServiceInfo> {
        self.services.iter().find(|service| service.name == name)
    }

    /// Edges out of `caller`.
    pub fn callees<'a>(&'a self, caller: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |edge| edge.caller == caller)
    }

    /// Edges into `callee`.
    pub fn callers<'a>(&'a self, callee: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |edge| edge.callee == callee)
    }

    /// The longest chain of services from the entry service, counted in
    /// services (`frontend -> checkout -> pricing -> currency` is 4).
    pub fn depth(&self) -> usize {
        // The call graph is acyclic, so a plain recursive walk terminates;
        // it is small enough not to need memoisation.
        fn walk(topology: &Topology, service: &str) -> usize {
            1 + topology
                .callees(service)
                .filter(|edge| edge.kind.is_service())
                .map(|edge| walk(topology, &edge.callee))
                .max()
                .unwrap_or(0)
        }
        walk(self, &self.entry)
    }

    pub(crate) fn from_model(model: &Model) -> Self {
        let mut edges: Vec<Edge> = Vec::new();
        let mut add = |caller: &str, callee: &str, kind: EdgeKind, optional: bool| {
            match edges
                .iter_mut()
                .find(|edge| edge.caller == caller && edge.callee == callee && edge.kind == kind)
            {
                // An edge is optional only if every call along it is.
                Some(edge) => edge.optional &= optional,
                None => edges.push(Edge {
                    caller: caller.to_owned(),
                    callee: callee.to_owned(),
                    kind,
                    optional,
                }),
            }
        };
        for op in &model.ops {
            let caller = model.services[op.service].name;
            for call in op.steps.iter().flatten() {
                match call.target {
                    Target::Op(target) => {
                        let callee = &model.services[model.ops[target].service];
                        let kind = match model.ops[target].kind {
                            OpKind::Http { .. } => EdgeKind::Http,
                            OpKind::Grpc { .. } => EdgeKind::Grpc,
                            OpKind::Consume { .. } => EdgeKind::Messaging,
                        };
                        add(caller, callee.name, kind, call.optional);
                    }
                    Target::Db(db_op) => {
                        let db = &model.dbs[model.db_ops[db_op].db];
                        let kind = match db.system {
                            DbSystem::Postgresql | DbSystem::Elasticsearch => EdgeKind::Database,
                            DbSystem::Redis => EdgeKind::Cache,
                            DbSystem::External => EdgeKind::External,
                        };
                        add(caller, db.address, kind, call.optional);
                    }
                    Target::Publish => {
                        let consumer = model.services[model.ops[model.queue.consumer].service].name;
                        add(caller, consumer, EdgeKind::Messaging, false);
                    }
                }
            }
        }
        let services = model
            .services
            .iter()
            .map(|service| {
                let (major, minor, patch) = service.version;
                ServiceInfo {
                    name: service.name.to_owned(),
                    protocol: service.protocol.as_str(),
                    version: format!("{major}.{minor}.{patch}"),
                    pods: service.replicas * model.regions.len(),
                    operations: service
                        .ops
                        .iter()
                        .map(|&op| model.ops[op].server_name.clone())
                        .collect(),
                    routes: service
                        .ops
                        .iter()
                        .map(|&op| model.ops[op].route().to_owned())
                        .collect(),
                    dependencies: service
                        .dbs
                        .iter()
                        .map(|&db| model.dbs[db].address.to_owned())
                        .collect(),
                    pool: service.pool_max.is_some(),
                }
            })
            .collect();
        let mut entries = vec![model.services[model.entry].name.to_owned()];
        for source in &model.sources {
            for &(op, _) in &source.ops {
                let name = model.services[model.ops[op].service].name;
                if !entries.iter().any(|known| known == name) {
                    entries.push(name.to_owned());
                }
            }
        }
        Topology {
            entry: model.services[model.entry].name.to_owned(),
            entries,
            services,
            edges,
        }
    }
}
