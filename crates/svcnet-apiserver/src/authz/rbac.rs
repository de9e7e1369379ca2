//! RBAC's rule evaluation with Kubernetes' semantics (`plugin/pkg/auth/authorizer/rbac`): which rules
//! bindings give a user, and whether one of them allows a request. Pure: the roles and bindings come
//! from a [`RoleSource`], so the same code answers requests, access reviews and rules reviews.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::authn::UserInfo;

/// Where roles and bindings are read from.
pub trait RoleSource {
    /// Every ClusterRole.
    fn cluster_roles(&self) -> Vec<Arc<Value>>;
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<Arc<Value>>;
    /// The RoleBindings of a namespace.
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>>;
    /// A Role.
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>>;
}

/// What a request asks to do (kube's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    /// The verb: `get`, `list`, `create`… for resources; the lower-case HTTP method for paths.
    pub verb: String,
    /// A resource request (else a non-resource path).
    pub resource_request: bool,
    /// The namespace ("" for cluster scope).
    pub namespace: String,
    /// The API group.
    pub api_group: String,
    /// The resource, e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `log`.
    pub subresource: String,
    /// The object's name, if the request names one.
    pub name: String,
    /// The path of a non-resource request.
    pub path: String,
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule allows the request (kube's `RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &Value) -> bool {
    let verbs = strs(rule, "verbs");
    if !has(&verbs, &attrs.verb) {
        return false;
    }
    if !attrs.resource_request {
        return strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || *u == attrs.path
                || (u.ends_with('*') && attrs.path.starts_with(u.trim_end_matches('*')))
        });
    }
    if !strs(rule, "apiGroups")
        .iter()
        .any(|g| g == "*" || *g == attrs.api_group)
    {
        return false;
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = strs(rule, "resources").iter().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty() && *r == format!("*/{}", attrs.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule, "resourceNames");
    names.is_empty() || names.contains(&attrs.name)
}

/// Whether a binding's subject is the user (kube's `appliesToUser`); `namespace` is the binding's
/// (a ServiceAccount subject without a namespace is in it).
fn applies_to(user: &UserInfo, subject: &Value, namespace: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    match subject.get("kind").and_then(Value::as_str).unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules of a ClusterRole: its own, and with an `aggregationRule` also those of every ClusterRole
/// its selectors match, transitively (what kube's aggregation controller writes into the role).
pub fn cluster_role_rules(all: &[Arc<Value>], role: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    collect(all, role, &mut seen, &mut out);
    out
}

fn collect(all: &[Arc<Value>], role: &Value, seen: &mut HashSet<String>, out: &mut Vec<Value>) {
    let name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !seen.insert(name.to_string()) {
        return;
    }
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array);
    match selectors {
        Some(sels) => {
            for other in all {
                let labels = other.pointer("/metadata/labels");
                if sels
                    .iter()
                    .any(|s| svcnet_api::workload::selector_matches(s, labels))
                {
                    collect(all, other, seen, out);
                }
            }
        }
        None => {
            for r in role.get("rules").and_then(Value::as_array).into_iter().flatten() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
    }
}

/// Where a rule came from, worded as kube's RBAC authorizer words its reasons.
fn describe(binding_kind: &str, binding: &Value, role_kind: &str, role: &str, subject: &Value) -> String {
    let name = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let subject_kind = subject.get("kind").and_then(Value::as_str).unwrap_or_default();
    let subject_name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    let binding = match binding.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{binding_kind} \"{name}/{ns}\""),
        None => format!("{binding_kind} \"{name}\""),
    };
    let subject = match subject.get("namespace").and_then(Value::as_str) {
        Some(ns) if subject_kind == "ServiceAccount" => format!("{subject_kind} \"{subject_name}/{ns}\""),
        _ => format!("{subject_kind} \"{subject_name}\""),
    };
    format!("{binding} of {role_kind} \"{role}\" to {subject}")
}

/// Visits the rules the user's bindings give it for `namespace` (cluster-wide ones always), as kube's
/// `VisitRulesFor`: `visit(source, rule)` returns false to stop. Bindings to missing roles are
/// reported in the returned errors, kube's wording.
pub fn visit_rules(
    src: &dyn RoleSource,
    user: &UserInfo,
    namespace: &str,
    visit: &mut dyn FnMut(&dyn Fn() -> String, &Value) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let cluster_roles = src.cluster_roles();
    let find_cluster_role = |name: &str| {
        cluster_roles
            .iter()
            .find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let mut bindings: Vec<(&str, Arc<Value>)> = src
        .cluster_role_bindings()
        .into_iter()
        .map(|b| ("ClusterRoleBinding", b))
        .collect();
    if !namespace.is_empty() {
        bindings.extend(
            src.role_bindings(namespace)
                .into_iter()
                .map(|b| ("RoleBinding", b)),
        );
    }
    for (binding_kind, binding) in bindings {
        let binding_ns = binding
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(subject) = binding
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|s| applies_to(user, s, binding_ns))
        else {
            continue;
        };
        let role_kind = binding
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role_name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rules = match role_kind {
            "ClusterRole" => match find_cluster_role(role_name) {
                Some(r) => cluster_role_rules(&cluster_roles, &r),
                None => {
                    errors.push(format!(
                        "clusterrole.rbac.authorization.k8s.io \"{role_name}\" not found"
                    ));
                    continue;
                }
            },
            "Role" if binding_kind == "RoleBinding" => match src.role(binding_ns, role_name) {
                Some(r) => r
                    .get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                None => {
                    errors.push(format!(
                        "role.rbac.authorization.k8s.io \"{role_name}\" not found"
                    ));
                    continue;
                }
            },
            _ => continue,
        };
        let source = || describe(binding_kind, &binding, role_kind, role_name, subject);
        for rule in &rules {
            if !visit(&source, rule) {
                return errors;
            }
        }
    }
    errors
}

