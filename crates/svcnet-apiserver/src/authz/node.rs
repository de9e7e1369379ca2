//! kube's Node authorizer (`plugin/pkg/auth/authorizer/node`, `--authorization-mode=Node,RBAC`): a
//! node's credential (user `system:node:<name>` in group `system:nodes`) may do what a kubelet needs and
//! no more. Secrets, ConfigMaps, PVCs and ServiceAccount tokens are subdivided by the pods bound to the
//! node (kube's graph, here computed from the pods on demand); leases by the node's own name; everything
//! else against kube's static node rules (`bootstrappolicy.NodeRules`). Pure: the pods come from a
//! [`PodSource`]. Which object a write may touch is NodeRestriction's job ([`super::noderestriction`]).

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use super::rbac::{Attributes, rule_allows};
use crate::authn::UserInfo;
use svcnet_api::lb_announce::LEASE_PREFIX;

/// The group every node credential carries.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of node heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Where the pods a node runs are read from.
pub trait PodSource {
    /// The pods whose `spec.nodeName` is `node`.
    fn pods_on(&self, node: &str) -> Vec<Arc<Value>>;
}

/// The node a user is, as kube's `NodeIdentity`: `Some(name)` for `system:node:<name>` in
/// `system:nodes` (the name may be empty: a node nobody can tell), `None` for anyone else.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.in_group(NODES_GROUP).then_some(name)
}

/// kube's `NodeRules()`: what any node may do where the authorizer does not subdivide access.
fn node_rules() -> &'static [Value] {
    static RULES: OnceLock<Vec<Value>> = OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |verbs: &[&str], group: &str, resources: &[&str]| {
            json!({"verbs": verbs, "apiGroups": [group], "resources": resources})
        };
        let read = ["get", "list", "watch"];
        vec![
            rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
            rule(
                &["create"],
                "authorization.k8s.io",
                &["subjectaccessreviews", "localsubjectaccessreviews"],
            ),
            rule(&read, "", &["services"]),
            rule(&["create", "get", "list", "watch"], "", &["nodes"]),
            rule(&["update", "patch"], "", &["nodes/status"]),
            rule(&["update", "patch"], "", &["nodes"]),
            rule(&["create", "update", "patch"], "", &["events"]),
            rule(&["create", "update", "patch"], "events.k8s.io", &["events"]),
            rule(&read, "", &["pods"]),
            rule(&["create", "delete"], "", &["pods"]),
            rule(&["update", "patch"], "", &["pods/status"]),
            rule(&["create"], "", &["pods/eviction"]),
            rule(&["get", "list", "watch"], "", &["secrets", "configmaps"]),
            rule(&["get"], "", &["persistentvolumeclaims", "persistentvolumes"]),
            rule(&["get"], "", &["endpoints"]),
            rule(
                &["create", "get", "list", "watch"],
                "certificates.k8s.io",
                &["certificatesigningrequests"],
            ),
            rule(
                &["get", "create", "update", "patch", "delete"],
                "coordination.k8s.io",
                &["leases"],
            ),
            rule(&["get"], "storage.k8s.io", &["volumeattachments"]),
            rule(&read, "node.k8s.io", &["runtimeclasses"]),
        ]
    })
}

/// The kinds of object the authorizer relates to a node through its pods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Related {
    Secret,
    ConfigMap,
    Pvc,
    ServiceAccount,
}

