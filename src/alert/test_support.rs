//! Incidents for the alerting unit tests, built from JSON so that fields
//! added to `Incident` later (with serde defaults) do not break them.

use serde_json::json;

use crate::model::{Incident, IncidentEvent};

/// An open incident on `payment`: a critical error-rate anomaly on
/// `POST /pay` and a latency warning on `GET /status`.
pub(crate) fn incident() -> Incident {
    serde_json::from_value(json!({
        "id": "payment@1733011390",
        "state": "open",
        "service": "payment",
        "operations": ["GET /status", "POST /pay"],
        "kinds": ["latency", "error_rate"],
        "severity": "critical",
        "onset_unix_nanos": 1_733_011_390_000_000_000u64,
        "onset": "2024-12-01T00:03:10Z",
        "opened_unix_nanos": 1_733_011_410_000_000_000u64,
        "resolved_unix_nanos": null,
        "resolved": null,
        "anomalies": [
            {
                "series_kind": "operation",
                "series": "POST /pay",
                "kind": "error_rate",
                "severity": "critical",
                "severe": true,
                "measure": "error rate",
                "current": 0.41,
                "baseline": 0.01,
                "unit": "ratio",
                "summary": "error rate 41% vs 1% baseline, 480 requests",
                "time_to_limit_secs": null
            },
            {
                "series_kind": "operation",
                "series": "GET /status",
                "kind": "latency",
                "severity": "warning",
                "severe": false,
                "measure": "p95",
                "current": 840.0,
                "baseline": 95.0,
                "unit": "ms",
                "summary": "p95 840 ms vs 95 ms baseline, 312 requests",
                "time_to_limit_secs": null
            }
        ],
        "exemplar_trace_ids": ["0000000000000000000000000000abcd", "00000000000000000000000000001234"],
        "summary": "payment POST /pay: error rate 41% vs 1% baseline, 480 requests (+1 more)"
    }))
    .expect("test incident")
}

/// `incident` resolved at `at` (Unix nanoseconds).
pub(crate) fn resolved(mut incident: Incident, at: u64) -> IncidentEvent {
    incident.state = crate::model::IncidentState::Resolved;
    incident.resolved_unix_nanos = Some(at);
    incident.resolved = Some(crate::model::rfc3339(at));
    IncidentEvent::Resolved(incident)
}
