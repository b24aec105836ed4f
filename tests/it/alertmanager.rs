//! Alert delivery against real Prometheus Alertmanagers (the Debian
//! `prometheus-alertmanager` binary, started here on 127.0.0.1 with
//! clustering off) and a JSON webhook receiver served by the test:
//!
//! - real OTel SDK traffic with an injected fault -> an incident -> the
//!   alert in both Alertmanagers, with its labels and annotations -> the
//!   fault stops -> the resolution, as Alertmanager itself reports it;
//! - an Alertmanager that is down for a while gets the alert once back,
//!   from the queue;
//! - a restarted collector takes up the open incidents of its history and
//!   keeps their alerts firing, with the labels they first fired with;
//! - the documented `deploy/alertmanager.yml` loads, routes by severity and
//!   inhibits a symptom while its root cause's alert fires.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::common::{require_command, test_settings, TestServer};
use triage::alert::{AlertConfig, Alerter, Backoff, TargetConfig};
use triage::history::tasks::open_incident_events;
use triage::history::{History, StorageConfig};
use triage::model::IncidentEvent;

/// Bound on every wait for something to show up.
const WAIT: Duration = Duration::from_secs(30);
/// The Alertmanager binary, as Debian installs it.
const ALERTMANAGER: &str = "prometheus-alertmanager";
/// The service with the injected fault, and its operation.
const SERVICE: &str = "payment";
const OPERATION: &str = "POST /pay";

// === a real Alertmanager ===

