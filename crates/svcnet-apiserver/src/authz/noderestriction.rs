//! kube's NodeRestriction admission (`plugin/pkg/admission/noderestriction`): the Node authorizer lets a
//! node write nodes, pods, leases and tokens at all; this decides which objects, from the object itself.
//! A node may change only its own Node (not its taints, nor `node-restriction.kubernetes.io/` or unknown
//! `kubernetes.io` labels), only the status of pods bound to it, create only mirror pods of its own, delete
//! only its own pods, touch only its own Lease and ask tokens only for its own pods. svcnet adds two rules
//! of its own: a node's DNS server is a kube-dns endpoint it publishes itself, so RBAC lets nodes write
//! EndpointSlices in `kube-system`, and this keeps each node to its own slice `kube-dns-<node>` naming
//! only itself (in Kubernetes nodes write no EndpointSlices at all); and every node is a candidate for
//! the L2 announcement of LoadBalancer IPs, so it may write Leases named `svcnet-lb-*` outside
//! `kube-node-lease` holding only itself (or releasing its own), and of a Service only the annotation
//! `svcnet.io/lb-announcing-node` naming itself (or removing its own name). Pure: existing objects
//! come from a [`Lookup`]; a refusal is kube's Forbidden, word for word.

use std::sync::Arc;

use serde_json::{Value, json};

use super::node::NODE_LEASE_NAMESPACE;
use crate::errors::ApiError;
use svcnet_api::lb_announce::{LEASE_PREFIX, NODE_ANNOTATION};

/// Where the objects a decision depends on are read from.
pub trait Lookup {
    /// A pod.
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Value>>;
    /// A Node.
    fn node(&self, name: &str) -> Option<Arc<Value>>;
}

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operation {
    /// A create (POST, create-on-update, the token subresource).
    Create,
    /// An update or patch.
    Update,
    /// A delete.
    Delete,
}

/// One write by a node.
#[derive(Debug)]
pub struct Request<'a> {
    /// The operation.
    pub op: Operation,
    /// The API group of the resource.
    pub group: &'a str,
    /// The resource, e.g. `pods`.
    pub resource: &'a str,
    /// The subresource ("" for none).
    pub subresource: &'a str,
    /// The namespace ("" for cluster scope).
    pub namespace: &'a str,
    /// The name in the request's path ("" on create).
    pub name: &'a str,
    /// The object written (none for a delete).
    pub object: Option<&'a Value>,
    /// The object before the write (updates).
    pub old: Option<&'a Value>,
}

