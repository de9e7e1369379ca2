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

mod duration;
mod format;
mod printers;
#[cfg(test)]
mod tests;

use svcnet_kinds::columns::{Column, DEFAULT_COLUMNS};
use svcnet_kinds::{Kind, kinds};

use self::duration::*;
pub use self::duration::{human_duration, translate_timestamp_since};
use self::format::*;
use self::printers::*;

/// How one kind's rows are printed: its cells, and its row conditions.
#[derive(Clone, Copy)]
struct Rows {
    cells: fn(&Value, Timestamp) -> Vec<Value>,
    conditions: fn(&Value) -> Vec<Value>,
}

/// The printer kube registers for a group and kind.
#[derive(Clone, Copy)]
enum Printer {
    /// A served kind: its columns from its definition, its rows from [`ROWS`].
    Kind(&'static Kind, Rows),
    /// `events.k8s.io` Events: kube prints them with the core Event printer (both share one internal
    /// type), so only the field names differ.
    EventsV1Event,
    /// kube's default table convertor, for every other kind.
    Default,
}

fn no_conditions(_: &Value) -> Vec<Value> {
    Vec::new()
}

const fn rows(cells: fn(&Value, Timestamp) -> Vec<Value>) -> Rows {
    Rows {
        cells,
        conditions: no_conditions,
    }
}

/// The row printer of each served kind, by the kind's definition.
static ROWS: &[(&Kind, Rows)] = &[
    (&kinds::namespace::KIND, rows(namespace_cells)),
    (&kinds::service::KIND, rows(service_cells)),
    (&kinds::endpoints::KIND, rows(endpoints_cells)),
    (
        &kinds::pod::KIND,
        Rows {
            cells: pod_cells,
            conditions: pod_conditions,
        },
    ),
    (&kinds::node::KIND, rows(node_cells)),
    (&kinds::event::KIND, rows(core_event_cells)),
    (&kinds::endpointslice::KIND, rows(endpoint_slice_cells)),
    (&kinds::lease::KIND, rows(lease_cells)),
    (&kinds::deployment::KIND, rows(deployment_cells)),
    (&kinds::replicaset::KIND, rows(replica_set_cells)),
    (&kinds::configmap::KIND, rows(config_map_cells)),
    (&kinds::secret::KIND, rows(secret_cells)),
    (&kinds::serviceaccount::KIND, rows(service_account_cells)),
    (&kinds::daemonset::KIND, rows(daemon_set_cells)),
    (&kinds::rbac::ROLE_BINDING, rows(role_binding_cells)),
    (&kinds::rbac::CLUSTER_ROLE_BINDING, rows(role_binding_cells)),
    (&kinds::csr::KIND, rows(csr_cells)),
    (&kinds::servicecidr::KIND, rows(service_cidr_cells)),
    (&kinds::ipaddress::KIND, rows(ip_address_cells)),
];

fn printer(group: &str, kind: &str) -> Printer {
    if (group, kind) == ("events.k8s.io", "Event") {
        return Printer::EventsV1Event;
    }
    kinds::by_group_kind(group, kind)
        .and_then(|k| ROWS.iter().find(|(rk, _)| std::ptr::eq(*rk, k)))
        .map_or(Printer::Default, |(k, r)| Printer::Kind(k, *r))
}

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Kind(k, _) => k.columns,
            Printer::EventsV1Event => kinds::event::KIND.columns,
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
        Printer::Kind(_, r) => (r.cells)(obj, now),
        Printer::EventsV1Event => event_cells(&EventFields::EVENTS_V1, obj, now),
        Printer::Default => default_cells(obj),
    }
}

/// A row's `conditions` (`TableRowCondition` JSON). Only Pods have any: a `Completed` condition once
/// the pod Succeeded or Failed, which clients may use to de-emphasize the row.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    match printer(group, kind) {
        Printer::Kind(_, r) => (r.conditions)(obj),
        _ => Vec::new(),
    }
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
    let rows = if objects.is_empty() && matches!(printer(group, kind), Printer::Default) {
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
