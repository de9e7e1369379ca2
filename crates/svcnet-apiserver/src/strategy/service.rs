//! The Service strategy: a new Service starts with an empty load-balancer status; when the server
//! allocates (it has service CIDRs), defaulting, ClusterIP/NodePort allocation and validation run in
//! one pass in [`KindHooks`], so every error is reported at once as kube-apiserver does.

use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::resources::ResourceType;

use super::Strategy;
use crate::errors::ApiError;
use crate::hooks::KindHooks;

/// Services.
pub(super) struct Service;

impl Strategy for Service {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
    }

    fn admit_create(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        hooks: &KindHooks,
    ) -> Result<Vec<FieldError>, ApiError> {
        match hooks.service_create(obj) {
            Some(res) => res,
            None => Ok(super::validate_create(rt, self, obj)),
        }
    }

    fn admit_update(
        &self,
        rt: &ResourceType,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
        hooks: &KindHooks,
    ) -> Result<Vec<FieldError>, ApiError> {
        match hooks.service_update(subresource, new, old) {
            Some(res) => res,
            None => Ok(super::validate_update(rt, self, new, old)),
        }
    }

    fn release(&self, obj: &Value, keep: Option<&Value>, hooks: &KindHooks) {
        hooks.service_release(obj, keep);
    }
}
