//! kube-controller-manager's clusterrole-aggregation controller: a ClusterRole with an
//! `aggregationRule` gets, as its `rules`, the rules of every other ClusterRole its selectors match
//! (in selector order, then by name, each rule once), so `kubectl get clusterrole admin -o yaml` and
//! `kubectl describe clusterrole view` show what the role grants, as on Kubernetes, and a chart's
//! `aggregate-to-view` ClusterRole shows up in `view`.
//!
//! The authorizer does not wait for this controller: it follows aggregation itself when it evaluates
//! a role (`svcnet_apiserver::authz::rbac`), so a new aggregated rule takes effect at once; this
//! controller makes the stored objects say the same.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use svcnet_informer::{Event, Informer};
use tracing::{debug, warn};

/// The field manager of the controller's writes (kube's controller name).
const MANAGER: &str = "clusterrole-aggregation-controller";

/// The rules `role` should hold: those of every ClusterRole in `all` matched by one of its selectors,
/// itself excepted, each rule once, in the order kube's controller builds them (selector by selector,
/// roles sorted by name). `None` for a role without an `aggregationRule`.
pub fn aggregated_rules(role: &ClusterRole, all: &[&ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role.aggregation_rule.as_ref()?.cluster_role_selectors.clone()?;
    let name = role.metadata.name.as_deref().unwrap_or_default();
    let mut sorted: Vec<&ClusterRole> = all.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors {
        // An unparseable selector matches nothing (kube's controller gives up on the role).
        let Ok(selector) = Selector::try_from(selector) else {
            return None;
        };
        for other in &sorted {
            if other.metadata.name.as_deref() == Some(name) {
                continue;
            }
            let labels: BTreeMap<String, String> = other.metadata.labels.clone().unwrap_or_default();
            if !selector.matches(&labels) {
                continue;
            }
            for rule in other.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// Runs the controller until the watch ends: after every ClusterRole change, each aggregated role whose
/// stored rules differ from [`aggregated_rules`] gets them written through `client` (kube's
/// `system:controller:clusterrole-aggregation-controller`, which holds `escalate` on ClusterRoles);
/// roles are read through `watcher`, the controller manager's shared view.
pub async fn run_clusterrole_aggregation_controller(client: Client, watcher: Client) {
    let roles: Informer<ClusterRole> = Informer::new(crate::trim_managed_fields);
    roles.spawn(Api::all(watcher));
    let mut events = roles.subscribe();
    let store = roles.store();
    store.wait_until_synced().await;
    let api: Api<ClusterRole> = Api::all(client);
    loop {
        // Every change can alter any aggregated role (a label added, rules edited): take the whole
        // burst of events, then reconcile each aggregated role once.
        let Some(Event::Apply { .. } | Event::Delete(_) | Event::Listed) = events.recv().await else {
            return;
        };
        while events.try_recv().is_some() {}
        let state = store.state();
        let all: Vec<&ClusterRole> = state.iter().map(AsRef::as_ref).collect();
        for role in &all {
            let Some(want) = aggregated_rules(role, &all) else {
                continue;
            };
            if role.rules.as_deref().unwrap_or_default() == want.as_slice() {
                continue;
            }
            let Some(name) = role.metadata.name.as_deref() else {
                continue;
            };
            // A merge patch replaces the whole list (`rules` is atomic); the resourceVersion makes a
            // stale view fail with a conflict instead of overwriting a newer role, and the watch event
            // of that newer role brings this loop round again.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": role.metadata.resource_version},
                "rules": want,
            });
            match api
                .patch(
                    name,
                    &PatchParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => debug!(clusterrole = %name, rules = want.len(), "aggregated the rules"),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => warn!(clusterrole = %name, error = %e, "writing aggregated rules"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn rule(verb: &str, resource: &str) -> PolicyRule {
        PolicyRule {
            verbs: vec![verb.into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec![resource.into()]),
            ..Default::default()
        }
    }

    fn role(
        name: &str,
        labels: &[(&str, &str)],
        rules: Vec<PolicyRule>,
        select: Option<&str>,
    ) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            rules: Some(rules),
            aggregation_rule: select.map(|label| AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: Some([(label.to_string(), "true".to_string())].into()),
                    ..Default::default()
                }]),
            }),
        }
    }

    #[test]
    fn rules_of_matching_roles_by_name_each_once() {
        let view = role("view", &[], vec![rule("stale", "x")], Some("agg-view"));
        let b = role(
            "b",
            &[("agg-view", "true")],
            vec![rule("get", "pods"), rule("list", "pods")],
            None,
        );
        let a = role(
            "a",
            &[("agg-view", "true")],
            vec![rule("list", "pods"), rule("get", "services")],
            None,
        );
        let other = role(
            "other",
            &[("agg-view", "false")],
            vec![rule("delete", "pods")],
            None,
        );
        let all = [&view, &b, &a, &other];
        assert_eq!(
            aggregated_rules(&view, &all),
            Some(vec![
                rule("list", "pods"),
                rule("get", "services"),
                rule("get", "pods")
            ])
        );
        assert_eq!(aggregated_rules(&a, &all), None);
        // A role selecting itself does not feed on its own rules.
        let own = role(
            "own",
            &[("agg-view", "true")],
            vec![rule("get", "nodes")],
            Some("agg-view"),
        );
        let all = [&own, &a];
        assert_eq!(
            aggregated_rules(&own, &all),
            Some(vec![rule("list", "pods"), rule("get", "services")])
        );
    }
}
