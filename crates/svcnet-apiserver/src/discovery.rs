//! API discovery: the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) and the
//! aggregated `apidiscovery.k8s.io` documents kubectl 1.27+ asks for first, all generated from the
//! resource registry and the create-only review APIs ([`crate::request::REVIEWS`]), which kubectl must find
//! here to map a manifest's kind (`kubectl create -f` of a SubjectAccessReview) to its resource.

use serde_json::{Value, json};
use svcnet_api::resources::{self, ResourceType};

use crate::request::REVIEWS;

/// Every served group with its versions: the registry's, then the review groups it does not have.
pub(crate) fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out = resources::groups();
    for (g, ..) in REVIEWS {
        if !out.iter().any(|(have, _)| have == g) {
            out.push((g, vec!["v1"]));
        }
    }
    out
}

/// The review resources of `group`/`version`: (resource, kind, namespaced).
pub(crate) fn reviews(
    group: &str,
    version: &str,
) -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    REVIEWS
        .iter()
        .filter(move |(g, ..)| *g == group && version == "v1")
        .map(|&(_, r, k, ns)| (r, k, ns))
}

/// The media type parameters of an aggregated discovery response, if the client accepts one.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    for part in accept.split(',') {
        if part.contains("as=APIGroupDiscoveryList") && part.contains("g=apidiscovery.k8s.io") {
            if part.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if part.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

fn status_verbs() -> Vec<&'static str> {
    vec!["get", "patch", "update"]
}

fn sub_kind(rt: &ResourceType, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        "exec" => ("", "v1", "PodExecOptions"),
        "attach" => ("", "v1", "PodAttachOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        _ => (rt.group, rt.version, rt.kind),
    }
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "finalize" => vec!["update"],
        "binding" | "token" => vec!["create"],
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        _ => status_verbs(),
    }
}

/// `/api`.
pub fn legacy_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if served.
pub fn group(name: &str) -> Option<Value> {
    let (g, vs) = groups().into_iter().find(|(g, _)| *g == name && !g.is_empty())?;
    let mut v = group_json(g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for rt in resources::all().filter(|r| r.group == group && r.version == version) {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        out.push(r);
        for sub in rt.subresources {
            let (g, v, k) = sub_kind(rt, sub);
            let mut s = json!({
                "name": format!("{}/{sub}", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": k,
                "verbs": sub_verbs(sub),
            });
            if g != rt.group || v != rt.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            out.push(s);
        }
    }
    for (resource, kind, namespaced) in reviews(group, version) {
        out.push(json!({
            "name": resource,
            "singularName": "",
            "namespaced": namespaced,
            "kind": kind,
            "verbs": ["create"],
        }));
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut res: Vec<Value> = resources::all()
                .filter(|r| r.group == group && r.version == *v)
                .map(|rt| {
                    let subs: Vec<Value> = rt
                        .subresources
                        .iter()
                        .map(|sub| {
                            let (g, v, k) = sub_kind(rt, sub);
                            json!({
                                "subresource": sub,
                                "responseKind": {"group": g, "version": v, "kind": k},
                                "verbs": sub_verbs(sub),
                            })
                        })
                        .collect();
                    let mut r = json!({
                        "resource": rt.plural,
                        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": rt.singular,
                        "verbs": rt.verbs(),
                    });
                    if !rt.short_names.is_empty() {
                        r["shortNames"] = json!(rt.short_names);
                    }
                    if !rt.categories.is_empty() {
                        r["categories"] = json!(rt.categories);
                    }
                    if !subs.is_empty() {
                        r["subresources"] = json!(subs);
                    }
                    r
                })
                .collect();
            res.extend(reviews(group, v).map(|(resource, kind, namespaced)| {
                json!({
                    "resource": resource,
                    "responseKind": {"group": group, "version": v, "kind": kind},
                    "scope": if namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": "",
                    "verbs": ["create"],
                })
            }));
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": vs})
}

/// The aggregated discovery document for `/api` (legacy = true) or `/apis`.
pub fn aggregated(legacy: bool, version: &str) -> Value {
    let items: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .map(|(g, vs)| aggregated_group(g, &vs))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let v1 = resource_list("", "v1").unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"services") && names.contains(&"services/status"));
        assert!(resource_list("", "v2").is_none());
        assert_eq!(
            group("discovery.k8s.io").unwrap()["preferredVersion"]["groupVersion"],
            "discovery.k8s.io/v1"
        );
        assert!(group("").is_none());
        let agg = aggregated(true, "v2");
        assert_eq!(agg["items"][0]["metadata"]["name"], "");
        let apis = aggregated(false, "v2beta1");
        assert!(
            apis["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["metadata"]["name"] != "")
        );
        assert_eq!(
            aggregated_version(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Some("v2")
        );
        assert_eq!(aggregated_version(Some("application/json")), None);
    }

    #[test]
    fn the_review_apis_are_discoverable() {
        let names = |g: &str| -> Vec<String> {
            resource_list(g, "v1").unwrap()["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(names("authorization.k8s.io").contains(&"subjectaccessreviews".to_string()));
        assert!(names("authentication.k8s.io").contains(&"selfsubjectreviews".to_string()));
        assert!(group("authorization.k8s.io").is_some());
        let apis = aggregated(false, "v2");
        let authz = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "authorization.k8s.io")
            .unwrap();
        let local = authz["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "localsubjectaccessreviews")
            .unwrap();
        assert_eq!(local["scope"], "Namespaced");
        assert_eq!(local["responseKind"]["kind"], "LocalSubjectAccessReview");
    }
}
