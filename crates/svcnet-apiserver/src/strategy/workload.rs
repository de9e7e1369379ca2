//! The strategy of the apps/v1 workloads (Deployment, ReplicaSet, DaemonSet): an empty status on create, their
//! defaults, and `svcnet_api::workload`'s validation. (Generation tracking is a declarative rule of
//! the kinds.)

use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::workload;

use super::Strategy;

/// A workload kind, told apart only by its defaulting.
pub(super) struct Workload {
    defaults: fn(&mut Value),
}

/// Deployments.
pub(super) static DEPLOYMENT: Workload = Workload {
    defaults: workload::set_deployment_defaults,
};

/// DaemonSets.
pub(super) static DAEMON_SET: Workload = Workload {
    defaults: workload::set_daemonset_defaults,
};

/// ReplicaSets.
pub(super) static REPLICA_SET: Workload = Workload {
    defaults: workload::set_replicaset_defaults,
};

impl Strategy for Workload {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), json!({}));
        }
    }

    fn set_defaults(&self, obj: &mut Value) {
        (self.defaults)(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        workload::validate_workload(obj, old)
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::runner_policy_warnings(obj)
    }
}
