//! Understanding a request: which endpoint its path names, its query parameters, and what
//! representation the client accepts.
//!
//! Kubernetes' URL space is regular (`/api/v1/namespaces/{ns}/{resource}/{name}/{subresource}` and the
//! same under `/apis/{group}/{version}`), so one parser serves every kind in the registry.

use std::collections::HashMap;

use svcnet_api::resources::{self, ResourceType};

use crate::errors::ApiError;

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `/livez`, `/readyz`, `/healthz` (and their `/…/<check>` forms).
    Health,
    /// `/version`.
    Version,
    /// `/metrics`.
    Metrics,
    /// `/.well-known/openid-configuration`: the service-account issuer's discovery document.
    OpenIdConfiguration,
    /// `/openid/v1/jwks`: the keys service-account tokens are signed with.
    Jwks,
    /// `/api`.
    LegacyRoot,
    /// `/apis`.
    GroupsRoot,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion(String, String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiV3Root,
    /// `/openapi/v3/{api/v1 | apis/group/version}`.
    OpenApiV3(String),
    /// A resource endpoint.
    Resource(ResourceRoute),
    /// A create-only review of the authentication or authorization API ([`crate::reviews`]).
    Review(ReviewRoute),
}

/// A review endpoint: `POST /apis/{authentication,authorization}.k8s.io/v1/[namespaces/NS/]RESOURCE`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRoute {
    /// The review's resource, e.g. `selfsubjectaccessreviews`.
    pub resource: &'static str,
    /// The namespace in the path (`localsubjectaccessreviews` only).
    pub namespace: Option<String>,
}

/// The review resources served: (group, resource, kind, namespaced).
pub const REVIEWS: &[(&str, &str, &str, bool)] = &[
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    ("authentication.k8s.io", "tokenreviews", "TokenReview", false),
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
];

fn review_route(group: &str, version: &str, rest: &[&str]) -> Option<ReviewRoute> {
    if version != "v1" {
        return None;
    }
    let (namespace, plural) = match rest {
        [plural] => (None, *plural),
        ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
        _ => return None,
    };
    let &(_, resource, _, namespaced) = REVIEWS.iter().find(|(g, r, _, _)| *g == group && *r == plural)?;
    (namespaced == namespace.is_some()).then_some(ReviewRoute { resource, namespace })
}

/// A path into a resource collection or object.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRoute {
    /// The resource type.
    pub rt: &'static ResourceType,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name, if the path names one object.
    pub name: Option<String>,
    /// The subresource, e.g. `status`.
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path prefix was used.
    pub watch_path: bool,
}

impl ResourceRoute {
    /// The route of one object (or, without a name, its collection): no subresource.
    pub fn object(rt: &'static ResourceType, namespace: Option<String>, name: Option<String>) -> Self {
        ResourceRoute {
            rt,
            namespace,
            name,
            subresource: None,
            watch_path: false,
        }
    }

    /// The same object's main resource, for subresource handlers that write their parent.
    pub fn main(&self) -> Self {
        ResourceRoute {
            subresource: None,
            ..self.clone()
        }
    }

    /// The storage key prefix of the collection this route addresses (all namespaces when none given).
    pub fn collection_prefix(&self) -> String {
        let g = group_segment(self.rt.group);
        match &self.namespace {
            Some(ns) if self.rt.namespaced => format!("/{g}/{}/{ns}/", self.rt.plural),
            _ => format!("/{g}/{}/", self.rt.plural),
        }
    }

    /// The storage key of the named object.
    pub fn key(&self, name: &str) -> String {
        object_key(self.rt, self.namespace.as_deref(), name)
    }
}

fn group_segment(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}

/// The storage key of an object.
pub fn object_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    let g = group_segment(rt.group);
    match namespace {
        Some(ns) if rt.namespaced => format!("/{g}/{}/{ns}/{name}", rt.plural),
        _ => format!("/{g}/{}/{name}", rt.plural),
    }
}

/// The storage key prefix of a resource type within one namespace (or everywhere).
pub fn collection_prefix(rt: &ResourceType, namespace: Option<&str>) -> String {
    let g = group_segment(rt.group);
    match namespace {
        Some(ns) if rt.namespaced => format!("/{g}/{}/{ns}/", rt.plural),
        _ => format!("/{g}/{}/", rt.plural),
    }
}

/// Splits a storage key back into its resource type, namespace and name.
pub fn parse_key(key: &str) -> Option<(&'static ResourceType, Option<String>, String)> {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    let (group, plural, ns, name) = match parts.as_slice() {
        [g, p, ns, name] => (*g, *p, Some(ns.to_string()), name.to_string()),
        [g, p, name] => (*g, *p, None, name.to_string()),
        _ => return None,
    };
    let group = if group == "core" { "" } else { group };
    let rt = resources::all().find(|r| r.group == group && r.plural == plural)?;
    Some((rt, ns, name))
}

