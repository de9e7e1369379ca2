//! OpenAPI documents: v3 per group version (what `kubectl explain` and kubectl's field-validation check
//! read) and a minimal v2 document (kubectl downloads it before validating and must be able to parse it).
//!
//! The v3 schemas come from k8s-openapi's schemars implementations, which carry Kubernetes' own
//! definition names and field docs. Paths are generated from the resource registry, one operation per
//! verb, tagged with `x-kubernetes-group-version-kind` and `x-kubernetes-action` the way kube-apiserver
//! tags them. PATCH operations list `fieldValidation` among their parameters, which is how kubectl 1.27+
//! decides to leave unknown-field checks to the server. They deliberately do not advertise
//! `application/strategic-merge-patch+json` bodies: kubectl then computes strategic patches from its
//! compiled-in types, which know every patch-merge key, instead of from schemas that lack them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use svcnet_api::resources::{self, ResourceType};

/// Every served group version's v3 document, serialized, with its content hash.
struct Docs {
    by_path: BTreeMap<String, (Bytes, String)>,
    root: Bytes,
}

static DOCS: OnceLock<Docs> = OnceLock::new();

fn docs() -> &'static Docs {
    DOCS.get_or_init(build)
}

fn fnv64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(rt: &ResourceType) -> String {
    let base = match rt.group {
        "" => "io.k8s.api.core".to_string(),
        g => format!("io.k8s.api.{}", g.trim_end_matches(".k8s.io")),
    };
    format!("{base}.{}.{}", rt.version, rt.kind)
}

fn schemas_for(group: &str, version: &str) -> Map<String, Value> {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    review_schemas(group, version, &mut generator);
    for rt in resources::all().filter(|r| r.group == group && r.version == version) {
        if let Some(t) = crate::typed::of(rt) {
            (t.schema)(&mut generator);
        }
    }
    let mut defs: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    for rt in resources::all().filter(|r| r.group == group && r.version == version) {
        if let Some(Value::Object(s)) = defs.get_mut(&schema_name(rt)) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]),
            );
        }
    }
    for (_, kind, _) in crate::discovery::reviews(group, version) {
        if let Some(Value::Object(s)) = defs.get_mut(&review_schema(group, kind)) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    defs
}

/// The review kinds' schemas (they are no registry kinds, so [`crate::typed`] does not hold them).
fn review_schemas(group: &str, version: &str, generator: &mut schemars::SchemaGenerator) {
    use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz};
    if version != "v1" {
        return;
    }
    match group {
        "authentication.k8s.io" => {
            generator.subschema_for::<authn::SelfSubjectReview>();
            generator.subschema_for::<authn::TokenReview>();
        }
        "authorization.k8s.io" => {
            generator.subschema_for::<authz::SelfSubjectAccessReview>();
            generator.subschema_for::<authz::SelfSubjectRulesReview>();
            generator.subschema_for::<authz::SubjectAccessReview>();
            generator.subschema_for::<authz::LocalSubjectAccessReview>();
        }
        _ => {}
    }
}

fn review_schema(group: &str, kind: &str) -> String {
    format!("io.k8s.api.{}.v1.{kind}", group.trim_end_matches(".k8s.io"))
}

/// The review APIs' one operation each: create (kube-apiserver's `x-kubernetes-action: post`).
fn review_paths(prefix: &str, group: &str, version: &str, paths: &mut Map<String, Value>) {
    for (resource, kind, namespaced) in crate::discovery::reviews(group, version) {
        let schema = review_schema(group, kind);
        let (path, id) = if namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{resource}"),
                format!("createNamespaced{kind}"),
            )
        } else {
            (format!("{prefix}/{resource}"), format!("create{kind}"))
        };
        let post = json!({
            "description": format!("create a {kind}"),
            "operationId": id,
            "tags": [gv_path(group, version).replace('/', "_")],
            "parameters": write_params(false),
            "requestBody": body_of(&schema),
            "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
            "x-kubernetes-action": "post",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
        });
        paths.insert(path, json!({"post": post}));
    }
}

fn param(name: &str, desc: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
        ),
    ];
    if patch {
        p.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    p
}

