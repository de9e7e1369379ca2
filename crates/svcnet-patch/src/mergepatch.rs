//! JSON merge patch (`application/merge-patch+json`, RFC 7386).
//!
//! The merge itself is RFC 7386 as the `json-patch` crate implements it.
//! kube-apiserver uses evanphx/json-patch, which also drops `null` items from
//! arrays it copies in; kube's typed decoding hides that difference for the
//! built-in kinds, so we keep the RFC behaviour.

use serde_json::Value;

use crate::error::PatchError;
use crate::gofmt::json_kind;

/// Applies a JSON merge patch: objects merge recursively, `null` deletes a
/// key, anything else (lists included) replaces the target. A non-object
/// patch replaces the whole document, as the RFC says.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// Applies a merge patch received as a request body, rejecting the bodies
/// kube-apiserver rejects: `null` and anything that is not an object.
pub(crate) fn merge_patch_body(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    match patch {
        Value::Null => Err(PatchError::InvalidMergePatch),
        Value::Object(_) => Ok(merge_patch(original, patch)),
        other => Err(PatchError::DecodePatch(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i:1"}, {"name": "d", "image": "j:1"}]}
        })
    }

    #[test]
    fn merges_maps_and_deletes_nulls() {
        let out = merge_patch(&pod(), &json!({"metadata": {"labels": {"a": null, "c": "3"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["name"], json!("p"));
    }

    #[test]
    fn lists_are_replaced_whole() {
        let out = merge_patch(
            &pod(),
            &json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "c", "image": "i:2"}]));
        let out = merge_patch(&pod(), &json!({"metadata": {"finalizers": ["y"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn new_objects_lose_their_nulls() {
        let out = merge_patch(&pod(), &json!({"status": {"phase": "Running", "reason": null}}));
        assert_eq!(out["status"], json!({"phase": "Running"}));
    }

    #[test]
    fn scalar_replaces_object_and_back() {
        let out = merge_patch(&pod(), &json!({"spec": "x"}));
        assert_eq!(out["spec"], json!("x"));
        let out = merge_patch(&json!({"a": 1}), &json!({"a": {"b": 2, "c": null}}));
        assert_eq!(out, json!({"a": {"b": 2}}));
    }

    #[test]
    fn empty_patch_is_identity_and_key_order_is_kept() {
        assert_eq!(merge_patch(&pod(), &json!({})), pod());
        let out = merge_patch(&pod(), &json!({"apiVersion": "v1", "zzz": 1}));
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec", "zzz"]);
    }

    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (original, patch, expected) in cases {
            assert_eq!(merge_patch(&original, &patch), expected, "{patch}");
        }
    }

    #[test]
    fn body_checks_follow_kube() {
        let err = merge_patch_body(&pod(), &Value::Null).unwrap_err();
        assert_eq!(err, PatchError::InvalidMergePatch);
        assert_eq!(err.http_status(), 400);
        let err = merge_patch_body(&pod(), &json!([1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(err.http_status(), 400);
        let err = merge_patch_body(&pod(), &json!("x")).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(merge_patch_body(&pod(), &json!({})).is_ok());
    }
}
