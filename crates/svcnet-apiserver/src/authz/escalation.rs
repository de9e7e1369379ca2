//! RBAC escalation prevention, as kube-apiserver's RBAC storage (`registry/rbac/*/policybased`): a user
//! may create or update a Role or ClusterRole only with rules it already holds (where the role applies)
//! or with the `escalate` verb on it, and a RoleBinding or ClusterRoleBinding only to a role whose rules
//! it holds or with the `bind` verb on that role. An `aggregationRule` can gather anything, so setting
//! one takes cluster-admin's rights. `system:masters` is exempt. The refusal is kube's Forbidden, word
//! for word: `… is attempting to grant RBAC permissions not currently held:` and the missing rules in
//! kube's compact form.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use svcnet_api::field::go_quote;
use svcnet_api::resources::ResourceType;

use super::rbac::{self, Attributes, RoleSource};
use crate::ApiServer;
use crate::authn::{MASTERS, UserInfo};
use crate::errors::ApiError;

const GROUP: &str = "rbac.authorization.k8s.io";

/// A PolicyRule's lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strs(v, "verbs"),
            api_groups: strs(v, "apiGroups"),
            resources: strs(v, "resources"),
            resource_names: strs(v, "resourceNames"),
            non_resource_urls: strs(v, "nonResourceURLs"),
        }
    }

    fn one(verb: &str) -> Rule {
        Rule {
            verbs: vec![verb.to_string()],
            ..Default::default()
        }
    }

    /// kube's `BreakdownRule`: one rule per group × resource × verb (× name), and per URL × verb.
    fn breakdown(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for group in &self.api_groups {
            for resource in &self.resources {
                for verb in &self.verbs {
                    let base = Rule {
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        ..Rule::one(verb)
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        for name in &self.resource_names {
                            out.push(Rule {
                                resource_names: vec![name.clone()],
                                ..base.clone()
                            });
                        }
                    }
                }
            }
        }
        for url in &self.non_resource_urls {
            for verb in &self.verbs {
                out.push(Rule {
                    non_resource_urls: vec![url.clone()],
                    ..Rule::one(verb)
                });
            }
        }
        out
    }

    /// kube's `ruleCovers`: whether this (held) rule covers `sub` (one broken-down rule).
    fn covers(&self, sub: &Rule) -> bool {
        let has = |list: &[String], x: &str| list.iter().any(|s| s == x);
        let has_all = |list: &[String], xs: &[String]| xs.iter().all(|x| has(list, x));
        let verbs = has(&self.verbs, "*") || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, "*") || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, "*")
            || sub.resources.iter().all(|r| {
                has(&self.resources, r)
                    || r.split_once('/')
                        .is_some_and(|(_, sr)| has(&self.resources, &format!("*/{sr}")))
            });
        let urls = sub.non_resource_urls.iter().all(|p| {
            self.non_resource_urls
                .iter()
                .any(|o| o == p || (o.ends_with('*') && p.starts_with(o.trim_end_matches('*'))))
        });
        let names = self.resource_names.is_empty()
            || (!sub.resource_names.is_empty() && has_all(&self.resource_names, &sub.resource_names));
        verbs && groups && resources && names && urls
    }

    /// kube's `CompactString`.
    fn compact_string(&self) -> String {
        let q = |l: &[String]| {
            format!(
                "[{}]",
                l.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" ")
            )
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", q(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// kube's `CompactRules`: rules on one group and one resource (and at most one name) that differ only
/// by verb become one rule.
fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    let mut simple: Vec<Rule> = Vec::new();
    for r in rules {
        let is_simple = r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if !is_simple {
            out.push(r);
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == r.api_groups && s.resources == r.resources && s.resource_names == r.resource_names
        }) {
            Some(s) => {
                for v in r.verbs {
                    if !s.verbs.contains(&v) {
                        s.verbs.push(v);
                    }
                }
            }
            None => simple.push(r),
        }
    }
    out.extend(simple);
    out
}

/// kube's `ConfirmNoEscalation`: `Err(message)` unless the rules `user` holds in `namespace` cover
/// every rule in `rules`.
fn confirm_no_escalation(
    src: &dyn RoleSource,
    user: &UserInfo,
    namespace: &str,
    rules: &[Rule],
) -> Result<(), String> {
    let mut held = Vec::new();
    let errors = rbac::visit_rules(src, user, namespace, &mut |_, rule| {
        held.push(Rule::from_json(rule));
        true
    });
    let missing: Vec<Rule> = rules
        .iter()
        .flat_map(Rule::breakdown)
        .filter(|sub| !held.iter().any(|h| h.covers(sub)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let lines: BTreeSet<String> = compact(missing).iter().map(Rule::compact_string).collect();
    let groups: Vec<String> = user.groups.iter().map(|g| go_quote(g)).collect();
    let mut msg = format!(
        "user {} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&user.name),
        groups.join(" "),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

fn forbidden(rt: &ResourceType, name: &str, why: &str) -> ApiError {
    let qualified = format!("{}.{}", rt.plural, rt.group);
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{name}\" is forbidden: {why}")
    };
    ApiError {
        details: Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        ..ApiError::forbidden(message)
    }
}

/// Whether an update changes only what the garbage collector changes (kube's
/// `IsOnlyMutatingGCFields`), which needs no escalation check.
fn only_gc_fields(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
            ] {
                m.remove(k);
            }
        }
        v
    };
    strip(new) == strip(old)
}

