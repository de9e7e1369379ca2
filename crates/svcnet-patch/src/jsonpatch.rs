//! JSON patch (`application/json-patch+json`, RFC 6902) on top of the
//! `json-patch` crate, with kube-apiserver's limits and error classes.
//!
//! kube-apiserver decodes the operations strictly (400 on a malformed body),
//! refuses more than 10000 operations (413) and reports any failing
//! operation as a 422. Operations are applied one at a time so that the
//! failure can be described the way evanphx/json-patch (which kube uses)
//! words it.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::{Map, Value};

use crate::error::PatchError;
use crate::gofmt::json_kind;

/// The most operations kube-apiserver accepts in one JSON patch.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

const OPS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

/// Applies a JSON patch (an array of RFC 6902 operations) to `original`.
/// A `null` patch, which kube decodes as "no operations", changes nothing.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = match patch {
        Value::Null => return Ok(original.clone()),
        Value::Array(ops) => ops,
        other => {
            return Err(PatchError::DecodePatch(format!(
                "json: cannot unmarshal {} into Go value of type []handlers.jsonPatchOp",
                json_kind(other)
            )));
        }
    };
    for op in ops {
        check_shape(op)?;
    }
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            max: MAX_JSON_PATCH_OPERATIONS,
            got: ops.len(),
        });
    }
    let mut doc = original.clone();
    for op in ops {
        apply_operation(&mut doc, op)?;
    }
    Ok(doc)
}

/// kube's strict decode: every operation is an object whose `op`, `path`
/// and `from` are strings when present.
fn check_shape(op: &Value) -> Result<(), PatchError> {
    let map = match op {
        Value::Object(map) => map,
        // Go decodes `null` into an empty operation, rejected when applied.
        Value::Null => return Ok(()),
        other => {
            return Err(PatchError::DecodePatch(format!(
                "json: cannot unmarshal {} into Go value of type handlers.jsonPatchOp",
                json_kind(other)
            )));
        }
    };
    for field in ["op", "path", "from"] {
        if let Some(v) = map.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            return Err(PatchError::DecodePatch(format!(
                "json: cannot unmarshal {} into Go struct field jsonPatchOp.{field} of type string",
                json_kind(v)
            )));
        }
    }
    Ok(())
}

fn failed(message: String) -> PatchError {
    PatchError::JsonPatchFailed(message)
}

fn apply_operation(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let empty = Map::new();
    let map = op.as_object().unwrap_or(&empty);
    let kind = map.get("op").and_then(Value::as_str).unwrap_or("unknown");
    if !OPS.contains(&kind) {
        return Err(failed(format!("Unexpected kind: {kind}")));
    }
    let Some(path) = map.get("path").and_then(Value::as_str) else {
        return Err(failed(format!(
            "{kind} operation failed to decode path: missing value"
        )));
    };
    let from = map.get("from").and_then(Value::as_str);
    if matches!(kind, "move" | "copy") && from.is_none() {
        return Err(failed(format!(
            "{kind} operation failed to decode from: missing value"
        )));
    }

    // Rebuild the operation from the fields we checked: evanphx ignores
    // unknown fields and treats a missing `value` as null.
    let mut normalized = Map::new();
    normalized.insert("op".into(), Value::from(kind));
    normalized.insert("path".into(), Value::from(path));
    if let Some(from) = from {
        normalized.insert("from".into(), Value::from(from));
    }
    if matches!(kind, "add" | "replace" | "test") {
        let value = map.get("value").cloned().unwrap_or(Value::Null);
        normalized.insert("value".into(), value);
    }
    let from = from.unwrap_or_default();
    let operation: PatchOperation = serde_json::from_value(Value::Object(normalized)).map_err(|_| {
        // Only the pointers can fail to decode; evanphx reports an
        // unparsable pointer as a path the document lacks.
        failed(missing_path(kind, path, from))
    })?;

    json_patch::patch_unsafe(doc, std::slice::from_ref(&operation)).map_err(|e| {
        failed(match e.kind {
            PatchErrorKind::TestFailed => format!("testing value {path} failed: test failed"),
            PatchErrorKind::InvalidFromPointer => {
                format!("{kind} operation does not apply: doc is missing from path: {from}: missing value")
            }
            PatchErrorKind::CannotMoveInsideItself => {
                format!("{kind} operation does not apply: cannot move {from} inside itself to {path}")
            }
            _ => missing_path(kind, path, from),
        })
    })
}

