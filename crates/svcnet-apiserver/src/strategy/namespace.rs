//! The Namespace strategy: a new namespace starts Active with the `kubernetes` finalizer, which is
//! what lets namespace deletion empty the namespace first.

use serde_json::{Value, json};

use super::Strategy;

/// Namespaces.
pub(super) struct Namespace;

impl Strategy for Namespace {
    fn prepare_create(&self, obj: &mut Value) {
        let Some(map) = obj.as_object_mut() else { return };
        let spec = map.entry("spec").or_insert_with(|| json!({}));
        let fins = spec
            .as_object_mut()
            .map(|s| s.entry("finalizers").or_insert_with(|| json!([])));
        if let Some(Value::Array(f)) = fins
            && !f.iter().any(|x| x == "kubernetes")
        {
            f.push(json!("kubernetes"));
        }
        map.insert("status".into(), json!({"phase": "Active"}));
    }
}
