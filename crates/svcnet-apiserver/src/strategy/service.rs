//! The Service strategy: a new Service starts with an empty load-balancer status; when the server
//! allocates (it has service CIDRs), defaulting, ClusterIP/NodePort allocation and validation run in
//! one pass in [`KindHooks`], so every error is reported at once as kube-apiserver does.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use svcnet_api::field::FieldError;
use svcnet_api::resources::ResourceType;

use super::{Admission, Strategy};
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

    fn admit_create<'a>(
        &'a self,
        rt: &'a ResourceType,
        obj: &'a mut Value,
        hooks: &'a KindHooks,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Admission, ApiError>> {
        Box::pin(async move {
            match hooks.service_create(obj, dry_run).await {
                Some(res) => res,
                None => Ok(Admission::errors(super::validate_create(rt, self, obj))),
            }
        })
    }

    fn admit_update<'a>(
        &'a self,
        rt: &'a ResourceType,
        subresource: Option<&'a str>,
        new: &'a mut Value,
        old: &'a Value,
        hooks: &'a KindHooks,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Vec<FieldError>, ApiError>> {
        Box::pin(async move {
            match hooks.service_update(subresource, new, old, dry_run).await {
                Some(res) => res,
                None => Ok(super::validate_update(rt, self, new, old)),
            }
        })
    }

    fn release<'a>(
        &'a self,
        obj: &'a Value,
        keep: Option<&'a Value>,
        hooks: &'a KindHooks,
    ) -> BoxFuture<'a, ()> {
        Box::pin(hooks.service_release(obj, keep))
    }

    fn release_unwritten<'a>(&'a self, obj: &'a Value, hooks: &'a KindHooks) -> BoxFuture<'a, ()> {
        Box::pin(hooks.service_release_unwritten(obj))
    }
}
