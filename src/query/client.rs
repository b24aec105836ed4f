//! A client of the query API for `triage query` (and for Rust programs that
//! embed the library): connects, adds the bearer token to every call, and
//! turns responses into the crate's types.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::pb::triage_query_client::TriageQueryClient;
use super::{pb, ConvertError, EventRecord};
use crate::model::Change;
use crate::model::Incident;
use crate::query::view::{ServiceStats, ServiceSummary, Topology};

/// How long connecting may take before the CLI gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT`, like every address in the config (plain HTTP/2, or TLS
    /// when `ca_cert` is given), or a URL: `http://HOST:PORT`, or
    /// `https://HOST:PORT` for a TLS listener.
    pub address: String,
    /// Bearer token sent with every call.
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https).
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate and key to present when the API requires client
    /// certificates (`api.tls.client_ca_file`); both or neither.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Why a query failed, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a URL tonic accepts.
    #[error(
        "invalid address {address:?}: {message} (write it as HOST:PORT, e.g. 127.0.0.1:4320, \
         or as a URL, http://HOST:PORT or https://HOST:PORT)"
    )]
    Address {
        /// As given.
        address: String,
        /// What was wrong.
        message: String,
    },
    /// The token has characters a header cannot carry.
    #[error("the bearer token must be printable ASCII")]
    Token,
    /// The CA certificate could not be read or used.
    #[error("cannot use --ca-cert {}: {message}", .path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The client certificate or key could not be read.
    #[error("cannot use --client-cert / --client-key {}: {message}", .path.display())]
    ClientCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No connection could be made.
    #[error(
        "cannot connect to the triage query API at {address}: {message}\n\
         Is `triage run` running, and is api.endpoint (default 127.0.0.1:4320) the \
         address given with --addr / TRIAGE_API_ADDR?"
    )]
    Connect {
        /// The address tried.
        address: String,
        /// The transport's reason.
        message: String,
    },
    /// The server refused the call.
    #[error("{}", describe(.0))]
    Call(Status),
    /// The server's answer does not fit this build's types. The cause is
    /// part of the message and deliberately not a `source()` (hence the
    /// `From` impl below): printed as a chain it would appear twice.
    #[error("unexpected answer from the server: {0}")]
    Convert(ConvertError),
}