/// evanphx/json-patch's wording for an operation whose path does not exist.
fn missing_path(kind: &str, path: &str, from: &str) -> String {
    match kind {
        "add" | "remove" => {
            format!("{kind} operation does not apply: doc is missing path: \"{path}\": missing value")
        }
        "replace" => {
            format!("replace operation does not apply: doc is missing key: {path}: missing value")
        }
        "test" => format!("test operation does not apply: is missing path: {path}: missing value"),
        _ if !from.starts_with('/') && !from.is_empty() => {
            format!("{kind} operation does not apply: doc is missing from path: {from}: missing value")
        }
        _ => {
            format!("{kind} operation does not apply: doc is missing destination path: {path}: missing value")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}
        })
    }

    #[test]
    fn add_replace_remove() {
        let out = json_patch(
            &svc(),
            &json!([
                {"op": "add", "path": "/metadata/labels/tier", "value": "fe"},
                {"op": "replace", "path": "/spec/ports/0/port", "value": 81},
                {"op": "remove", "path": "/spec/selector"}
            ]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "fe"}));
        assert_eq!(out["spec"]["ports"][0]["port"], json!(81));
        assert!(out["spec"].get("selector").is_none());
    }

    #[test]
    fn append_move_copy() {
        let out = json_patch(
            &svc(),
            &json!([
                {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
                {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
                {"op": "move", "from": "/spec/selector", "path": "/spec/oldSelector"}
            ]),
        )
        .unwrap();
        assert_eq!(out["spec"]["ports"][1], json!({"port": 443}));
        assert_eq!(out["metadata"]["annotations"], json!({"app": "web"}));
        assert_eq!(out["spec"]["oldSelector"], json!({"app": "web"}));
        assert!(out["spec"].get("selector").is_none());
    }

    #[test]
    fn failed_test_is_422_and_leaves_original_untouched() {
        let original = svc();
        let err = json_patch(
            &original,
            &json!([
                {"op": "add", "path": "/metadata/labels/x", "value": "y"},
                {"op": "test", "path": "/metadata/name", "value": "other"}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::JsonPatchFailed("testing value /metadata/name failed: test failed".into())
        );
        assert_eq!(err.http_status(), 422);
        assert_eq!(original, svc());
    }

    #[test]
    fn passing_test_applies() {
        let out = json_patch(
            &svc(),
            &json!([
                {"op": "test", "path": "/metadata/name", "value": "web"},
                {"op": "replace", "path": "/metadata/name", "value": "web2"}
            ]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["name"], json!("web2"));
    }

    #[test]
    fn missing_paths_are_422_with_evanphx_wording() {
        let cases = [
            (
                json!({"op": "add", "path": "/nope/x", "value": 1}),
                "add operation does not apply: doc is missing path: \"/nope/x\": missing value",
            ),
            (
                json!({"op": "remove", "path": "/metadata/nope"}),
                "remove operation does not apply: doc is missing path: \"/metadata/nope\": missing value",
            ),
            (
                json!({"op": "replace", "path": "/metadata/nope", "value": 1}),
                "replace operation does not apply: doc is missing key: /metadata/nope: missing value",
            ),
            (
                json!({"op": "move", "from": "/nope", "path": "/x"}),
                "move operation does not apply: doc is missing from path: /nope: missing value",
            ),
            (
                json!({"op": "copy", "from": "/nope", "path": "/x"}),
                "copy operation does not apply: doc is missing from path: /nope: missing value",
            ),
        ];
        for (op, message) in cases {
            let err = json_patch(&svc(), &json!([op])).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!(err.http_status(), 422);
        }
    }

    #[test]
    fn unknown_or_missing_op_is_422() {
        let err = json_patch(&svc(), &json!([{"op": "frobnicate", "path": "/a"}])).unwrap_err();
        assert_eq!(err.to_string(), "Unexpected kind: frobnicate");
        assert_eq!(err.http_status(), 422);
        let err = json_patch(&svc(), &json!([{"path": "/a"}])).unwrap_err();
        assert_eq!(err.to_string(), "Unexpected kind: unknown");
        let err = json_patch(&svc(), &json!([null])).unwrap_err();
        assert_eq!(err.to_string(), "Unexpected kind: unknown");
        let err = json_patch(&svc(), &json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remove operation failed to decode path: missing value"
        );
        let err = json_patch(&svc(), &json!([{"op": "move", "path": "/a"}])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "move operation failed to decode from: missing value"
        );
    }

    #[test]
    fn malformed_pointer_is_422() {
        let err = json_patch(&svc(), &json!([{"op": "add", "path": "metadata", "value": 1}])).unwrap_err();
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn move_into_itself_is_422() {
        let err = json_patch(
            &svc(),
            &json!([{"op": "move", "from": "/metadata", "path": "/metadata/labels/x"}]),
        )
        .unwrap_err();
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn missing_value_means_null() {
        let out = json_patch(&svc(), &json!([{"op": "add", "path": "/metadata/x"}])).unwrap();
        assert_eq!(out["metadata"]["x"], Value::Null);
    }

    #[test]
    fn body_shape_errors_are_400() {
        for (patch, message) in [
            (
                json!({"op": "add"}),
                "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp",
            ),
            (
                json!(["add"]),
                "error decoding patch: json: cannot unmarshal string into Go value of type handlers.jsonPatchOp",
            ),
            (
                json!([{"op": 1, "path": "/a"}]),
                "error decoding patch: json: cannot unmarshal number into Go struct field jsonPatchOp.op of type string",
            ),
        ] {
            let err = json_patch(&svc(), &patch).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn null_and_empty_patches_change_nothing() {
        assert_eq!(json_patch(&svc(), &Value::Null).unwrap(), svc());
        assert_eq!(json_patch(&svc(), &json!([])).unwrap(), svc());
    }

    #[test]
    fn too_many_operations_is_413() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Service"}))
            .collect();
        let err = json_patch(&svc(), &Value::Array(ops)).unwrap_err();
        assert_eq!(
            err,
            PatchError::TooManyOperations {
                max: 10000,
                got: 10001
            }
        );
        let ops: Vec<Value> = (0..MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Service"}))
            .collect();
        assert!(json_patch(&svc(), &Value::Array(ops)).is_ok());
    }

    #[test]
    fn whole_document_replace() {
        let out = json_patch(&svc(), &json!([{"op": "replace", "path": "", "value": {"a": 1}}])).unwrap();
        assert_eq!(out, json!({"a": 1}));
    }
}
