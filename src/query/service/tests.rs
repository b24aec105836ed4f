use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::service::Interceptor;
use tonic::Code;

use super::*;
use crate::model::IncidentEvent;
use crate::pipeline::WallClock;
use crate::query::tests::full_incident;
use crate::store::StoreConfig;

/// How long a test waits for an event it expects.
const WAIT: Duration = Duration::from_secs(5);

fn service() -> QueryService {
    QueryService {
        sources: Sources {
            store: Arc::new(Store::with_clock(
                StoreConfig::default(),
                Arc::new(WallClock),
            )),
            changes: Arc::new(ChangeLog::default()),
            history: Arc::new(History::in_memory()),
            change_auth: None,
        },
        authenticated: false,
        watchers: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
        stop: CancellationToken::new(),
    }
}

/// Records an `opened` event for incident number `n` at `n` seconds.
fn record_event(history: &History, n: u64) -> u64 {
    let mut incident = full_incident();
    incident.id = format!("svc@{n}");
    history
        .record_event(&IncidentEvent::Opened(incident), n * 1_000_000_000)
        .expect("recorded")
        .seq
}

async fn watch(
    service: &QueryService,
    start: Option<pb::watch_incidents_request::Start>,
) -> ReceiverStream<Result<pb::IncidentEvent, Status>> {
    service
        .watch_incidents(Request::new(pb::WatchIncidentsRequest { start }))
        .await
        .expect("watch starts")
        .into_inner()
}

async fn next_seq(stream: &mut ReceiverStream<Result<pb::IncidentEvent, Status>>) -> u64 {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the wait")
        .expect("stream open")
        .expect("not an error")
        .seq
}

#[tokio::test]
async fn watch_replays_after_a_seq_then_follows_live_once() {
    let service = service();
    let history = Arc::clone(&service.sources.history);
    let first = record_event(&history, 1);
    let second = record_event(&history, 2);
    let third = record_event(&history, 3);
    let mut stream = watch(
        &service,
        Some(pb::watch_incidents_request::Start::AfterSeq(first)),
    )
    .await;
    assert_eq!(next_seq(&mut stream).await, second);
    assert_eq!(next_seq(&mut stream).await, third);
    let fourth = record_event(&history, 4);
    assert_eq!(next_seq(&mut stream).await, fourth);
    // Nothing else: the live copies of 2 and 3 (if the watcher saw them)
    // were not sent twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn watch_from_a_time_and_live_only() {
    let service = service();
    let history = Arc::clone(&service.sources.history);
    record_event(&history, 10);
    let at_20 = record_event(&history, 20);
    let mut since = watch(
        &service,
        Some(pb::watch_incidents_request::Start::SinceUnixNanos(
            15_000_000_000,
        )),
    )
    .await;
    let mut live = watch(&service, None).await;
    assert_eq!(next_seq(&mut since).await, at_20);
    let at_30 = record_event(&history, 30);
    assert_eq!(next_seq(&mut since).await, at_30);
    assert_eq!(next_seq(&mut live).await, at_30, "live-only skips the past");
}

#[tokio::test]
async fn a_watcher_that_falls_behind_catches_up_without_gaps() {
    let service = service();
    let history = Arc::clone(&service.sources.history);
    let mut stream = watch(
        &service,
        Some(pb::watch_incidents_request::Start::AfterSeq(0)),
    )
    .await;
    // More than the live buffer (1024) plus the watch buffer, while the
    // client reads nothing: the live receiver lags.
    let total = 1_300;
    for n in 1..=total {
        record_event(&history, n);
    }
    for expected in 1..=total {
        assert_eq!(next_seq(&mut stream).await, expected);
    }
}

#[tokio::test]
async fn stopping_ends_watches_with_unavailable() {
    let service = service();
    let mut stream = watch(&service, None).await;
    service.stop.cancel();
    let ended = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("ends within the wait")
        .expect("a final status");
    assert_eq!(
        ended.expect_err("an error status").code(),
        Code::Unavailable
    );
    assert!(tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("closes")
        .is_none());
}

