//! Per-kind rules applied on every write, as kube-apiserver's registry strategies apply them: what is
//! reset on create, what a main-resource update may not change (status) and what a status update may
//! not change (everything else), defaulting, and which validation runs.
//!
//! Handlers call these functions for every kind alike; what differs between kinds is the kind's
//! [`Strategy`] (its code: one file here per kind that has any) and its declarative
//! [`svcnet_kinds::Rules`] (name rule, generation tracking, delete behaviour), never a match on the
//! kind's name.

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};
use svcnet_api::field::{BadValue, FieldError, Path};
use svcnet_api::resources::ResourceType;
use svcnet_api::validation;
use svcnet_kinds::{Kind, NameRule, kinds};

use crate::authn::UserInfo;
use crate::errors::ApiError;
use crate::hooks::KindHooks;

/// What admitting a new object decided.
#[derive(Debug, Default)]
pub struct Admission {
    /// Field errors (a 422); with any, nothing stays reserved.
    pub errors: Vec<FieldError>,
    /// Writes that must commit in one store transaction with the object, or not at all: a Service's
    /// IPAddress objects, each a create, so that a failed create leaves none behind and two servers
    /// never both commit one address.
    pub with: Vec<svcnet_store::Write>,
}

impl Admission {
    /// Only field errors (none: admitted), nothing to write with the object.
    pub fn errors(errors: Vec<FieldError>) -> Self {
        Admission {
            errors,
            with: Vec::new(),
        }
    }
}

mod csr;
mod namespace;
mod networking;
mod pod;
mod secret;
mod service;
mod workload;

/// A kind's write behaviour beyond the generic machinery (kube's `RESTCreateStrategy` and
/// `RESTUpdateStrategy`). Every method has the behaviour of a kind with no rules of its own.
pub trait Strategy: Sync {
    /// kube's `PrepareForCreate` beyond metadata: the status a new object starts with, finalizers.
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Defaulting, on create and on every main-resource update.
    fn set_defaults(&self, _obj: &mut Value) {}

    /// On create, admission that reads other objects (kube's admission plugins that look things up,
    /// such as the ServiceAccount plugin for pods); `lookup` reads the server's cache.
    fn admit_with(&self, _obj: &mut Value, _lookup: Lookup<'_>) {}

    /// On create by `user`: what the kind records of who asked (kube's `PrepareForCreate` reading the
    /// request's user).
    fn set_requester(&self, _obj: &mut Value, _user: &UserInfo) {}

    /// kube's `PrepareForUpdate` beyond the generic status rule: what a write of the main resource
    /// (`subresource` `None`) or of a subresource keeps from `old`.
    fn prepare_update(&self, _subresource: Option<&str>, _new: &mut Value, _old: &Value) {}

    /// The kind's own validation; `old` is the stored object on update. Metadata is validated
    /// generically around it.
    fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        Vec::new()
    }

    /// Warnings a write of `obj` answers with (what is accepted but will not work as asked).
    fn warnings(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Validates a new object completely (metadata included, every error at once) and reserves what
    /// it holds beyond itself, or names the writes that reserve it together with the object
    /// ([`Admission::with`]); on errors nothing stays reserved, and a dry run reserves nothing. Field
    /// errors become a 422.
    fn admit_create<'a>(
        &'a self,
        rt: &'a ResourceType,
        obj: &'a mut Value,
        _hooks: &'a KindHooks,
        _dry_run: bool,
    ) -> BoxFuture<'a, Result<Admission, ApiError>> {
        Box::pin(std::future::ready(Ok(Admission::errors(validate_create(
            rt, self, obj,
        )))))
    }

    /// As [`Strategy::admit_create`], for an update of `old` to `new` (of the main resource, or of
    /// `subresource`).
    fn admit_update<'a>(
        &'a self,
        rt: &'a ResourceType,
        _subresource: Option<&'a str>,
        new: &'a mut Value,
        old: &'a Value,
        _hooks: &'a KindHooks,
        _dry_run: bool,
    ) -> BoxFuture<'a, Result<Vec<FieldError>, ApiError>> {
        Box::pin(std::future::ready(Ok(validate_update(rt, self, new, old))))
    }

    /// Releases what `obj` holds that `keep` does not (all of it when `keep` is `None`): after a
    /// delete, a failed write, or an update that dropped something.
    fn release<'a>(
        &'a self,
        _obj: &'a Value,
        _keep: Option<&'a Value>,
        _hooks: &'a KindHooks,
    ) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Releases what [`Strategy::admit_create`] reserved for a new `obj` whose write did not commit
    /// (its [`Admission::with`] did not either, so what those would have taken is not released: it
    /// may be another object's).
    fn release_unwritten<'a>(&'a self, _obj: &'a Value, _hooks: &'a KindHooks) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Reads an object from the server's cache: resource type, namespace, name.
pub type Lookup<'a> = &'a dyn Fn(&ResourceType, Option<&str>, &str) -> Option<std::sync::Arc<Value>>;

/// The strategy of a kind without rules of its own.
struct Plain;

impl Strategy for Plain {}