impl ApiServer {
    /// Escalation prevention for a write of `obj` (`old`: the stored object of an update) by `user`;
    /// other kinds than RBAC's pass.
    pub(crate) fn admit_rbac_write(
        &self,
        user: &UserInfo,
        rt: &ResourceType,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if rt.group != GROUP || user.in_group(MASTERS) {
            return Ok(());
        }
        if old.is_some_and(|old| only_gc_fields(obj, old)) {
            return Ok(());
        }
        let meta = |k: &str| {
            obj.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (name, namespace) = (meta("name"), meta("namespace"));
        let allowed = |verb: &str, resource: &str, name: &str| {
            self.decide(
                user,
                &Attributes {
                    verb: verb.into(),
                    resource_request: true,
                    namespace: namespace.clone(),
                    api_group: GROUP.into(),
                    resource: resource.into(),
                    name: name.into(),
                    ..Default::default()
                },
            )
            .is_ok()
        };
        match rt.plural {
            "roles" | "clusterroles" => {
                if allowed("escalate", rt.plural, &name) {
                    return Ok(());
                }
                let rules: Vec<Rule> = obj
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(Rule::from_json)
                    .collect();
                confirm_no_escalation(self, user, &namespace, &rules)
                    .map_err(|m| forbidden(rt, &name, &m))?;
                if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    let full = [
                        Rule {
                            api_groups: vec!["*".into()],
                            resources: vec!["*".into()],
                            ..Rule::one("*")
                        },
                        Rule {
                            non_resource_urls: vec!["*".into()],
                            ..Rule::one("*")
                        },
                    ];
                    confirm_no_escalation(self, user, "", &full).map_err(|_| {
                        forbidden(
                            rt,
                            &name,
                            "must have cluster-admin privileges to use the aggregationRule",
                        )
                    })?;
                }
                Ok(())
            }
            "rolebindings" | "clusterrolebindings" => {
                let role_kind = obj
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let role_name = obj
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let role_resource = if role_kind == "ClusterRole" {
                    "clusterroles"
                } else {
                    "roles"
                };
                if allowed("bind", role_resource, role_name) {
                    return Ok(());
                }
                let role_rules = match role_kind {
                    "ClusterRole" => {
                        let all = self.cluster_roles();
                        all.iter()
                            .find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(role_name))
                            .map(|r| rbac::cluster_role_rules(&all, r))
                            .ok_or_else(|| {
                                format!(
                                    "clusterrole.rbac.authorization.k8s.io {} not found",
                                    go_quote(role_name)
                                )
                            })
                    }
                    "Role" => self
                        .role(&namespace, role_name)
                        .map(|r| {
                            r.get("rules")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .ok_or_else(|| {
                            format!("role.rbac.authorization.k8s.io {} not found", go_quote(role_name))
                        }),
                    other => Err(format!("unsupported role reference kind: {}", go_quote(other))),
                }
                .map_err(|m| forbidden(rt, &name, &m))?;
                let rules: Vec<Rule> = role_rules.iter().map(Rule::from_json).collect();
                confirm_no_escalation(self, user, &namespace, &rules).map_err(|m| forbidden(rt, &name, &m))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn covers_as_kube_does() {
        let held =
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]}));
        let ok = |r: Value| rule(r).breakdown().iter().all(|s| held.covers(s));
        assert!(ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["services/status"]})
        ));
        assert!(ok(
            json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]})
        ));
        assert!(!ok(
            json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(!ok(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]})
        ));
        let named =
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}));
        let sub = |r: Value| rule(r).breakdown();
        assert!(
            !sub(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}))
                .iter()
                .all(|s| named.covers(s))
        );
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz*"]}));
        assert!(
            sub(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz/etcd"]}))
                .iter()
                .all(|s| urls.covers(s))
        );
    }

    #[test]
    fn missing_rules_in_kubes_compact_form() {
        let missing =
            rule(json!({"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods"]}))
                .breakdown();
        let lines: BTreeSet<String> = compact(missing).iter().map(Rule::compact_string).collect();
        assert_eq!(
            lines.into_iter().collect::<Vec<_>>(),
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get" "list"]}"#,
            ]
        );
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/metrics"]}));
        assert_eq!(
            r.compact_string(),
            r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#
        );
    }
}
