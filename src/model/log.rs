//! What recording reads from a log record.

/// Whether recording a log record reads the resource or record attribute
/// `key`: the service name and the keys of a Kubernetes event
/// ([`k8s_event`]). Replay's log reader keeps only these, so a key read
/// here must be listed.
pub fn log_attribute_read(key: &str) -> bool {
    matches!(
        key,
        "service.name"
            | "k8s.deployment.name"
            | "k8s.event.reason"
            | "k8s.object.kind"
            | "k8s.object.name"
            | "event.domain"
            | "k8s.resource.name"
    )
}