/// The kinds with a strategy of their own, by their definition.
static STRATEGIES: &[(&Kind, &dyn Strategy)] = &[
    (&kinds::namespace::KIND, &namespace::Namespace),
    (&kinds::service::KIND, &service::Service),
    (&kinds::secret::KIND, &secret::Secret),
    (&kinds::pod::KIND, &pod::Pod),
    (&kinds::deployment::KIND, &workload::DEPLOYMENT),
    (&kinds::replicaset::KIND, &workload::REPLICA_SET),
    (&kinds::daemonset::KIND, &workload::DAEMON_SET),
    (&kinds::csr::KIND, &csr::Csr),
    (&kinds::servicecidr::KIND, &networking::ServiceCidr),
    (&kinds::ipaddress::KIND, &networking::IpAddress),
];

/// The strategy of a served resource type.
pub fn of(rt: &ResourceType) -> &'static dyn Strategy {
    let kind = kinds::of(rt);
    STRATEGIES
        .iter()
        .find(|(k, _)| std::ptr::eq(*k, kind))
        .map_or(&Plain, |(_, s)| *s)
}

/// Prepares a new object for create (kube's `PrepareForCreate`).
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let strategy = of(rt);
    strategy.prepare_create(obj);
    strategy.set_defaults(obj);
    if kinds::of(rt).rules.tracks_generation {
        // Workloads count spec changes in metadata.generation; controllers report observedGeneration.
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("generation".into(), json!(1));
        }
    }
}

/// Prepares an update (kube's `PrepareForUpdate`): a main-resource write keeps the stored status, a
/// status write keeps everything but status (and metadata, which kube lets either write change).
pub fn prepare_update(rt: &ResourceType, subresource: Option<&str>, new: &mut Value, old: &Value) {
    generic_prepare_update(rt, subresource, new, old);
    of(rt).prepare_update(subresource, new, old);
}

fn generic_prepare_update(rt: &ResourceType, subresource: Option<&str>, new: &mut Value, old: &Value) {
    if subresource.is_none() {
        of(rt).set_defaults(new);
        if kinds::of(rt).rules.tracks_generation {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let next = if new.get("spec") != old.get("spec") {
                generation + 1
            } else {
                generation
            };
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("generation".into(), json!(next));
            }
        }
    } else if let (Some(m), Some(g)) = (
        new.get_mut("metadata").and_then(Value::as_object_mut),
        old.pointer("/metadata/generation"),
    ) {
        m.insert("generation".into(), g.clone());
    }
    let (Some(n), Some(o)) = (new.as_object_mut(), old.as_object()) else {
        return;
    };
    match subresource {
        None if rt.has_subresource("status") => {
            match o.get("status") {
                Some(s) => n.insert("status".into(), s.clone()),
                None => n.remove("status"),
            };
        }
        Some("status") => {
            let status = n.remove("status");
            let meta = n.remove("metadata");
            let mut rebuilt: Map<String, Value> = o.clone();
            if let Some(m) = meta {
                rebuilt.insert("metadata".into(), m);
            }
            match status {
                Some(s) => rebuilt.insert("status".into(), s),
                None => rebuilt.remove("status"),
            };
            *n = rebuilt;
        }
        _ => {}
    }
}

/// Kube's `ValidateObjectMeta` name rule for a kind.
fn name_rule(rt: &ResourceType) -> validation::NameValidator {
    match kinds::of(rt).rules.name {
        NameRule::Dns1035Label => validation::name_is_dns1035_label,
        NameRule::Namespace => validation::validate_namespace_name,
        NameRule::DnsSubdomain => validation::name_is_dns_subdomain,
        NameRule::PathSegment => validation::name_is_path_segment,
        NameRule::IpAddress => validation::name_is_ip_address,
    }
}

fn object_meta(obj: &Value) -> Result<ObjectMeta, FieldError> {
    serde_json::from_value(obj.get("metadata").cloned().unwrap_or_else(|| json!({})))
        .map_err(|e| FieldError::invalid("metadata", BadValue::Omit, e.to_string()))
}

/// Validates an object for create: metadata, then the kind's own rules.
pub fn validate_create<S: Strategy + ?Sized>(
    rt: &ResourceType,
    strategy: &S,
    obj: &Value,
) -> Vec<FieldError> {
    let mut errs = match object_meta(obj) {
        Ok(m) => validation::validate_object_meta(&m, rt.namespaced, name_rule(rt), &Path::new("metadata")),
        Err(e) => vec![e],
    };
    errs.extend(strategy.validate(obj, None));
    errs
}

/// Validates an object for update against the stored one: metadata, then the kind's own rules.
pub fn validate_update<S: Strategy + ?Sized>(
    rt: &ResourceType,
    strategy: &S,
    new: &Value,
    old: &Value,
) -> Vec<FieldError> {
    match (object_meta(new), object_meta(old)) {
        (Ok(mut n), Ok(o)) => {
            let path = Path::new("metadata");
            validation::prepare_object_meta_for_update(&mut n, &o);
            let mut errs = validation::validate_object_meta(&n, rt.namespaced, name_rule(rt), &path);
            errs.extend(validation::validate_object_meta_update(&n, &o, &path));
            errs.extend(strategy.validate(new, Some(old)));
            errs
        }
        (Err(e), _) | (_, Err(e)) => vec![e],
    }
}