/// A `prometheus-alertmanager` process with its own config and storage in a
/// temporary directory; killed when dropped.
struct Alertmanager {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Alertmanager {
    /// Starts one on a free loopback port with `config` (YAML).
    fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("alertmanager.yml"), config).expect("write config");
        let mut alertmanager = Alertmanager {
            dir,
            port: free_port(),
            child: None,
        };
        alertmanager.spawn();
        alertmanager
    }

    fn spawn(&mut self) {
        let binary = require_command(ALERTMANAGER, "prometheus-alertmanager");
        let log = std::fs::File::create(self.dir.path().join("alertmanager.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            // Empty: no cluster listener, no gossip with anything else.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers `/-/ready`.
    async fn ready(&self) {
        let client = http();
        let url = format!("{}/-/ready", self.url());
        wait_until(
            "alertmanager ready",
            || async {
                let ready = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
                ready.then_some(())
            },
            self,
        )
        .await
    }

    /// Kills it (as a crash or an abrupt restart would).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its alerts, as `GET /api/v2/alerts` lists them (none while it is
    /// unreachable).
    async fn alerts(&self) -> Vec<Value> {
        let response = http()
            .get(format!("{}/api/v2/alerts", self.url()))
            .send()
            .await;
        match response {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config that sends every notification to `receiver_url` (with
/// resolutions), one group per incident, flushed every second.
fn forwarding_config(receiver_url: &str) -> String {
    format!(
        r#"
route:
  receiver: forward
  group_by: [incident_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: forward
    webhook_configs:
      - url: "{receiver_url}"
        send_resolved: true
"#
    )
}

/// An HTTP client whose requests cannot hang a test.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// A port the OS says is free now. Alertmanager takes its address as a flag,
/// so it cannot be handed a bound socket; the gap is a few milliseconds.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

// === a webhook receiver ===

/// An HTTP server on 127.0.0.1:0 that keeps every POST body, by path.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let kept = receiver.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                kept.received
                    .lock()
                    .expect("lock")
                    .push((uri.path().to_owned(), value));
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, address)
    }

    /// Bodies received on `path` so far.
    fn on(&self, path: &str) -> Vec<Value> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(at, _)| at == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

// === waiting ===

/// Polls `check` every 100 ms until it gives a value; fails after [`WAIT`]
/// with `what` and the Alertmanager's log.
async fn wait_until<T, F, Fut>(what: &str, check: F, alertmanager: &Alertmanager) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll(check).await {
        Some(value) => value,
        None => panic!(
            "{what}: not within {WAIT:?}; alertmanager log:\n{}",
            alertmanager.log()
        ),
    }
}

/// Polls `check` every 100 ms until it gives a value, for at most [`WAIT`].
async fn poll<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alert of `incident_id` among `alerts`.
fn alert_of<'a>(alerts: &'a [Value], incident_id: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|alert| alert["labels"]["incident_id"] == incident_id)
}

/// An RFC 3339 UTC time (`2024-12-01T00:03:10.25Z`) as Unix nanoseconds.
fn unix_nanos(text: &str) -> i128 {
    let text = text.strip_suffix('Z').expect("UTC time");
    let (date, time) = text.split_once('T').expect("date and time");
    let numbers: Vec<i64> = date.split('-').map(|n| n.parse().expect("date")).collect();
    let (year, month, day) = (numbers[0], numbers[1], numbers[2]);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let hms: Vec<i64> = clock.split(':').map(|n| n.parse().expect("time")).collect();
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hms[0] * 3_600 + hms[1] * 60 + hms[2];
    let nanos: i128 = format!("{fraction:0<9}")[..9].parse().expect("fraction");
    i128::from(seconds) * 1_000_000_000 + nanos
}

// === real traffic ===

/// Stops the traffic generator when dropped, also when a test fails: the
/// runtime waits for blocking tasks at shutdown, so a generator left
/// running would hang the failed test instead of reporting it.
struct StopOnDrop(Arc<AtomicU8>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(STOP, Ordering::Relaxed);
    }
}

/// What the traffic generator does: 0 healthy, 1 failing, 2 stop.
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const STOP: u8 = 2;

/// Sends `payment POST /pay` server spans through the real Rust SDK at
/// about 50 per second, ending now; while `phase` is FAILING, 40% fail.
fn generate(server_grpc: String, phase: Arc<AtomicU8>) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server_grpc)
        .with_timeout(Duration::from_secs(3))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("build OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(SERVICE).build())
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("alertmanager-test");
    let mut n: u64 = 0;
    loop {
        let current = phase.load(Ordering::Relaxed);
        if current == STOP {
            break;
        }
        let end = SystemTime::now();
        let mut span = tracer
            .span_builder(OPERATION)
            .with_kind(SpanKind::Server)
            .with_start_time(end - Duration::from_millis(5))
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/pay"),
            ])
            .start(&tracer);
        if current == FAILING && n % 5 < 2 {
            span.set_status(Status::error("card processor unavailable"));
            span.set_attribute(KeyValue::new("http.response.status_code", 503));
        }
        span.end_with_timestamp(end);
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = provider.shutdown();
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_from_real_traffic_fires_and_resolves_in_every_alertmanager() {
    triage::telemetry::recorder();
    let (receiver, receiver_address) = Receiver::start().await;
    let alertmanagers: Vec<Alertmanager> = (0..2)
        .map(|index| {
            Alertmanager::start(&forwarding_config(&format!(
                "http://{receiver_address}/notify/am{index}"
            )))
        })
        .collect();
    for alertmanager in &alertmanagers {
        alertmanager.ready().await;
    }

    let mut settings = test_settings();
    settings.store.window = Duration::from_secs(1);
    settings.detect.warmup_windows = 5;
    settings.detect.lateness = Duration::from_secs(1);
    let resend_interval = Duration::from_secs(2);
    settings.alerting = AlertConfig {
        alertmanagers: alertmanagers
            .iter()
            .map(|alertmanager| TargetConfig::new(alertmanager.url().parse().expect("url")))
            .collect(),
        webhooks: vec![TargetConfig::new(
            format!("http://{receiver_address}/triage")
                .parse()
                .expect("url"),
        )],
        resend_interval,
        labels: [("cluster".to_owned(), "test".to_owned())].into(),
        runbook_url: Some("https://runbooks.example/{alertname}?service={service}".into()),
        ..AlertConfig::default()
    };
    let server = TestServer::start_with(settings).await;

    let phase = Arc::new(AtomicU8::new(HEALTHY));
    let _stop_traffic = StopOnDrop(Arc::clone(&phase));
    let traffic = {
        let phase = Arc::clone(&phase);
        let endpoint = server.grpc_url();
        tokio::task::spawn_blocking(move || generate(endpoint, phase))
    };
    // Healthy long enough for the warm-up (5 windows of 1 s) and the lateness.
    let healthy = server
        .wait_for(WAIT, |store| {
            let key = triage::model::SeriesKey::new(
                triage::model::SeriesKind::Operation,
                SERVICE,
                OPERATION,
            );
            store
                .stats(&key, 0, u64::MAX)
                .filter(|stats| stats.requests >= 400)
        })
        .await;
    assert_eq!(healthy.errors, 0);
    phase.store(FAILING, Ordering::Relaxed);

    // The incident opens; triage's webhook hears of it first hand.
    let opened = wait_until(
        "webhook `opened` event",
        || async {
            receiver
                .on("/triage")
                .into_iter()
                .find(|event| event["event"] == "opened")
        },
        &alertmanagers[0],
    )
    .await;
    let incident = &opened["incident"];
    assert_eq!(incident["service"], SERVICE);
    let incident_id = incident["id"].as_str().expect("incident id").to_owned();

    // Both Alertmanagers hold the alert, with the incident's latest
    // severity. If the incident escalated from warning to critical, the
    // critical alert replaced the warning one: still one alert per incident.
    let mut firing = Vec::new();
    for alertmanager in &alertmanagers {
        let alert = wait_until(
            "the incident's alert, at its latest severity, in alertmanager",
            || async {
                let severity = latest_severity(&receiver, &incident_id)?;
                let alerts = alertmanager.alerts().await;
                let mine: Vec<&Value> = alerts
                    .iter()
                    .filter(|alert| alert["labels"]["incident_id"] == incident_id)
                    .collect();
                match mine.as_slice() {
                    [alert] if alert["labels"]["severity"] == severity => Some((*alert).clone()),
                    _ => None,
                }
            },
            alertmanager,
        )
        .await;
        firing.push(alert);
    }
    let alert = &firing[0];
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "ErrorRateAnomaly", "{alert:#}");
    assert!(
        labels["severity"] == "warning" || labels["severity"] == "critical",
        "{alert:#}"
    );
    assert_eq!(labels["service"], SERVICE);
    assert_eq!(labels["operation"], OPERATION);
    assert_eq!(labels["root_cause_service"], SERVICE);
    assert_eq!(labels["role"], "origin");
    assert_eq!(labels["cluster"], "test");
    assert_eq!(firing[1]["labels"], *labels, "both hold the same alert");
    assert_eq!(alert["status"]["state"], "active");
    let annotations = &alert["annotations"];
    let text = |name: &str| annotations[name].as_str().unwrap_or("").to_owned();
    assert!(
        text("summary").starts_with("payment") && text("summary").contains("error rate"),
        "{annotations:#}"
    );
    // Ranked hypotheses when the analysis produced some, else the anomalies.
    let description = text("description");
    assert!(
        description.starts_with("1. ")
            || description.starts_with("- operation POST /pay: error rate"),
        "{annotations:#}"
    );
    let exemplars = annotations["exemplar_trace_ids"].as_str().unwrap_or("");
    assert!(
        !exemplars.is_empty()
            && exemplars
                .split(", ")
                .all(|id| { id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) }),
        "{annotations:#}"
    );
    assert!(
        annotations["suggested_action"].is_string(),
        "{annotations:#}"
    );
    assert_eq!(
        annotations["runbook_url"],
        "https://runbooks.example/ErrorRateAnomaly?service=payment"
    );
    assert_eq!(
        alert["generatorURL"],
        format!(
            "http://{}/api/v1/incidents/{incident_id}",
            server.addresses.admin
        )
    );
    assert_eq!(
        unix_nanos(alert["startsAt"].as_str().expect("startsAt")),
        i128::from(incident["onset_unix_nanos"].as_u64().expect("onset"))
    );
    // Firing: endsAt is four resend intervals after the latest send.
    let ends = unix_nanos(alert["endsAt"].as_str().expect("endsAt"));
    let updated = unix_nanos(alert["updatedAt"].as_str().expect("updatedAt"));
    let ahead = Duration::from_nanos((ends - updated).max(0) as u64);
    let expected = resend_interval * 4;
    assert!(
        ahead <= expected && ahead + Duration::from_secs(1) >= expected,
        "endsAt {ahead:?} after the last update, expected {expected:?}"
    );

    // The fault stops; the incident resolves.
    phase.store(HEALTHY, Ordering::Relaxed);
    let resolved = wait_until(
        "webhook `resolved` event",
        || async {
            receiver.on("/triage").into_iter().find(|event| {
                event["event"] == "resolved" && event["incident"]["id"] == incident_id
            })
        },
        &alertmanagers[0],
    )
    .await;
    let resolved_at = i128::from(
        resolved["incident"]["resolved_unix_nanos"]
            .as_u64()
            .expect("resolve time"),
    );
    // The alert that resolves is the one at the incident's final severity
    // (it may have escalated after the check above).
    let mut final_labels = labels.clone();
    final_labels["severity"] = resolved["incident"]["severity"].clone();

    // Alertmanager 0.25 lists only alerts whose endsAt is in the future, so
    // a resolved alert leaves `GET /api/v2/alerts`; and it notifies its
    // receiver that the alert resolved, with endsAt the resolve time (not
    // a lapse of endsAt, which would be 4 intervals after a send).
    for (index, alertmanager) in alertmanagers.iter().enumerate() {
        let path = format!("/notify/am{index}");
        let notified = poll(|| async {
            receiver.on(&path).into_iter().find_map(|notification| {
                notification["alerts"]
                    .as_array()?
                    .iter()
                    .find(|alert| alert["status"] == "resolved" && alert["labels"] == final_labels)
                    .cloned()
            })
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no resolved notification for {final_labels} ending at {resolved_at} \
                 within {WAIT:?}; notifications: {:#?}; triage events: {:#?}; \
                 alertmanager log:\n{}",
                receiver.on(&path),
                receiver.on("/triage"),
                alertmanager.log()
            )
        });
        assert_eq!(
            unix_nanos(notified["endsAt"].as_str().expect("endsAt")),
            resolved_at,
            "{notified:#}"
        );
        let listed = alertmanager.alerts().await;
        assert!(alert_of(&listed, &incident_id).is_none(), "{listed:#?}");
    }
    // It was firing before it resolved, as the receiver saw it.
    assert!(receiver.on("/notify/am0").iter().any(|notification| {
        notification["status"] == "firing"
            && notification["groupLabels"]["incident_id"] == incident_id
    }));

    phase.store(STOP, Ordering::Relaxed);
    traffic.await.expect("traffic generator");
    server.stop().await;
}

