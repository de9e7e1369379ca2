//! Authorization, as kube-apiserver's `--authorization-mode=Node,RBAC` with its privileged group: members
//! of `system:masters` may do everything; a node's credential what the Node authorizer ([`node`]) allows;
//! then everyone what the RBAC objects ([`rbac`]) allow. Writes by nodes then pass NodeRestriction
//! admission ([`noderestriction`]). A denied
//! request gets kube's Forbidden, word for word. On start the default ClusterRoles and bindings
//! (`bootstrap-policy.yaml`) are created unless they exist.

pub mod escalation;
pub mod node;
pub mod noderestriction;
pub mod rbac;

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::authn::{MASTERS, UserInfo};
use crate::errors::ApiError;
use crate::request::{Params, Route};
use rbac::{Attributes, RoleSource};

fn rbac_rt(plural: &str) -> &'static svcnet_api::resources::ResourceType {
    svcnet_api::resources::lookup("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds are served")
}

fn pods_rt() -> &'static svcnet_api::resources::ResourceType {
    svcnet_api::resources::lookup("", "v1", "pods").expect("pods are served")
}

impl node::PodSource for ApiServer {
    fn pods_on(&self, node: &str) -> Vec<Arc<Value>> {
        let mut pods = self.cached_list(pods_rt(), None);
        pods.retain(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node));
        pods
    }
}

impl noderestriction::Lookup for ApiServer {
    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.cached(pods_rt(), Some(namespace), name)
    }

    fn node(&self, name: &str) -> Option<Arc<Value>> {
        let rt = svcnet_api::resources::lookup("", "v1", "nodes").expect("nodes are served");
        self.cached(rt, None, name)
    }
}

/// RBAC objects decoded once per revision: every request of a user outside `system:masters` reads all
/// ClusterRoles and ClusterRoleBindings (and its namespace's RoleBindings), and decoding them from the
/// cache's JSON each time cost more than the rest of the request. Entries of a listed collection are
/// reused while their revision stands; entries gone from it are dropped as it is listed.
#[derive(Default)]
pub struct DecodedRbac {
    by_key: std::sync::Mutex<std::collections::BTreeMap<Arc<str>, Decoded>>,
}

/// An object's revision and its decoding.
type Decoded = (svcnet_store::Revision, Arc<Value>);

impl DecodedRbac {
    fn list(
        &self,
        server: &ApiServer,
        rt: &svcnet_api::resources::ResourceType,
        ns: Option<&str>,
    ) -> Vec<Arc<Value>> {
        let prefix = crate::request::collection_prefix(rt, ns);
        let (items, _) = server.cache.list(&prefix, None);
        let mut memo = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let out: Vec<Arc<Value>> = items
            .iter()
            .map(|c| match memo.get(&c.key) {
                Some((rev, v)) if *rev == c.revision => v.clone(),
                _ => {
                    let v = Arc::new(c.object());
                    memo.insert(c.key.clone(), (c.revision, v.clone()));
                    v
                }
            })
            .collect();
        let under_prefix = || {
            memo.range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
        };
        // Every listed key is in the memo now, so it holds stale ones exactly when it holds more (the
        // usual case, checked without allocating on this per-request path).
        if under_prefix().count() > items.len() {
            let listed: std::collections::HashSet<&str> = items.iter().map(|c| &*c.key).collect();
            let stale: Vec<Arc<str>> = under_prefix()
                .filter(|(k, _)| !listed.contains(&***k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                memo.remove(&k);
            }
        }
        out
    }
}

impl RoleSource for ApiServer {
    fn cluster_roles(&self) -> Vec<Arc<Value>> {
        self.rbac_decoded.list(self, rbac_rt("clusterroles"), None)
    }

    fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
        self.rbac_decoded.list(self, rbac_rt("clusterrolebindings"), None)
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>> {
        self.rbac_decoded
            .list(self, rbac_rt("rolebindings"), Some(namespace))
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.cached(rbac_rt("roles"), Some(namespace), name)
    }
}

/// What a request asks to do, as kube's request-info resolver reads it from method, path and query.
pub fn attributes(route: &Route, method: &Method, path: &str, params: &Params) -> Attributes {
    let Route::Resource(r) = route else {
        let (resource, namespace) = match route {
            Route::Review(rv) => (rv.resource, rv.namespace.clone()),
            _ => {
                return Attributes {
                    verb: method.as_str().to_ascii_lowercase(),
                    path: path.to_string(),
                    ..Default::default()
                };
            }
        };
        let group = crate::request::REVIEWS
            .iter()
            .find(|(_, res, _, _)| *res == resource)
            .map(|(g, ..)| *g)
            .unwrap_or_default();
        return Attributes {
            verb: if *method == Method::POST {
                "create".into()
            } else {
                method.as_str().to_ascii_lowercase()
            },
            resource_request: true,
            namespace: namespace.unwrap_or_default(),
            api_group: group.into(),
            resource: resource.into(),
            ..Default::default()
        };
    };
    let named = r.name.is_some();
    let watch = r.watch_path || params.flag("watch");
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    };
    let mut name = r.name.clone().unwrap_or_default();
    // kube's request info: a list or watch of one object by `metadata.name` names it, so resourceNames
    // rules and the Node authorizer can allow a kubelet's watch of one secret.
    if name.is_empty()
        && matches!(verb, "list" | "watch")
        && let Some(n) = params.get("fieldSelector").and_then(exact_name)
    {
        name = n;
    }
    let mut namespace = r.namespace.clone().unwrap_or_default();
    // kube: a namespace's own requests are in that namespace (a RoleBinding there may allow them).
    if r.rt.plural == "namespaces" && r.rt.group.is_empty() {
        namespace = r.name.clone().unwrap_or_default();
    }
    Attributes {
        verb: verb.into(),
        resource_request: true,
        namespace,
        api_group: r.rt.group.into(),
        resource: r.rt.plural.into(),
        subresource: r.subresource.clone().unwrap_or_default(),
        name,
        path: path.to_string(),
    }
}

/// The name a field selector requires exactly (`metadata.name=X` or `==`), if it is a valid path
/// segment (kube's `RequiresExactMatch` and `IsValidPathSegmentName`).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        let value = value.trim();
        (field.trim() == "metadata.name" && !matches!(value, "" | "." | "..") && !value.contains(['/', '%']))
            .then(|| value.to_string())
    })
}

/// kube's Forbidden for a denied request (`responsewriters.ForbiddenStatusError`).
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut msg = if !a.resource_request {
        format!("User \"{}\" cannot {} path \"{}\"", user.name, a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        if a.namespace.is_empty() {
            format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
                user.name, a.verb, a.api_group
            )
        } else {
            format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
                user.name, a.verb, a.api_group, a.namespace
            )
        }
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    // apimachinery's NewForbidden: qualified resource and name lead the message.
    let qualified = if a.resource.is_empty() || !a.resource_request {
        String::new()
    } else if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = match (qualified.is_empty(), a.name.is_empty()) {
        (true, _) => format!("forbidden: {msg}"),
        (false, true) => format!("{qualified} is forbidden: {msg}"),
        (false, false) => format!("{qualified} \"{}\" is forbidden: {msg}", a.name),
    };
    let mut details = json!({"name": a.name, "kind": a.resource});
    if !a.api_group.is_empty() {
        details["group"] = json!(a.api_group);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(message)
    }
}

impl ApiServer {
    /// Whether `user` may do `attrs`: `Ok(reason)` or `Err(reason)` (kube's decision and reason).
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes) -> Result<String, String> {
        if user.in_group(MASTERS) {
            return Ok(String::new());
        }
        // kube's union authorizer: the first that allows decides; the reasons of those with no
        // opinion are joined, one a line.
        let node_reason = match node::node_identity(user) {
            Some(name) => match node::authorize(self, name, attrs) {
                Ok(reason) => return Ok(reason),
                Err(reason) => reason,
            },
            None => String::new(),
        };
        rbac::authorize(self, user, attrs).map_err(|rbac_reason| {
            [node_reason, rbac_reason]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Creates the default ClusterRoles and ClusterRoleBindings that do not exist yet.
    pub async fn bootstrap_rbac(&self) -> Result<(), ApiError> {
        let items: Vec<Value> = serde_yaml::from_str(include_str!("bootstrap-policy.yaml"))
            .map_err(|e| ApiError::internal(format!("the bootstrap RBAC policy: {e}")))?;
        for mut obj in items {
            let kind = obj
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            obj["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
            let meta = &mut obj["metadata"];
            meta["labels"]["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
            meta["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("true");
            let plural = match kind.as_str() {
                "ClusterRole" => "clusterroles",
                "Role" => "roles",
                "RoleBinding" => "rolebindings",
                _ => "clusterrolebindings",
            };
            let namespace = meta.get("namespace").and_then(Value::as_str).map(str::to_string);
            self.ensure(rbac_rt(plural), namespace.as_deref(), obj).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::exact_name;

    #[test]
    fn field_selector_names() {
        assert_eq!(exact_name("metadata.name=a").as_deref(), Some("a"));
        assert_eq!(exact_name("type=x,metadata.name==b").as_deref(), Some("b"));
        assert_eq!(exact_name("metadata.name!=a"), None);
        assert_eq!(exact_name("metadata.namespace=a"), None);
        assert_eq!(exact_name("metadata.name=a/b"), None);
        assert_eq!(exact_name("metadata.name=.."), None);
    }
}