fn change_request(service: &str, kind: &str) -> pb::RecordChangeRequest {
    pb::RecordChangeRequest {
        service: service.into(),
        kind: kind.into(),
        version: "v2".into(),
        ..Default::default()
    }
}

#[test]
fn recorded_changes_are_validated_naming_the_field() {
    let error = change_from_request(change_request(" ", "deploy"), 9).expect_err("no service");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().starts_with("service:"),
        "{}",
        error.message()
    );

    let error = change_from_request(change_request("cart", "rollout"), 9).expect_err("bad kind");
    assert!(
        error
            .message()
            .starts_with("kind: must be one of deploy, config, feature_flag, scale, infra"),
        "{}",
        error.message()
    );
    let error = change_from_request(change_request("cart", ""), 9).expect_err("no kind");
    assert!(
        error.message().starts_with("kind: required"),
        "{}",
        error.message()
    );

    let mut long = change_request("cart", "config");
    long.description = "x".repeat(MAX_CHANGE_FIELD_BYTES + 1);
    let error = change_from_request(long, 9).expect_err("too long");
    assert!(
        error.message().starts_with("description:"),
        "{}",
        error.message()
    );

    let change = change_from_request(change_request("cart", "deploy"), 9).expect("valid");
    assert_eq!(change.time_unix_nanos, 9, "time defaults to now");
    assert_eq!(change.version.as_deref(), Some("v2"));
    assert_eq!(change.key, None, "empty is absent");
    assert_eq!(change.source, ChangeSource::Api);
    let mut timed = change_request("cart", "scale");
    timed.time_unix_nanos = 5;
    assert_eq!(
        change_from_request(timed, 9)
            .expect("valid")
            .time_unix_nanos,
        5
    );
}

