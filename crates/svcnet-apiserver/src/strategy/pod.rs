//! The Pod strategy: a new pod starts Pending, gets kube's pod defaults and the DefaultTolerationSeconds
//! plugin's tolerations, the ServiceAccount plugin's `kube-api-access-*` volume (unless its
//! `automountServiceAccountToken`, or its ServiceAccount's, is false: the node mounts a token only where
//! the pod has that volume, so it never needs to read ServiceAccounts), and is validated by
//! `svcnet_api::workload`. (Graceful deletion is a declarative rule of the kind.)

use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::workload;

use super::{Lookup, Strategy};

/// Where the ServiceAccount admission plugin mounts the token, CA and namespace.
const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// kube's ServiceAccount admission (`plugin/pkg/admission/serviceaccount`): unless the pod, else its
/// ServiceAccount, says `automountServiceAccountToken: false`, a projected volume `kube-api-access-XXXXX`
/// (token, CA, namespace) mounted read-only at [`SERVICE_ACCOUNT_PATH`] in every container that mounts
/// nothing there yet. A ServiceAccount not created yet counts as automounting.
fn service_account_volume(obj: &mut Value, lookup: Lookup<'_>) {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let automount = match spec.get("automountServiceAccountToken").and_then(Value::as_bool) {
        Some(b) => b,
        None => {
            let sa = spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            svcnet_api::resources::lookup("", "v1", "serviceaccounts")
                .and_then(|rt| lookup(rt, Some(&ns), sa))
                .and_then(|a| a.get("automountServiceAccountToken").and_then(Value::as_bool))
                .unwrap_or(true)
        }
    };
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(list) = volumes.as_array_mut() else {
        return;
    };
    let has = list.iter().any(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    });
    if !automount || has {
        if list.is_empty() {
            spec.remove("volumes");
        }
        return;
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    list.push(
        json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}),
    );
    for key in ["initContainers", "containers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounts = c
                .as_object_mut()
                .map(|m| m.entry("volumeMounts").or_insert_with(|| json!([])));
            let Some(mounts) = mounts.and_then(Value::as_array_mut) else {
                continue;
            };
            if !mounts.iter().any(|m| m["mountPath"] == SERVICE_ACCOUNT_PATH) {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_PATH}));
            }
        }
    }
}

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

    fn admit_with(&self, obj: &mut Value, lookup: Lookup<'_>) {
        service_account_volume(obj, lookup);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        workload::validate_pod(obj)
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::pod_warnings(obj)
    }
}
