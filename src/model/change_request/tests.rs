use super::*;
use crate::model::rfc3339;

const NOW: u64 = 1_714_566_600_000_000_000; // 2024-05-01T12:30:00Z

#[test]
fn a_full_change_is_read() {
    let body = br#"{"service": "payment", "kind": "deploy", "version": "v2.4.1",
        "description": "payment v2.4.1 by pipeline 812", "time": "2024-05-01T14:00:00+02:00",
        "link": "https://ci.example.com/runs/812"}"#;
    let change = parse_change(body, NOW).expect("valid");
    assert_eq!(change.service, "payment");
    assert_eq!(change.kind, ChangeKind::Deploy);
    assert_eq!(change.version.as_deref(), Some("v2.4.1"));
    assert_eq!(change.time_unix_nanos, NOW - 30 * 60 * 1_000_000_000);
    assert_eq!(change.source, ChangeSource::Api);
    assert_eq!(
        change.link.as_deref(),
        Some("https://ci.example.com/runs/812")
    );
}

#[test]
fn a_minimal_change_gets_the_time_and_a_description() {
    let change = parse_change(
        br#"{"service":"cart","kind":"feature_flag","key":"new-cart","value":"on"}"#,
        NOW,
    )
    .expect("valid");
    assert_eq!(change.time_unix_nanos, NOW);
    assert_eq!(change.description, "cart: feature flag new-cart = on");
}

/// Found by fuzzing (the `changes` target): `"description": ""` was stored
/// as an empty description.
#[test]
fn a_blank_description_gets_the_default_one() {
    for blank in ["", "  "] {
        let body = format!(
            r#"{{"service":"cart","kind":"deploy","version":"v2","description":"{blank}"}}"#
        );
        let change = parse_change(body.as_bytes(), NOW).expect("valid");
        assert_eq!(change.description, "cart: deploy v2");
    }
}

/// Each bad body is refused naming the field that is wrong.
#[test]
fn bad_changes_name_the_field() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{"kind":"deploy"}"#, &["service"]),
        (r#"{"service":"","kind":"deploy"}"#, &["service"]),
        (r#"{"service":7,"kind":"deploy"}"#, &["service"]),
        (r#"{"service":"a"}"#, &["kind"]),
        (r#"{"service":"a","kind":"rollback"}"#, &["kind"]),
        (
            r#"{"service":"a","kind":"deploy","time":"yesterday"}"#,
            &["time"],
        ),
        (
            r#"{"service":"a","kind":"deploy","time":"2024-02-30T00:00:00Z"}"#,
            &["time"],
        ),
        (
            r#"{"service":"a","kind":"deploy","time":"2030-01-01T00:00:00Z"}"#,
            &["time"],
        ),
        (
            r#"{"service":"a","kind":"deploy","verison":"v2"}"#,
            &["verison"],
        ),
        (r#"{"service":"a","kind":"feature_flag"}"#, &["key"]),
        (
            r#"{"service":"a","kind":"deploy","link":"ci/812"}"#,
            &["link"],
        ),
        (
            r#"{"kind":"nope","extra":1}"#,
            &["extra", "service", "kind"],
        ),
        (r#"[1,2]"#, &["body"]),
        (r#"{"service": "#, &["body"]),
    ];
    for (body, fields) in cases {
        let error = parse_change(body.as_bytes(), NOW).expect_err(body);
        let found: Vec<&str> = error.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(&found, fields, "{body}: {error}");
    }
}

#[test]
fn list_queries_are_checked() {
    let filter = parse_filter([
        ("service", "payment"),
        ("kind", "deploy"),
        ("since", "2024-05-01T12:00:00Z"),
    ])
    .expect("valid");
    assert_eq!(filter.service.as_deref(), Some("payment"));
    assert_eq!(filter.kind, Some(ChangeKind::Deploy));
    assert_eq!(filter.since_unix_nanos, Some(NOW - 30 * 60 * 1_000_000_000));
    let error = parse_filter([("kind", "x"), ("since", "now"), ("limit", "3")]).expect_err("bad");
    let fields: Vec<&str> = error.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["kind", "since", "limit"]);
}

#[test]
fn rfc3339_round_trips_with_the_formatter() {
    for nanos in [
        0,
        86_399_000_000_000,
        951_782_400_000_000_000,
        NOW,
        4_102_444_800_000_000_000,
    ] {
        let text = rfc3339(nanos);
        assert_eq!(parse_rfc3339(&text), Ok(nanos), "{text}");
    }
    assert_eq!(
        parse_rfc3339("2024-05-01T12:30:00.25Z"),
        Ok(NOW + 250_000_000)
    );
    assert_eq!(parse_rfc3339("2024-05-01t10:30:00-02:00"), Ok(NOW));
    for bad in [
        "",
        "2024-05-01",
        "2024-05-01T12:30:00",
        "2024-13-01T00:00:00Z",
        "2024-05-01T12:30:00+2:00",
        "1969-12-31T23:59:59Z",
        "2024-05-01T12:30:00.Z",
    ] {
        assert!(parse_rfc3339(bad).is_err(), "{bad}");
    }
}
