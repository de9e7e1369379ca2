//! The create-only review APIs: `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`)
//! answers who the server thinks the caller is.

use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::authn::UserInfo;
use crate::errors::ApiError;
use crate::request::ReviewRoute;
use crate::{ApiServer, Body, error_response, json_response, read_body};

impl ApiServer {
    /// Answers a review request.
    pub(crate) async fn review(
        self: Arc<Self>,
        route: ReviewRoute,
        req: Request<Incoming>,
    ) -> http::Response<Body> {
        let user = req
            .extensions()
            .get::<Arc<UserInfo>>()
            .cloned()
            .unwrap_or_default();
        if req.method() != Method::POST {
            // kube-apiserver's answer for a verb a create-only resource does not serve.
            return error_response(&ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: "the server does not allow this method on the requested resource".into(),
                details: None,
            });
        }
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        let obj = match crate::decode::parse_body(content_type.as_deref(), &body) {
            Ok(v) => v,
            Err(e) => return error_response(&e),
        };
        let answer = match route.resource {
            "selfsubjectreviews" => Ok(self_subject_review(obj, &user)),
            _ => Err(ApiError::no_route()),
        };
        match answer {
            Ok(v) => json_response(201, &v, &[]),
            Err(e) => error_response(&e),
        }
    }
}

/// The review object answered: the request's own fields with `status` filled in.
fn answered(mut obj: Value, kind: &str, group: &str, status: Value) -> Value {
    if !obj.is_object() {
        obj = json!({});
    }
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(format!("{group}/v1"));
    if obj.get("metadata").is_none_or(Value::is_null) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = status;
    obj
}

fn self_subject_review(obj: Value, user: &UserInfo) -> Value {
    answered(
        obj,
        "SelfSubjectReview",
        "authentication.k8s.io",
        json!({"userInfo": user.to_json()}),
    )
}
