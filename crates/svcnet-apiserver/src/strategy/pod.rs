//! The Pod strategy: a new pod starts Pending, gets kube's pod defaults and the DefaultTolerationSeconds
//! plugin's tolerations, and is validated by
//! `svcnet_api::workload`. (Graceful deletion is a declarative rule of the kind.)

use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::workload;

use super::Strategy;

/// Pods.
pub(super) struct Pod;

impl Strategy for Pod {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
    }

    fn set_defaults(&self, obj: &mut Value) {
        workload::set_pod_defaults(obj);
        // Admission, not defaulting, in kube; it runs on the same writes (pods' create and update).
        workload::add_default_tolerations(obj);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        workload::validate_pod(obj)
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::pod_warnings(obj)
    }
}
