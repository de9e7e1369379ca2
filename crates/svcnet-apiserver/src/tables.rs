//! Server-side printing glue: turns stored objects into the `Table` and `PartialObjectMetadata`
//! representations kubectl asks for, using the column rules in `svcnet_api::table`.

use serde_json::{Value, json};
use svcnet_api::resources::ResourceType;
use svcnet_api::table::{self as printers, IncludeObject};

use crate::request::Params;

/// A `meta.k8s.io/v1` Table of `objects`, honouring `includeObject`.
pub fn table(
    rt: &ResourceType,
    objects: &[&Value],
    params: &Params,
    revision: u64,
    continue_: Option<&str>,
) -> Value {
    let include = match params.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let mut t = printers::table(rt.group, rt.kind, objects, include, jiff::Timestamp::now());
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = continue_ {
        meta["continue"] = json!(c);
    }
    t["metadata"] = meta;
    t
}

/// The `PartialObjectMetadata` form of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}