/// The Node authorizer's decision for `node`: `Ok` allows, `Err(reason)` is kube's "no opinion" with its
/// reason (RBAC decides next).
pub fn authorize(pods: &dyn PodSource, node: &str, attrs: &Attributes) -> Result<String, String> {
    if node.is_empty() {
        return Err(format!("unknown node for user \"{NODE_USER_PREFIX}\""));
    }
    if attrs.resource_request {
        match (attrs.api_group.as_str(), attrs.resource.as_str()) {
            ("", "secrets") => return read_namespaced(pods, node, Related::Secret, attrs),
            ("", "configmaps") => return read_namespaced(pods, node, Related::ConfigMap, attrs),
            ("", "persistentvolumeclaims") if attrs.subresource == "status" => {
                if !matches!(attrs.verb.as_str(), "update" | "patch") {
                    return Err("can only get/update/patch this type".into());
                }
                return related(pods, node, Related::Pvc, attrs);
            }
            ("", "persistentvolumeclaims") => {
                if attrs.verb != "get" {
                    return Err("can only get individual resources of this type".into());
                }
                if !attrs.subresource.is_empty() {
                    return Err("cannot get subresource".into());
                }
                return related(pods, node, Related::Pvc, attrs);
            }
            ("", "serviceaccounts") => {
                if attrs.verb != "create" || attrs.name.is_empty() {
                    return Err("can only create tokens for individual service accounts".into());
                }
                if attrs.subresource != "token" {
                    return Err("can only create token subresource of serviceaccount".into());
                }
                return related(pods, node, Related::ServiceAccount, attrs);
            }
            ("coordination.k8s.io", "leases") => return lease(node, attrs),
            // svcnet's addition: the L2 announcer names the node announcing a Service on it, and
            // NodeRestriction keeps such a write to that one annotation naming the node itself.
            ("", "services")
                if matches!(attrs.verb.as_str(), "update" | "patch") && attrs.subresource.is_empty() =>
            {
                return Ok(String::new());
            }
            _ => {}
        }
    }
    if node_rules().iter().any(|r| rule_allows(attrs, r)) {
        Ok(String::new())
    } else {
        Err(String::new())
    }
}

fn read_namespaced(
    pods: &dyn PodSource,
    node: &str,
    kind: Related,
    attrs: &Attributes,
) -> Result<String, String> {
    if !matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return Err("can only read resources of this type".into());
    }
    if !attrs.subresource.is_empty() {
        return Err("cannot read subresource".into());
    }
    if attrs.namespace.is_empty() {
        return Err("can only read namespaced object of this type".into());
    }
    related(pods, node, kind, attrs)
}

fn lease(node: &str, attrs: &Attributes) -> Result<String, String> {
    // svcnet's addition: every node is a candidate for the L2 announcement of LoadBalancer IPs, whose
    // Leases (`svcnet-lb-*`, in each Service's namespace) it watches and takes; NodeRestriction keeps
    // its writes to Leases of that name holding itself.
    let announcement = attrs.namespace != NODE_LEASE_NAMESPACE
        && attrs.subresource.is_empty()
        && match attrs.verb.as_str() {
            "list" | "watch" => true,
            "create" => attrs.name.is_empty() || attrs.name.starts_with(LEASE_PREFIX),
            "get" | "update" | "patch" => attrs.name.starts_with(LEASE_PREFIX),
            _ => false,
        };
    if announcement {
        return Ok(String::new());
    }
    if !matches!(
        attrs.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Err("can only get, create, update, patch, or delete a node lease".into());
    }
    if attrs.namespace != NODE_LEASE_NAMESPACE {
        return Err(format!(
            "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
        ));
    }
    // A create names no object in its path; NodeRestriction checks the body's name.
    if attrs.verb != "create" && attrs.name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(String::new())
}