/// Admits or refuses one write of `node`.
pub fn admit(lookup: &dyn Lookup, node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    if node.is_empty() {
        return deny("could not determine node from user \"system:node:\"".into());
    }
    match (req.group, req.resource) {
        ("", "pods") => match req.subresource {
            "" => admit_pod(lookup, node, req),
            "status" => admit_pod_status(node, req),
            "eviction" => Ok(()),
            other => deny(format!(
                "unexpected pod subresource \"{other}\", only 'status' and 'eviction' are allowed"
            )),
        },
        ("", "nodes") => admit_node(node, req),
        ("", "persistentvolumeclaims") => admit_pvc(node, req),
        ("", "serviceaccounts") if req.op == Operation::Create && req.subresource == "token" => {
            admit_token(lookup, req, node)
        }
        ("discovery.k8s.io", "endpointslices") => admit_dns_slice(node, req),
        ("coordination.k8s.io", "leases") if req.namespace != NODE_LEASE_NAMESPACE => {
            admit_announcement_lease(node, req)
        }
        ("", "services") => admit_announcing_annotation(node, req),
        ("coordination.k8s.io", "leases") => {
            if req.namespace != NODE_LEASE_NAMESPACE {
                return deny(format!(
                    "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
                ));
            }
            let name = match req.op {
                Operation::Create => str_at(req.object, "/metadata/name"),
                _ => req.name,
            };
            if name != node {
                return deny("can only access node lease with the same name as the requesting node".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A node's write of a Lease outside `kube-node-lease`: only an L2 announcement Lease
/// (`svcnet-lb-*`), held by itself, or released (no holder) when it held it. Which node should hold
/// one is the announcers' election (client-go's rules); this keeps a node from writing another's name.
fn admit_announcement_lease(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    let name = match req.op {
        Operation::Create => str_at(req.object, "/metadata/name"),
        _ => req.name,
    };
    if req.op == Operation::Delete || !name.starts_with(LEASE_PREFIX) {
        return deny(format!(
            "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace, or write L2 announcement leases \"{LEASE_PREFIX}*\""
        ));
    }
    let holder = str_at(req.object, "/spec/holderIdentity");
    let before = str_at(req.old, "/spec/holderIdentity");
    let released_own = holder.is_empty() && (before.is_empty() || before == node);
    if holder != node && !released_own {
        return deny(format!(
            "node \"{node}\" can only hold an L2 announcement lease itself or release its own"
        ));
    }
    Ok(())
}

/// A node's write of a Service: nothing but the L2 announcer's annotation, naming the node itself, or
/// its removal where it named the node. (A node may not create or delete Services at all.)
fn admit_announcing_annotation(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    if req.op != Operation::Update || !req.subresource.is_empty() {
        return deny(format!(
            "node \"{node}\" can only set the annotation \"{NODE_ANNOTATION}\" of a Service"
        ));
    }
    let announcing = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/annotations"))
            .and_then(|a| a.get(NODE_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // Everything but the annotation (and what the server itself sets on every write) stays.
    let rest = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or_default();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["resourceVersion", "managedFields", "generation"] {
                meta.remove(k);
            }
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(NODE_ANNOTATION);
            }
            if meta
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.is_empty())
            {
                meta.remove("annotations");
            }
        }
        v
    };
    if rest(req.object) != rest(req.old) {
        return deny(format!(
            "node \"{node}\" can only set the annotation \"{NODE_ANNOTATION}\" of a Service"
        ));
    }
    match (announcing(req.old), announcing(req.object)) {
        (_, Some(new)) if new == node => Ok(()),
        (old, None) if old.is_none() || old.as_deref() == Some(node) => Ok(()),
        _ => deny(format!(
            "node \"{node}\" can only name itself in the annotation \"{NODE_ANNOTATION}\" or remove its own name"
        )),
    }
}

/// A node's write of an EndpointSlice: only its own kube-dns slice, naming only itself as the node.
fn admit_dns_slice(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let own = format!("kube-dns-{node}");
    let name = match req.op {
        Operation::Create => str_at(req.object, "/metadata/name"),
        _ => req.name,
    };
    if req.namespace != "kube-system" || name != own {
        return Err(forbidden(
            req,
            format!("node \"{node}\" can only write its own kube-dns EndpointSlice \"kube-system/{own}\""),
        ));
    }
    let others = req
        .object
        .and_then(|o| o.get("endpoints"))
        .and_then(Value::as_array)
        .is_some_and(|eps| {
            eps.iter()
                .any(|e| e.get("nodeName").and_then(Value::as_str) != Some(node))
        });
    if others {
        return Err(forbidden(
            req,
            format!("node \"{node}\" can only publish endpoints with nodeName set to itself"),
        ));
    }
    Ok(())
}

fn str_at<'a>(v: Option<&'a Value>, ptr: &str) -> &'a str {
    v.and_then(|v| v.pointer(ptr))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// apiserver's `admission.NewForbidden`: the resource and the object's name (or "Unknown") lead.
fn forbidden(req: &Request<'_>, msg: String) -> ApiError {
    let name = [
        str_at(req.object, "/metadata/name"),
        str_at(req.object, "/metadata/generateName"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("Unknown");
    let qualified = if req.group.is_empty() {
        req.resource.to_string()
    } else {
        format!("{}.{}", req.resource, req.group)
    };
    let mut details = json!({"name": name, "kind": req.resource});
    if !req.group.is_empty() {
        details["group"] = json!(req.group);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(format!("{qualified} \"{name}\" is forbidden: {msg}"))
    }
}

fn admit_pod(lookup: &dyn Lookup, node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    match req.op {
        Operation::Delete => match lookup.pod(req.namespace, req.name) {
            // The delete itself answers NotFound.
            None => Ok(()),
            Some(p) if str_at(Some(&p), "/spec/nodeName") != node => deny(format!(
                "node \"{node}\" can only delete pods with spec.nodeName set to itself"
            )),
            Some(_) => Ok(()),
        },
        Operation::Update => deny(format!(
            "unexpected operation \"UPDATE\", node \"{node}\" can only create and delete mirror pods"
        )),
        Operation::Create => {
            let pod = req.object.cloned().unwrap_or_default();
            if pod
                .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                .is_none()
            {
                return deny(format!(
                    "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
                ));
            }
            if str_at(Some(&pod), "/spec/nodeName") != node {
                return deny(format!(
                    "node \"{node}\" can only create pods with spec.nodeName set to itself"
                ));
            }
            let owners = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let owner = match owners.as_slice() {
                [] => {
                    return deny(format!(
                        "node \"{node}\" can only create pods with an owner reference set to itself"
                    ));
                }
                [one] => one,
                _ => {
                    return deny(format!(
                        "node \"{node}\" can only create pods with a single owner reference set to itself"
                    ));
                }
            };
            let s = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default();
            if s("apiVersion") != "v1" || s("kind") != "Node" || s("name") != node {
                return deny(format!(
                    "node \"{node}\" can only create pods with an owner reference set to itself"
                ));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return deny(format!(
                    "node \"{node}\" can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return deny(format!(
                    "node \"{node}\" must not set blockOwnerDeletion on an owner reference"
                ));
            }
            let uid = lookup
                .node(node)
                .map(|n| str_at(Some(&n), "/metadata/uid").to_string())
                .unwrap_or_default();
            if s("uid") != uid {
                return deny(format!(
                    "node {node} UID mismatch: expected {uid} got {}",
                    s("uid")
                ));
            }
            // A mirror pod may reference no other API object: the node could read it through the pod.
            if !str_at(Some(&pod), "/spec/serviceAccountName").is_empty() {
                return deny(format!(
                    "node \"{node}\" can not create pods that reference a service account"
                ));
            }
            for (kind, what) in [
                (super::node::Related::Secret, "secrets"),
                (super::node::Related::ConfigMap, "configmaps"),
                (super::node::Related::Pvc, "persistentvolumeclaims"),
            ] {
                if !super::node::references(&pod, kind).is_empty() {
                    return deny(format!(
                        "node \"{node}\" can not create pods that reference {what}"
                    ));
                }
            }
            Ok(())
        }
    }
}

fn admit_pod_status(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    if req.op != Operation::Update {
        let op = if req.op == Operation::Create {
            "CREATE"
        } else {
            "DELETE"
        };
        return Err(forbidden(req, format!("unexpected operation \"{op}\"")));
    }
    if str_at(req.old, "/spec/nodeName") != node {
        return Err(forbidden(
            req,
            format!("node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"),
        ));
    }
    let labels = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            .cloned()
    };
    if labels(req.old) != labels(req.object) {
        return Err(forbidden(
            req,
            format!("node \"{node}\" cannot update labels through pod status"),
        ));
    }
    Ok(())
}

fn admit_node(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    let labels = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let name = match req.op {
        Operation::Create => {
            let forbidden_labels = modified(&labels(req.object), &Default::default())
                .into_iter()
                .filter(|l| restricted(l))
                .collect::<Vec<_>>();
            if !forbidden_labels.is_empty() {
                return deny(format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    forbidden_labels.join(", ")
                ));
            }
            str_at(req.object, "/metadata/name")
        }
        _ => req.name,
    };
    if name != node {
        return deny(format!(
            "node \"{node}\" is not allowed to modify node \"{name}\""
        ));
    }
    if req.op == Operation::Update {
        let taints = |v: Option<&Value>| {
            v.and_then(|v| v.pointer("/spec/taints"))
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                .cloned()
        };
        if taints(req.object) != taints(req.old) {
            return deny(format!("node \"{node}\" is not allowed to modify taints"));
        }
        let forbidden_labels = modified(&labels(req.object), &labels(req.old))
            .into_iter()
            .filter(|l| restricted(l) || (kubernetes_label(l) && !kubelet_label(l)))
            .collect::<Vec<_>>();
        if !forbidden_labels.is_empty() {
            return deny(format!(
                "is not allowed to modify labels: {}",
                forbidden_labels.join(", ")
            ));
        }
    }
    Ok(())
}

fn admit_pvc(node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    if req.subresource != "status" {
        return Err(forbidden(req, "may only update PVC status".into()));
    }
    // Only status.capacity and status.conditions may change.
    let strip = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or_default();
        for ptr in ["/metadata", "/status"] {
            if let Some(m) = v.pointer_mut(ptr).and_then(Value::as_object_mut) {
                for k in ["resourceVersion", "managedFields", "capacity", "conditions"] {
                    m.remove(k);
                }
            }
        }
        v
    };
    if strip(req.object) != strip(req.old) {
        return Err(forbidden(
            req,
            format!(
                "node \"{node}\" is not allowed to update fields other than status.capacity and status.conditions"
            ),
        ));
    }
    Ok(())
}

fn admit_token(lookup: &dyn Lookup, req: &Request<'_>, node: &str) -> Result<(), ApiError> {
    let deny = |msg: String| Err(forbidden(req, msg));
    let r = |k: &str| str_at(req.object, &format!("/spec/boundObjectRef/{k}"));
    if r("apiVersion") != "v1" || r("kind") != "Pod" || r("name").is_empty() {
        return deny("node requested token not bound to a pod".into());
    }
    if r("uid").is_empty() {
        return deny("node requested token with a pod binding without a uid".into());
    }
    // A missing pod is the token request's own NotFound.
    let Some(pod) = lookup.pod(req.namespace, r("name")) else {
        return Ok(());
    };
    let uid = str_at(Some(&pod), "/metadata/uid");
    if r("uid") != uid {
        return deny(format!(
            "the UID in the bound object reference ({}) does not match the UID in record ({uid}). The object might have been deleted and then recreated",
            r("uid")
        ));
    }
    if str_at(Some(&pod), "/spec/nodeName") != node {
        return deny("node requested token bound to a pod scheduled on a different node".into());
    }
    Ok(())
}

/// The label keys that differ between two label maps, sorted (kube's `sets.String.List`).
fn modified(a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
}

fn in_domain(ns: &str, domain: &str) -> bool {
    ns == domain || ns.ends_with(&format!(".{domain}"))
}

/// `node-restriction.kubernetes.io/`: labels only an administrator may set on a Node.
fn restricted(key: &str) -> bool {
    in_domain(label_namespace(key), "node-restriction.kubernetes.io")
}

fn kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io")
}

