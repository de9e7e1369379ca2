//! API errors and the `Status` objects they become, worded as kube-apiserver words them.
//!
//! Clients (kubectl above all) match on `reason` and `code` and print `message` verbatim, so each
//! constructor here reproduces the text of the matching `k8s.io/apimachinery/pkg/api/errors` helper.

use serde_json::{Value, json};
use svcnet_api::field::{FieldError, aggregate_message};
use svcnet_api::resources::ResourceType;

/// An error answered to the client as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404: `services "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(name, rt.group, rt.plural)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", rt.qualified_resource()),
            )
        }
    }

    /// 404 for a namespace that does not exist when creating inside it.
    pub fn namespace_not_found(name: &str) -> Self {
        ApiError {
            details: Some(details(name, "", "namespaces")),
            ..Self::new(404, "NotFound", format!("namespaces \"{name}\" not found"))
        }
    }

    /// 404 for a URL that names nothing we serve.
    pub fn no_route() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409: `services "x" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(name, rt.group, rt.plural)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified_resource()),
            )
        }
    }

    /// 409: the optimistic-concurrency conflict.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::conflict_msg(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a custom reason text, e.g. a failed precondition.
    pub fn conflict_msg(rt: &ResourceType, name: &str, why: &str) -> Self {
        ApiError {
            details: Some(details(name, rt.group, rt.plural)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    rt.qualified_resource()
                ),
            )
        }
    }

    /// 422: validation failed; the causes name each field.
    pub fn invalid(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> Self {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
            .collect();
        let mut d = details(name, group, kind);
        d["causes"] = Value::Array(causes);
        ApiError {
            details: Some(d),
            ..Self::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {}", aggregate_message(errs)),
            )
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with a message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405: the verb is not served for this resource.
    pub fn method_not_supported(rt: &ResourceType, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                rt.qualified_resource()
            ),
        )
    }

    /// 406: no representation the client accepts.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml ({accept})"
            ),
        )
    }

    /// 410: a watch or list from a resourceVersion we no longer have.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413: the body exceeds the request size limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415: the body's content type is not one we decode.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct})"
            ),
        )
    }

    /// 500 with kube's "Internal error occurred" prefix.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 503, e.g. while storage is unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 501: something Kubernetes serves that svcnet cannot (kube has no reason for it; clients print
    /// the reason, so it names the status).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, "NotImplemented", message)
    }

    /// The `Status` object sent to the client.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        // Go's `Status.reason` is `omitempty`: a Status without a reason has no such field.
        if self.reason.is_empty()
            && let Some(m) = s.as_object_mut()
        {
            m.remove("reason");
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<svcnet_store::StoreError> for ApiError {
    fn from(e: svcnet_store::StoreError) -> Self {
        use svcnet_store::StoreError;
        match e {
            // HTTP's own code for it: the client learns that retrying later may work, and why.
            StoreError::NoSpace(_) => Self::new(507, "InsufficientStorage", e.to_string()),
            StoreError::Closed => Self::unavailable(e.to_string()),
            // A transaction the server itself built wrong: its bug, not the client's.
            StoreError::Backend(_) | StoreError::Invalid(_) => ApiError::internal(e),
            // kube-apiserver's answer when etcd does not answer within the request's deadline.
            StoreError::Timeout(_) => Self::new(504, "Timeout", e.to_string()),
            StoreError::TooLarge(why) => Self::new(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: {why}"),
            ),
        }
    }
}

/// The `Status` of a successful delete of something that is not returned as an object.
pub fn success_status(rt: &ResourceType, name: &str, uid: Option<&str>) -> Value {
    let mut d = details(name, rt.group, rt.plural);
    if let Some(uid) = uid {
        d["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}

#[cfg(test)]
mod tests {
    use super::*;
    use svcnet_api::resources::lookup;

    #[test]
    fn wording() {
        let svc = lookup("", "v1", "services").unwrap();
        assert_eq!(ApiError::not_found(svc, "x").message, "services \"x\" not found");
        assert_eq!(
            ApiError::conflict(svc, "x").message,
            "Operation cannot be fulfilled on services \"x\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let full = ApiError::from(svcnet_store::StoreError::NoSpace("disk full".into()));
        assert_eq!((full.code, full.reason), (507, "InsufficientStorage"));
        assert_eq!(full.message, "storage is out of space: disk full");
        let es = lookup("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let s = ApiError::already_exists(es, "y").status();
        assert_eq!(s["details"]["group"], "discovery.k8s.io");
        assert_eq!(
            s["message"],
            "endpointslices.discovery.k8s.io \"y\" already exists"
        );
        let inv = ApiError::invalid(
            "Service",
            "",
            "s",
            &[FieldError::invalid(
                "spec.ports[0].port",
                0,
                "must be between 1 and 65535, inclusive",
            )],
        );
        assert_eq!(inv.code, 422);
        assert_eq!(
            inv.status()["details"]["causes"][0]["field"],
            "spec.ports[0].port"
        );
    }
}