fn op(
    rt: &ResourceType,
    action: &str,
    id: &str,
    params: Vec<Value>,
    body: Option<Value>,
    response: &str,
) -> Value {
    let mut o = json!({
        "description": format!("{action} {}", rt.kind),
        "operationId": id,
        "tags": [gv_path(rt.group, rt.version).replace('/', "_")],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn body_of(schema: &str) -> Value {
    json!({"content": {"*/*": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}, "required": true})
}

fn patch_body() -> Value {
    let s = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
    json!({"content": {
        "application/json-patch+json": s.clone(),
        "application/merge-patch+json": s.clone(),
        "application/apply-patch+yaml": s,
    }, "required": true})
}

fn paths_for(group: &str, version: &str) -> Map<String, Value> {
    let mut paths = Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for rt in resources::all().filter(|r| r.group == group && r.version == version) {
        let kind_schema = schema_name(rt);
        let id = |verb: &str, suffix: &str| {
            format!(
                "{verb}{}{}{suffix}",
                if rt.namespaced { "Namespaced" } else { "" },
                rt.kind
            )
        };
        let (coll, item) = if rt.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", rt.plural),
            )
        } else {
            (
                format!("{prefix}/{}", rt.plural),
                format!("{prefix}/{}/{{name}}", rt.plural),
            )
        };
        let mut c = json!({
            "get": op(rt, "list", &id("list", ""), vec![], None, &kind_schema),
            "post": op(rt, "post", &id("create", ""), write_params(false), Some(body_of(&kind_schema)), &kind_schema),
        });
        if rt.delete_collection {
            c["delete"] = op(
                rt,
                "deletecollection",
                &id("deleteCollection", ""),
                vec![],
                None,
                &kind_schema,
            );
        }
        paths.insert(coll, c);
        paths.insert(
            item.clone(),
            json!({
                "get": op(rt, "get", &id("read", ""), vec![], None, &kind_schema),
                "put": op(rt, "put", &id("replace", ""), write_params(false), Some(body_of(&kind_schema)), &kind_schema),
                "patch": op(rt, "patch", &id("patch", ""), write_params(true), Some(patch_body()), &kind_schema),
                "delete": op(rt, "delete", &id("delete", ""), vec![], None, &kind_schema),
            }),
        );
        for sub in rt.subresources.iter().filter(|s| **s == "status") {
            paths.insert(
                format!("{item}/{sub}"),
                json!({
                    "get": op(rt, "get", &id("read", "Status"), vec![], None, &kind_schema),
                    "put": op(rt, "put", &id("replace", "Status"), write_params(false), Some(body_of(&kind_schema)), &kind_schema),
                    "patch": op(rt, "patch", &id("patch", "Status"), write_params(true), Some(patch_body()), &kind_schema),
                }),
            );
        }
        if rt.namespaced {
            paths.insert(
                format!("{prefix}/{}", rt.plural),
                json!({"get": op(rt, "list", &format!("list{}ForAllNamespaces", rt.kind), vec![], None, &kind_schema)}),
            );
        }
    }
    review_paths(&prefix, group, version, &mut paths);
    paths
}

fn build() -> Docs {
    let mut by_path = BTreeMap::new();
    for (group, versions) in crate::discovery::groups() {
        for version in versions {
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": paths_for(group, version),
                "components": {"schemas": schemas_for(group, version)},
            });
            let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            let hash = fnv64(&bytes);
            by_path.insert(gv_path(group, version), (bytes, hash));
        }
    }
    let mut paths = Map::new();
    for (p, (_, hash)) in &by_path {
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    let root = Bytes::from(serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default());
    Docs { by_path, root }
}

/// `/openapi/v3`.
pub fn v3_root() -> Bytes {
    docs().root.clone()
}

/// `/openapi/v3/{path}`, if served.
pub fn v3_doc(path: &str) -> Option<Bytes> {
    docs().by_path.get(path).map(|(b, _)| b.clone())
}

/// `/openapi/v2` as the gnostic protobuf `Document` kubectl decodes: just `swagger: "2.0"`.
///
/// kubectl fetches this before any validated write and fails if it cannot decode it, but it only uses
/// the definitions for client-side validation when the server lacks field validation, which ours has.
/// Encoding by hand (field 1, length-delimited) avoids a protobuf toolchain for seven bytes.
pub fn v2_protobuf() -> Bytes {
    Bytes::from_static(&[0x0a, 0x03, b'2', b'.', b'0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_documents_carry_what_kubectl_checks() {
        let root: Value = serde_json::from_slice(&v3_root()).unwrap();
        let url = root["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        let doc: Value = serde_json::from_slice(&v3_doc("api/v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Service");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let svc = &doc["components"]["schemas"]["io.k8s.api.core.v1.Service"];
        assert_eq!(svc["x-kubernetes-group-version-kind"][0]["kind"], "Service");
        assert!(
            doc["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"].is_object()
        );
        let es: Value = serde_json::from_slice(&v3_doc("apis/discovery.k8s.io/v1").unwrap()).unwrap();
        assert!(es["components"]["schemas"]["io.k8s.api.discovery.v1.EndpointSlice"].is_object());
        let authz: Value = serde_json::from_slice(&v3_doc("apis/authorization.k8s.io/v1").unwrap()).unwrap();
        let sar = &authz["paths"]["/apis/authorization.k8s.io/v1/subjectaccessreviews"]["post"];
        assert_eq!(
            sar["x-kubernetes-group-version-kind"]["kind"],
            "SubjectAccessReview"
        );
        assert_eq!(
            authz["components"]["schemas"]["io.k8s.api.authorization.v1.SubjectAccessReview"]["x-kubernetes-group-version-kind"]
                [0]["kind"],
            "SubjectAccessReview"
        );
    }
}
