//! The deployment files in `deploy/` stay true to the collector: every YAML
//! file parses (Kubernetes manifests document by document), every triage
//! config (files and the ones embedded in ConfigMaps) passes `triage
//! validate`, ports, probes and mounts agree with those configs, the OTel
//! Collector configs have the pipelines docs/DEPLOY.md describes, and the
//! Dockerfile has its health check, non-root user and ports. Also `triage
//! healthcheck`, which the image's HEALTHCHECK runs, against a real server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every YAML file under `deploy/`, recursively, sorted.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read deploy/") {
            let path = entry.expect("entry").path();
            // A Helm chart's templates are not YAML until rendered; the
            // rendered manifests are (deploy/helm/rendered).
            if path.is_dir() && !path.ends_with("templates") {
                walk(&path, found);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "yaml" || extension == "yml")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&deploy(), &mut found);
    found.sort();
    found
}

/// The documents of a (possibly multi-document) YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        })
        .collect()
}

fn manifests() -> Vec<(PathBuf, Value)> {
    yaml_files()
        .into_iter()
        .filter(|path| path.parent().is_some_and(|dir| dir.ends_with("k8s")))
        .flat_map(|path| {
            documents(&path)
                .into_iter()
                .map(move |document| (path.clone(), document))
        })
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?.as_str()
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(*key))
}

fn list<'a>(value: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(|items| items.iter().collect())
        .unwrap_or_default()
}

fn triage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage"));
    command.env_remove("TRIAGE_CONFIG");
    command
}

fn validate(path: &Path) {
    let output = triage()
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .expect("run triage validate");
    assert!(
        output.status.success(),
        "{} does not validate:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A triage config's listening ports, with the collector's defaults for
/// what it leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    grpc: u16,
    http: u16,
    api: u16,
    admin: u16,
}

fn endpoint(config: &Value, path: &[&str], default: &str) -> String {
    str_at(config, path).unwrap_or(default).to_owned()
}

fn port(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{endpoint:?} has no port"))
}

fn ports(config: &Value) -> Ports {
    Ports {
        grpc: port(&endpoint(
            config,
            &["receivers", "otlp", "grpc", "endpoint"],
            "127.0.0.1:4317",
        )),
        http: port(&endpoint(
            config,
            &["receivers", "otlp", "http", "endpoint"],
            "127.0.0.1:4318",
        )),
        api: port(&endpoint(config, &["api", "endpoint"], "127.0.0.1:4320")),
        admin: port(&endpoint(config, &["admin", "endpoint"], "127.0.0.1:8888")),
    }
}

const DEFAULT_PORTS: Ports = Ports {
    grpc: 4317,
    http: 4318,
    api: 4320,
    admin: 8888,
};

/// ConfigMaps by name, with their embedded triage.yaml parsed.
fn config_maps() -> BTreeMap<String, (PathBuf, String)> {
    manifests()
        .into_iter()
        .filter(|(_, document)| str_at(document, &["kind"]) == Some("ConfigMap"))
        .filter_map(|(path, document)| {
            let name = str_at(&document, &["metadata", "name"])?.to_owned();
            let text = str_at(&document, &["data", "triage.yaml"])?.to_owned();
            Some((name, (path, text)))
        })
        .collect()
}

fn parse(text: &str) -> Value {
    serde_yaml::from_str(text).expect("triage config parses")
}

#[test]
fn every_yaml_file_parses_and_every_manifest_names_itself() {
    let files = yaml_files();
    assert!(files.len() >= 8, "deploy/ holds the configs: {files:?}");
    let mut manifests = 0;
    for path in &files {
        let documents = documents(path);
        assert!(!documents.is_empty(), "{} is empty", path.display());
        let is_manifest = path.parent().is_some_and(|dir| dir.ends_with("k8s"));
        for document in documents {
            assert!(
                document.is_mapping(),
                "{}: a document is not a mapping: {document:?}",
                path.display()
            );
            if is_manifest {
                manifests += 1;
                for key in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
                    assert!(
                        str_at(&document, key).is_some_and(|value| !value.is_empty()),
                        "{}: a document has no {}",
                        path.display(),
                        key.join(".")
                    );
                }
            }
        }
    }
    assert!(manifests >= 10, "found {manifests} Kubernetes documents");
}