/// kube's `authorize`: allowed when a pod bound to the node references the named object.
fn related(pods: &dyn PodSource, node: &str, kind: Related, attrs: &Attributes) -> Result<String, String> {
    if attrs.name.is_empty() {
        return Err("No Object name found".into());
    }
    let found = pods.pods_on(node).iter().any(|p| {
        p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(attrs.namespace.as_str())
            && references(p, kind).contains(&attrs.name)
    });
    if found {
        Ok(String::new())
    } else {
        Err(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

/// The names of the objects of `kind` a pod references (kube's graph edges from a pod).
pub(super) fn references(pod: &Value, kind: Related) -> Vec<String> {
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            out.push(s.to_string());
        }
    };
    let arr = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let volumes = arr(&spec, "volumes");
    let containers: Vec<Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| arr(&spec, k))
        .collect();
    match kind {
        Related::ServiceAccount => {
            let sa = spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            push(Some(&json!(sa)));
        }
        Related::Pvc => {
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for v in &volumes {
                push(v.pointer("/persistentVolumeClaim/claimName"));
                // A generic ephemeral volume's claim is named after the pod and the volume.
                if v.get("ephemeral").is_some()
                    && let Some(vn) = v.get("name").and_then(Value::as_str)
                {
                    push(Some(&json!(format!("{pod_name}-{vn}"))));
                }
            }
        }
        Related::Secret | Related::ConfigMap => {
            let secret = kind == Related::Secret;
            if secret {
                for s in arr(&spec, "imagePullSecrets") {
                    push(s.get("name"));
                }
            }
            for v in &volumes {
                if secret {
                    push(v.pointer("/secret/secretName"));
                    // Volume plugins that take their credentials from a secret.
                    for plugin in [
                        "azureFile",
                        "cephfs",
                        "cinder",
                        "flexVolume",
                        "iscsi",
                        "rbd",
                        "scaleIO",
                        "storageos",
                        "csi",
                    ] {
                        push(v.pointer(&format!("/{plugin}/secretRef/name")));
                        push(v.pointer(&format!("/{plugin}/nodePublishSecretRef/name")));
                    }
                    push(v.pointer("/azureFile/secretName"));
                } else {
                    push(v.pointer("/configMap/name"));
                }
                for src in arr(v.get("projected").unwrap_or(&Value::Null), "sources") {
                    push(src.pointer(if secret { "/secret/name" } else { "/configMap/name" }));
                }
            }
            let (key_ref, from_ref) = if secret {
                ("secretKeyRef", "secretRef")
            } else {
                ("configMapKeyRef", "configMapRef")
            };
            for c in &containers {
                for e in arr(c, "env") {
                    push(e.pointer(&format!("/valueFrom/{key_ref}/name")));
                }
                for e in arr(c, "envFrom") {
                    push(e.pointer(&format!("/{from_ref}/name")));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pods(Vec<Arc<Value>>);

    impl PodSource for Pods {
        fn pods_on(&self, node: &str) -> Vec<Arc<Value>> {
            self.0
                .iter()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
                .cloned()
                .collect()
        }
    }

    fn attrs(verb: &str, ns: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        let (group, resource) = resource.split_once('.').map_or(("", resource), |(r, g)| (g, r));
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn pods() -> Pods {
        Pods(vec![Arc::new(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "nodeName": "node1",
                "serviceAccountName": "robot",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "c", "configMap": {"name": "vol-cm"}},
                    {"name": "p", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "x", "projected": {"sources": [{"secret": {"name": "proj"}}]}}
                ],
                "containers": [{"name": "m", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}
                ], "envFrom": [{"configMapRef": {"name": "env-cm"}}]}]
            }
        }))])
    }

    #[test]
    fn identity_needs_prefix_and_group() {
        assert_eq!(
            node_identity(&UserInfo::new("system:node:n1", &[NODES_GROUP])),
            Some("n1")
        );
        assert_eq!(node_identity(&UserInfo::new("system:node:n1", &[])), None);
        assert_eq!(node_identity(&UserInfo::new("n1", &[NODES_GROUP])), None);
        assert_eq!(
            authorize(&pods(), "", &attrs("list", "", "services", "", "")),
            Err("unknown node for user \"system:node:\"".into())
        );
    }

    #[test]
    fn objects_referenced_by_bound_pods_only() {
        let p = pods();
        for name in ["pull", "vol-secret", "proj", "env-secret"] {
            assert!(
                authorize(&p, "node1", &attrs("get", "default", "secrets", "", name)).is_ok(),
                "{name}"
            );
            assert!(authorize(&p, "node2", &attrs("get", "default", "secrets", "", name)).is_err());
        }
        for name in ["vol-cm", "env-cm"] {
            assert!(authorize(&p, "node1", &attrs("watch", "default", "configmaps", "", name)).is_ok());
        }
        assert_eq!(
            authorize(&p, "node1", &attrs("get", "default", "secrets", "", "other")),
            Err("no relationship found between node 'node1' and this object".into())
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("get", "other", "secrets", "", "pull")),
            Err("no relationship found between node 'node1' and this object".into())
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("list", "default", "secrets", "", "")),
            Err("No Object name found".into())
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("delete", "default", "secrets", "", "pull")),
            Err("can only read resources of this type".into())
        );
        assert!(
            authorize(
                &p,
                "node1",
                &attrs("get", "default", "persistentvolumeclaims", "", "data")
            )
            .is_ok()
        );
        assert_eq!(
            authorize(
                &p,
                "node1",
                &attrs("list", "default", "persistentvolumeclaims", "", "")
            ),
            Err("can only get individual resources of this type".into())
        );
        assert!(
            authorize(
                &p,
                "node1",
                &attrs("create", "default", "serviceaccounts", "token", "robot")
            )
            .is_ok()
        );
        assert!(
            authorize(
                &p,
                "node1",
                &attrs("create", "default", "serviceaccounts", "token", "default")
            )
            .is_err()
        );
        assert_eq!(
            authorize(
                &p,
                "node1",
                &attrs("get", "default", "serviceaccounts", "", "robot")
            ),
            Err("can only create tokens for individual service accounts".into())
        );
    }

    #[test]
    fn leases_and_static_rules() {
        let p = pods();
        let lease = |verb, ns, name| attrs(verb, ns, "leases.coordination.k8s.io", "", name);
        assert!(authorize(&p, "node1", &lease("update", NODE_LEASE_NAMESPACE, "node1")).is_ok());
        assert!(authorize(&p, "node1", &lease("create", NODE_LEASE_NAMESPACE, "")).is_ok());
        assert_eq!(
            authorize(&p, "node1", &lease("update", NODE_LEASE_NAMESPACE, "node2")),
            Err("can only access node lease with the same name as the requesting node".into())
        );
        assert_eq!(
            authorize(&p, "node1", &lease("get", "default", "node1")),
            Err("can only access leases in the \"kube-node-lease\" system namespace".into())
        );
        // L2 announcement Leases: by name elsewhere, any of them to watch.
        assert!(authorize(&p, "node1", &lease("update", "default", "svcnet-lb-web")).is_ok());
        assert!(authorize(&p, "node1", &lease("create", "default", "")).is_ok());
        assert!(authorize(&p, "node1", &lease("watch", "", "")).is_ok());
        assert!(authorize(&p, "node1", &lease("delete", "default", "svcnet-lb-web")).is_err());
        assert!(
            authorize(
                &p,
                "node1",
                &lease("update", "kube-system", "svcnet-endpointslice-controller")
            )
            .is_err()
        );
        assert!(
            authorize(
                &p,
                "node1",
                &lease("update", NODE_LEASE_NAMESPACE, "svcnet-lb-web")
            )
            .is_err()
        );
        assert!(authorize(&p, "node1", &attrs("patch", "default", "services", "", "web")).is_ok());
        assert!(
            authorize(
                &p,
                "node1",
                &attrs("patch", "default", "services", "status", "web")
            )
            .is_err()
        );
        assert_eq!(
            authorize(&p, "node1", &lease("list", NODE_LEASE_NAMESPACE, "")),
            Err("can only get, create, update, patch, or delete a node lease".into())
        );
        assert!(authorize(&p, "node1", &attrs("list", "", "services", "", "")).is_ok());
        assert!(authorize(&p, "node1", &attrs("patch", "default", "pods", "status", "web")).is_ok());
        assert!(
            authorize(
                &p,
                "node1",
                &attrs(
                    "create",
                    "",
                    "certificatesigningrequests.certificates.k8s.io",
                    "",
                    ""
                )
            )
            .is_ok()
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("create", "default", "services", "", "")),
            Err(String::new())
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("update", "default", "pods", "", "web")),
            Err(String::new())
        );
        assert_eq!(
            authorize(&p, "node1", &attrs("delete", "", "nodes", "", "node1")),
            Err(String::new())
        );
    }
}