#[tokio::test]
async fn record_and_list_changes() {
    let service = service();
    for (name, kind) in [("cart", "deploy"), ("payment", "config"), ("cart", "infra")] {
        service
            .record_change(Request::new(change_request(name, kind)))
            .await
            .expect("recorded");
    }
    let list = |request: pb::ListChangesRequest| {
        let service = &service;
        async move {
            service
                .list_changes(Request::new(request))
                .await
                .map(|response| response.into_inner().changes)
        }
    };
    let cart = list(pb::ListChangesRequest {
        service: "cart".into(),
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(cart.len(), 2);
    let last = list(pb::ListChangesRequest {
        limit: 1,
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(last.len(), 1);
    let error = list(pb::ListChangesRequest {
        kind: "rollout".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad kind");
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_incident_requests_are_invalid_arguments() {
    let service = service();
    let error = service
        .list_incidents(Request::new(pb::ListIncidentsRequest {
            page_token: "forged".into(),
            ..Default::default()
        }))
        .await
        .expect_err("bad token");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().starts_with("page_token:"),
        "{}",
        error.message()
    );
    let error = service
        .list_incidents(Request::new(pb::ListIncidentsRequest {
            state: 9,
            ..Default::default()
        }))
        .await
        .expect_err("bad state");
    assert!(error.message().starts_with("state:"), "{}", error.message());
    let error = service
        .get_incident(Request::new(pb::GetIncidentRequest {
            id: "nope@1".into(),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(error.code(), Code::NotFound);
    let error = service
        .get_service_stats(Request::new(pb::GetServiceStatsRequest {
            service: "cart".into(),
            since_unix_nanos: 10,
            until_unix_nanos: 5,
        }))
        .await
        .expect_err("backwards range");
    assert!(
        error.message().starts_with("since_unix_nanos:"),
        "{}",
        error.message()
    );
}

#[test]
fn bearer_tokens_are_checked() {
    let mut open = Auth { auth: None };
    assert!(open.call(Request::new(())).is_ok());

    let tokens = crate::security::AuthConfig::tokens(["s3cret", "other"]);
    let mut auth = Auth {
        auth: BearerAuth::load("test", "api.auth", &tokens).expect("loads"),
    };
    let with = |value: &str| {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
        request
    };
    let missing = auth.call(Request::new(())).expect_err("missing");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("missing bearer token"));
    let wrong = auth.call(with("Bearer s3cre7")).expect_err("wrong");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(auth.call(with("Basic s3cret")).is_err());
    assert!(auth.call(with("Bearer s3cret")).is_ok());
    assert!(auth.call(with("Bearer other")).is_ok());
}

/// `RecordChange` writes what `POST /api/v1/changes` writes, so with
/// `changes.api_token` set it needs that token too (it once needed none).
#[tokio::test]
async fn record_change_requires_the_change_token() {
    let mut service = service();
    service.sources.change_auth = BearerAuth::fixed(
        "test",
        "changes.api_token",
        crate::security::Secret::new("s3cret").into_iter().collect(),
    );
    let with = |token: Option<&str>| {
        let mut request = Request::new(change_request("cart", "deploy"));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        request
    };
    for refused in [None, Some("wrong")] {
        let status = service
            .record_change(with(refused))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("changes.api_token"));
    }
    assert!(service.sources.changes.is_empty(), "nothing recorded");
    service
        .record_change(with(Some("s3cret")))
        .await
        .expect("recorded with the token");
    // With a token of its own, the API checked every call already.
    service.authenticated = true;
    service
        .record_change(with(None))
        .await
        .expect("the interceptor vouched for it");
    assert_eq!(service.sources.changes.len(), 2);
}

#[tokio::test]
async fn watch_streams_are_bounded() {
    let mut service = service();
    service.watchers = Arc::new(tokio::sync::Semaphore::new(2));
    let request = || Request::new(pb::WatchIncidentsRequest::default());
    let first = service.watch_incidents(request()).await.expect("first");
    let _second = service.watch_incidents(request()).await.expect("second");
    let status = service
        .watch_incidents(request())
        .await
        .expect_err("a third is one too many");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Closing a stream ends its watcher, which frees its place.
    drop(first);
    let reopened = async {
        loop {
            match service.watch_incidents(request()).await {
                Ok(stream) => return stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(WAIT, reopened)
        .await
        .expect("a place frees up once a client hangs up");
}

/// More services than one default page: a request without paging gets the
/// first page and a token; following the tokens gives every node once;
/// a token not handed out is refused.
#[tokio::test]
async fn topology_is_paged() {
    let service = service();
    let store = Arc::clone(&service.sources.store);
    let now = store.now_unix_nanos();
    for n in 0..(DEFAULT_TOPOLOGY_PAGE + 200) {
        let caller = store.service(&format!("svc-{n:05}"));
        let sample = crate::store::Sample {
            end_unix_nanos: now,
            duration_nanos: 1_000_000,
            error: false,
            trace_id: 1,
        };
        store.record_operation(&caller, "GET /", sample);
        store.record_edge(&caller, "db", sample);
    }
    let n_nodes = DEFAULT_TOPOLOGY_PAGE + 200 + 1;
    let first = service
        .get_topology(Request::new(pb::GetTopologyRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.nodes.len() + first.edges.len(), DEFAULT_TOPOLOGY_PAGE);
    assert!(!first.next_page_token.is_empty());

    let mut nodes = Vec::new();
    let mut edges = 0;
    let mut token = String::new();
    loop {
        let page = service
            .get_topology(Request::new(pb::GetTopologyRequest {
                page_size: 700,
                page_token: token,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.nodes.len() + page.edges.len() <= 700);
        nodes.extend(page.nodes.into_iter().map(|node| node.service));
        edges += page.edges.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(nodes.len(), n_nodes);
    assert!(
        nodes.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, once each"
    );
    assert_eq!(edges, DEFAULT_TOPOLOGY_PAGE + 200);

    for (page_size, page_token) in [
        (MAX_TOPOLOGY_PAGE as u32 + 1, ""),
        (0, "t1.x"),
        (0, "bogus"),
    ] {
        let status = service
            .get_topology(Request::new(pb::GetTopologyRequest {
                page_size,
                page_token: page_token.into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}
