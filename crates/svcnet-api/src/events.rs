//! core/v1 Events about objects, shaped as client-go's (legacy) event recorder writes them: what the
//! controllers (through the API) and the API server's own loops (through its internal write path) both
//! record. Pure: the caller supplies the time and the name suffix.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// The object an Event is about.
#[derive(Debug, Clone)]
pub struct Involved<'a> {
    /// The object's apiVersion (`v1`, `apps/v1`).
    pub api_version: &'a str,
    /// The object's kind.
    pub kind: &'a str,
    /// Its namespace (empty for a cluster-scoped object).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid (kubectl describe selects Events on it).
    pub uid: &'a str,
    /// The resourceVersion the Event is about.
    pub resource_version: &'a str,
}

impl<'a> Involved<'a> {
    /// The Event subject for an object with this metadata.
    pub fn of(api_version: &'a str, kind: &'a str, meta: &'a ObjectMeta) -> Self {
        Involved {
            api_version,
            kind,
            namespace: meta.namespace.as_deref().unwrap_or(""),
            name: meta.name.as_deref().unwrap_or(""),
            uid: meta.uid.as_deref().unwrap_or(""),
            resource_version: meta.resource_version.as_deref().unwrap_or(""),
        }
    }
}

/// Where an Event about `about` lives: its object's namespace, or `default` for a cluster-scoped object
/// (a Node), as client-go puts them.
pub fn event_namespace<'a>(about: &Involved<'a>) -> &'a str {
    if about.namespace.is_empty() {
        "default"
    } else {
        about.namespace
    }
}

/// The Event object (pure, for tests).
pub fn build_event(
    about: &Involved<'_>,
    component: &str,
    type_: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
    suffix: i128,
) -> Event {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", about.name, suffix.max(0))),
            namespace: Some(event_namespace(about).to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: opt(about.api_version),
            kind: opt(about.kind),
            namespace: opt(about.namespace),
            name: opt(about.name),
            uid: opt(about.uid),
            resource_version: opt(about.resource_version),
            field_path: None,
        },
        type_: Some(type_.to_owned()),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        source: Some(EventSource {
            component: Some(component.to_owned()),
            host: None,
        }),
        reporting_component: Some(component.to_owned()),
        reporting_instance: Some(component.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() {
        let about = Involved {
            api_version: "v1",
            kind: "Service",
            namespace: "default",
            name: "web",
            uid: "u-1",
            resource_version: "42",
        };
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let ev = build_event(
            &about,
            "svcnet-lb-ipam",
            "Warning",
            "AllocationFailed",
            "no",
            now,
            255,
        );
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["metadata"]["name"], "web.ff");
        assert_eq!(v["metadata"]["namespace"], "default");
        assert_eq!(
            v["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "namespace": "default",
                               "name": "web", "uid": "u-1", "resourceVersion": "42"})
        );
        assert_eq!(v["source"]["component"], "svcnet-lb-ipam");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reason"], "AllocationFailed");
        assert_eq!(v["count"], 1);
        assert_eq!(v["firstTimestamp"], "2025-01-01T00:00:00Z");
    }

    /// Events about cluster-scoped objects live in `default`, with no namespace on the object reference.
    #[test]
    fn node_events_live_in_default() {
        let about = Involved {
            api_version: "v1",
            kind: "Node",
            namespace: "",
            name: "node-b",
            uid: "u-2",
            resource_version: "7",
        };
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let ev = build_event(&about, "cidrAllocator", "Normal", "CIDRNotAvailable", "m", now, 1);
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["metadata"]["namespace"], "default");
        assert!(v["involvedObject"].get("namespace").is_none(), "{v}");
    }
}
