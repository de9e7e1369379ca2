//! Server-side table printing: the `meta.k8s.io/v1` `Table` objects that `kubectl get` asks for.
//!
//! `kubectl get` sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever columns
//! the server returns, so the text users see is decided here, not in kubectl. This module reproduces
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go` and the helpers it calls:
//! `duration.HumanDuration`, `labels.FormatLabels`, `metav1.FormatLabelSelector`, ...) for the kinds svcnet
//! serves, and the generic convertor (`registry/rest/table.go`) for every other kind.
//!
//! Objects are read as the JSON the API stores (`serde_json::Value`), never deserialized into typed
//! structs: a missing or oddly typed field yields the same text kube would print for an unset field
//! instead of an error, so a table can always be produced.
//!
//! Two server-side facts shape the API:
//! - kube-apiserver always generates the *wide* table (`GenerateOptions{Wide: true}`); kubectl hides the
//!   `priority: 1` columns unless `-o wide`. So [`row_cells`] always returns every column, and
//!   load-balancer addresses are never clipped (clipping only happens for non-wide output).
//! - kube decodes stored objects with defaulting before printing, so the few defaults that show up in
//!   cells (Service `type` and port `protocol`, Deployment/ReplicaSet `replicas`, Namespace `phase`) are
//!   applied here when the stored JSON lacks them.

use std::collections::{BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

/// Which object each table row carries, the `includeObject` query parameter of a Table request
/// (`metav1.IncludeObjectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IncludeObject {
    /// `None`: rows carry `"object": null`.
    None,
    /// `Metadata` (the default): rows carry a `meta.k8s.io/v1` `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: rows carry the whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value as kube does: empty means `Metadata`; an unknown value
    /// gives `None` (kube answers 400 `unrecognized includeObject value: "<value>"`).
    pub fn from_query(value: &str) -> Option<IncludeObject> {
        match value {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

mod columns;
mod duration;
mod format;
mod printers;
#[cfg(test)]
mod tests;

use self::columns::*;
use self::duration::*;
pub use self::duration::{human_duration, translate_timestamp_since};
use self::format::*;
use self::printers::*;

/// The printer kube registers for a group and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Namespace,
    Service,
    Endpoints,
    Pod,
    Node,
    Event,
    /// `events.k8s.io` Events: kube prints them with the core Event printer (both share one internal
    /// type), so only the field names differ.
    EventsV1Event,
    EndpointSlice,
    Lease,
    Deployment,
    ReplicaSet,
    Default,
}

fn printer(group: &str, kind: &str) -> Printer {
    match (group, kind) {
        ("", "Namespace") => Printer::Namespace,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "Pod") => Printer::Pod,
        ("", "Node") => Printer::Node,
        ("", "Event") => Printer::Event,
        ("events.k8s.io", "Event") => Printer::EventsV1Event,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        _ => Printer::Default,
    }
}

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::Pod => POD_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Event | Printer::EventsV1Event => EVENT_COLUMNS,
            Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }
}

/// Column definitions (name, type, format, description, priority) as `meta.k8s.io/v1`
/// `TableColumnDefinition` JSON, in kube's order. Wide-only columns have `priority: 1`. Kinds without a
/// kube printer get the default convertor's `Name` and `Created At` columns.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    printer(group, kind)
        .columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// One row's cells, in column order (always including the wide columns, as kube-apiserver does);
/// `now` is the server's current time, from which ages are computed.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, kind) {
        Printer::Namespace => namespace_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Endpoints => endpoints_cells(obj, now),
        Printer::Pod => pod_cells(obj, now),
        Printer::Node => node_cells(obj, now),
        Printer::Event => event_cells(&EventFields::CORE, obj, now),
        Printer::EventsV1Event => event_cells(&EventFields::EVENTS_V1, obj, now),
        Printer::EndpointSlice => endpoint_slice_cells(obj, now),
        Printer::Lease => lease_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::ReplicaSet => replica_set_cells(obj, now),
        Printer::Default => default_cells(obj),
    }
}

/// A row's `conditions` (`TableRowCondition` JSON). Only Pods have any: a `Completed` condition once
/// the pod Succeeded or Failed, which clients may use to de-emphasize the row.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    if printer(group, kind) != Printer::Pod {
        return Vec::new();
    }
    let (reason, message) = match str_at(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}

/// The whole `meta.k8s.io/v1` `Table` for `objects`: `columnDefinitions` and one row per object with
/// `cells`, `conditions` (when there are any) and `object` as `include_object` asks.
///
/// `metadata` is left as `{}` for the caller to fill (`resourceVersion`, `continue`). Like kube, an
/// empty list of a printed kind gives `"rows": []` while the default convertor gives `"rows": null`.
pub fn table(
    group: &str,
    kind: &str,
    objects: &[&Value],
    include_object: IncludeObject,
    now: Timestamp,
) -> Value {
    let rows = if objects.is_empty() && printer(group, kind) == Printer::Default {
        Value::Null
    } else {
        Value::Array(
            objects
                .iter()
                .map(|obj| {
                    let mut row = Map::new();
                    row.insert("cells".into(), Value::Array(row_cells(group, kind, obj, now)));
                    let conditions = row_conditions(group, kind, obj);
                    if !conditions.is_empty() {
                        row.insert("conditions".into(), Value::Array(conditions));
                    }
                    let object = match include_object {
                        IncludeObject::None => Value::Null,
                        IncludeObject::Metadata => partial_object_metadata(obj),
                        IncludeObject::Object => (*obj).clone(),
                    };
                    row.insert("object".into(), object);
                    Value::Object(row)
                })
                .collect(),
        )
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(group, kind),
        "rows": rows,
    })
}

/// `ObjectMeta` fields in Go struct order with whether they are `omitempty`; kube re-encodes metadata
/// through this struct, so unknown fields vanish and empty ones are dropped (except
/// `creationTimestamp`, which Go always writes, as `null` when unset).
const OBJECT_META_FIELDS: &[(&str, bool)] = &[
    ("name", true),
    ("generateName", true),
    ("namespace", true),
    ("selfLink", true),
    ("uid", true),
    ("resourceVersion", true),
    ("generation", true),
    ("creationTimestamp", false),
    ("deletionTimestamp", true),
    ("deletionGracePeriodSeconds", true),
    ("labels", true),
    ("annotations", true),
    ("ownerReferences", true),
    ("finalizers", true),
    ("managedFields", true),
];

/// The `PartialObjectMetadata` kube puts in a row by default (`meta.AsPartialObjectMetadata`).
fn partial_object_metadata(obj: &Value) -> Value {
    let mut metadata = Map::new();
    let source = obj.get("metadata").and_then(Value::as_object);
    for &(field, omit_empty) in OBJECT_META_FIELDS {
        let value = source.and_then(|m| m.get(field)).cloned().unwrap_or(Value::Null);
        // Pointer fields (deletionTimestamp, deletionGracePeriodSeconds) are omitted only when nil;
        // value fields also when they hold their zero value.
        let pointer = matches!(field, "deletionTimestamp" | "deletionGracePeriodSeconds");
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty() && !pointer,
            Value::Number(n) => n.as_f64() == Some(0.0) && !pointer,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(_) => false,
        };
        if omit_empty && empty {
            continue;
        }
        metadata.insert(field.into(), value);
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}
