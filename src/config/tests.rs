use super::*;
use crate::alert::config::ALERTING_KEYS;
use crate::alert::{Auth, Secret, TargetConfig, TlsConfig};
use crate::detect::config::{DETECT_KEYS, ERRORS_KEYS, HYSTERESIS_KEYS, LATENCY_KEYS};
use crate::detect::config::{METRICS_KEYS, SATURATION_KEYS, TRAFFIC_KEYS, TREND_KEYS};
use crate::history::config::STORAGE_KEYS;
use crate::ingest::changes::ApiToken;
use crate::ingest::spans::SpanConfig;
use crate::query::config::API_KEYS;
use crate::security::config::{AUTH_KEYS, TLS_KEYS};
use crate::security::{AuthConfig, TlsConfig as ListenerTls};
use crate::store::config::STORE_KEYS;
use crate::validate::parse_duration;
use std::collections::BTreeSet;
use std::num::NonZeroUsize;

/// The problems `yaml` has, with no overrides.
fn problems(yaml: &str) -> Vec<Problem> {
    problems_with(yaml, &Overrides::default())
}

/// The problems `yaml` has under `overrides`.
fn problems_with(yaml: &str, overrides: &Overrides) -> Vec<Problem> {
    match Settings::from_yaml(yaml, overrides) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The paths of the problems `yaml` has.
fn paths(yaml: &str) -> BTreeSet<String> {
    problems(yaml)
        .into_iter()
        .map(|problem| problem.path)
        .collect()
}

/// The one problem `yaml` has.
fn only_problem(yaml: &str) -> Problem {
    let mut found = problems(yaml);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.remove(0)
}

/// Settings from `yaml`, which must be valid.
fn settings(yaml: &str) -> Settings {
    Settings::from_yaml(yaml, &Overrides::default()).expect("valid config")
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|path| path.to_string()).collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

#[test]
fn no_file_gives_the_defaults() {
    let loaded = Settings::load(None, &Overrides::default()).expect("defaults are valid");
    assert_eq!(loaded, Settings::default());
    assert_eq!(
        loaded.grpc.endpoint,
        "127.0.0.1:4317".parse().expect("addr")
    );
    assert_eq!(loaded.grpc.max_recv_msg_size, 4 * 1024 * 1024);
    assert_eq!(
        loaded.http.endpoint,
        "127.0.0.1:4318".parse().expect("addr")
    );
    assert_eq!(loaded.http.max_request_body_size, 20 * 1024 * 1024);
    assert_eq!(
        loaded.admin.endpoint,
        "127.0.0.1:8888".parse().expect("addr")
    );
    assert_eq!(loaded.log.level, "info");
    assert_eq!(loaded.log.format, LogFormat::Text);
    assert_eq!(loaded.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(loaded.store, StoreConfig::default());
    assert_eq!(loaded.detect, DetectConfig::default());
}

#[test]
fn empty_and_comment_only_files_give_the_defaults() {
    for yaml in [
        "",
        "\n\n",
        "# nothing here\n  # at all\n",
        "---\n",
        "receivers:\nstore:\n",
    ] {
        assert_eq!(settings(yaml), Settings::default(), "{yaml:?}");
    }
}

#[test]
fn full_valid_file() {
    let loaded = settings(
        r#"
receivers:
  otlp:
    grpc:
      endpoint: "0.0.0.0:14317"
      max_recv_msg_size_mib: 0.5
      max_buffered_mib: 64
      max_connections: 2000
      max_concurrent_streams: 8
      read_header_timeout: 5s
      request_timeout: 1m
      idle_timeout: 15m
      keepalive_interval: 30s
      keepalive_timeout: 5s
    http:
      endpoint: "[::]:14318"
      max_request_body_size_mib: 64
      max_buffered_mib: 512
      max_connections: 300
      read_header_timeout: 3s
      read_timeout: 20s
      idle_timeout: 90s
admin:
  endpoint: localhost:0
  max_connections: 16
  read_header_timeout: 2s
  read_timeout: 4s
  idle_timeout: 1m
api:
  endpoint: "0.0.0.0:14320"
  auth: { bearer_token_file: /run/secrets/api-token }
  tls: { cert_file: tls.crt, key_file: tls.key }
store:
  window: 1m30s
  windows: 2
  max_series: 500
  max_series_per_service: 500
  series_ttl: 1h
  pairing_timeout: 250ms
  pairing_capacity: 7
  metric_attributes: [http.route, state]
analyze:
  attributes: [app.tenant, "*.region_code"]
  trace_buffer: { capacity: 5000, ttl: 1m }
  sketch_size: 64
  min_bad_spans: 3
  min_bad_share: 0.1
detect:
  warmup_windows: 60
  history_windows: 720
  relearn_after: 1h
  lateness: 3s
  seasonality: false
  hysteresis: { open_after: 3, open_after_severe: 2, resolve_after: 6 }
  latency:
    ratio: 2
    p50_min_ms: 5
    p95_min_ms: 50
    p99_min_ms: 100
    min_requests: 50
    p99_min_requests: 500
    min_z: 4
    severe_ratio: 4
  errors:
    significance: 1e-6
    min_increase: 0.05
    min_requests: 20
    rate_floor: 0.01
    min_z: 0
    severe_ratio: 20
  traffic:
    significance: 0.001
    min_rate: 0
    drop_ratio: 0.25
    spike_ratio: 3
    min_z: 2
    severe_drop_ratio: 0
    severe_spike_ratio: 10
  metrics:
    watch: ["my.queue.*"]
    min_z: 8
    min_change: 1
  trend:
    watch: []
    min_duration: 1h
    min_r2: 0.9
    min_rise: 0.2
    horizon: 1d
    limits: { process.memory.usage: 2147483648, "*.heap": 1.5 }
  saturation: { pool_usage: 1, cpu_throttled: 0.5 }
  severe_significance: 1.0e-12
changes:
  lookback: 45m
  capacity: 50
  detect_from_telemetry: false
  rollout_debounce: 30s
  instance_timeout: 20s
  flag_window: 1m
  flag_shift: 0.3
  api_token: s3cret
storage:
  enabled: false
  data_dir: /var/lib/triage
  retention: 2d
  snapshot_interval: 30s
log:
  level: "triage=debug,info"
  format: json
shutdown_timeout: 5m
"#,
    );
    let expected = Settings {
        decode: crate::receiver::decode::Limits::default(),
        admission: Default::default(),
        forward: Default::default(),
        grpc: GrpcSettings {
            endpoint: "0.0.0.0:14317".parse().expect("addr"),
            max_recv_msg_size: 512 * 1024,
            max_buffered: 64 * 1024 * 1024,
            connections: ConnectionLimits {
                max_connections: NonZeroUsize::new(2000).expect("non-zero"),
                read_header_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(15 * 60),
            },
            max_concurrent_streams: NonZeroUsize::new(8).expect("non-zero"),
            request_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(5),
            tls: None,
            auth: AuthConfig::default(),
        },
        http: HttpSettings {
            endpoint: "[::]:14318".parse().expect("addr"),
            max_request_body_size: 64 * 1024 * 1024,
            max_buffered: 512 * 1024 * 1024,
            connections: ConnectionLimits {
                max_connections: NonZeroUsize::new(300).expect("non-zero"),
                read_header_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(90),
            },
            read_timeout: Duration::from_secs(20),
            tls: None,
            auth: AuthConfig::default(),
        },
        admin: AdminSettings {
            endpoint: "127.0.0.1:0".parse().expect("addr"),
            connections: ConnectionLimits {
                max_connections: NonZeroUsize::new(16).expect("non-zero"),
                read_header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
            },
            read_timeout: Duration::from_secs(4),
            tls: None,
            auth: AuthConfig::default(),
        },
        api: ApiConfig {
            endpoint: "0.0.0.0:14320".parse().expect("addr"),
            auth: AuthConfig {
                bearer_token_files: vec!["/run/secrets/api-token".into()],
                ..AuthConfig::default()
            },
            tls: Some(ListenerTls::new("tls.crt", "tls.key")),
            limits: Default::default(),
        },
        store: StoreConfig {
            window: Duration::from_secs(90),
            windows: NonZeroUsize::new(2).expect("non-zero"),
            max_series: NonZeroUsize::new(500).expect("non-zero"),
            max_series_per_service: NonZeroUsize::new(500).expect("non-zero"),
            series_ttl: Duration::from_secs(3600),
            pairing_timeout: Duration::from_millis(250),
            pairing_capacity: NonZeroUsize::new(7).expect("non-zero"),
            metric_attributes: vec!["http.route".to_owned(), "state".to_owned()],
        },
        analyze: SpanConfig {
            attributes: vec!["app.tenant".to_owned(), "*.region_code".to_owned()],
            trace_buffer_capacity: NonZeroUsize::new(5000).expect("non-zero"),
            trace_buffer_ttl: Duration::from_secs(60),
            sketch_size: NonZeroUsize::new(64).expect("non-zero"),
            min_bad_spans: 3,
            min_bad_share: 0.1,
        },
        detect: DetectConfig {
            warmup_windows: 60,
            history_windows: 720,
            relearn_after: Duration::from_secs(3600),
            lateness: Duration::from_secs(3),
            seasonality: false,
            open_after: 3,
            open_after_severe: 2,
            resolve_after: 6,
            latency_ratio: 2.0,
            latency_p50_min_ms: 5.0,
            latency_p95_min_ms: 50.0,
            latency_p99_min_ms: 100.0,
            latency_min_requests: 50,
            latency_p99_min_requests: 500,
            latency_min_z: 4.0,
            error_significance: 1e-6,
            error_min_increase: 0.05,
            error_min_requests: 20,
            error_rate_floor: 0.01,
            error_min_z: 0.0,
            traffic_significance: 0.001,
            traffic_min_rate: 0.0,
            traffic_drop_ratio: 0.25,
            traffic_spike_ratio: 3.0,
            traffic_min_z: 2.0,
            metric_patterns: vec!["my.queue.*".to_owned()],
            metric_min_z: 8.0,
            metric_min_change: 1.0,
            trend_patterns: Vec::new(),
            trend_min_duration: Duration::from_secs(3600),
            trend_min_r2: 0.9,
            trend_min_rise: 0.2,
            trend_horizon: Duration::from_secs(86_400),
            limits: [
                ("process.memory.usage".to_owned(), 2_147_483_648.0),
                ("*.heap".to_owned(), 1.5),
            ]
            .into_iter()
            .collect(),
            pool_usage_ratio: 1.0,
            cpu_throttled_ratio: 0.5,
            severe_latency_ratio: 4.0,
            severe_error_ratio: 20.0,
            severe_traffic_drop_ratio: 0.0,
            severe_traffic_spike_ratio: 10.0,
            severe_significance: 1e-12,
        },
        storage: StorageConfig {
            enabled: false,
            data_dir: "/var/lib/triage".into(),
            retention: Duration::from_secs(2 * 86_400),
            snapshot_interval: Duration::from_secs(30),
        },
        changes: ChangesConfig {
            lookback: Duration::from_secs(45 * 60),
            capacity: NonZeroUsize::new(50).expect("non-zero"),
            api_token: ApiToken::new("s3cret"),
            detect_from_telemetry: false,
            rollout_debounce: Duration::from_secs(30),
            instance_timeout: Duration::from_secs(20),
            flag_window: Duration::from_secs(60),
            flag_shift: 0.3,
        },
        alerting: AlertConfig::default(),
        agent: crate::agent::AgentConfig::default(),
        log: LogSettings {
            level: "triage=debug,info".to_owned(),
            format: LogFormat::Json,
        },
        shutdown_timeout: Duration::from_secs(300),
    };
    assert_eq!(loaded, expected);
}

#[test]
fn every_field_wrong_reports_one_problem_per_field() {
    let yaml = r#"
receivers:
  otlp:
    grpc:
      endpoint: "somewhere"
      max_recv_msg_size_mib: 0
    http:
      endpoint: 4318
      max_request_body_size_mib: "20MiB"
admin:
  endpoint: "127.0.0.1"
store:
  window: 10
  windows: 1
  max_series: 0
  max_series_per_service: -3
  series_ttl: soon
  pairing_timeout: 0s
  pairing_capacity: 1.5
  metric_attributes: http.route
log:
  level: "info debug"
  format: xml
shutdown_timeout: 1h
"#;
    let found = problems(yaml);
    let expected = set(&[
        "receivers.otlp.grpc.endpoint",
        "receivers.otlp.grpc.max_recv_msg_size_mib",
        "receivers.otlp.http.endpoint",
        "receivers.otlp.http.max_request_body_size_mib",
        "admin.endpoint",
        "store.window",
        "store.windows",
        "store.max_series",
        "store.max_series_per_service",
        "store.series_ttl",
        "store.pairing_timeout",
        "store.pairing_capacity",
        "store.metric_attributes",
        "log.level",
        "log.format",
        "shutdown_timeout",
    ]);
    let found_paths: BTreeSet<String> = found.iter().map(|problem| problem.path.clone()).collect();
    assert_eq!(found_paths, expected);
    // One problem per field: cross-field rules stay quiet when a side
    // is already wrong.
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    let message = |path: &str| {
        found
            .iter()
            .find(|problem| problem.path == path)
            .map(|problem| problem.message.clone())
            .expect("problem at path")
    };
    assert_eq!(
        message("store.window"),
        "\"10\" is not a duration; write it with a unit, e.g. \"10s\""
    );
    assert!(message("admin.endpoint").contains("\"0.0.0.0:8888\""));
    assert!(message("receivers.otlp.http.endpoint").contains("got 4318"));
    assert!(message("store.windows").contains("from 2 to 10000"));
    assert!(message("log.format").contains("`text` or `json`"));
    assert!(message("shutdown_timeout").contains("at most 5m"));
}

#[test]
fn unknown_keys_are_reported_with_their_full_path() {
    let found = problems(
        r#"
foo: 1
receivers:
  otlp:
    grpc:
      endpoint: "0.0.0.0:4317"
      max_msg: 3
    zipkin: {}
store:
  windos: 3
  window: 5s
log:
  colour: true
"#,
    );
    let found_paths: BTreeSet<String> = found.iter().map(|problem| problem.path.clone()).collect();
    assert_eq!(
        found_paths,
        set(&[
            "foo",
            "receivers.otlp.grpc.max_msg",
            "receivers.otlp.zipkin",
            "store.windos",
            "log.colour",
        ])
    );
    let windos = found
        .iter()
        .find(|problem| problem.path == "store.windos")
        .expect("store.windos reported");
    assert!(
        windos
            .message
            .starts_with("unknown field `windos`, expected one of `window`, `windows`,"),
        "{}",
        windos.message
    );
}

#[test]
fn a_non_mapping_section_is_a_problem_at_its_path() {
    assert_eq!(
        paths("receivers:\n  otlp: [grpc]\nadmin: 8888\nstore: 10s\n"),
        set(&["receivers.otlp", "admin", "store"])
    );
    let problem = only_problem("- receivers\n");
    assert_eq!(problem.path, "(top level)");
    assert!(
        problem.message.contains("got a list"),
        "{}",
        problem.message
    );
}

#[test]
fn a_key_without_a_value_is_a_problem() {
    assert_eq!(only_problem("store:\n  window:\n").path, "store.window");
}

#[test]
fn analyze_problems_name_their_field() {
    let yaml = r#"
analyze:
  attributes: [app.tenant, "", "a*b", http.route, app.tenant, 7]
  trace_buffer: { capacity: 0, ttl: -1s, size: 3 }
  sketch_size: 100000
  min_bad_spans: -2
  min_bad_share: 1.5
"#;
    assert_eq!(
        paths(yaml),
        set(&[
            "analyze.attributes[1]",
            "analyze.attributes[2]",
            "analyze.attributes[3]",
            "analyze.attributes[4]",
            "analyze.attributes[5]",
            "analyze.trace_buffer.capacity",
            "analyze.trace_buffer.ttl",
            "analyze.trace_buffer.size",
            "analyze.sketch_size",
            "analyze.min_bad_spans",
            "analyze.min_bad_share",
        ])
    );
    let found = problems(yaml);
    let message = |path: &str| {
        found
            .iter()
            .find(|problem| problem.path == path)
            .map(|problem| problem.message.clone())
            .unwrap_or_default()
    };
    assert!(message("analyze.attributes[3]").contains("read already"));
    assert!(message("analyze.attributes[4]").contains("twice"));
    let many: Vec<String> = (0..9).map(|n| format!("k{n}")).collect();
    let problem = only_problem(&format!("analyze:\n  attributes: [{}]\n", many.join(", ")));
    assert_eq!(problem.path, "analyze.attributes");
    assert!(problem.message.contains("at most 8"), "{}", problem.message);
    assert_eq!(
        settings("analyze:\n  attributes: [\"*.tenant\"]\n")
            .analyze
            .attributes,
        vec!["*.tenant".to_string()]
    );
}

#[test]
fn cross_field_rules() {
    let problem = only_problem("store:\n  max_series: 100\n");
    assert_eq!(problem.path, "store.max_series_per_service");
    assert_eq!(
        problem.message,
        "2000 (the default) is more than store.max_series (100); \
             lower it or raise store.max_series"
    );

    let problem = only_problem("store:\n  window: 10m\n  series_ttl: 5m\n");
    assert_eq!(problem.path, "store.series_ttl");
    assert!(
        problem
            .message
            .starts_with("5m is shorter than store.window (10m)"),
        "{}",
        problem.message
    );

    // Equal is allowed on both.
    settings("store:\n  max_series: 10\n  max_series_per_service: 10\n");
    settings("store:\n  window: 1m\n  series_ttl: 1m\n");
}

#[test]
fn durations() {
    let ok: &[(&str, Duration)] = &[
        ("500ms", Duration::from_millis(500)),
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1d", Duration::from_secs(86_400)),
        ("1m30s", Duration::from_secs(90)),
        ("1h2m3s4ms", Duration::from_millis(3_723_004)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.5m", Duration::from_secs(30)),
        (".25s", Duration::from_millis(250)),
        ("2.s", Duration::from_secs(2)),
        ("0.0001ms", Duration::from_nanos(100)),
        ("0s", Duration::ZERO),
        (" 10s ", Duration::from_secs(10)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text), Ok(*expected), "{text:?}");
    }

    let bad: &[(&str, &str)] = &[
        ("10", "write it with a unit, e.g. \"10s\""),
        ("1.5", "write it with a unit, e.g. \"1.5s\""),
        ("", "is not a duration"),
        ("s", "is not a duration"),
        ("10 s", "is not a duration"),
        ("1m 30s", "is not a duration"),
        ("10sec", "is not a duration"),
        ("10S", "is not a duration"),
        ("-5s", "is not a duration"),
        ("1m30", "is not a duration"),
        ("1..5s", "is not a duration"),
        (".s", "is not a duration"),
        ("1e3s", "is not a duration"),
        ("99999999999999999999999d", "too long"),
        ("999999999999999999999999999999999999999999s", "too long"),
    ];
    for (text, expected) in bad {
        let message = parse_duration(text).expect_err(text);
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn duration_limits() {
    assert!(only_problem("store:\n  window: 50ms\n")
        .message
        .contains("at least 100ms, got 50ms"));
    settings("store:\n  window: 100ms\n  series_ttl: 100ms\n");
    assert_eq!(
        only_problem("shutdown_timeout: 0s\n").path,
        "shutdown_timeout"
    );
    settings("shutdown_timeout: 5m\n");
    assert_eq!(
        only_problem("store:\n  pairing_timeout: 0ms\n").path,
        "store.pairing_timeout"
    );
}

#[test]
fn socket_addresses() {
    let loaded = settings(
        r#"
receivers:
  otlp:
    grpc: { endpoint: "localhost:0" }
    http: { endpoint: "[::1]:4318" }
admin: { endpoint: 10.1.2.3:9 }
"#,
    );
    assert_eq!(loaded.grpc.endpoint, "127.0.0.1:0".parse().expect("addr"));
    assert_eq!(loaded.http.endpoint, "[::1]:4318".parse().expect("addr"));
    assert_eq!(loaded.admin.endpoint, "10.1.2.3:9".parse().expect("addr"));

    for bad in [
        "example.com:80",
        "localhost",
        "localhost:99999",
        "1.2.3.4:",
        "::1:80",
    ] {
        let yaml = format!("admin:\n  endpoint: \"{bad}\"\n");
        let problem = only_problem(&yaml);
        assert_eq!(problem.path, "admin.endpoint");
        assert!(
            problem.message.contains("is not a socket address"),
            "{bad}: {}",
            problem.message
        );
    }
}

#[test]
fn sizes() {
    let loaded = settings(
        "receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size_mib: 1024\n    \
             http:\n      max_request_body_size_mib: 0.25\n",
    );
    assert_eq!(loaded.grpc.max_recv_msg_size, 1024 * 1024 * 1024);
    assert_eq!(loaded.http.max_request_body_size, 256 * 1024);

    for bad in ["0", "-1", "1024.5", ".nan", ".inf", "0.0000000001"] {
        let yaml = format!("receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size_mib: {bad}\n");
        assert_eq!(
            only_problem(&yaml).path,
            "receivers.otlp.grpc.max_recv_msg_size_mib",
            "{bad}"
        );
    }
}

#[test]
fn metric_attributes_report_each_bad_entry() {
    assert_eq!(
        paths("store:\n  metric_attributes: [ok, 3, \"\", [x]]\n"),
        set(&[
            "store.metric_attributes[1]",
            "store.metric_attributes[2]",
            "store.metric_attributes[3]",
        ])
    );
    // An empty list is a choice: keep no metric attributes at all.
    assert!(settings("store:\n  metric_attributes: []\n")
        .store
        .metric_attributes
        .is_empty());
}

#[test]
fn log_levels() {
    for good in [
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "off",
        "WARN",
        "triage=debug,info",
        "triage::store=trace",
        "info,h2=warn,tower.http=off",
    ] {
        assert_eq!(
            settings(&format!("log:\n  level: \"{good}\"\n")).log.level,
            good
        );
    }
    for bad in [
        "",
        "info debug",
        "triage=verbose",
        "info;rm",
        "[span]",
        "warning",
        "triage=debug,verbose",
    ] {
        let yaml = format!("log:\n  level: \"{bad}\"\n");
        assert_eq!(only_problem(&yaml).path, "log.level", "{bad:?}");
    }
}

#[test]
fn overrides_beat_the_file() {
    let yaml = r#"
receivers:
  otlp:
    grpc: { endpoint: "0.0.0.0:4317" }
    http: { endpoint: "0.0.0.0:4318" }
admin: { endpoint: "0.0.0.0:8888" }
log: { level: info, format: text }
"#;
    let overrides = Overrides {
        grpc_endpoint: Some("127.0.0.1:1".to_owned()),
        http_endpoint: Some("localhost:2".to_owned()),
        admin_endpoint: Some("[::1]:3".to_owned()),
        api_endpoint: Some("127.0.0.1:4".to_owned()),
        log_level: Some("debug".to_owned()),
        log_format: Some(LogFormat::Json),
    };
    let loaded = Settings::from_yaml(yaml, &overrides).expect("valid");
    assert_eq!(loaded.grpc.endpoint, "127.0.0.1:1".parse().expect("addr"));
    assert_eq!(loaded.http.endpoint, "127.0.0.1:2".parse().expect("addr"));
    assert_eq!(loaded.admin.endpoint, "[::1]:3".parse().expect("addr"));
    assert_eq!(loaded.api.endpoint, "127.0.0.1:4".parse().expect("addr"));
    assert_eq!(loaded.log.level, "debug");
    assert_eq!(loaded.log.format, LogFormat::Json);

    // Unset overrides leave the file's values alone.
    let loaded = Settings::from_yaml(yaml, &Overrides::default()).expect("valid");
    assert_eq!(loaded.grpc.endpoint, "0.0.0.0:4317".parse().expect("addr"));
    assert_eq!(loaded.log.format, LogFormat::Text);
}

#[test]
fn overrides_beat_the_defaults() {
    let overrides = Overrides {
        grpc_endpoint: Some("0.0.0.0:0".to_owned()),
        ..Overrides::default()
    };
    let loaded = Settings::load(None, &overrides).expect("valid");
    assert_eq!(loaded.grpc.endpoint, "0.0.0.0:0".parse().expect("addr"));
    assert_eq!(loaded.http, Settings::default().http);
}

#[test]
fn bad_overrides_are_problems_named_by_the_override() {
    let overrides = Overrides {
        grpc_endpoint: Some("nowhere".to_owned()),
        log_level: Some("loud".to_owned()),
        ..Overrides::default()
    };
    // A bad file value is still reported even though an override
    // replaces it: the file is wrong and will bite once the flag goes.
    let found = problems_with("admin:\n  endpoint: bad\n", &overrides);
    let found_paths: BTreeSet<String> = found.iter().map(|problem| problem.path.clone()).collect();
    assert_eq!(
        found_paths,
        set(&["admin.endpoint", GRPC_ENDPOINT_OVERRIDE, LOG_LEVEL_OVERRIDE])
    );
}

#[test]
fn syntax_errors_give_the_position() {
    match Settings::from_yaml("store:\n  window: [10s\n", &Overrides::default()) {
        Err(ConfigError::Syntax { message }) => {
            assert!(message.starts_with("config text: "), "{message}");
            assert!(message.contains("line"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn merge_keys_are_applied() {
    let loaded = settings(
        r#"
receivers:
  otlp:
    grpc: &listen
      endpoint: "0.0.0.0:4317"
    http:
      <<: *listen
      endpoint: "0.0.0.0:4318"
"#,
    );
    assert_eq!(loaded.http.endpoint, "0.0.0.0:4318".parse().expect("addr"));
}

#[test]
fn invalid_displays_one_line_per_problem() {
    let error = Settings::from_yaml(
        "store:\n  windos: 1\nshutdown_timeout: 0s\n",
        &Overrides::default(),
    )
    .expect_err("invalid");
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("store.windos: unknown field `windos`"),
        "{text}"
    );
    assert_eq!(lines[1], "shutdown_timeout: must be more than 0s");
}

#[test]
fn the_example_parses_to_the_defaults() {
    assert_eq!(settings(example_yaml()), Settings::default());
}

#[test]
fn the_example_lists_every_key() {
    let document: Value = serde_yaml::from_str(example_yaml()).expect("example is YAML");
    let sections: &[(&[&str], &[&str])] = &[
        (&[], TOP_KEYS),
        (&["receivers"], RECEIVERS_KEYS),
        (&["receivers", "otlp"], OTLP_KEYS),
        (&["receivers", "otlp", "grpc"], GRPC_KEYS),
        (&["receivers", "otlp", "http"], HTTP_KEYS),
        (&["admin"], ADMIN_KEYS),
        (&["api"], API_KEYS),
        (&["store"], STORE_KEYS),
        (&["detect"], DETECT_KEYS),
        (&["detect", "hysteresis"], HYSTERESIS_KEYS),
        (&["detect", "latency"], LATENCY_KEYS),
        (&["detect", "errors"], ERRORS_KEYS),
        (&["detect", "traffic"], TRAFFIC_KEYS),
        (&["detect", "metrics"], METRICS_KEYS),
        (&["detect", "trend"], TREND_KEYS),
        (&["detect", "saturation"], SATURATION_KEYS),
        // The token keys are shown commented out: there is no token by default.
        (
            &["changes"],
            &[
                "lookback",
                "capacity",
                "detect_from_telemetry",
                "rollout_debounce",
                "instance_timeout",
                "flag_window",
                "flag_shift",
            ],
        ),
        (&["storage"], STORAGE_KEYS),
        (&["alerting"], ALERTING_KEYS),
        (&["forward"], crate::forward::config::FORWARD_KEYS),
        (&["log"], LOG_KEYS),
    ];
    for (path, keys) in sections {
        let section = path
            .iter()
            .try_fold(&document, |value, key| value.get(key))
            .expect("section in example");
        for key in *keys {
            // Every listener's `tls:` and `auth:` are there but empty
            // (off by default); their keys are commented out, checked below.
            if ["tls", "auth"].contains(key) {
                assert!(
                    section.get(key).is_some_and(Value::is_null),
                    "{path:?} {key}"
                );
                continue;
            }
            assert!(section.get(key).is_some(), "{path:?} lacks {key}");
        }
    }
    // Each of the four listeners shows every TLS and auth key, commented.
    let count = |text: &str, prefix: &str| {
        text.lines()
            .filter(|line| line.trim_start().starts_with(prefix))
            .count()
    };
    for key in TLS_KEYS.iter().chain(AUTH_KEYS) {
        let in_fragment = count(crate::security::config::EXAMPLE, &format!("{key}:"));
        assert!(in_fragment > 0, "{key}");
        assert!(
            count(example_yaml(), &format!("# {key}:")) >= 4 * in_fragment,
            "`# {key}:` in the example"
        );
    }
}

#[test]
fn every_listener_reads_tls_and_auth_and_names_their_fields() {
    let loaded = settings(
        r#"
receivers:
  otlp:
    grpc:
      tls: { cert_file: g.crt, key_file: g.key, client_ca_file: ca.crt, min_version: "1.3" }
      auth: { bearer_token_env: [OTLP_TOKEN] }
    http:
      tls: { cert_file: h.crt, key_file: h.key, reload_interval: 0s }
      auth: { bearer_token_files: [/run/secrets/otlp] }
admin:
  tls: { cert_file: a.crt, key_file: a.key }
  auth: { bearer_tokens: [one, two] }
"#,
    );
    let grpc_tls = loaded.grpc.tls.expect("grpc tls");
    assert_eq!(grpc_tls.client_ca_file, Some("ca.crt".into()));
    assert_eq!(grpc_tls.min_version, crate::security::TlsVersion::V1_3);
    assert_eq!(loaded.grpc.auth.bearer_token_env, ["OTLP_TOKEN"]);
    assert_eq!(
        loaded.http.tls.expect("http tls").reload_interval,
        Duration::ZERO
    );
    assert!(loaded.http.auth.is_enabled());
    assert_eq!(loaded.admin.tls, Some(ListenerTls::new("a.crt", "a.key")));
    assert_eq!(loaded.admin.auth, AuthConfig::tokens(["one", "two"]));

    let found = problems(
        r#"
receivers:
  otlp:
    grpc: { tls: { key_file: k }, auth: { bearer_tokens: "" } }
    http: { tls: { cert_file: c, key_file: k, min_version: tls1.2 } }
admin: { auth: { bearer_token: x } }
"#,
    );
    let paths: Vec<&str> = found.iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "receivers.otlp.grpc.tls.cert_file",
            "receivers.otlp.grpc.auth.bearer_tokens[0]",
            "receivers.otlp.http.tls.min_version",
            "admin.auth.bearer_token",
        ],
        "{found:?}"
    );
}

#[test]
fn every_detect_field_wrong_reports_one_problem_per_field() {
    let yaml = r#"
detect:
  warmup_windows: 0
  history_windows: 5
  relearn_after: 0s
  seasonality: "yes"
  hysteresis: { open_after: 0, open_after_severe: -1, resolve_after: 1001 }
  latency:
    ratio: 1
    p50_min_ms: -1
    p95_min_ms: "20ms"
    p99_min_ms: .nan
    min_requests: 0
    p99_min_requests: 2.5
    min_z: -3
    severe_ratio: 0.5
  errors:
    significance: 0
    min_increase: 1
    min_requests: -10
    rate_floor: 1
    min_z: .inf
    severe_ratio: 1
  traffic:
    significance: 1.5
    min_rate: -1
    drop_ratio: 1
    spike_ratio: 0.5
    min_z: "3"
    severe_drop_ratio: -0.1
    severe_spike_ratio: 1
  metrics: { watch: "process.*", min_z: -1, min_change: [] }
  trend:
    watch: [ok, 3]
    min_duration: 30
    min_r2: 1.5
    min_rise: -0.1
    horizon: 0m
    limits: { process.memory.usage: 0, "": 5, jvm.heap: big }
  saturation: { pool_usage: 0, cpu_throttled: 1.1 }
  severe_significance: 1
"#;
    let found = problems(yaml);
    let expected = set(&[
        "detect.warmup_windows",
        "detect.history_windows",
        "detect.relearn_after",
        "detect.seasonality",
        "detect.hysteresis.open_after",
        "detect.hysteresis.open_after_severe",
        "detect.hysteresis.resolve_after",
        "detect.latency.ratio",
        "detect.latency.p50_min_ms",
        "detect.latency.p95_min_ms",
        "detect.latency.p99_min_ms",
        "detect.latency.min_requests",
        "detect.latency.p99_min_requests",
        "detect.latency.min_z",
        "detect.latency.severe_ratio",
        "detect.errors.significance",
        "detect.errors.min_increase",
        "detect.errors.min_requests",
        "detect.errors.rate_floor",
        "detect.errors.min_z",
        "detect.errors.severe_ratio",
        "detect.traffic.significance",
        "detect.traffic.min_rate",
        "detect.traffic.drop_ratio",
        "detect.traffic.spike_ratio",
        "detect.traffic.min_z",
        "detect.traffic.severe_drop_ratio",
        "detect.traffic.severe_spike_ratio",
        "detect.metrics.watch",
        "detect.metrics.min_z",
        "detect.metrics.min_change",
        "detect.trend.watch[1]",
        "detect.trend.min_duration",
        "detect.trend.min_r2",
        "detect.trend.min_rise",
        "detect.trend.horizon",
        "detect.trend.limits.process.memory.usage",
        "detect.trend.limits.",
        "detect.trend.limits.jvm.heap",
        "detect.saturation.pool_usage",
        "detect.saturation.cpu_throttled",
        "detect.severe_significance",
    ]);
    let found_paths: BTreeSet<String> = found.iter().map(|problem| problem.path.clone()).collect();
    assert_eq!(found_paths, expected);
    // One problem per field: cross-field rules stay quiet when a side is
    // already wrong.
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    let message = |path: &str| {
        found
            .iter()
            .find(|problem| problem.path == path)
            .map(|problem| problem.message.clone())
            .expect("problem at path")
    };
    assert_eq!(
        message("detect.errors.significance"),
        "must be more than 0 and less than 1, got 0"
    );
    assert_eq!(
        message("detect.latency.ratio"),
        "must be more than 1, got 1"
    );
    assert_eq!(
        message("detect.saturation.cpu_throttled"),
        "must be more than 0 and at most 1, got 1.1"
    );
    assert!(message("detect.history_windows").contains("from 10 to 10000"));
    assert!(message("detect.trend.min_duration").contains("\"30s\""));
    assert!(message("detect.seasonality").contains("`true` or `false`"));
    assert!(
        message("detect.errors.min_z").contains("got .inf"),
        "{}",
        message("detect.errors.min_z")
    );
}

#[test]
fn detect_cross_field_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "detect:\n  warmup_windows: 400\n",
            "detect.warmup_windows",
            "400 is more than detect.history_windows (360); \
             a series would warm up for longer than the history it keeps",
        ),
        (
            "detect:\n  history_windows: 20\n",
            "detect.warmup_windows",
            "30 (the default) is more than detect.history_windows (20); \
             a series would warm up for longer than the history it keeps",
        ),
        (
            "detect:\n  hysteresis: { open_after: 1, open_after_severe: 2 }\n",
            "detect.hysteresis.open_after_severe",
            "2 is more than detect.hysteresis.open_after (1); \
             severe deviations should open incidents sooner, not later",
        ),
        (
            "detect:\n  latency: { ratio: 4 }\n",
            "detect.latency.severe_ratio",
            "3 (the default) is less than detect.latency.ratio (4); \
             a severe deviation must be at least as large as an ordinary one",
        ),
        (
            "detect:\n  traffic: { spike_ratio: 6 }\n",
            "detect.traffic.severe_spike_ratio",
            "5 (the default) is less than detect.traffic.spike_ratio (6); \
             a severe deviation must be at least as large as an ordinary one",
        ),
        (
            "detect:\n  traffic: { drop_ratio: 0.05 }\n",
            "detect.traffic.severe_drop_ratio",
            "0.1 (the default) is more than detect.traffic.drop_ratio (0.05); \
             a severe drop must lose at least as much traffic as a drop",
        ),
    ];
    for (yaml, path, message) in cases {
        let problem = only_problem(yaml);
        assert_eq!(problem.path, *path, "{yaml}");
        assert_eq!(problem.message, *message, "{yaml}");
    }
    // Equal is allowed.
    settings("detect:\n  warmup_windows: 360\n");
    settings("detect:\n  hysteresis: { open_after: 1, open_after_severe: 1 }\n");
    settings("detect:\n  latency: { ratio: 3 }\n  traffic: { spike_ratio: 5, drop_ratio: 0.1 }\n");
}

#[test]
fn detect_sections_may_be_partial_or_empty() {
    let loaded =
        settings("detect:\n  latency:\n  trend:\n    limits:\n  errors: { significance: 0.001 }\n");
    assert_eq!(
        loaded.detect,
        DetectConfig {
            error_significance: 0.001,
            ..DetectConfig::default()
        }
    );
    // An empty watch list is a choice: watch no metrics.
    assert!(settings("detect:\n  metrics: { watch: [] }\n")
        .detect
        .metric_patterns
        .is_empty());
}

#[test]
fn fixtures_load() {
    let loaded = Settings::load(Some(&fixture("valid.yaml")), &Overrides::default())
        .expect("valid.yaml is valid");
    assert_eq!(loaded.grpc.endpoint, "0.0.0.0:4317".parse().expect("addr"));
    assert_eq!(loaded.http.endpoint, "0.0.0.0:4318".parse().expect("addr"));
    assert_eq!(loaded.admin.endpoint, "0.0.0.0:8888".parse().expect("addr"));
    assert_eq!(loaded.log.format, LogFormat::Json);

    match Settings::load(Some(&fixture("invalid.yaml")), &Overrides::default()) {
        Err(ConfigError::Invalid(found)) => {
            let found_paths: BTreeSet<String> =
                found.into_iter().map(|problem| problem.path).collect();
            assert_eq!(
                found_paths,
                set(&[
                    "receivers.otlp.grpc.endpoint",
                    "receivers.otlp.http.max_request_body_size_mib",
                    "store.window",
                    "store.windos",
                    "store.max_series_per_service",
                    "log.format",
                ])
            );
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_a_read_error() {
    let path = fixture("does-not-exist.yaml");
    match Settings::load(Some(&path), &Overrides::default()) {
        Err(error @ ConfigError::Read { .. }) => {
            assert!(error.to_string().starts_with("cannot read config file "));
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn storage_values_and_errors_name_the_field() {
    let loaded = settings(
        "storage:\n  enabled: false\n  data_dir: /var/lib/triage\n  retention: 30d\n  \
         snapshot_interval: 5m\n",
    );
    assert!(!loaded.storage.enabled);
    assert_eq!(loaded.storage.data_dir, PathBuf::from("/var/lib/triage"));
    assert_eq!(loaded.storage.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(loaded.storage.snapshot_interval, Duration::from_secs(300));

    let yaml = r#"
storage:
  enabled: sometimes
  data_dir: ""
  retention: 10m
  snapshot_interval: 100ms
  keep: forever
"#;
    assert_eq!(
        paths(yaml),
        set(&[
            "storage.enabled",
            "storage.data_dir",
            "storage.retention",
            "storage.snapshot_interval",
            "storage.keep",
        ])
    );
    let problem = only_problem("storage:\n  retention: 14\n");
    assert_eq!(problem.path, "storage.retention");
    assert!(problem.message.contains("unit"), "{problem}");
}

#[test]
fn changes_problems_name_the_field() {
    let found = paths(
        r#"
changes:
  lookback: 2d
  capacity: 0
  detect_from_telemetry: "yes"
  rollout_debounce: 0s
  instance_timeout: 10ms
  flag_window: 5
  flag_shift: 0.01
  api_token: ""
  extra: 1
"#,
    );
    assert_eq!(
        found,
        set(&[
            "changes.lookback",
            "changes.capacity",
            "changes.detect_from_telemetry",
            "changes.rollout_debounce",
            "changes.instance_timeout",
            "changes.flag_window",
            "changes.flag_shift",
            "changes.api_token",
            "changes.extra",
        ])
    );

    let both = only_problem(r#"changes: { api_token: a, api_token_file: /nonexistent/x }"#);
    assert_eq!(both.path, "changes.api_token_file");
    let missing = only_problem(r#"changes: { api_token_file: /nonexistent/token }"#);
    assert_eq!(missing.path, "changes.api_token_file");
    assert!(missing.message.contains("cannot read"), "{missing}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").expect("write token");
    let loaded = settings(&format!(
        "changes: {{ api_token_file: {} }}",
        file.display()
    ));
    let token = loaded.changes.api_token.expect("token read");
    assert!(token.matches("s3cret"));
    let tuned =
        settings("changes: { lookback: 1h, flag_shift: 0.5, detect_from_telemetry: false }");
    assert_eq!(tuned.changes.lookback, Duration::from_secs(3600));
    assert_eq!(tuned.changes.flag_shift, 0.5);
    assert!(!tuned.changes.detect_from_telemetry);
}

#[test]
fn api_problems_name_their_field() {
    let found = problems(
        r#"
api:
  endpoint: "nowhere"
  auth: { bearer_token: "has space", bearer_token_file: "" }
  tls: { cert_file: 7 }
  extra: 1
"#,
    );
    let paths: BTreeSet<&str> = found.iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "api.endpoint",
            "api.auth.bearer_token",
            "api.auth.bearer_token_file",
            "api.tls.cert_file",
            "api.tls.key_file",
            "api.extra",
        ]
        .into_iter()
        .collect(),
        "{found:?}"
    );

    let half = only_problem(r#"api: { tls: { cert_file: /c } }"#);
    assert_eq!(half.path, "api.tls.key_file");
    assert!(half.message.contains("required when tls is set"), "{half}");

    // The single-token keys it had first still work, beside the lists.
    let both = settings(
        r#"api: { auth: { bearer_token: a, bearer_token_file: /t, bearer_tokens: [b] } }"#,
    );
    assert_eq!(
        both.api.auth,
        AuthConfig {
            bearer_token_files: vec!["/t".into()],
            ..AuthConfig::tokens(["b", "a"])
        }
    );
    assert_eq!(both.api.tls, None);
}

#[test]
fn alerting_section_parses_targets_auth_tls_and_labels() {
    let loaded = settings(
        r#"
alerting:
  alertmanagers:
    - url: "http://am-0:9093"
    - url: "https://am-1.example:9093/prefix/"
      timeout: 2s
      basic_auth: { username: triage, password_file: /run/secrets/am }
      tls:
        ca_file: /etc/ca.pem
        cert_file: /etc/client.pem
        key_file: /etc/client-key.pem
        insecure_skip_verify: true
  webhooks:
    - url: "http://hooks.example/triage"
      bearer_token: abc123
  resend_interval: 30s
  resolved_resend_for: 5m
  queue_capacity: 50
  labels: { cluster: prod-eu, zone: 3 }
  runbook_url: "https://runbooks.example/{alertname}?service={service}"
  external_url: "https://triage.example"
"#,
    );
    let alerting = loaded.alerting;
    assert_eq!(alerting.alertmanagers.len(), 2);
    let first = &alerting.alertmanagers[0];
    assert_eq!(first.url.as_str(), "http://am-0:9093/");
    assert_eq!(first.timeout, TargetConfig::DEFAULT_TIMEOUT);
    assert_eq!(first.auth, Auth::None);
    assert_eq!(first.tls, TlsConfig::default());
    let second = &alerting.alertmanagers[1];
    assert_eq!(second.timeout, Duration::from_secs(2));
    assert_eq!(
        second.auth,
        Auth::Basic {
            username: "triage".into(),
            password: Secret::File("/run/secrets/am".into()),
        }
    );
    assert_eq!(
        second.tls,
        TlsConfig {
            ca_file: Some("/etc/ca.pem".into()),
            cert_file: Some("/etc/client.pem".into()),
            key_file: Some("/etc/client-key.pem".into()),
            insecure_skip_verify: true,
        }
    );
    assert_eq!(
        alerting.webhooks[0].auth,
        Auth::Bearer(Secret::Inline("abc123".into()))
    );
    assert_eq!(alerting.resend_interval, Duration::from_secs(30));
    assert_eq!(alerting.resolved_resend_for, Duration::from_secs(300));
    assert_eq!(alerting.queue_capacity.get(), 50);
    assert_eq!(
        alerting.labels.into_iter().collect::<Vec<_>>(),
        vec![
            ("cluster".to_owned(), "prod-eu".to_owned()),
            ("zone".to_owned(), "3".to_owned())
        ]
    );
    assert!(alerting.runbook_url.is_some());
    assert_eq!(
        alerting.external_url.map(|url| url.to_string()),
        Some("https://triage.example/".to_owned())
    );
}

#[test]
fn alerting_problems_name_their_field() {
    let yaml = r#"
alerting:
  alertmanagers:
    - url: "ftp://am:9093"
    - timeout: 0s
      basic_auth: { password: x }
      bearer_token: t
    - url: "http://am:9093"
      tls: { cert_file: /c.pem, verify: true }
      bearer_token: t
      bearer_token_file: /t
    - "http://bare-string:9093"
  webhooks: { url: "http://x" }
  resend_interval: 10ms
  resolved_resend_for: soon
  queue_capacity: 0
  labels: { severity: low, "bad-name": x, team: [a] }
  runbook_url: "https://rb.example/{team}"
  external_url: "triage.example"
"#;
    assert_eq!(
        paths(yaml),
        set(&[
            "alerting.alertmanagers[0].url",
            "alerting.alertmanagers[1].url",
            "alerting.alertmanagers[1].timeout",
            "alerting.alertmanagers[1].basic_auth.username",
            "alerting.alertmanagers[1].basic_auth",
            "alerting.alertmanagers[2].tls.verify",
            "alerting.alertmanagers[2].tls.key_file",
            "alerting.alertmanagers[2].bearer_token_file",
            "alerting.alertmanagers[3]",
            "alerting.webhooks",
            "alerting.resend_interval",
            "alerting.resolved_resend_for",
            "alerting.queue_capacity",
            "alerting.labels.severity",
            "alerting.labels.bad-name",
            "alerting.labels.team",
            "alerting.runbook_url",
            "alerting.external_url",
        ])
    );
    let found = problems(yaml);
    let message = |path: &str| {
        found
            .iter()
            .find(|problem| problem.path == path)
            .map(|problem| problem.message.clone())
            .unwrap_or_default()
    };
    assert!(message("alerting.alertmanagers[0].url").contains("http:// or https://"));
    assert!(message("alerting.alertmanagers[1].url").contains("missing"));
    assert!(message("alerting.labels.severity").contains("set by triage"));
    assert!(message("alerting.runbook_url").contains("{team}"));
}

#[test]
fn alerting_may_be_empty_and_then_sends_nothing() {
    for yaml in [
        "alerting:\n",
        "alerting:\n  alertmanagers:\n  webhooks: []\n",
    ] {
        let loaded = settings(yaml);
        assert_eq!(loaded.alerting, AlertConfig::default(), "{yaml}");
        assert!(!loaded.alerting.enabled());
    }
}

#[test]
fn listener_limits_problems_name_their_field() {
    let yaml = r#"
receivers:
  otlp:
    grpc:
      max_connections: 0
      max_concurrent_streams: 20000
      read_header_timeout: 0s
      request_timeout: 2h
      idle_timeout: 10
      keepalive_interval: 500ms
      keepalive_timeout: 10m
    http:
      max_connections: -1
      read_header_timeout: 6m
      read_timeout: soon
      idle_timeout: 2d
admin:
  max_connections: 1.5
  read_header_timeout: 0s
  read_timeout: 0s
  idle_timeout: 0s
"#;
    let found = problems(yaml);
    let expected = set(&[
        "receivers.otlp.grpc.max_connections",
        "receivers.otlp.grpc.max_concurrent_streams",
        "receivers.otlp.grpc.read_header_timeout",
        "receivers.otlp.grpc.request_timeout",
        "receivers.otlp.grpc.idle_timeout",
        "receivers.otlp.grpc.keepalive_interval",
        "receivers.otlp.grpc.keepalive_timeout",
        "receivers.otlp.http.max_connections",
        "receivers.otlp.http.read_header_timeout",
        "receivers.otlp.http.read_timeout",
        "receivers.otlp.http.idle_timeout",
        "admin.max_connections",
        "admin.read_header_timeout",
        "admin.read_timeout",
        "admin.idle_timeout",
    ]);
    let found_paths: BTreeSet<String> = found.iter().map(|problem| problem.path.clone()).collect();
    assert_eq!(found_paths, expected);
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    let message = |path: &str| {
        found
            .iter()
            .find(|problem| problem.path == path)
            .map(|problem| problem.message.clone())
            .expect("problem at path")
    };
    assert!(message("receivers.otlp.grpc.max_connections").contains("from 1 to 1048576"));
    assert!(message("receivers.otlp.grpc.max_concurrent_streams").contains("from 1 to 10000"));
    assert!(message("receivers.otlp.grpc.keepalive_interval").contains("at least 1s"));
    assert!(message("receivers.otlp.http.read_header_timeout").contains("at most 5m"));
    assert!(message("admin.read_timeout").contains("more than 0s"));
}

#[test]
fn listener_limits_are_per_listener() {
    let loaded = settings(
        "receivers:\n  otlp:\n    http:\n      max_connections: 10\nadmin:\n  idle_timeout: 5s\n",
    );
    let defaults = Settings::default();
    assert_eq!(loaded.http.connections.max_connections.get(), 10);
    assert_eq!(loaded.grpc.connections, defaults.grpc.connections);
    assert_eq!(
        loaded.admin.connections.max_connections,
        defaults.admin.connections.max_connections
    );
    assert_eq!(
        loaded.admin.connections.idle_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(defaults.admin.connections.max_connections.get(), 64);
    assert_eq!(defaults.http.connections.max_connections.get(), 1024);
}

#[test]
fn a_listener_budget_holds_its_largest_request() {
    // Left out, the budget grows to the largest request.
    let loaded = settings("receivers:\n  otlp:\n    http:\n      max_request_body_size_mib: 200\n");
    assert_eq!(loaded.http.max_buffered, 200 * MIB);
    assert_eq!(loaded.grpc.max_buffered, 128 * MIB);
    // Written smaller, it is a problem.
    let problem = only_problem("receivers:\n  otlp:\n    grpc:\n      max_buffered_mib: 2\n");
    assert_eq!(problem.path, "receivers.otlp.grpc.max_buffered_mib");
    assert_eq!(
        problem.message,
        "2 is less than receivers.otlp.grpc.max_recv_msg_size_mib (4 (the default)); \
         the largest request would never fit"
    );
    // A wrong side is reported once, on its own.
    let problem = only_problem(
        "receivers:\n  otlp:\n    http:\n      max_buffered_mib: 0\n      max_request_body_size_mib: 64\n",
    );
    assert_eq!(problem.path, "receivers.otlp.http.max_buffered_mib");
    assert!(problem.message.contains("more than 0"));
}

#[test]
fn decoding_limits_are_read_and_checked() {
    let loaded =
        settings("receivers:\n  otlp:\n    max_items_per_request: 5000\n    max_decoded_mib: 16\n");
    assert_eq!(loaded.decode.max_items, 5000);
    assert_eq!(loaded.decode.max_decoded_bytes, 16 * MIB);
    assert_eq!(
        Settings::default().decode,
        crate::receiver::decode::Limits::default()
    );
    assert_eq!(
        paths("receivers:\n  otlp:\n    max_items_per_request: 0\n    max_decoded_mib: -1\n"),
        BTreeSet::from([
            "receivers.otlp.max_decoded_mib".to_owned(),
            "receivers.otlp.max_items_per_request".to_owned(),
        ])
    );
}

#[test]
fn memory_limit_and_decode_queue() {
    use crate::receiver::admission::{MemoryLimit, QueueLimits};
    let parsed = settings(
        r#"
receivers:
  otlp:
    memory_limit_mib: 200
    memory_check_interval: 500ms
    max_queued_requests: 10
    max_queued_mib: 4
    max_queue_wait: 1s
"#,
    );
    assert_eq!(
        parsed.admission.memory,
        Some(MemoryLimit {
            limit: 200 * MIB as u64,
            // A fifth by default, as the Collector's memory_limiter.
            spike: 40 * MIB as u64,
            check_interval: Duration::from_millis(500),
        })
    );
    assert_eq!(
        parsed.admission.queue,
        QueueLimits {
            max_requests: 10,
            max_bytes: 4 * MIB,
            max_wait: Duration::from_secs(1),
        }
    );
    let spike = settings("receivers: {otlp: {memory_limit_mib: 100, memory_spike_limit_mib: 10}}");
    assert_eq!(
        spike.admission.memory.unwrap().soft_limit(),
        90 * MIB as u64
    );
    assert_eq!(settings("{}").admission.memory, None);
    assert_eq!(
        problems(
            "receivers: {otlp: {memory_limit_mib: 100, memory_spike_limit_mib: 100, \
             memory_check_interval: 1ms, max_queued_requests: 0, max_queue_wait: 0s}}"
        )
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>(),
        vec![
            "receivers.otlp.memory_check_interval: must be at least 10ms, got 1ms".to_owned(),
            "receivers.otlp.memory_spike_limit_mib: 100 must be less than \
             receivers.otlp.memory_limit_mib (100); the soft limit is their difference"
                .to_owned(),
            "receivers.otlp.max_queued_requests: must be from 1 to 1000000, got 0".to_owned(),
            "receivers.otlp.max_queue_wait: must be more than 0s".to_owned(),
        ]
    );
    assert_eq!(
        problems("receivers: {otlp: {memory_spike_limit_mib: 5, memory_limit_mib: -1}}")
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "receivers.otlp.memory_limit_mib: expected a whole number of MiB from 0 to 1048576, got -1".to_owned(),
            "receivers.otlp.memory_spike_limit_mib: needs memory_limit_mib (0 or left out: no memory limit)".to_owned(),
        ]
    );
}
