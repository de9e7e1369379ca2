//! The Secret strategy, as kube's: `stringData` is a write-only convenience merged into `data`
//! (base64) and never stored, `type` defaults to `Opaque` and may not change.

use base64::Engine;
use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::validation::FIELD_IMMUTABLE_ERROR_MSG;

use super::Strategy;

/// Secrets.
pub(super) struct Secret;

impl Strategy for Secret {
    fn set_defaults(&self, obj: &mut Value) {
        let Some(map) = obj.as_object_mut() else { return };
        if map.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            map.insert("type".into(), json!("Opaque"));
        }
        // kube's conversion: stringData entries win over data entries of the same key.
        if let Some(Value::Object(strings)) = map.remove("stringData") {
            let data = map.entry("data").or_insert_with(|| json!({}));
            if !data.is_object() {
                *data = json!({});
            }
            if let Some(data) = data.as_object_mut() {
                for (k, v) in strings {
                    let text = v.as_str().unwrap_or_default();
                    let enc = base64::engine::general_purpose::STANDARD.encode(text);
                    data.insert(k, json!(enc));
                }
            }
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        match old.map(|o| o.get("type").and_then(Value::as_str).unwrap_or_default()) {
            Some(was) if was != ty => vec![FieldError::invalid("type", ty, FIELD_IMMUTABLE_ERROR_MSG)],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_merged_and_type_defaulted_and_fixed() {
        let mut s = json!({"data": {"a": "eA=="}, "stringData": {"a": "one", "b": "two"}});
        Secret.set_defaults(&mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "b25l", "b": "dHdv"}}));
        let old = json!({"type": "Opaque"});
        let new = json!({"type": "bootstrap.kubernetes.io/token"});
        assert_eq!(Secret.validate(&new, Some(&old)).len(), 1);
        assert!(Secret.validate(&old, Some(&old)).is_empty());
    }
}