/// The severity of the latest webhook event of `incident_id`.
fn latest_severity(receiver: &Receiver, incident_id: &str) -> Option<Value> {
    receiver
        .on("/triage")
        .into_iter()
        .rev()
        .find(|event| event["incident"]["id"] == incident_id)
        .map(|event| event["incident"]["severity"].clone())
}

/// Unix seconds now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An incident event as detection would publish it.
fn event(
    name: &str,
    service: &str,
    root_cause: Option<&str>,
    severity: &str,
    summary: &str,
    onset: u64,
) -> IncidentEvent {
    let root_causes = match root_cause {
        Some(cause) => json!([{ "service": cause, "score": 0.9, "reason": "own time x6" }]),
        None => json!([]),
    };
    serde_json::from_value(json!({
        "event": name,
        "incident": {
            "id": format!("{service}@{onset}"),
            "state": "open",
            "service": service,
            "operations": ["GET /x"],
            "kinds": ["latency"],
            "severity": severity,
            "onset_unix_nanos": onset * 1_000_000_000,
            "onset": triage::model::rfc3339(onset * 1_000_000_000),
            "opened_unix_nanos": (onset + 10) * 1_000_000_000,
            "resolved_unix_nanos": null,
            "resolved": null,
            "anomalies": [],
            "exemplar_trace_ids": [],
            "summary": summary,
            "root_causes": root_causes,
        }
    }))
    .expect("incident event")
}

