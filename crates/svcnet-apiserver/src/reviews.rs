//! The create-only review APIs: `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`)
//! answers who the server thinks the caller is, TokenReview whom a bearer token belongs to (for
//! webhook token authentication by other servers); `authorization.k8s.io/v1` SelfSubjectAccessReview
//! (`kubectl auth can-i`), SubjectAccessReview and LocalSubjectAccessReview answer whether a user may do
//! something, and SelfSubjectRulesReview (`kubectl auth can-i --list`) what the caller may do in a
//! namespace. They are answered by the same authorizer that guards every request ([`crate::authz`]).

use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::authn::UserInfo;
use crate::authz::rbac::{self, Attributes};
use crate::errors::ApiError;
use crate::request::ReviewRoute;
use crate::{ApiServer, Body, error_response, json_response, read_body};
use svcnet_api::field::FieldError;

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
            "tokenreviews" => self.token_review(obj),
            "selfsubjectaccessreviews" => self.access_review(obj, "SelfSubjectAccessReview", &user, None),
            "subjectaccessreviews" => {
                subject(&obj).and_then(|u| self.access_review(obj, "SubjectAccessReview", &u, None))
            }
            "localsubjectaccessreviews" => subject(&obj).and_then(|u| {
                self.access_review(obj, "LocalSubjectAccessReview", &u, route.namespace.as_deref())
            }),
            "selfsubjectrulesreviews" => Ok(self.rules_review(obj, &user)),
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

/// The user a SubjectAccessReview asks about.
fn subject(obj: &Value) -> Result<UserInfo, ApiError> {
    let spec = obj.get("spec").cloned().unwrap_or_default();
    let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview",
            "authorization.k8s.io",
            "",
            &[FieldError::invalid(
                "spec.user",
                user,
                "at least one of user or group must be specified",
            )],
        ));
    }
    let extra = spec
        .get("extra")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    Ok(UserInfo {
        name: user.to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        groups,
        extra,
    })
}

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl ApiServer {
    /// Answers a TokenReview as kube-apiserver's: the token goes through the same token authenticators
    /// as a request's bearer token (static, ServiceAccount, bootstrap), with `system:authenticated`
    /// added. `spec.audiences` (default: the API server's) must include one of a ServiceAccount
    /// token's audiences (a projected token's `audience`, say a vault's); `status.audiences` are
    /// those of them the token is valid for.
    fn token_review(&self, obj: Value) -> Result<Value, ApiError> {
        let token = obj
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let asked: Vec<String> = obj
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| vec![crate::satoken::ISSUER.to_string()]);
        // Static and bootstrap tokens, and the credential this server shows node agents (which a node
        // without the cluster token checks this way), are not bound to an audience: valid for any asked.
        let found = match self
            .tokens
            .lookup(token)
            .or_else(|| self.kubelet_client_credential(token))
            .or_else(|| self.authenticate_bootstrap_token(token))
        {
            Some(u) => Some((u, asked)),
            None => self.authenticate_service_account_for(token, &asked),
        };
        let status = match found {
            Some((user, audiences)) => json!({
                "authenticated": true,
                "user": user.authenticated().to_json(),
                "audiences": audiences,
            }),
            None => json!({"authenticated": false, "user": {}}),
        };
        Ok(answered(obj, "TokenReview", "authentication.k8s.io", status))
    }

    /// Answers an access review of `kind` about `user`; `namespace` is the path's (local reviews).
    fn access_review(
        &self,
        obj: Value,
        kind: &str,
        user: &UserInfo,
        namespace: Option<&str>,
    ) -> Result<Value, ApiError> {
        let spec = obj.get("spec").cloned().unwrap_or_default();
        let res = spec.get("resourceAttributes").filter(|v| v.is_object());
        let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
        let attrs = match (res, non) {
            (Some(r), None) => Attributes {
                verb: s(r, "verb"),
                resource_request: true,
                namespace: s(r, "namespace"),
                api_group: s(r, "group"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                name: s(r, "name"),
                path: String::new(),
            },
            (None, Some(n)) => Attributes {
                verb: s(n, "verb"),
                path: s(n, "path"),
                ..Default::default()
            },
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "authorization.k8s.io",
                    "",
                    &[FieldError::invalid(
                        "spec.resourceAttributes",
                        "",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
        };
        if let Some(ns) = namespace
            && attrs.namespace != ns
        {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {ns}"
            )));
        }
        let status = match self.decide(user, &attrs) {
            Ok(reason) if reason.is_empty() => json!({"allowed": true}),
            Ok(reason) => json!({"allowed": true, "reason": reason}),
            Err(reason) if reason.is_empty() => json!({"allowed": false}),
            Err(reason) => json!({"allowed": false, "reason": reason}),
        };
        Ok(answered(obj, kind, "authorization.k8s.io", status))
    }

    /// Answers a SelfSubjectRulesReview: the rules the caller's bindings give it in the namespace.
    fn rules_review(&self, obj: Value, user: &UserInfo) -> Value {
        let ns = obj
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
        let errors = rbac::visit_rules(self, user, &ns, &mut |_, rule| {
            let pick = |k: &str| rule.get(k).cloned().unwrap_or_else(|| json!([]));
            if rule
                .get("nonResourceURLs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                non_resource_rules
                    .push(json!({"verbs": pick("verbs"), "nonResourceURLs": pick("nonResourceURLs")}));
            } else {
                let mut r = json!({"verbs": pick("verbs"), "apiGroups": pick("apiGroups"), "resources": pick("resources")});
                if let Some(names) = rule
                    .get("resourceNames")
                    .filter(|n| n.as_array().is_some_and(|a| !a.is_empty()))
                {
                    r["resourceNames"] = names.clone();
                }
                resource_rules.push(r);
            }
            true
        });
        let mut status = json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": !errors.is_empty(),
        });
        if !errors.is_empty() {
            status["evaluationError"] = json!(errors.join(", "));
        }
        answered(obj, "SelfSubjectRulesReview", "authorization.k8s.io", status)
    }
}