impl From<ConvertError> for ClientError {
    fn from(error: ConvertError) -> Self {
        ClientError::Convert(error)
    }
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

/// A connected query API client.
pub struct Client {
    inner: TriageQueryClient<InterceptedService<Channel, BearerToken>>,
}

fn describe(status: &Status) -> String {
    match status.code() {
        Code::Unauthenticated => format!(
            "the query API refused the call: {} (pass --token or set TRIAGE_API_TOKEN)",
            status.message()
        ),
        Code::Unavailable => format!(
            "the query API is unavailable: {}\n\
             Is `triage run` running, and is api.endpoint the address given with --addr?",
            status.message()
        ),
        code => format!("{code:?}: {}", status.message()),
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A unary request with the call timeout set.
fn unary<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

impl Client {
    /// Connects (eagerly, so that a wrong address fails here with advice).
    pub async fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        let address = endpoint_url(config.address.trim(), config.ca_cert.is_some());
        let bad_address = |message: String| ClientError::Address {
            address: address.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(address.clone())
            .map_err(|error| bad_address(error.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT);
        if address.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &config.ca_cert {
                let pem = std::fs::read(path).map_err(|error| ClientError::CaCert {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &config.client_cert {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|error| ClientError::ClientCert {
                        path: path.clone(),
                        message: error.to_string(),
                    })
                };
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| bad_address(error.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| ClientError::Connect {
                address: address.clone(),
                message: error_chain(&error),
            })?;
        let token = match &config.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| ClientError::Token)?,
            ),
        };
        Ok(Client {
            inner: TriageQueryClient::with_interceptor(channel, BearerToken(token)),
        })
    }

    /// Every known service.
    pub async fn services(&mut self) -> Result<Vec<ServiceSummary>, ClientError> {
        let response = self
            .inner
            .list_services(unary(pb::ListServicesRequest {}))
            .await
            .map_err(ClientError::Call)?;
        Ok(response
            .into_inner()
            .services
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// One service's RED statistics since `since_unix_nanos` (0: all held).
    pub async fn stats(
        &mut self,
        service: &str,
        since_unix_nanos: u64,
    ) -> Result<ServiceStats, ClientError> {
        let response = self
            .inner
            .get_service_stats(unary(pb::GetServiceStatsRequest {
                service: service.to_owned(),
                since_unix_nanos,
                until_unix_nanos: 0,
            }))
            .await
            .map_err(ClientError::Call)?;
        Ok(response.into_inner().into())
    }

    /// The dependency graph since `since_unix_nanos` (0: all held), every
    /// page of it.
    pub async fn topology(&mut self, since_unix_nanos: u64) -> Result<Topology, ClientError> {
        self.topology_in_pages(since_unix_nanos, 0).await
    }

    /// As [`Client::topology`], asking for pages of `page_size` nodes and
    /// edges (0: the server's default) and following them to the last.
    pub async fn topology_in_pages(
        &mut self,
        since_unix_nanos: u64,
        page_size: u32,
    ) -> Result<Topology, ClientError> {
        let mut page_token = String::new();
        let mut topology: Option<Topology> = None;
        loop {
            let response = self
                .inner
                .get_topology(unary(pb::GetTopologyRequest {
                    since_unix_nanos,
                    until_unix_nanos: 0,
                    page_size,
                    page_token,
                }))
                .await
                .map_err(ClientError::Call)?
                .into_inner();
            page_token = response.next_page_token.clone();
            let page = Topology::from(response);
            let whole = match topology.take() {
                None => page,
                Some(mut whole) => {
                    whole.nodes.extend(page.nodes);
                    whole.edges.extend(page.edges);
                    whole
                }
            };
            if page_token.is_empty() {
                return Ok(whole);
            }
            topology = Some(whole);
        }
    }

    /// One page of incidents and the token of the next.
    pub async fn incidents(
        &mut self,
        request: pb::ListIncidentsRequest,
    ) -> Result<(Vec<Incident>, Option<String>), ClientError> {
        let response = self
            .inner
            .list_incidents(unary(request))
            .await
            .map_err(ClientError::Call)?
            .into_inner();
        let incidents = response
            .incidents
            .into_iter()
            .map(Incident::try_from)
            .collect::<Result<_, _>>()?;
        let next = (!response.next_page_token.is_empty()).then_some(response.next_page_token);
        Ok((incidents, next))
    }

    /// One incident and its events.
    pub async fn incident(
        &mut self,
        id: &str,
    ) -> Result<(Incident, Vec<EventRecord>), ClientError> {
        let response = self
            .inner
            .get_incident(unary(pb::GetIncidentRequest { id: id.to_owned() }))
            .await
            .map_err(ClientError::Call)?
            .into_inner();
        let incident = response
            .incident
            .ok_or(ConvertError::Missing { field: "incident" })?
            .try_into()?;
        let events = response
            .events
            .into_iter()
            .map(EventRecord::try_from)
            .collect::<Result<_, _>>()?;
        Ok((incident, events))
    }

    /// Change events, oldest first.
    pub async fn changes(
        &mut self,
        request: pb::ListChangesRequest,
    ) -> Result<Vec<Change>, ClientError> {
        let response = self
            .inner
            .list_changes(unary(request))
            .await
            .map_err(ClientError::Call)?;
        Ok(response
            .into_inner()
            .changes
            .into_iter()
            .map(Change::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// Records a change event; returns it with its id.
    pub async fn record_change(
        &mut self,
        request: pb::RecordChangeRequest,
    ) -> Result<Change, ClientError> {
        let response = self
            .inner
            .record_change(unary(request))
            .await
            .map_err(ClientError::Call)?;
        let change = response
            .into_inner()
            .change
            .ok_or(ConvertError::Missing { field: "change" })?;
        Ok(change.try_into()?)
    }

    /// Streams incident events to `each` until the server ends the stream
    /// or `each` returns false.
    pub async fn watch(
        &mut self,
        start: Option<pb::watch_incidents_request::Start>,
        mut each: impl FnMut(EventRecord) -> bool,
    ) -> Result<(), ClientError> {
        let mut stream = self
            .inner
            .watch_incidents(pb::WatchIncidentsRequest { start })
            .await
            .map_err(ClientError::Call)?
            .into_inner();
        while let Some(event) = stream.message().await.map_err(ClientError::Call)? {
            if !each(EventRecord::try_from(event)?) {
                break;
            }
        }
        Ok(())
    }
}

/// The URL tonic connects to for `address`: a URL as it is, and `HOST:PORT`
/// (the form every address in the config takes) with `http://` in front, or
/// `https://` when a CA certificate is given, since that asks for TLS.
fn endpoint_url(address: &str, tls: bool) -> String {
    if address.contains("://") {
        address.to_owned()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// A transport error with its causes ("transport error: tcp connect error:
/// Connection refused"), which is what tells people what to fix.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
