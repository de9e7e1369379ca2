//! Managed fields: who owns which field of an object, recorded on every write, and server-side apply,
//! both computed by `svcnet_apply`. This module adapts them to the request flow and to API errors.

use serde_json::Value;
use svcnet_api::resources::ResourceType;
use svcnet_apply::{ApplyError, ApplyOptions};

use crate::errors::ApiError;

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Records that `manager` set every field of a new object.
pub fn on_create(obj: &mut Value, manager: &str, subresource: Option<&str>) {
    if manager.is_empty() {
        return;
    }
    *obj = svcnet_apply::track_update(None, obj, manager, subresource, &now());
}

/// Records that `manager` changed the fields that differ between `old` and `new`.
pub fn on_update(old: &Value, new: &mut Value, manager: &str, subresource: Option<&str>) {
    if manager.is_empty() {
        return;
    }
    *new = svcnet_apply::track_update(Some(old), new, manager, subresource, &now());
}

/// Server-side apply of `applied` onto `live`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
) -> Result<Value, ApplyError> {
    svcnet_apply::apply(
        live,
        applied,
        &ApplyOptions {
            manager,
            force,
            subresource,
            now,
        },
    )
}

/// Turns an apply failure into the `Status` kube-apiserver answers with.
pub fn apply_error(rt: &ResourceType, name: &str, e: ApplyError) -> ApiError {
    match e {
        ApplyError::Conflicts(_) => {
            let status = e.to_status();
            ApiError {
                code: 409,
                reason: "Conflict",
                message: e.to_string(),
                details: status.get("details").cloned(),
            }
        }
        ApplyError::BadRequest(m) => ApiError::bad_request(m),
        other => {
            let _ = (rt, name);
            ApiError::internal(other)
        }
    }
}