/// Every address in `deploy/` is one that something binds: `localhost` may
/// resolve to ::1 first, where triage (bound to 127.0.0.1) does not listen.
#[test]
fn no_deploy_file_sends_to_localhost() {
    fn strings<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::String(text) => found.push(text),
            Value::Sequence(items) => items.iter().for_each(|item| strings(item, found)),
            Value::Mapping(map) => map.iter().for_each(|(key, value)| {
                strings(key, found);
                strings(value, found);
            }),
            Value::Tagged(tagged) => strings(&tagged.value, found),
            _ => {}
        }
    }
    let mut checked = 0;
    for path in yaml_files() {
        for document in documents(&path) {
            let mut found = Vec::new();
            strings(&document, &mut found);
            checked += found.len();
            // Embedded configs (a ConfigMap's triage.yaml) are strings too.
            for text in found {
                assert!(
                    !text.contains("localhost"),
                    "{}: {text:?} names localhost; write 127.0.0.1",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 100, "read the values of deploy/: {checked}");
}

#[test]
fn every_triage_config_validates_including_the_embedded_ones() {
    let mut checked = 0;
    for path in yaml_files() {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.starts_with("triage-") {
            validate(&path);
            checked += 1;
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, (path, text)) in config_maps() {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).expect("write the embedded config");
        validate(&file);
        assert!(
            text.contains("data_dir: /var/lib/triage"),
            "{}: ConfigMap {name} keeps the history on the mounted volume",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "2 config files and 3 ConfigMaps, found {checked}"
    );
}

#[test]
fn config_maps_hold_the_same_settings_as_the_config_files() {
    let maps = config_maps();
    let file = |name: &str| parse(&read(&deploy().join(name)));
    let embedded = |name: &str| {
        let (_, text) = maps
            .get(name)
            .unwrap_or_else(|| panic!("ConfigMap {name} exists"));
        parse(text)
    };
    assert_eq!(embedded("checkout-triage"), file("triage-sidecar.yaml"));
    assert_eq!(embedded("triage-gateway"), file("triage-gateway.yaml"));
    assert_eq!(embedded("triage-shard"), file("triage-gateway.yaml"));

    // The sidecar keeps OTLP inside the pod; the gateway takes it from
    // anywhere. Both serve the default ports.
    let sidecar = file("triage-sidecar.yaml");
    let gateway = file("triage-gateway.yaml");
    assert!(
        endpoint(&sidecar, &["receivers", "otlp", "grpc", "endpoint"], "")
            .starts_with("127.0.0.1:")
    );
    assert!(
        endpoint(&sidecar, &["receivers", "otlp", "http", "endpoint"], "")
            .starts_with("127.0.0.1:")
    );
    for path in [
        &["receivers", "otlp", "grpc", "endpoint"][..],
        &["receivers", "otlp", "http", "endpoint"],
        &["api", "endpoint"],
        &["admin", "endpoint"],
    ] {
        assert!(
            endpoint(&gateway, path, "").starts_with("0.0.0.0:"),
            "{path:?}"
        );
    }
    assert_eq!(ports(&sidecar), DEFAULT_PORTS);
    assert_eq!(ports(&gateway), DEFAULT_PORTS);
}

/// A container port's number by name.
fn container_port(container: &Value, name: &str) -> Option<u16> {
    list(container, &["ports"])
        .into_iter()
        .find(|port| str_at(port, &["name"]) == Some(name))
        .and_then(|port| at(port, &["containerPort"])?.as_u64())
        .and_then(|port| u16::try_from(port).ok())
}

fn probe_port(container: &Value, probe: &str) -> (u16, String) {
    let get = at(container, &[probe, "httpGet"])
        .unwrap_or_else(|| panic!("the triage container has an httpGet {probe}"));
    let port = match at(get, &["port"]) {
        Some(Value::String(name)) => container_port(container, name)
            .unwrap_or_else(|| panic!("{probe} names port {name}, which the container lacks")),
        Some(Value::Number(number)) => number
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or(0),
        other => panic!("{probe} has no port: {other:?}"),
    };
    (port, str_at(get, &["path"]).unwrap_or_default().to_owned())
}

#[test]
fn workloads_agree_with_their_triage_configs() {
    let maps = config_maps();
    let mut workloads = 0;
    for (path, document) in manifests() {
        let kind = str_at(&document, &["kind"]).unwrap_or_default();
        if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        let name = str_at(&document, &["metadata", "name"]).unwrap_or_default();
        let where_ = format!("{} {kind} {name}", path.display());
        let pod = at(&document, &["spec", "template", "spec"]).expect("a pod template");
        let containers = list(pod, &["containers"]);
        let container = containers
            .iter()
            .find(|container| str_at(container, &["name"]) == Some("triage"))
            .unwrap_or_else(|| panic!("{where_}: has a triage container"));

        // The config comes from a ConfigMap mounted at /etc/triage.
        let args: Vec<&str> = list(container, &["args"])
            .into_iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args,
            ["run", "--config", "/etc/triage/triage.yaml"],
            "{where_}"
        );
        let mount = |mount_path: &str| {
            list(container, &["volumeMounts"])
                .into_iter()
                .find(|mount| str_at(mount, &["mountPath"]) == Some(mount_path))
                .and_then(|mount| str_at(mount, &["name"]))
                .unwrap_or_else(|| panic!("{where_}: mounts a volume at {mount_path}"))
        };
        let config_volume = mount("/etc/triage");
        let map_name = list(pod, &["volumes"])
            .into_iter()
            .find(|volume| str_at(volume, &["name"]) == Some(config_volume))
            .and_then(|volume| str_at(volume, &["configMap", "name"]))
            .unwrap_or_else(|| panic!("{where_}: /etc/triage is a ConfigMap"));
        let (_, text) = maps
            .get(map_name)
            .unwrap_or_else(|| panic!("{where_}: ConfigMap {map_name} is defined"));
        let config = parse(text);
        let ports = ports(&config);

        // The data directory is a volume (the root filesystem is read-only).
        let data_dir = str_at(&config, &["storage", "data_dir"]).expect("storage.data_dir is set");
        mount(data_dir);
        assert_eq!(
            at(container, &["securityContext", "readOnlyRootFilesystem"]).and_then(Value::as_bool),
            Some(true),
            "{where_}"
        );
        assert_eq!(
            at(pod, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool),
            Some(true),
            "{where_}"
        );
        assert!(
            at(container, &["resources", "requests"]).is_some(),
            "{where_}: resources"
        );
        assert!(
            at(container, &["resources", "limits", "memory"]).is_some(),
            "{where_}: a memory limit"
        );

        // Probes hit the admin port's health endpoints.
        assert_eq!(
            container_port(container, "admin"),
            Some(ports.admin),
            "{where_}"
        );
        assert_eq!(
            probe_port(container, "livenessProbe"),
            (ports.admin, "/healthz".to_owned()),
            "{where_}"
        );
        assert_eq!(
            probe_port(container, "readinessProbe"),
            (ports.admin, "/readyz".to_owned()),
            "{where_}"
        );

        let bound_everywhere = endpoint(&config, &["receivers", "otlp", "grpc", "endpoint"], "")
            .starts_with("0.0.0.0:");
        if bound_everywhere {
            assert_eq!(
                container_port(container, "otlp-grpc"),
                Some(ports.grpc),
                "{where_}"
            );
            assert_eq!(
                container_port(container, "otlp-http"),
                Some(ports.http),
                "{where_}"
            );
            assert_eq!(
                container_port(container, "query"),
                Some(ports.api),
                "{where_}"
            );
        } else {
            // A sidecar: the application exports to the triage container
            // on the very address triage binds (127.0.0.1, not `localhost`,
            // which may resolve to ::1 first).
            let app_endpoint = containers
                .iter()
                .filter(|other| str_at(other, &["name"]) != Some("triage"))
                .flat_map(|other| list(other, &["env"]))
                .find(|variable| str_at(variable, &["name"]) == Some("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .and_then(|variable| str_at(variable, &["value"]))
                .unwrap_or_else(|| panic!("{where_}: the app sets OTEL_EXPORTER_OTLP_ENDPOINT"));
            let bound = endpoint(
                &config,
                &["receivers", "otlp", "grpc", "endpoint"],
                "127.0.0.1:4317",
            );
            assert_eq!(app_endpoint, format!("http://{bound}"), "{where_}");
            assert!(bound.starts_with("127.0.0.1:"), "{where_}: {bound}");
        }
        workloads += 1;
    }
    assert!(
        workloads >= 3,
        "the sidecar, gateway and scale-out workloads: {workloads}"
    );
}

#[test]
fn services_expose_the_ports_triage_listens_on() {
    let documents = manifests();
    let expected: BTreeMap<&str, u16> = [
        ("otlp-grpc", DEFAULT_PORTS.grpc),
        ("otlp-http", DEFAULT_PORTS.http),
        ("query", DEFAULT_PORTS.api),
        ("admin", DEFAULT_PORTS.admin),
    ]
    .into_iter()
    .collect();
    let mut services = BTreeMap::new();
    for (path, document) in &documents {
        if str_at(document, &["kind"]) != Some("Service") {
            continue;
        }
        let name = str_at(document, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let namespace = str_at(document, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_owned();
        for port in list(document, &["spec", "ports"]) {
            let port_name = str_at(port, &["name"]).unwrap_or_default();
            let number = at(port, &["port"]).and_then(Value::as_u64).unwrap_or(0);
            assert_eq!(
                expected.get(port_name).map(|port| u64::from(*port)),
                Some(number),
                "{}: Service {name} port {port_name}",
                path.display()
            );
            assert_eq!(
                str_at(port, &["targetPort"]),
                Some(port_name),
                "{}: Service {name}",
                path.display()
            );
        }
        services.insert(format!("{name}.{namespace}"), document.clone());
    }
    let gateway = services
        .get("triage.observability")
        .expect("the gateway Service");
    let names: Vec<&str> = list(gateway, &["spec", "ports"])
        .into_iter()
        .filter_map(|port| str_at(port, &["name"]))
        .collect();
    assert_eq!(names, ["otlp-grpc", "otlp-http", "query", "admin"]);
    let headless = services
        .get("triage-headless.observability")
        .expect("the headless Service");
    assert_eq!(str_at(headless, &["spec", "clusterIP"]), Some("None"));
}

fn collector(name: &str) -> Value {
    let documents = documents(&deploy().join(name));
    assert_eq!(documents.len(), 1, "{name}");
    documents.into_iter().next().expect("one document")
}

/// Every component a pipeline names is defined, and the pipeline has the
/// otlp receiver and the batch processor.
fn check_pipelines(config: &Value, name: &str, exporter: &str) {
    let pipelines = at(config, &["service", "pipelines"])
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("{name}: service.pipelines"));
    for signal in ["traces", "metrics", "logs"] {
        let pipeline = pipelines
            .get(signal)
            .unwrap_or_else(|| panic!("{name}: a {signal} pipeline"));
        for (section, key) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for component in list(pipeline, &[key]) {
                let component = component.as_str().unwrap_or_default();
                assert!(
                    at(config, &[section, component]).is_some(),
                    "{name}: {signal} uses {component}, which {section} does not define"
                );
            }
        }
        let names = |key: &str| -> Vec<String> {
            list(pipeline, &[key])
                .into_iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        assert!(
            names("receivers").contains(&"otlp".to_owned()),
            "{name} {signal}"
        );
        assert!(
            names("processors").contains(&"batch".to_owned()),
            "{name} {signal}"
        );
        let exporters = names("exporters");
        assert!(
            exporters.contains(&exporter.to_owned()),
            "{name} {signal}: {exporters:?}"
        );
        assert!(
            exporters.len() >= 2,
            "{name} {signal} keeps the existing backend: {exporters:?}"
        );
    }
}

#[test]
fn collector_tee_sends_a_copy_to_the_gateway() {
    let config = collector("otelcol-tee.yaml");
    check_pipelines(&config, "otelcol-tee.yaml", "otlp/triage");
    let endpoint =
        str_at(&config, &["exporters", "otlp/triage", "endpoint"]).expect("otlp/triage endpoint");
    // The gateway Service (triage in observability) on triage's gRPC port.
    assert_eq!(
        endpoint,
        format!("triage.observability.svc:{}", DEFAULT_PORTS.grpc)
    );
}

#[test]
fn collector_load_balancing_routes_by_service_to_the_headless_service() {
    let config = collector("otelcol-loadbalancing.yaml");
    check_pipelines(
        &config,
        "otelcol-loadbalancing.yaml",
        "loadbalancing/triage",
    );
    let exporter =
        at(&config, &["exporters", "loadbalancing/triage"]).expect("the loadbalancing exporter");
    assert_eq!(str_at(exporter, &["routing_key"]), Some("service"));
    assert!(at(exporter, &["protocol", "otlp"]).is_some());
    assert_eq!(
        str_at(exporter, &["resolver", "dns", "hostname"]),
        Some("triage-headless.observability.svc.cluster.local")
    );
    assert_eq!(
        at(exporter, &["resolver", "dns", "port"]).and_then(Value::as_u64),
        Some(u64::from(DEFAULT_PORTS.grpc))
    );
}

#[test]
fn prometheus_scrapes_the_admin_port() {
    let config = collector("prometheus.yml");
    let jobs = list(&config, &["scrape_configs"]);
    let static_job = jobs
        .iter()
        .find(|job| at(job, &["static_configs"]).is_some())
        .expect("a static job");
    let targets: Vec<&str> = list(static_job, &["static_configs"])
        .into_iter()
        .flat_map(|group| list(group, &["targets"]))
        .filter_map(Value::as_str)
        .collect();
    assert!(!targets.is_empty());
    for target in targets {
        assert_eq!(port(target), DEFAULT_PORTS.admin, "{target}");
    }
    let kubernetes: Vec<&&Value> = jobs
        .iter()
        .filter(|job| at(job, &["kubernetes_sd_configs"]).is_some())
        .collect();
    assert!(!kubernetes.is_empty(), "a kubernetes_sd job");
    let keeps_admin = kubernetes.iter().any(|job| {
        list(job, &["relabel_configs"]).into_iter().any(|rule| {
            str_at(rule, &["regex"]) == Some("admin") && str_at(rule, &["action"]) == Some("keep")
        })
    });
    assert!(keeps_admin, "the kubernetes job keeps the admin port");
    for job in jobs {
        assert_eq!(
            str_at(job, &["metrics_path"]).unwrap_or("/metrics"),
            "/metrics"
        );
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn dockerfile() -> Vec<String> {
    let text = read(&deploy().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

fn instructions<'a>(all: &'a [String], keyword: &str) -> Vec<&'a str> {
    all.iter()
        .filter_map(|line| {
            let (first, rest) = line.split_once(' ')?;
            first.eq_ignore_ascii_case(keyword).then_some(rest.trim())
        })
        .collect()
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_a_health_check() {
    let all = dockerfile();
    let from = instructions(&all, "FROM");
    assert!(from.len() >= 2, "multi-stage: {from:?}");
    assert!(from[0].starts_with("rust:1-bookworm"), "{from:?}");
    let runtime = from.last().expect("a runtime stage");
    assert!(
        runtime.contains("distroless/cc") || runtime.contains("bookworm-slim"),
        "{runtime}"
    );
    assert!(
        instructions(&all, "RUN")
            .iter()
            .any(|run| run.contains("cargo build --release --locked")),
        "builds with the lock file"
    );

    let user = instructions(&all, "USER");
    let user = user.last().expect("a USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(name != "root" && name != "0", "runs as {user}");

    let exposed: Vec<u16> = instructions(&all, "EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| {
            port.trim_end_matches("/tcp")
                .parse()
                .expect("a port number")
        })
        .collect();
    for port in [
        DEFAULT_PORTS.grpc,
        DEFAULT_PORTS.http,
        DEFAULT_PORTS.api,
        DEFAULT_PORTS.admin,
    ] {
        assert!(exposed.contains(&port), "EXPOSE {port}: {exposed:?}");
    }

    let health = instructions(&all, "HEALTHCHECK");
    let health = health.first().expect("a HEALTHCHECK");
    assert!(health.contains("triage\", \"healthcheck\""), "{health}");

    // The baked config is the gateway config, and its data directory is a
    // volume.
    assert!(
        instructions(&all, "COPY").contains(&"deploy/triage-gateway.yaml /etc/triage/triage.yaml"),
        "bakes the gateway config"
    );
    assert!(
        instructions(&all, "CMD")
            .iter()
            .any(|cmd| cmd.contains("/etc/triage/triage.yaml")),
        "runs with the baked config"
    );
    let gateway = parse(&read(&deploy().join("triage-gateway.yaml")));
    let data_dir =
        str_at(&gateway, &["storage", "data_dir"]).expect("the gateway sets storage.data_dir");
    let volumes = instructions(&all, "VOLUME");
    assert!(
        volumes
            .iter()
            .any(|volume| volume.contains(&format!("\"{data_dir}\""))),
        "VOLUME {data_dir}: {volumes:?}"
    );

    let ignore = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"));
    for pattern in ["target/", ".venv/"] {
        assert!(
            ignore.lines().any(|line| line.trim() == pattern),
            ".dockerignore has {pattern}"
        );
    }
}

fn healthcheck(url: &str) -> (bool, String) {
    let output = triage()
        .args(["healthcheck", "--url", url])
        .output()
        .expect("run triage healthcheck");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_passes_on_a_live_server_and_fails_otherwise() {
    let server = crate::common::TestServer::start().await;
    let admin = server.addresses.admin;
    let live = format!("http://{admin}/healthz");
    let missing = format!("http://{admin}/no-such-path");
    let (ok, stderr) = tokio::task::spawn_blocking(move || healthcheck(&live))
        .await
        .expect("healthcheck ran");
    assert!(ok, "healthy server: {stderr}");
    let (ok, stderr) = tokio::task::spawn_blocking(move || healthcheck(&missing))
        .await
        .expect("healthcheck ran");
    assert!(!ok && stderr.contains("404"), "{stderr}");
    server.shutdown.cancel();
    let _ = server.task.await;

    // Nothing listens there any more.
    let closed = format!("http://{admin}/healthz");
    let (ok, stderr) = tokio::task::spawn_blocking(move || healthcheck(&closed))
        .await
        .expect("healthcheck ran");
    assert!(!ok && stderr.contains("cannot connect"), "{stderr}");
    let (ok, stderr) = tokio::task::spawn_blocking(|| healthcheck("ftp://127.0.0.1:1/healthz"))
        .await
        .expect("healthcheck ran");
    assert!(!ok && stderr.contains("http://"), "{stderr}");

    // The image's check, against an admin port serving TLS with a token:
    // the probe needs neither a trusted certificate nor the token.
    let dir = tempfile::tempdir().expect("temp dir");
    let certified = rcgen::generate_simple_self_signed(vec!["triage.observability.svc".to_owned()])
        .expect("certificate");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write");
    let mut settings = crate::common::test_settings();
    settings.admin.tls = Some(triage::security::TlsConfig::new(cert, key));
    settings.admin.auth = triage::security::AuthConfig::tokens(["admin-token"]);
    let server = crate::common::TestServer::start_with(settings).await;
    let admin = server.addresses.admin;
    let (ok, stderr) =
        tokio::task::spawn_blocking(move || healthcheck(&format!("https://{admin}/healthz")))
            .await
            .expect("healthcheck ran");
    assert!(ok, "TLS admin port: {stderr}");
    let (ok, stderr) =
        tokio::task::spawn_blocking(move || healthcheck(&format!("https://{admin}/metrics")))
            .await
            .expect("healthcheck ran");
    assert!(!ok && stderr.contains("401"), "{stderr}");
    server.stop().await;
}

/// Every file a deployed triage config names in a `tls:` or `auth:`
/// section lies under a Secret volume its workload mounts, and the probes
/// use the admin port's scheme.
#[test]
fn workloads_mount_the_secrets_their_tls_and_auth_name() {
    let maps = config_maps();
    let mut secured = 0;
    for (path, document) in manifests() {
        let kind = str_at(&document, &["kind"]).unwrap_or_default();
        if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        let where_ = format!("{} {kind}", path.display());
        let pod = at(&document, &["spec", "template", "spec"]).expect("a pod template");
        let container = list(pod, &["containers"])
            .into_iter()
            .find(|container| str_at(container, &["name"]) == Some("triage"))
            .expect("a triage container");
        let config_map = list(pod, &["volumes"])
            .into_iter()
            .find_map(|volume| str_at(volume, &["configMap", "name"]))
            .expect("a config ConfigMap");
        let config = parse(&maps[config_map].1);
        let mut files = Vec::new();
        for listener in [
            &["receivers", "otlp", "grpc"][..],
            &["receivers", "otlp", "http"],
            &["admin"],
            &["api"],
        ] {
            let Some(section) = at(&config, listener) else {
                continue;
            };
            for key in ["cert_file", "key_file", "client_ca_file"] {
                files.extend(str_at(section, &["tls", key]).map(str::to_owned));
            }
            files.extend(
                list(section, &["auth", "bearer_token_files"])
                    .into_iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
        }
        let admin_tls = at(&config, &["admin", "tls"]).is_some();
        for probe in ["livenessProbe", "readinessProbe"] {
            let scheme = str_at(container, &[probe, "httpGet", "scheme"]).unwrap_or("HTTP");
            assert_eq!(scheme == "HTTPS", admin_tls, "{where_}: {probe} scheme");
        }
        if files.is_empty() {
            continue;
        }
        secured += 1;
        let secret_mounts: Vec<&str> = list(container, &["volumeMounts"])
            .into_iter()
            .filter(|mount| {
                let name = str_at(mount, &["name"]);
                list(pod, &["volumes"]).into_iter().any(|volume| {
                    str_at(volume, &["name"]) == name
                        && at(volume, &["secret", "secretName"]).is_some()
                })
            })
            .filter_map(|mount| str_at(mount, &["mountPath"]))
            .collect();
        for file in &files {
            assert!(
                secret_mounts
                    .iter()
                    .any(|mount| Path::new(file).parent() == Some(Path::new(mount))),
                "{where_}: {file} is not in a mounted Secret ({secret_mounts:?})"
            );
        }
    }
    assert!(
        secured >= 2,
        "the gateway and the shards serve TLS with tokens: {secured}"
    );

    // The collectors in front of the gateway and the shards speak TLS
    // and send the token.
    let tee = collector("otelcol-tee.yaml");
    let lb = collector("otelcol-loadbalancing.yaml");
    for exporter in [
        at(&tee, &["exporters", "otlp/triage"]).expect("tee exporter"),
        at(
            &lb,
            &["exporters", "loadbalancing/triage", "protocol", "otlp"],
        )
        .expect("lb exporter"),
    ] {
        assert!(
            str_at(exporter, &["tls", "ca_file"]).is_some(),
            "{exporter:?}"
        );
        assert_ne!(
            at(exporter, &["tls", "insecure"]).and_then(Value::as_bool),
            Some(true)
        );
        assert!(
            str_at(exporter, &["headers", "authorization"])
                .is_some_and(|value| value.starts_with("Bearer ")),
            "{exporter:?}"
        );
    }
}

/// The lateness a triage config waits before closing a window.
fn lateness(config: &Value) -> std::time::Duration {
    str_at(config, &["detect", "lateness"])
        .map(|text| triage::validate::parse_duration(text).expect("a duration"))
        .unwrap_or(std::time::Duration::from_secs(10))
}

/// Every agent config (`mode: agent`) names a gateway Service defined in
/// `deploy/`, on its OTLP/gRPC port, and that gateway waits at least 2 s
/// longer than the agent before closing a window, so summaries arrive in
/// time.
#[test]
fn agents_send_to_a_gateway_that_waits_for_their_summaries() {
    let maps = config_maps();
    let mut services = BTreeMap::new();
    for (_, document) in manifests() {
        if str_at(&document, &["kind"]) == Some("Service") {
            let name = str_at(&document, &["metadata", "name"]).unwrap_or_default();
            let namespace = str_at(&document, &["metadata", "namespace"]).unwrap_or("default");
            services.insert(format!("{name}.{namespace}.svc"), document.clone());
        }
    }
    let mut agents = 0;
    for (name, (path, text)) in &maps {
        let config = parse(text);
        if str_at(&config, &["mode"]) != Some("agent") {
            continue;
        }
        agents += 1;
        let endpoint = str_at(&config, &["agent", "gateway", "endpoint"])
            .unwrap_or_else(|| panic!("{}: {name} names its gateway", path.display()));
        let url = reqwest::Url::parse(endpoint).expect("a URL");
        let host = url.host_str().expect("a host");
        assert_eq!(
            url.port(),
            Some(DEFAULT_PORTS.grpc),
            "{}: {name}",
            path.display()
        );
        assert!(
            services.contains_key(host),
            "{}: {name} sends to {host}, which no Service in deploy/ is",
            path.display()
        );
        // The gateway config beside it: the ConfigMap of the same file whose
        // mode is not agent.
        let gateway = maps
            .values()
            .filter(|(other, _)| other == path)
            .map(|(_, text)| parse(text))
            .find(|config| str_at(config, &["mode"]) != Some("agent"))
            .unwrap_or_else(|| parse(&read(&deploy().join("triage-gateway.yaml"))));
        assert!(
            lateness(&gateway) >= lateness(&config) + std::time::Duration::from_secs(2),
            "{}: the gateway closes windows {:?} after they end, the agents {:?}",
            path.display(),
            lateness(&gateway),
            lateness(&config)
        );
    }
    assert!(
        agents >= 2,
        "the DaemonSet and the chart's agents: {agents}"
    );
}

/// The Helm chart lints, and renders to the manifests committed in
/// deploy/helm/rendered (which the other tests check). helm is not a
/// Debian package, so this runs only when asked:
/// `cargo test --test it -- --ignored helm_chart`.
#[test]
#[ignore = "needs helm (https://helm.sh/docs/intro/install/); run with --ignored"]
fn helm_chart_lints_and_renders_the_committed_manifests() {
    let helm = crate::common::require_command("helm", "helm (not in Debian: https://helm.sh)");
    let chart = deploy().join("helm/triage");
    let lint = Command::new(&helm)
        .arg("lint")
        .arg(&chart)
        .output()
        .expect("run helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let rendered = Command::new(&helm)
        .args(["template", "triage"])
        .arg(&chart)
        .args(["--namespace", "observability"])
        .output()
        .expect("run helm template");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("UTF-8");
    let from_helm: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("helm renders YAML"))
        .filter(|document| !document.is_null())
        .collect();
    let committed = documents(&deploy().join("helm/rendered/k8s/triage.yaml"));
    assert_eq!(
        from_helm, committed,
        "regenerate deploy/helm/rendered/k8s/triage.yaml with helm template"
    );
}
