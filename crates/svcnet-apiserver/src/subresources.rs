//! Subresources that are views of, or actions on, their parent object: `scale` (autoscaling/v1 Scale,
//! what `kubectl scale` reads and patches) and `pods/binding` (how a scheduler assigns a pod to a node).
//! The streaming ones (`pods/exec`, `attach`, `portforward`) live in [`crate::streaming`].

use serde_json::{Value, json};

use crate::ApiServer;
use crate::errors::ApiError;
use crate::handlers::{Reply, WriteCtx};
use crate::request::ResourceRoute;
use svcnet_api::field::FieldError;

/// Renders a `LabelSelector` as the selector string `Scale.status.selector` carries.
fn selector_string(sel: Option<&Value>) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel.and_then(|s| s.get("matchLabels")).and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
    {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => parts.push(format!("{key} in ({})", vals.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.sort();
    parts.join(",")
}

fn scale_of(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = json!({
        "name": m.get("name"),
        "namespace": m.get("namespace"),
        "uid": m.get("uid"),
        "resourceVersion": m.get("resourceVersion"),
        "creationTimestamp": m.get("creationTimestamp"),
    });
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj.pointer("/spec/selector")),
        },
    })
}

impl ApiServer {
    fn parent(&self, route: &ResourceRoute) -> Result<crate::cache::Cached, ApiError> {
        let name = route.name.as_deref().unwrap_or_default();
        self.cache
            .get(&route.key(name))
            .ok_or_else(|| ApiError::not_found(route.rt, name))
    }

    /// `GET …/scale`.
    pub fn get_scale(&self, route: &ResourceRoute) -> Result<Reply, ApiError> {
        let cur = self.parent(route)?;
        Ok(Reply {
            code: 200,
            body: scale_of(&cur.object()),
            warnings: Vec::new(),
            raw: None,
        })
    }

    /// `PUT` or `PATCH …/scale`: changes the parent's `spec.replicas`.
    pub async fn write_scale(
        &self,
        ctx: &WriteCtx<'_>,
        patch: Option<(&str, &[u8])>,
        body: Option<Value>,
    ) -> Result<Reply, ApiError> {
        let route = ctx.route;
        let name = route.name.clone().unwrap_or_default();
        for _ in 0..16 {
            let cur = self.parent(route)?;
            let mut parent = cur.object();
            let scale = scale_of(&parent);
            let desired = match (patch, &body) {
                (Some((ct, bytes)), _) => {
                    let kind = svcnet_patch::PatchKind::from_content_type(ct)
                        .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
                    svcnet_patch::apply_patch(kind, &scale, bytes)
                        .map_err(|e| ApiError::bad_request(e.status_message()))?
                }
                (None, Some(b)) => b.clone(),
                (None, None) => return Err(ApiError::bad_request("a Scale body is required")),
            };
            let conditional = desired
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            if let Some(rv) = conditional
                && rv != cur.revision.to_string()
            {
                return Err(ApiError::conflict(route.rt, &name));
            }
            let Some(replicas) = desired.pointer("/spec/replicas").and_then(Value::as_i64) else {
                return Err(ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    &name,
                    &[FieldError::required("spec.replicas", "")],
                ));
            };
            if replicas < 0 || replicas > i32::MAX as i64 {
                return Err(ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    &name,
                    &[FieldError::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            if let Some(spec) = parent.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), json!(replicas));
            }
            let main = route.main();
            let main_ctx = ctx.on(&main);
            if let Some(reply) = self
                .update_object_at(&main_ctx, &cur, parent, conditional.is_some())
                .await?
            {
                return Ok(Reply {
                    code: 200,
                    body: scale_of(&reply.body),
                    warnings: reply.warnings,
                    raw: None,
                });
            }
        }
        Err(ApiError::conflict(route.rt, &name))
    }

    /// `POST pods/{name}/binding`: assigns the pod to a node, once.
    pub async fn bind(&self, ctx: &WriteCtx<'_>, body: Value) -> Result<Reply, ApiError> {
        let route = ctx.route;
        let name = route.name.clone().unwrap_or_default();
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid("Binding", "", &name, &[FieldError::required("target.name", "")])
            })?
            .to_string();
        for _ in 0..16 {
            let cur = self.parent(route)?;
            let mut pod = cur.object();
            if let Some(existing) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""
                    ),
                    details: None,
                });
            }
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(node));
            }
            let main = route.main();
            let main_ctx = ctx.on(&main);
            if self
                .update_object_at(&main_ctx, &cur, pod, false)
                .await?
                .is_some()
            {
                return Ok(Reply {
                    code: 201,
                    body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    warnings: Vec::new(),
                    raw: None,
                });
            }
        }
        Err(ApiError::conflict(route.rt, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view() {
        let d = json!({"metadata": {"name": "d", "namespace": "n", "resourceVersion": "5"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x", "tier": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=x,tier=web");
        assert_eq!(s["metadata"]["resourceVersion"], "5");
    }
}