/// Parses a request path.
pub fn parse_path(path: &str) -> Result<Route, ApiError> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["livez" | "readyz" | "healthz", ..] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["metrics"] => return Ok(Route::Metrics),
        [".well-known", "openid-configuration"] => return Ok(Route::OpenIdConfiguration),
        ["openid", "v1", "jwks"] => return Ok(Route::Jwks),
        ["api"] => return Ok(Route::LegacyRoot),
        ["apis"] => return Ok(Route::GroupsRoot),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3Root),
        ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiV3(rest.join("/"))),
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(ApiError::no_route()),
    };
    if rest.is_empty() {
        return Ok(Route::GroupVersion(group.to_string(), version.to_string()));
    }
    if let Some(r) = review_route(group, version, rest) {
        return Ok(Route::Review(r));
    }
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let find = |plural: &str| resources::lookup(group, version, plural).ok_or_else(ApiError::no_route);
    let route = match rest {
        // Namespaced resources inside a namespace; the namespace object's own subresources are `status`
        // and `finalize`, which are not resource names, so the two never clash.
        ["namespaces", ns, plural, tail @ ..]
            if resources::lookup(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let rt = find(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(name.to_string()), None),
                [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
                _ => return Err(ApiError::no_route()),
            };
            ResourceRoute {
                rt,
                namespace: Some(ns.to_string()),
                name,
                subresource: sub,
                watch_path,
            }
        }
        [plural, tail @ ..] => {
            let rt = find(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(name.to_string()), None),
                [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
                _ => return Err(ApiError::no_route()),
            };
            if rt.namespaced && name.is_some() {
                // A namespaced object must be addressed inside its namespace.
                return Err(ApiError::no_route());
            }
            ResourceRoute {
                rt,
                namespace: None,
                name,
                subresource: sub,
                watch_path,
            }
        }
        [] => return Err(ApiError::no_route()),
    };
    if let Some(sub) = &route.subresource
        && !route.rt.has_subresource(sub)
    {
        return Err(ApiError::no_route());
    }
    Ok(Route::Resource(route))
}

/// Decoded query parameters.
#[derive(Debug, Default, Clone)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// Parses a query string.
    pub fn parse(query: Option<&str>) -> Self {
        let mut m = HashMap::new();
        if let Some(q) = query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                m.insert(k.into_owned(), v.into_owned());
            }
        }
        Params(m)
    }

    /// A parameter's value, if present and not empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    /// A non-negative integer parameter; a malformed one is a 400.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }

    /// `dryRun=All`; any other value is rejected as kube does.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.0.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }
}

/// The representation the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object or list itself.
    Object,
    /// A `meta.k8s.io/v1` Table (server-side printing).
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first representation in `Accept` that we can produce.
pub fn negotiate(accept: Option<&str>) -> Result<Representation, ApiError> {
    let Some(accept) = accept else {
        return Ok(Representation::Object);
    };
    for part in accept.split(',') {
        let mut pieces = part.split(';').map(str::trim);
        let media = pieces.next().unwrap_or("");
        let mut as_ = None;
        let mut g = None;
        for p in pieces {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(v.trim()),
                    "g" => g = Some(v.trim()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(
            media,
            "application/json" | "*/*" | "application/*" | "application/yaml"
        );
        if !json_like {
            continue;
        }
        match (as_, g) {
            (None, _) => return Ok(Representation::Object),
            (Some("Table"), Some("meta.k8s.io")) => return Ok(Representation::Table),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return Ok(Representation::Metadata);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceRoute {
        match parse_path(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/api/v1/namespaces/default/services/web/status");
        assert_eq!(r.rt.plural, "services");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(r.key("web"), "/core/services/default/web");
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(r.rt.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));
        let r = res("/api/v1/namespaces/x/finalize");
        assert_eq!(r.subresource.as_deref(), Some("finalize"));
        let r = res("/api/v1/services");
        assert!(r.namespace.is_none() && r.name.is_none());
        assert_eq!(r.collection_prefix(), "/core/services/");
        let r = res("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices");
        assert_eq!(r.collection_prefix(), "/discovery.k8s.io/endpointslices/a/");
        let r = res("/api/v1/watch/namespaces/a/pods");
        assert!(r.watch_path);
        assert_eq!(
            parse_path("/api/v1").unwrap(),
            Route::GroupVersion("".into(), "v1".into())
        );
        assert!(parse_path("/api/v1/widgets").is_err());
        assert!(parse_path("/api/v1/services/x").is_err());
        assert!(parse_path("/api/v1/namespaces/a/services/x/bogus").is_err());
        assert_eq!(
            parse_path("/openapi/v3/api/v1").unwrap(),
            Route::OpenApiV3("api/v1".into())
        );
    }

    #[test]
    fn accept() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)).unwrap(), Representation::Table);
        assert_eq!(
            negotiate(Some("application/json")).unwrap(),
            Representation::Object
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Representation::Object
        );
        assert!(negotiate(Some("application/vnd.kubernetes.protobuf")).is_err());
    }
}