/// kubelet's own labels (`kubeletapis.IsKubeletLabel`).
fn kubelet_label(key: &str) -> bool {
    const LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let ns = label_namespace(key);
    LABELS.contains(&key) || in_domain(ns, "kubelet.kubernetes.io") || in_domain(ns, "node.kubernetes.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Objects;

    impl Lookup for Objects {
        fn pod(&self, _: &str, name: &str) -> Option<Arc<Value>> {
            let node = if name == "mine" { "node1" } else { "node2" };
            Some(Arc::new(
                json!({"metadata": {"name": name, "uid": "u-1"}, "spec": {"nodeName": node}}),
            ))
        }
        fn node(&self, _: &str) -> Option<Arc<Value>> {
            Some(Arc::new(json!({"metadata": {"uid": "n-1"}})))
        }
    }

    fn req<'a>(
        op: Operation,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
        obj: Option<&'a Value>,
        old: Option<&'a Value>,
    ) -> Request<'a> {
        let (group, ns) = if resource == "leases" {
            ("coordination.k8s.io", NODE_LEASE_NAMESPACE)
        } else if resource == "endpointslices" {
            ("discovery.k8s.io", "kube-system")
        } else {
            ("", "default")
        };
        Request {
            op,
            group,
            resource,
            subresource: sub,
            namespace: ns,
            name,
            object: obj,
            old,
        }
    }

    fn message(r: Result<(), ApiError>) -> String {
        r.expect_err("refused").message
    }

    #[test]
    fn own_node_only_and_its_labels() {
        let old = json!({"metadata": {"name": "node1", "labels": {"a": "1"}}});
        let ok = json!({"metadata": {"name": "node1", "labels": {"a": "2", "node.kubernetes.io/x": "y"}}});
        assert!(
            admit(
                &Objects,
                "node1",
                &req(Operation::Update, "nodes", "", "node1", Some(&ok), Some(&old))
            )
            .is_ok()
        );
        let other = json!({"metadata": {"name": "node2"}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Update,
                    "nodes",
                    "status",
                    "node2",
                    Some(&other),
                    Some(&other)
                )
            )),
            "nodes \"node2\" is forbidden: node \"node1\" is not allowed to modify node \"node2\""
        );
        let bad = json!({"metadata": {"name": "node1", "labels": {"node-restriction.kubernetes.io/pci": "1", "kubernetes.io/role": "x"}}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(Operation::Update, "nodes", "", "node1", Some(&bad), Some(&old))
            )),
            "nodes \"node1\" is forbidden: is not allowed to modify labels: kubernetes.io/role, node-restriction.kubernetes.io/pci"
        );
        let tainted = json!({"metadata": {"name": "node1", "labels": {"a": "1"}}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Update,
                    "nodes",
                    "",
                    "node1",
                    Some(&tainted),
                    Some(&old)
                )
            )),
            "nodes \"node1\" is forbidden: node \"node1\" is not allowed to modify taints"
        );
    }

    #[test]
    fn pods_leases_tokens() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node1"}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(Operation::Create, "pods", "", "", Some(&pod), None)
            )),
            "pods \"p\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"node1\" can only create mirror pods"
        );
        let theirs = json!({"metadata": {"name": "theirs"}, "spec": {"nodeName": "node2"}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Update,
                    "pods",
                    "status",
                    "theirs",
                    Some(&theirs),
                    Some(&theirs)
                )
            )),
            "pods \"theirs\" is forbidden: node \"node1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(Operation::Delete, "pods", "", "theirs", None, None)
            )),
            "pods \"Unknown\" is forbidden: node \"node1\" can only delete pods with spec.nodeName set to itself"
        );
        assert!(
            admit(
                &Objects,
                "node1",
                &req(Operation::Delete, "pods", "", "mine", None, None)
            )
            .is_ok()
        );
        let lease = json!({"metadata": {"name": "node2"}});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(Operation::Create, "leases", "", "", Some(&lease), None)
            )),
            "leases.coordination.k8s.io \"node2\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        let tr = |name: &str| json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": "u-1"}}});
        assert!(
            admit(
                &Objects,
                "node1",
                &req(
                    Operation::Create,
                    "serviceaccounts",
                    "token",
                    "default",
                    Some(&tr("mine")),
                    None
                )
            )
            .is_ok()
        );
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Create,
                    "serviceaccounts",
                    "token",
                    "default",
                    Some(&tr("theirs")),
                    None
                )
            )),
            "serviceaccounts \"Unknown\" is forbidden: node requested token bound to a pod scheduled on a different node"
        );
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Create,
                    "serviceaccounts",
                    "token",
                    "default",
                    Some(&json!({})),
                    None
                )
            )),
            "serviceaccounts \"Unknown\" is forbidden: node requested token not bound to a pod"
        );
    }

    #[test]
    fn only_its_own_kube_dns_slice() {
        let own = json!({"metadata": {"name": "kube-dns-node1"}, "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node1"}]});
        assert!(
            admit(
                &Objects,
                "node1",
                &req(Operation::Create, "endpointslices", "", "", Some(&own), None)
            )
            .is_ok()
        );
        assert!(
            admit(
                &Objects,
                "node1",
                &req(
                    Operation::Update,
                    "endpointslices",
                    "",
                    "kube-dns-node1",
                    Some(&own),
                    Some(&own)
                )
            )
            .is_ok()
        );
        let theirs = json!({"metadata": {"name": "kube-dns-node2"}, "endpoints": []});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(
                    Operation::Update,
                    "endpointslices",
                    "",
                    "kube-dns-node2",
                    Some(&theirs),
                    None
                )
            )),
            "endpointslices.discovery.k8s.io \"kube-dns-node2\" is forbidden: node \"node1\" can only write its own kube-dns EndpointSlice \"kube-system/kube-dns-node1\""
        );
        let lying = json!({"metadata": {"name": "kube-dns-node1"}, "endpoints": [{"addresses": ["10.0.0.2"], "nodeName": "node2"}]});
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &req(Operation::Create, "endpointslices", "", "", Some(&lying), None)
            )),
            "endpointslices.discovery.k8s.io \"kube-dns-node1\" is forbidden: node \"node1\" can only publish endpoints with nodeName set to itself"
        );
    }

    #[test]
    fn announcement_leases_and_annotation() {
        let lease_req = |op,
                         ns: &'static str,
                         name: &'static str,
                         obj: Option<&'static Value>,
                         old: Option<&'static Value>| Request {
            op,
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: "",
            namespace: ns,
            name,
            object: obj,
            old,
        };
        let held = |holder: &str| -> &'static Value {
            Box::leak(Box::new(
                json!({"metadata": {"name": "svcnet-lb-web"}, "spec": {"holderIdentity": holder}}),
            ))
        };
        let ok = |r: Request<'_>| admit(&Objects, "node1", &r).is_ok();
        assert!(ok(lease_req(
            Operation::Create,
            "default",
            "",
            Some(held("node1")),
            None
        )));
        assert!(ok(lease_req(
            Operation::Update,
            "default",
            "svcnet-lb-web",
            Some(held("node1")),
            Some(held("node2"))
        )));
        assert!(ok(lease_req(
            Operation::Update,
            "default",
            "svcnet-lb-web",
            Some(held("")),
            Some(held("node1"))
        )));
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &lease_req(
                    Operation::Update,
                    "default",
                    "svcnet-lb-web",
                    Some(held("")),
                    Some(held("node2"))
                )
            )),
            "leases.coordination.k8s.io \"svcnet-lb-web\" is forbidden: node \"node1\" can only hold an L2 announcement lease itself or release its own"
        );
        assert!(!ok(lease_req(
            Operation::Create,
            "default",
            "",
            Some(held("node2")),
            None
        )));
        let other: &'static Value = Box::leak(Box::new(
            json!({"metadata": {"name": "svcnet-endpointslice-controller"}, "spec": {"holderIdentity": "node1"}}),
        ));
        assert_eq!(
            message(admit(
                &Objects,
                "node1",
                &lease_req(
                    Operation::Update,
                    "kube-system",
                    "svcnet-endpointslice-controller",
                    Some(other),
                    Some(other)
                )
            )),
            "leases.coordination.k8s.io \"svcnet-endpointslice-controller\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace, or write L2 announcement leases \"svcnet-lb-*\""
        );
        assert!(!ok(lease_req(
            Operation::Delete,
            "default",
            "svcnet-lb-web",
            None,
            None
        )));

        let svc = |ann: Option<&str>, port: u16| {
            let mut v = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
                "spec": {"ports": [{"port": port}]}});
            if let Some(a) = ann {
                v["metadata"]["annotations"] = json!({NODE_ANNOTATION: a});
            }
            v
        };
        let (none, mine, theirs) = (svc(None, 80), svc(Some("node1"), 80), svc(Some("node2"), 80));
        let update = |new: &Value, old: &Value| {
            admit(
                &Objects,
                "node1",
                &req(Operation::Update, "services", "", "web", Some(new), Some(old)),
            )
        };
        assert!(update(&mine, &none).is_ok());
        assert!(update(&mine, &theirs).is_ok());
        assert!(update(&none, &mine).is_ok());
        assert_eq!(
            message(update(&none, &theirs)),
            "services \"web\" is forbidden: node \"node1\" can only name itself in the annotation \"svcnet.io/lb-announcing-node\" or remove its own name"
        );
        assert!(update(&theirs, &none).is_err());
        assert_eq!(
            message(update(&svc(Some("node1"), 81), &none)),
            "services \"web\" is forbidden: node \"node1\" can only set the annotation \"svcnet.io/lb-announcing-node\" of a Service"
        );
        let create = admit(
            &Objects,
            "node1",
            &req(Operation::Create, "services", "", "", Some(&none), None),
        );
        assert!(create.is_err());
    }
}