/// Runs an alerter for `alertmanagers` fed by the returned sender.
fn alerter(
    alertmanagers: &[&Alertmanager],
    resend_interval: Duration,
) -> (
    broadcast::Sender<IncidentEvent>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    alerter_after(alertmanagers, resend_interval, None)
}

/// [`alerter`], first taking up the open incidents of `history` as a
/// restarted collector does.
fn alerter_after(
    alertmanagers: &[&Alertmanager],
    resend_interval: Duration,
    history: Option<&History>,
) -> (
    broadcast::Sender<IncidentEvent>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let config = AlertConfig {
        alertmanagers: alertmanagers
            .iter()
            .map(|alertmanager| TargetConfig::new(alertmanager.url().parse().expect("url")))
            .collect(),
        resend_interval,
        ..AlertConfig::default()
    };
    let mut alerter = Alerter::new(&config, "127.0.0.1:8888".parse().expect("addr"))
        .expect("alerter")
        .expect("targets configured")
        .with_backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        });
    if let Some(history) = history {
        alerter.restore(open_incident_events(history).expect("read the history"));
    }
    let (events, receiver) = broadcast::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(alerter.run(receiver, stop.clone()));
    (events, stop, task)
}

/// `triage_alerts_*` counter for `target` from the process's /metrics text.
fn counter(metric: &str, target: &str) -> f64 {
    let text = triage::telemetry::recorder().render();
    text.lines()
        .filter(|line| line.starts_with(metric) && line.contains(&format!("target=\"{target}")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_back_from_an_outage_gets_the_queued_alert() {
    triage::telemetry::recorder();
    let (_, receiver_address) = Receiver::start().await;
    let mut alertmanager =
        Alertmanager::start(&forwarding_config(&format!("http://{receiver_address}/am")));
    alertmanager.ready().await;
    // A resend interval far longer than the test: whatever arrives after
    // the outage came out of the queue.
    let (events, stop, task) = alerter(&[&alertmanager], Duration::from_secs(3600));
    let target = format!("{}/api/v2/alerts", alertmanager.url());

    // One onset for all events: it is part of the incident id.
    let onset = now_secs() - 30;
    let opened = event(
        "opened",
        "cart",
        None,
        "warning",
        "cart GET /x: p95 up",
        onset,
    );
    let id = opened.incident().id.clone();
    events.send(opened).expect("alerter listens");
    wait_until(
        "first alert",
        || async { alert_of(&alertmanager.alerts().await, &id).cloned() },
        &alertmanager,
    )
    .await;

    alertmanager.kill();
    let failed_before = counter("triage_alerts_send_failed_total", &target);
    events
        .send(event(
            "updated",
            "cart",
            None,
            "warning",
            "cart GET /x: p95 up more",
            onset,
        ))
        .expect("alerter listens");
    // It tried while Alertmanager was down, and failed.
    wait_until(
        "a failed attempt",
        || async {
            (counter("triage_alerts_send_failed_total", &target) > failed_before).then_some(())
        },
        &alertmanager,
    )
    .await;

    alertmanager.spawn();
    alertmanager.ready().await;
    let alert = wait_until(
        "the queued update after the restart",
        || async { alert_of(&alertmanager.alerts().await, &id).cloned() },
        &alertmanager,
    )
    .await;
    assert_eq!(alert["annotations"]["summary"], "cart GET /x: p95 up more");
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(counter("triage_alerts_dropped_total", &target), 0.0);

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("alerter stops")
        .expect("alerter does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_keeps_its_open_incidents_firing() {
    let (_, receiver_address) = Receiver::start().await;
    let alertmanager =
        Alertmanager::start(&forwarding_config(&format!("http://{receiver_address}/am")));
    alertmanager.ready().await;

    // The last run recorded one incident that is still open (opened as a
    // warning blaming inventory, then escalated with another root cause)
    // and one that resolved before the stop.
    let data = tempfile::tempdir().expect("tempdir");
    let storage = StorageConfig {
        data_dir: data.path().to_owned(),
        ..StorageConfig::default()
    };
    let onset = now_secs() - 120;
    let open_id = {
        let history = History::open(&storage).expect("open history");
        let opened = event(
            "opened",
            "checkout",
            Some("inventory"),
            "warning",
            "checkout POST /buy: p95 up",
            onset,
        );
        let escalated = event(
            "updated",
            "checkout",
            Some("payment"),
            "critical",
            "checkout POST /buy: p95 840 ms vs 95 ms baseline",
            onset,
        );
        let other_opened = event("opened", "cart", None, "warning", "cart: errors", onset);
        let mut other_resolved = other_opened.incident().clone();
        other_resolved.state = triage::model::IncidentState::Resolved;
        other_resolved.resolved_unix_nanos = Some((onset + 60) * 1_000_000_000);
        let at = (onset + 10) * 1_000_000_000;
        for event in [
            &opened,
            &escalated,
            &other_opened,
            &IncidentEvent::Resolved(other_resolved),
        ] {
            history.record_event(event, at).expect("record");
        }
        opened.incident().id.clone()
    };

    // The restart: a new history handle on the same file, a new alerter,
    // and no incident event at all from detection.
    let history = History::open(&storage).expect("reopen history");
    let (_events, stop, task) =
        alerter_after(&[&alertmanager], Duration::from_secs(3600), Some(&history));
    let alert = wait_until(
        "the restored incident's alert",
        || async {
            let alerts = alertmanager.alerts().await;
            alert_of(&alerts, &open_id)
                .filter(|alert| alert["labels"]["severity"] == "critical")
                .cloned()
        },
        &alertmanager,
    )
    .await;
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    // The labels it first fired with (the root cause of the opening), the
    // annotations of its latest state.
    assert_eq!(
        alert["labels"]["root_cause_service"], "inventory",
        "{alert}"
    );
    assert_eq!(
        alert["annotations"]["summary"],
        "checkout POST /buy: p95 840 ms vs 95 ms baseline"
    );
    let alerts = alertmanager.alerts().await;
    let active: Vec<_> = alerts
        .iter()
        .filter(|alert| alert["status"]["state"] == "active")
        .map(|alert| alert["labels"]["incident_id"].clone())
        .collect();
    assert_eq!(active, vec![Value::from(open_id.clone())], "{alerts:?}");

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("alerter stops")
        .expect("alerter does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_alertmanager_config_routes_and_inhibits_symptoms() {
    let (receiver, receiver_address) = Receiver::start().await;
    let secrets = tempfile::tempdir().expect("tempdir");
    let config = documented_config(&format!("http://{receiver_address}"), secrets.path());
    let alertmanager = Alertmanager::start(&config);
    alertmanager.ready().await;
    let (events, stop, task) = alerter(&[&alertmanager], Duration::from_secs(3600));

    // payment is the origin; checkout suffers from it.
    let onset = now_secs() - 30;
    let origin = event(
        "opened",
        "payment",
        None,
        "critical",
        "payment: errors",
        onset,
    );
    let symptom = event(
        "opened",
        "checkout",
        Some("payment"),
        "warning",
        "checkout: slow",
        onset,
    );
    let origin_id = origin.incident().id.clone();
    let symptom_id = symptom.incident().id.clone();
    // The origin first: Alertmanager notifies an alert older than
    // group_wait at once, so a symptom that arrived before its origin
    // would be sent before the inhibition could apply.
    events.send(origin).expect("alerter listens");
    wait_until(
        "the origin's alert",
        || async { alert_of(&alertmanager.alerts().await, &origin_id).map(|_| ()) },
        &alertmanager,
    )
    .await;
    events.send(symptom).expect("alerter listens");

    let (origin_alert, symptom_alert) = wait_until(
        "both alerts, the symptom suppressed",
        || async {
            let alerts = alertmanager.alerts().await;
            let origin = alert_of(&alerts, &origin_id)?.clone();
            let symptom = alert_of(&alerts, &symptom_id)?.clone();
            (symptom["status"]["state"] == "suppressed").then_some((origin, symptom))
        },
        &alertmanager,
    )
    .await;
    assert_eq!(origin_alert["status"]["state"], "active");
    assert_eq!(
        symptom_alert["status"]["inhibitedBy"],
        json!([origin_alert["fingerprint"]]),
        "{symptom_alert:#}"
    );

    // The critical origin pages through PagerDuty's Events API v2, with the
    // routing key read from its file, grouped by incident...
    let paged = wait_until(
        "page for the origin",
        || async { receiver.on("/oncall-pager").into_iter().next() },
        &alertmanager,
    )
    .await;
    assert_eq!(paged["routing_key"], PAGERDUTY_KEY, "{paged:#}");
    assert_eq!(paged["event_action"], "trigger", "{paged:#}");
    assert_eq!(paged["payload"]["severity"], "critical", "{paged:#}");
    let summary = paged["payload"]["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with("payment: "), "{paged:#}");
    let details = &paged["payload"]["custom_details"];
    assert_eq!(details["incident_id"], origin_id.as_str(), "{paged:#}");
    assert_eq!(details["root_cause_service"], "payment", "{paged:#}");
    // ...and reaches the team's channel too; the inhibited symptom does not.
    let posted = wait_until(
        "chat message for the origin",
        || async { receiver.on("/team-chat").into_iter().next() },
        &alertmanager,
    )
    .await;
    let title = posted["attachments"][0]["title"]
        .as_str()
        .unwrap_or_default();
    assert!(
        title.starts_with("[FIRING] critical ") && title.ends_with(" on payment"),
        "{posted:#}"
    );
    assert!(
        receiver
            .on("/team-chat")
            .iter()
            .all(|message| !message.to_string().contains("checkout")),
        "a suppressed symptom was posted: {:#?}",
        receiver.on("/team-chat")
    );

    // Once the origin resolves, the symptom is no longer inhibited.
    let mut resolved = event(
        "resolved",
        "payment",
        None,
        "critical",
        "payment: errors",
        onset,
    );
    if let IncidentEvent::Resolved(incident) = &mut resolved {
        incident.state = triage::model::IncidentState::Resolved;
        incident.resolved_unix_nanos = Some(now_secs() * 1_000_000_000);
    }
    events.send(resolved).expect("alerter listens");
    wait_until(
        "the symptom active again",
        || async {
            let alerts = alertmanager.alerts().await;
            (alert_of(&alerts, &symptom_id)?["status"]["state"] == "active").then_some(())
        },
        &alertmanager,
    )
    .await;

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("alerter stops")
        .expect("alerter does not panic");
}

/// `amtool`, which ships with Alertmanager, accepts the documented config
/// and resolves its routes as docs/ALERTING.md says.
#[test]
fn the_documented_alertmanager_config_passes_amtool() {
    let amtool = require_command("amtool", "prometheus-alertmanager");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager.yml");
    let output = Command::new(&amtool)
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("amtool runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "amtool check-config failed:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("1 inhibit rules"), "{text}");
    assert!(text.contains("2 receivers"), "{text}");
    // A critical alert pages and reaches the channel; a warning only the
    // channel.
    for (severity, receivers) in [
        ("critical", "oncall-pager,team-chat"),
        ("warning", "team-chat"),
    ] {
        let output = Command::new(&amtool)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--verify.receivers={receivers}"))
            .arg(format!("severity={severity}"))
            .output()
            .expect("amtool runs");
        assert!(
            output.status.success(),
            "severity={severity} is not routed to {receivers}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The PagerDuty routing key the test writes into its file.
const PAGERDUTY_KEY: &str = "test-routing-key";

/// `deploy/alertmanager.yml` with each receiver pointed at
/// `{base}/{receiver name}` and the group timings shortened for a test. The
/// secrets it reads from files (the PagerDuty routing key, the chat
/// webhook's URL) are written into `secrets` and the paths changed to them.
fn documented_config(base: &str, secrets: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager.yml");
    let text = std::fs::read_to_string(&path).expect("deploy/alertmanager.yml");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let route = config.get_mut("route").expect("route");
    route["group_wait"] = "0s".into();
    route["group_interval"] = "1s".into();
    let receivers = config
        .get_mut("receivers")
        .and_then(|receivers| receivers.as_sequence_mut())
        .expect("receivers");
    for receiver in receivers {
        let name = receiver["name"].as_str().expect("receiver name").to_owned();
        let url = format!("{base}/{name}");
        let mut configured = 0;
        let configs = |kind: &str, receiver: &mut serde_yaml::Value| {
            receiver
                .get_mut(kind)
                .and_then(|configs| configs.as_sequence_mut())
                .map(std::mem::take)
                .unwrap_or_default()
        };
        let mut pagerduty = configs("pagerduty_configs", receiver);
        for config in &mut pagerduty {
            let key = secrets.join(format!("{name}-routing-key"));
            std::fs::write(&key, format!("{PAGERDUTY_KEY}\n")).expect("write key");
            assert!(
                config.get("routing_key_file").is_some(),
                "{name}: key in a file"
            );
            config["routing_key_file"] = key.display().to_string().into();
            // Events API v2 is posted to `url`, PagerDuty's by default.
            config["url"] = url.clone().into();
        }
        let mut slack = configs("slack_configs", receiver);
        for config in &mut slack {
            let file = secrets.join(format!("{name}-webhook-url"));
            std::fs::write(&file, format!("{url}\n")).expect("write URL");
            assert!(
                config.get("api_url_file").is_some(),
                "{name}: URL in a file"
            );
            config["api_url_file"] = file.display().to_string().into();
        }
        let mut webhooks = configs("webhook_configs", receiver);
        for config in &mut webhooks {
            config["url"] = url.clone().into();
        }
        for (kind, list) in [
            ("pagerduty_configs", pagerduty),
            ("slack_configs", slack),
            ("webhook_configs", webhooks),
        ] {
            if !list.is_empty() {
                configured += list.len();
                receiver[kind] = serde_yaml::Value::Sequence(list);
            }
        }
        assert!(
            configured > 0,
            "{name}: a receiver this test can point at itself"
        );
    }
    serde_yaml::to_string(&config).expect("YAML")
}
