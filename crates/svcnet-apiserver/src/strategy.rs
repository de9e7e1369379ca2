//! Per-kind rules applied on every write, as kube-apiserver's registry strategies apply them: what is
//! reset on create, what a main-resource update may not change (status) and what a status update may
//! not change (everything else), and which validation runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};
use svcnet_api::field::{BadValue, FieldError, Path};
use svcnet_api::resources::ResourceType;
use svcnet_api::{validation, workload};

/// Prepares a new object for create (kube's `PrepareForCreate`).
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else { return };
    match (rt.group, rt.kind) {
        ("", "Namespace") => {
            // The `kubernetes` finalizer is what lets namespace deletion empty the namespace first.
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
        ("", "Service") => {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("", "Pod") => {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        ("apps", "Deployment" | "ReplicaSet") => {
            map.insert("status".into(), json!({}));
        }
        _ => {}
    }
    apply_defaults(rt, obj);
    if matches!((rt.group, rt.kind), ("apps", "Deployment" | "ReplicaSet")) {
        // Workloads count spec changes in metadata.generation; controllers report observedGeneration.
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("generation".into(), json!(1));
        }
    }
}

fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group, rt.kind) {
        ("", "Pod") => workload::set_pod_defaults(obj),
        ("apps", "Deployment") => workload::set_deployment_defaults(obj),
        ("apps", "ReplicaSet") => workload::set_replicaset_defaults(obj),
        _ => {}
    }
}

/// Prepares an update (kube's `PrepareForUpdate`): a main-resource write keeps the stored status, a
/// status write keeps everything but status (and metadata, which kube lets either write change).
pub fn prepare_update(rt: &ResourceType, subresource: Option<&str>, new: &mut Value, old: &Value) {
    if subresource.is_none() {
        apply_defaults(rt, new);
        if matches!((rt.group, rt.kind), ("apps", "Deployment" | "ReplicaSet")) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let next = if new.get("spec") != old.get("spec") {
                generation + 1
            } else {
                generation
            };
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("generation".into(), json!(next));
            }
        }
    } else if let (Some(m), Some(g)) = (
        new.get_mut("metadata").and_then(Value::as_object_mut),
        old.pointer("/metadata/generation"),
    ) {
        m.insert("generation".into(), g.clone());
    }
    let (Some(n), Some(o)) = (new.as_object_mut(), old.as_object()) else {
        return;
    };
    match subresource {
        None if rt.has_subresource("status") => {
            match o.get("status") {
                Some(s) => n.insert("status".into(), s.clone()),
                None => n.remove("status"),
            };
        }
        Some("status") => {
            let status = n.remove("status");
            let meta = n.remove("metadata");
            let mut rebuilt: Map<String, Value> = o.clone();
            if let Some(m) = meta {
                rebuilt.insert("metadata".into(), m);
            }
            match status {
                Some(s) => rebuilt.insert("status".into(), s),
                None => rebuilt.remove("status"),
            };
            *n = rebuilt;
        }
        _ => {}
    }
}

/// Kube's `ValidateObjectMeta` name rule for a kind.
fn name_rule(rt: &ResourceType) -> validation::NameValidator {
    match (rt.group, rt.kind) {
        ("", "Service") => validation::name_is_dns1035_label,
        ("", "Namespace") => validation::validate_namespace_name,
        _ => validation::name_is_dns_subdomain,
    }
}

fn object_meta(obj: &Value) -> Result<ObjectMeta, FieldError> {
    serde_json::from_value(obj.get("metadata").cloned().unwrap_or_else(|| json!({})))
        .map_err(|e| FieldError::invalid("metadata", BadValue::Omit, e.to_string()))
}

fn validate_kind(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match (rt.group, rt.kind) {
        ("", "Pod") => workload::validate_pod(obj),
        ("apps", "Deployment" | "ReplicaSet") => workload::validate_workload(obj, old),
        _ => Vec::new(),
    }
}

/// Validates an object for create: metadata, then the kind's own rules.
pub fn validate_create(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = match object_meta(obj) {
        Ok(m) => validation::validate_object_meta(&m, rt.namespaced, name_rule(rt), &Path::new("metadata")),
        Err(e) => vec![e],
    };
    errs.extend(validate_kind(rt, obj, None));
    errs
}

/// Validates an object's metadata for update against the stored one.
pub fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    match (object_meta(new), object_meta(old)) {
        (Ok(mut n), Ok(o)) => {
            let path = Path::new("metadata");
            validation::prepare_object_meta_for_update(&mut n, &o);
            let mut errs = validation::validate_object_meta(&n, rt.namespaced, name_rule(rt), &path);
            errs.extend(validation::validate_object_meta_update(&n, &o, &path));
            errs.extend(validate_kind(rt, new, Some(old)));
            errs
        }
        (Err(e), _) | (_, Err(e)) => vec![e],
    }
}