/// The decision on a request: allowed with the reason, or not (with the errors met on the way).
pub fn authorize(src: &dyn RoleSource, user: &UserInfo, attrs: &Attributes) -> Result<String, String> {
    let mut allowed = None;
    let errors = visit_rules(src, user, &attrs.namespace, &mut |source, rule| {
        if rule_allows(attrs, rule) {
            allowed = Some(format!("RBAC: allowed by {}", source()));
            return false;
        }
        true
    });
    match allowed {
        Some(reason) => Ok(reason),
        None if errors.is_empty() => Err(String::new()),
        None => Err(format!("RBAC: {}", errors.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed {
        cluster_roles: Vec<Arc<Value>>,
        cluster_bindings: Vec<Arc<Value>>,
        roles: Vec<Arc<Value>>,
        bindings: Vec<Arc<Value>>,
    }

    impl RoleSource for Fixed {
        fn cluster_roles(&self) -> Vec<Arc<Value>> {
            self.cluster_roles.clone()
        }
        fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
            self.cluster_bindings.clone()
        }
        fn role_bindings(&self, ns: &str) -> Vec<Arc<Value>> {
            self.bindings
                .iter()
                .filter(|b| b["metadata"]["namespace"] == ns)
                .cloned()
                .collect()
        }
        fn role(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
            self.roles
                .iter()
                .find(|r| r["metadata"]["namespace"] == ns && r["metadata"]["name"] == name)
                .cloned()
        }
    }

    fn res(verb: &str, ns: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
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

    #[test]
    fn rules_match_as_kubes_do() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log", "*/status"], "verbs": ["get"], "resourceNames": ["a"]});
        assert!(rule_allows(&res("get", "x", "", "pods", "", "a"), &rule));
        assert!(!rule_allows(&res("get", "x", "", "pods", "", "b"), &rule));
        assert!(rule_allows(&res("get", "x", "", "pods", "log", "a"), &rule));
        assert!(!rule_allows(&res("get", "x", "", "pods", "exec", "a"), &rule));
        assert!(rule_allows(
            &res("get", "x", "", "services", "status", "a"),
            &rule
        ));
        assert!(!rule_allows(&res("list", "x", "", "pods", "", "a"), &rule));
        assert!(!rule_allows(&res("get", "x", "apps", "pods", "", "a"), &rule));
        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &res("deletecollection", "", "apps", "deployments", "scale", ""),
            &star
        ));
        let paths = json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]});
        let path = |p: &str, verb: &str| Attributes {
            verb: verb.into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(rule_allows(&path("/healthz", "get"), &paths));
        assert!(rule_allows(&path("/apis/apps/v1", "get"), &paths));
        assert!(!rule_allows(&path("/api", "get"), &paths));
        assert!(!rule_allows(&path("/healthz", "post"), &paths));
        assert!(!rule_allows(&res("get", "", "", "healthz", "", ""), &paths));
    }

    #[test]
    fn bindings_subjects_and_aggregation() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}});
        let part = json!({"metadata": {"name": "part", "labels": {"agg": "view"}}, "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]});
        let src = Fixed {
            cluster_roles: vec![Arc::new(view), Arc::new(part)],
            cluster_bindings: vec![Arc::new(
                json!({"metadata": {"name": "g"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "Group", "name": "viewers"}]}),
            )],
            roles: vec![Arc::new(
                json!({"metadata": {"name": "r", "namespace": "a"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]}),
            )],
            bindings: vec![
                Arc::new(
                    json!({"metadata": {"name": "b", "namespace": "a"}, "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),
                ),
                Arc::new(
                    json!({"metadata": {"name": "gone", "namespace": "a"}, "roleRef": {"kind": "Role", "name": "missing"}, "subjects": [{"kind": "User", "name": "alice"}]}),
                ),
            ],
        };
        let viewer = UserInfo::new("v", &["viewers"]);
        let ok = authorize(&src, &viewer, &res("list", "b", "", "services", "", "")).unwrap();
        assert_eq!(
            ok,
            r#"RBAC: allowed by ClusterRoleBinding "g" of ClusterRole "view" to Group "viewers""#
        );
        assert!(authorize(&src, &viewer, &res("get", "b", "", "services", "", "x")).is_err());
        let bot = UserInfo::new("system:serviceaccount:a:bot", &[]);
        assert!(authorize(&src, &bot, &res("delete", "a", "", "pods", "", "p")).is_ok());
        assert!(authorize(&src, &bot, &res("delete", "b", "", "pods", "", "p")).is_err());
        assert!(authorize(&src, &bot, &res("delete", "", "", "pods", "", "")).is_err());
        let alice = UserInfo::new("alice", &[]);
        assert_eq!(
            authorize(&src, &alice, &res("get", "a", "", "pods", "", "p")).unwrap_err(),
            r#"RBAC: role.rbac.authorization.k8s.io "missing" not found"#
        );
    }
}
