//! Changes announced in the telemetry itself: a log record (or a span
//! event) whose attributes describe a change, the way a deploy tool, a
//! config service or a flag service can write one without knowing about
//! triage's API.
//!
//! The convention mirrors `POST /api/v1/changes` (docs/CHANGES.md,
//! "Announced in the telemetry"): a record is a change when it carries
//! `change.kind`, or the `deployment.id` of the semantic conventions (then
//! it is a deploy). Its fields are read from attributes and handed to the
//! same validation as a posted body ([`crate::model::change_request::parse_fields`]),
//! so the rules and the limits are the same:
//!
//! | field | attributes, first present wins |
//! | --- | --- |
//! | `service` | `change.service`, the record's or the resource's `service.name` |
//! | `kind` | `change.kind`; `deploy` with `deployment.id` |
//! | `version` | `change.version`, the record's `service.version` |
//! | `key` | `change.key`, `config.key`, `feature_flag.key` |
//! | `value` | `change.value`, `config.value`, `feature_flag.result.variant`, `feature_flag.variant` |
//! | `description` | `change.description`, the body when it is a string |
//! | `link` | `change.link`, `cicd.pipeline.run.url.full` |
//! | `id` | `change.id`, `deployment.id`, `cicd.pipeline.run.id` |
//! | `time` | `change.time` (RFC 3339), else the record's time |
//!
//! The resource's own `service.version` is not read: it is the version of
//! whatever emitted the record (often the deploy tool), not of the service
//! that changed.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as AnyValue, AnyValue as Any};
use serde_json::{Map, Value};

use crate::model::change_request::{parse_fields, RequestError};
use crate::model::{Change, ChangeSource, UNKNOWN_SERVICE};

/// Longest body text taken as a description; longer bodies are cut (at a
/// character boundary) rather than refused: a log line is not a form.
const MAX_BODY_DESCRIPTION: usize = 1024;

/// The change a record announces: `None` when it announces none, an error
/// naming the fields when it tries to and gets them wrong.
pub fn announced_change(
    resource: &[KeyValue],
    attributes: &[KeyValue],
    body: Option<&Any>,
    time_unix_nanos: u64,
) -> Option<Result<Change, RequestError>> {
    let record = |keys: &[&str]| keys.iter().find_map(|key| text(attributes, key));
    let kind = record(&["change.kind"])
        .or_else(|| text(attributes, "deployment.id").map(|_| "deploy".to_owned()))?;
    let mut fields = Map::new();
    let mut put = |field: &str, value: Option<String>| {
        if let Some(value) = value {
            fields.insert(field.to_owned(), Value::String(value));
        }
    };
    put("kind", Some(kind));
    put(
        "service",
        record(&["change.service", "service.name"])
            .or_else(|| text(resource, "service.name").filter(|name| name != UNKNOWN_SERVICE)),
    );
    put("version", record(&["change.version", "service.version"]));
    put(
        "key",
        record(&["change.key", "config.key", "feature_flag.key"]),
    );
    put(
        "value",
        record(&[
            "change.value",
            "config.value",
            "feature_flag.result.variant",
            "feature_flag.variant",
        ]),
    );
    put(
        "description",
        record(&["change.description"]).or_else(|| body_text(body)),
    );
    put(
        "link",
        record(&["change.link", "cicd.pipeline.run.url.full"]),
    );
    put(
        "id",
        record(&["change.id", "deployment.id", "cicd.pipeline.run.id"]),
    );
    put("time", record(&["change.time"]));
    Some(parse_fields(&fields, time_unix_nanos).map(|change| Change {
        source: ChangeSource::Telemetry,
        ..change
    }))
}

/// The attribute `key` as text: strings as they are, numbers and booleans
/// written out (a config value may well be `30` or `true`).
fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    let text = match value {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// A string body, cut to [`MAX_BODY_DESCRIPTION`] bytes.
fn body_text(body: Option<&Any>) -> Option<String> {
    let Some(AnyValue::StringValue(text)) = body?.value.as_ref() else {
        return None;
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cut = text.len().min(MAX_BODY_DESCRIPTION);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(text[..cut].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;

    const TIME: u64 = 1_700_000_000_000_000_000;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(Any {
                value: Some(AnyValue::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn body(text: &str) -> Any {
        Any {
            value: Some(AnyValue::StringValue(text.to_owned())),
        }
    }

    #[test]
    fn a_config_change_in_a_log_record_is_read_with_its_own_id() {
        let resource = [kv("service.name", "config-service")];
        let attributes = [
            kv("change.kind", "config"),
            kv("change.service", "checkout"),
            kv("config.key", "payment.timeout_ms"),
            KeyValue {
                key: "config.value".to_owned(),
                value: Some(Any {
                    value: Some(AnyValue::IntValue(300)),
                }),
                ..KeyValue::default()
            },
            kv("change.id", "CHG-4711"),
        ];
        let change = announced_change(
            &resource,
            &attributes,
            Some(&body("payment.timeout_ms changed from 3000 to 300")),
            TIME,
        )
        .expect("a change")
        .expect("valid");
        assert_eq!(change.service, "checkout");
        assert_eq!(change.kind, ChangeKind::Config);
        assert_eq!(change.key.as_deref(), Some("payment.timeout_ms"));
        assert_eq!(change.value.as_deref(), Some("300"));
        assert_eq!(change.external_id.as_deref(), Some("CHG-4711"));
        assert_eq!(
            change.description,
            "payment.timeout_ms changed from 3000 to 300"
        );
        assert_eq!(change.time_unix_nanos, TIME);
        assert_eq!(change.source, ChangeSource::Telemetry);
    }

    #[test]
    fn a_deployment_event_of_the_semantic_conventions_is_a_deploy_of_its_service() {
        let resource = [kv("service.name", "payment"), kv("service.version", "9.9")];
        let attributes = [
            kv("deployment.id", "deploy-81"),
            kv("service.version", "2.4.1"),
            kv(
                "cicd.pipeline.run.url.full",
                "https://ci.example.com/runs/81",
            ),
        ];
        let change = announced_change(&resource, &attributes, None, TIME)
            .expect("a change")
            .expect("valid");
        assert_eq!(change.service, "payment");
        assert_eq!(change.kind, ChangeKind::Deploy);
        assert_eq!(
            change.version.as_deref(),
            Some("2.4.1"),
            "the record's version, not the emitter's"
        );
        assert_eq!(change.external_id.as_deref(), Some("deploy-81"));
        assert_eq!(
            change.link.as_deref(),
            Some("https://ci.example.com/runs/81")
        );
    }

    #[test]
    fn ordinary_records_announce_nothing_and_bad_ones_name_the_field() {
        let resource = [
            kv("service.name", "payment"),
            kv("deployment.environment.name", "prod"),
        ];
        assert!(announced_change(
            &resource,
            &[kv("http.route", "/pay")],
            Some(&body("GET /pay 200")),
            TIME
        )
        .is_none());
        let error = announced_change(&resource, &[kv("change.kind", "reboot")], None, TIME)
            .expect("it tries")
            .expect_err("an unknown kind");
        assert_eq!(error.problems[0].field, "kind", "{error}");
        let flag = announced_change(&resource, &[kv("change.kind", "feature_flag")], None, TIME)
            .expect("it tries")
            .expect_err("a flag change needs its key");
        assert!(
            flag.problems.iter().any(|problem| problem.field == "key"),
            "{flag}"
        );
    }
}
