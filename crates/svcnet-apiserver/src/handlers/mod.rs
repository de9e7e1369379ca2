//! The REST verbs on resources: get, list, create, update, patch, apply, delete and deletecollection,
//! with kube-apiserver's semantics (optimistic concurrency, dry runs, generateName, finalizers,
//! namespace lifecycle, no-op updates that write nothing).
//!
//! Every read comes from the watch cache; every write is a conditional write to the store followed by a
//! wait for the cache to catch up, so the response carries the stored resourceVersion and a following
//! read sees it.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use svcnet_api::resources::{self, ResourceType};
use svcnet_api::selector::{FieldSelector, LabelSelector};
use svcnet_kinds::kinds;
use svcnet_store::{Precondition, Revision, TxnOutcome, Write, WriteOutcome};

use crate::ApiServer;
use crate::authn::UserInfo;
use crate::authz::noderestriction::{self, Operation};
use crate::cache::Cached;
use crate::decode::{self, FieldValidation};
use crate::errors::{ApiError, success_status};
use crate::request::{Params, Representation, ResourceRoute, collection_prefix, object_key};
use crate::{managed, strategy, tables};

mod delete;
mod read;

pub use read::selectors;

/// A handler's answer before HTTP encoding.
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// JSON body.
    pub body: Value,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
    /// An already encoded body to send instead of `body` (lists and gets from the cache's encodings).
    pub raw: Option<Bytes>,
}

impl Reply {
    /// A 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        Reply {
            code: 200,
            body,
            warnings: Vec::new(),
            raw: None,
        }
    }

    fn raw(bytes: Bytes) -> Self {
        Reply {
            code: 200,
            body: Value::Null,
            warnings: Vec::new(),
            raw: Some(bytes),
        }
    }
}

/// The context of one write request.
pub struct WriteCtx<'a> {
    /// The route.
    pub route: &'a ResourceRoute,
    /// Query parameters.
    pub params: &'a Params,
    /// The field manager (from `fieldManager` or the user agent); `None` when the object's managed
    /// fields were already computed (server-side apply).
    pub manager: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// The node making the request, when a node's credential makes it: its writes pass NodeRestriction.
    pub node: Option<String>,
    /// Who makes the request (`None`: the control plane itself): RBAC writes pass escalation prevention,
    /// and kinds that record their requester (a CertificateSigningRequest's `spec.username`) read it on
    /// create.
    pub user: Option<Arc<UserInfo>>,
}

impl<'a> WriteCtx<'a> {
    /// A write the control plane makes itself (bootstrap, garbage collection, namespace finalization).
    pub fn internal(route: &'a ResourceRoute, params: &'a Params, manager: &str) -> Self {
        WriteCtx {
            route,
            params,
            manager: Some(manager.into()),
            dry_run: false,
            node: None,
            user: None,
        }
    }

    /// This request's context for another route (a subresource handler writing its parent).
    pub fn on(&self, route: &'a ResourceRoute) -> WriteCtx<'a>
    where
        Self: 'a,
    {
        WriteCtx {
            route,
            params: self.params,
            manager: self.manager.clone(),
            dry_run: self.dry_run,
            node: self.node.clone(),
            user: self.user.clone(),
        }
    }
}

const NAMESPACE_TERMINATING: &str = "is being terminated";
/// Attempts at an unconditional update or patch before giving up on a hot object.
const RETRIES: usize = 16;
/// How often a create is admitted again when another server took an address it picked (each time
/// after the cache shows that address taken, so a retry picks another).
const ALLOCATION_RETRIES: usize = 8;

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// Whether `obj` is marked for deletion with a grace period still to run (a pod its node is stopping).
fn grace_pending(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| {
        m.contains_key("deletionTimestamp")
            && m.get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0)
    })
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object)
        && let Some(m) = obj.as_object_mut()
    {
        m.insert("metadata".into(), json!({}));
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata was just ensured to be an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// Removes fields that never count when deciding whether an update changed anything.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

impl ApiServer {
    /// Commits a write and waits until the cache reflects it.
    async fn commit(
        &self,
        write: Write,
    ) -> Result<Result<Revision, Option<svcnet_store::KeyValue>>, ApiError> {
        match self.store.write(write).await? {
            WriteOutcome::Committed { revision, .. } => {
                self.cache.wait_for(revision).await;
                Ok(Ok(revision))
            }
            WriteOutcome::PreconditionFailed { current } => Ok(Err(current)),
        }
    }

    /// Commits writes in one store transaction and waits until the cache reflects them; a refusal
    /// says which write's precondition failed and its key's state.
    async fn commit_all(
        &self,
        writes: Vec<Write>,
    ) -> Result<Result<Revision, (usize, Option<svcnet_store::KeyValue>)>, ApiError> {
        match self.store.write_all(writes).await? {
            TxnOutcome::Committed { revision, .. } => {
                self.cache.wait_for(revision).await;
                Ok(Ok(revision))
            }
            TxnOutcome::PreconditionFailed { index, current } => Ok(Err((index, current))),
        }
    }

    /// Releases what `obj` holds beyond itself that `keep` does not (the kind's strategy decides).
    async fn release(&self, rt: &ResourceType, obj: &Value, keep: Option<&Value>) {
        strategy::of(rt).release(obj, keep, &self.kind_hooks).await;
    }

    fn stamp(obj: &mut Value, revision: Revision) {
        meta_mut(obj).insert("resourceVersion".into(), json!(revision.to_string()));
    }

    /// Checks that the namespace of a namespaced write exists and is not being deleted.
    fn check_namespace(&self, rt: &ResourceType, ns: &str, creating: bool) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_rt = resources::lookup("", "v1", "namespaces").expect("namespaces are always served");
        match self.cache.get(&object_key(ns_rt, None, ns)) {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(c) if creating && meta(&c.view).is_some_and(|m| m.contains_key("deletionTimestamp")) => {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it {NAMESPACE_TERMINATING}",
                    rt.qualified_resource(),
                    "",
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// `POST` to a collection.
    pub async fn create(&self, ctx: &WriteCtx<'_>, body: Value) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let fv = FieldValidation::parse(ctx.params.get("fieldValidation"))?;
        let (mut obj, warnings) = decode::decode_object(rt, body, fv)?;
        let ns = ctx.route.namespace.clone();
        if rt.namespaced {
            let url_ns = ns.clone().unwrap_or_default();
            match meta_str(&obj, "namespace") {
                Some(body_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta_mut(&mut obj).insert("namespace".into(), json!(url_ns));
                }
            }
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        let mut reply = self.create_object(ctx, obj).await?;
        reply.warnings.extend(warnings);
        Ok(reply)
    }

    /// Creates a decoded object (shared by POST, create-on-update and server-side apply).
    async fn create_object(&self, ctx: &WriteCtx<'_>, mut obj: Value) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let ns = if rt.namespaced {
            meta_str(&obj, "namespace").map(str::to_string)
        } else {
            None
        };
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && !rv.is_empty()
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate = meta_str(&obj, "generateName").map(str::to_string);
        let has_name = meta_str(&obj, "name").is_some_and(|n| !n.is_empty());
        if let Some(ns) = &ns {
            self.check_namespace(rt, ns, true)?;
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
            m.remove("selfLink");
        }
        // NodeRestriction judges the object as the node sent it, before any defaulting.
        if let Some(node) = &ctx.node {
            self.admit_node_write(ctx, node, Operation::Create, Some(&obj), None)?;
        }
        if let Some(user) = &ctx.user {
            self.admit_rbac_write(user, rt, &obj, None)?;
        }
        strategy::prepare_create(rt, &mut obj);
        strategy::of(rt).admit_with(&mut obj, &|rt, ns, name| self.cached(rt, ns, name));
        if let Some(user) = &ctx.user {
            strategy::of(rt).set_requester(&mut obj, user);
        }
        // generateName collisions are retried with a new suffix, as kube-apiserver does.
        for attempt in 0..8 {
            let mut named = obj.clone();
            if !has_name && let Some(g) = &generate {
                meta_mut(&mut named).insert("name".into(), json!(format!("{g}{}", random_suffix())));
            }
            let name = meta_str(&named, "name").unwrap_or_default().to_string();
            let key = object_key(rt, ns.as_deref(), &name);
            // Another server can take an address this one's cache still shows free: admitted again
            // once the cache shows it taken, a few times at most.
            let mut taken_meanwhile = 0;
            let (mut candidate, res, with) = loop {
                let mut candidate = named.clone();
                let admission = strategy::of(rt)
                    .admit_create(rt, &mut candidate, &self.kind_hooks, ctx.dry_run)
                    .await?;
                if !admission.errors.is_empty() {
                    return Err(ApiError::invalid(rt.kind, rt.group, &name, &admission.errors));
                }
                if let Some(m) = &ctx.manager {
                    managed::on_create(&mut candidate, m, ctx.route.subresource.as_deref());
                }
                if ctx.dry_run {
                    // A dry run reserved nothing, so there is nothing to release.
                    if self.cache.get(&key).is_some() {
                        return Err(ApiError::already_exists(rt, &name));
                    }
                    return Ok(Reply {
                        code: 201,
                        body: candidate,
                        warnings: Vec::new(),
                        raw: None,
                    });
                }
                let bytes = Bytes::from(serde_json::to_vec(&candidate).map_err(ApiError::internal)?);
                let with = admission.with.len();
                let mut writes = admission.with;
                writes.push(Write::Put {
                    key: key.clone(),
                    value: bytes,
                    precondition: Precondition::Absent,
                });
                let res = self.commit_all(writes).await;
                if let Ok(Err((index, current))) = &res
                    && *index < with
                    && taken_meanwhile < ALLOCATION_RETRIES
                {
                    taken_meanwhile += 1;
                    strategy::of(rt)
                        .release_unwritten(&candidate, &self.kind_hooks)
                        .await;
                    if let Some(kv) = current {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            self.cache.wait_for(kv.mod_revision),
                        )
                        .await;
                    }
                    continue;
                }
                break (candidate, res, with);
            };
            match res {
                Ok(Ok(rev)) => {
                    Self::stamp(&mut candidate, rev);
                    return Ok(Reply {
                        code: 201,
                        body: candidate,
                        warnings: Vec::new(),
                        raw: None,
                    });
                }
                Ok(Err((index, _))) if index < with => {
                    strategy::of(rt)
                        .release_unwritten(&candidate, &self.kind_hooks)
                        .await;
                    return Err(ApiError::internal(
                        "failed to allocate a serviceIP: too many concurrent allocations",
                    ));
                }
                Ok(Err(_)) => {
                    strategy::of(rt)
                        .release_unwritten(&candidate, &self.kind_hooks)
                        .await;
                    if has_name || generate.is_none() || attempt == 7 {
                        return Err(ApiError::already_exists(rt, &name));
                    }
                }
                Err(e) => {
                    // Out of space and too large are refusals: nothing was written. Otherwise the store
                    // could not say whether the write happened (a timeout, a lost connection), and
                    // releasing could free what a stored object holds for another object to take;
                    // kept, it is at worst a leak, which the repair loop releases once no object holds it.
                    if e.code == 507 || e.code == 413 {
                        strategy::of(rt)
                            .release_unwritten(&candidate, &self.kind_hooks)
                            .await;
                    }
                    return Err(e);
                }
            }
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// `PUT` an object (or its status).
    pub async fn update(&self, ctx: &WriteCtx<'_>, body: Value) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let name = ctx.route.name.clone().unwrap_or_default();
        let fv = FieldValidation::parse(ctx.params.get("fieldValidation"))?;
        let (mut obj, warnings) = decode::decode_object(rt, body, fv)?;
        match meta_str(&obj, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None => {
                meta_mut(&mut obj).insert("name".into(), json!(name));
            }
            _ => {}
        }
        if rt.namespaced {
            let url_ns = ctx.route.namespace.clone().unwrap_or_default();
            match meta_str(&obj, "namespace") {
                Some(n) if !n.is_empty() && n != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta_mut(&mut obj).insert("namespace".into(), json!(url_ns));
                }
            }
        }
        let key = ctx.route.key(&name);
        let requested_rv = meta_str(&obj, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        for _ in 0..RETRIES {
            let Some(cur) = self.cache.get(&key) else {
                if kinds::of(rt).rules.create_on_update && ctx.route.subresource.is_none() {
                    let mut o = obj.clone();
                    meta_mut(&mut o).remove("resourceVersion");
                    let mut r = self.create_object(ctx, o).await?;
                    r.warnings.extend(warnings);
                    return Ok(r);
                }
                return Err(ApiError::not_found(rt, &name));
            };
            if let Some(rv) = &requested_rv
                && *rv != cur.revision.to_string()
            {
                return Err(ApiError::conflict(rt, &name));
            }
            match self
                .update_object(ctx, &cur, obj.clone(), requested_rv.is_some())
                .await?
            {
                Some(mut reply) => {
                    reply.warnings.extend(warnings);
                    return Ok(reply);
                }
                None => continue,
            }
        }
        Err(ApiError::conflict(rt, &name))
    }

    /// Writes `new` over `cur` for a subresource handler (same semantics as an update).
    pub(crate) async fn update_object_at(
        &self,
        ctx: &WriteCtx<'_>,
        cur: &Cached,
        new: Value,
        conditional: bool,
    ) -> Result<Option<Reply>, ApiError> {
        self.update_object(ctx, cur, new, conditional).await
    }

    /// Writes `new` over `cur`. Returns `None` when the object changed underneath (retry).
    async fn update_object(
        &self,
        ctx: &WriteCtx<'_>,
        cur: &Cached,
        mut new: Value,
        conditional: bool,
    ) -> Result<Option<Reply>, ApiError> {
        let rt = ctx.route.rt;
        let old = &cur.object();
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        // Fields the client can never change through an update.
        {
            let om = meta(old).cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match om.get(f) {
                    Some(v) if f != "uid" || !m.contains_key("uid") => {
                        m.insert(f.into(), v.clone());
                    }
                    None if f != "uid" => {
                        m.remove(f);
                    }
                    _ => {}
                }
            }
            if !m.contains_key("uid")
                && let Some(u) = om.get("uid")
            {
                m.insert("uid".into(), u.clone());
            }
            if rt.namespaced
                && let Some(ns) = om.get("namespace")
            {
                m.entry("namespace").or_insert_with(|| ns.clone());
            }
            m.insert("resourceVersion".into(), json!(cur.revision.to_string()));
            if !m.contains_key("managedFields")
                && let Some(mf) = om.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        strategy::prepare_update(rt, ctx.route.subresource.as_deref(), &mut new, old);
        if let Some(node) = &ctx.node {
            self.admit_node_write(ctx, node, Operation::Update, Some(&new), Some(old))?;
        }
        if let Some(user) = &ctx.user {
            self.admit_rbac_write(user, rt, &new, Some(old))?;
        }
        let errs = strategy::of(rt)
            .admit_update(
                rt,
                ctx.route.subresource.as_deref(),
                &mut new,
                old,
                &self.kind_hooks,
                ctx.dry_run,
            )
            .await?;
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt.kind, rt.group, &name, &errs));
        }
        let empty = |v: Option<&Value>| v.and_then(Value::as_array).is_none_or(|f| f.is_empty());
        // Namespaces also carry finalizers in spec (the namespace controller's `kubernetes`).
        let finalizers_gone =
            empty(meta(&new).and_then(|m| m.get("finalizers"))) && empty(new.pointer("/spec/finalizers"));
        // As kube's `shouldDeleteDuringUpdate`: only an object that waits for nothing but its finalizers
        // goes when the last one does. A pod in its grace period stays until its node deletes it, whatever
        // is written to it meanwhile (its status as the containers stop, a label).
        let deleting = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp")) && !grace_pending(old);
        if ctx.dry_run {
            return Ok(Some(Reply::ok(new)));
        }
        // A write that changes nothing is not written (no resourceVersion churn, no watch event),
        // unless it is the write that lets a pending deletion finish.
        if comparable(&new) == comparable(old) && !(deleting && finalizers_gone) {
            self.release(rt, &new, Some(old)).await;
            return Ok(Some(Reply::ok(old.clone())));
        }
        if let Some(m) = &ctx.manager {
            managed::on_update(old, &mut new, m, ctx.route.subresource.as_deref());
        }
        let key = cur.key.to_string();
        if deleting && finalizers_gone {
            // The last finalizer went away: the pending delete completes now.
            return match self
                .commit(Write::Delete {
                    key,
                    precondition: Precondition::ModRevision(cur.revision),
                })
                .await?
            {
                Ok(rev) => {
                    self.release(rt, old, None).await;
                    Self::stamp(&mut new, rev);
                    Ok(Some(Reply::ok(new)))
                }
                Err(_) if conditional => Err(ApiError::conflict(rt, &name)),
                Err(_) => Ok(None),
            };
        }
        let bytes = Bytes::from(serde_json::to_vec(&new).map_err(ApiError::internal)?);
        match self
            .commit(Write::Put {
                key,
                value: bytes,
                precondition: Precondition::ModRevision(cur.revision),
            })
            .await?
        {
            Ok(rev) => {
                self.release(rt, old, Some(&new)).await;
                Self::stamp(&mut new, rev);
                Ok(Some(Reply::ok(new)))
            }
            Err(_) => {
                self.release(rt, &new, Some(old)).await;
                if conditional {
                    Err(ApiError::conflict(rt, &name))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// `PATCH` an object: JSON patch, merge patch, strategic merge patch or server-side apply.
    pub async fn patch(
        &self,
        ctx: &WriteCtx<'_>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let name = ctx.route.name.clone().unwrap_or_default();
        let key = ctx.route.key(&name);
        let media = content_type.split(';').next().unwrap_or("").trim();
        let fv = FieldValidation::parse(ctx.params.get("fieldValidation"))?;
        if media == "application/apply-patch+yaml" || media == "application/apply-patch+cbor" {
            return self.apply(ctx, body, fv).await;
        }
        let kind = svcnet_patch::PatchKind::from_content_type(media)
            .ok_or_else(|| ApiError::unsupported_media_type(media))?;
        for _ in 0..RETRIES {
            let cur = self
                .cache
                .get(&key)
                .ok_or_else(|| ApiError::not_found(rt, &name))?;
            let patched = svcnet_patch::apply_patch(kind, &cur.object(), body)
                .map_err(|e| patch_error(rt, &name, e))?;
            // A patch that names a resourceVersion is a conditional update at that version.
            let requested_rv = meta_str(&patched, "resourceVersion").map(str::to_string);
            let conditional = requested_rv
                .as_deref()
                .is_some_and(|rv| rv != cur.revision.to_string());
            if conditional {
                return Err(ApiError::conflict(rt, &name));
            }
            let explicit_rv = patch_sets_resource_version(body);
            let (obj, warnings) = decode::decode_object(rt, patched, fv)?;
            if meta_str(&obj, "name") != Some(name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&obj, "name").unwrap_or_default()
                )));
            }
            if let Some(mut reply) = self.update_object(ctx, &cur, obj, explicit_rv).await? {
                reply.warnings.extend(warnings);
                return Ok(reply);
            }
        }
        Err(ApiError::conflict(rt, &name))
    }

    async fn apply(&self, ctx: &WriteCtx<'_>, body: &[u8], fv: FieldValidation) -> Result<Reply, ApiError> {
        let rt = ctx.route.rt;
        let name = ctx.route.name.clone().unwrap_or_default();
        let key = ctx.route.key(&name);
        if ctx.params.get("fieldManager").is_none() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests must include a fieldManager in the query string",
            ));
        }
        let applied = decode::yaml_to_json(body)?;
        let body_meta = |field| {
            applied
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        decode::check_apply_kind(rt, &applied, body_meta("namespace"), body_meta("name"))?;
        let (mut applied, warnings) = decode::decode_object(rt, applied, fv)?;
        {
            let m = meta_mut(&mut applied);
            match m.get("name").and_then(Value::as_str) {
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                _ => {
                    m.insert("name".into(), json!(name));
                }
            }
            if rt.namespaced {
                m.insert(
                    "namespace".into(),
                    json!(ctx.route.namespace.clone().unwrap_or_default()),
                );
            }
        }
        let force = ctx.params.flag("force");
        for _ in 0..RETRIES {
            let cur = self.cache.get(&key);
            let now = now_rfc3339();
            let current = cur.as_ref().map(Cached::object);
            let result = managed::apply(
                current.as_ref(),
                &applied,
                ctx.manager.as_deref().unwrap_or_default(),
                force,
                ctx.route.subresource.as_deref(),
                &now,
            )
            .map_err(|e| managed::apply_error(rt, &name, e))?;
            let mut reply = match &cur {
                None => {
                    let mut o = result;
                    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    self.create_object_with_fields(ctx, o).await?
                }
                Some(c) => match self.update_object(&computed_ctx(ctx), c, result, false).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            reply.warnings.extend(warnings);
            return Ok(reply);
        }
        Err(ApiError::conflict(rt, &name))
    }

    /// Creates an object whose managedFields were already computed (server-side apply's create).
    async fn create_object_with_fields(&self, ctx: &WriteCtx<'_>, obj: Value) -> Result<Reply, ApiError> {
        self.create_object(&computed_ctx(ctx), obj).await
    }

    /// NodeRestriction admission for one write by `node`.
    pub(crate) fn admit_node_write(
        &self,
        ctx: &WriteCtx<'_>,
        node: &str,
        op: Operation,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let route = ctx.route;
        let req = noderestriction::Request {
            op,
            group: route.rt.group,
            resource: route.rt.plural,
            subresource: route.subresource.as_deref().unwrap_or_default(),
            namespace: route.namespace.as_deref().unwrap_or_default(),
            name: route.name.as_deref().unwrap_or_default(),
            object,
            old,
        };
        noderestriction::admit(self, node, &req)
    }

    /// Looks up the stored object for a kind hook (e.g. to read the namespace's objects), decoded whole.
    pub fn cached(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<Arc<Value>> {
        self.cache
            .get(&object_key(rt, ns, name))
            .map(|c| Arc::new(c.object()))
    }

    /// Lists stored objects of a kind for internal controllers.
    pub fn cached_list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Arc<Value>> {
        self.cache
            .list(&collection_prefix(rt, ns), None)
            .0
            .into_iter()
            .map(|c| Arc::new(c.object()))
            .collect()
    }
}

/// The same request context, for an object whose managed fields are already computed.
fn computed_ctx<'a>(ctx: &WriteCtx<'a>) -> WriteCtx<'a> {
    WriteCtx {
        route: ctx.route,
        params: ctx.params,
        manager: None,
        dry_run: ctx.dry_run,
        node: ctx.node.clone(),
        user: ctx.user.clone(),
    }
}

fn patch_sets_resource_version(body: &[u8]) -> bool {
    // Only a merge/strategic patch body can carry metadata.resourceVersion directly; a JSON patch that
    // sets it is handled by the comparison after patching.
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/metadata/resourceVersion").cloned())
        .is_some_and(|v| v.is_string())
}

fn patch_error(rt: &ResourceType, name: &str, e: svcnet_patch::PatchError) -> ApiError {
    let _ = (rt, name);
    // kube maps patch failures by their own status: 400 for undecodable patches, 422 for failed JSON
    // patch operations, 413 for oversized ones, and 500 (with an empty reason) for the rest.
    let reason: &'static str = match e.reason() {
        "BadRequest" => "BadRequest",
        "Invalid" => "Invalid",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        _ => "",
    };
    ApiError {
        code: e.http_status(),
        reason,
        message: e.status_message(),
        details: None,
    }
}

fn random_suffix() -> String {
    // kube's alphabet for generated names: no vowels (no accidental words), no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use svcnet_store::{Feed, KeyValue, Snapshot, Store, StoreError, TxnOutcome};
    use tokio::sync::{mpsc, watch};

    /// A store whose change feeds pass batches on only while `hold` is false: the cache of a server
    /// that is behind the store, as one on etcd can be behind another server's writes.
    struct Lagging {
        inner: Arc<dyn Store>,
        hold: watch::Receiver<bool>,
    }

    impl Store for Lagging {
        fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
            self.inner.write(write)
        }

        fn write_all(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
            self.inner.write_all(writes)
        }

        fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
            self.inner.get(key)
        }

        fn snapshot_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(Snapshot, Feed), StoreError>> {
            let prefix = prefix.to_string();
            let mut hold = self.hold.clone();
            Box::pin(async move {
                let (snapshot, mut feed) = self.inner.snapshot_and_watch(&prefix).await?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(batch) = feed.recv().await {
                        let _ = hold.wait_for(|h| !*h).await;
                        if tx.send(batch).is_err() {
                            break;
                        }
                    }
                });
                Ok((snapshot, rx))
            })
        }
    }

    async fn server(store: Arc<dyn Store>) -> Arc<ApiServer> {
        let hooks = crate::hooks::KindHooks::with_services(crate::hooks::ServiceNetConfig {
            // Six usable addresses.
            service_cidrs: vec!["10.0.0.0/29".parse().unwrap()],
            node_port_range: svcnet_alloc::PortRange::parse("30000-30009").unwrap(),
        })
        .unwrap();
        let config = crate::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: "t".into(),
            token_file: Default::default(),
            sa_signer: None,
            client_verifier: None,
            hooks,
        };
        ApiServer::new(store, config).await.unwrap()
    }

    /// Server b's cache has not yet seen the addresses server a gave its Services. Asked for one of
    /// them, b reads the store and refuses at once in kube's words. Left to pick one when a holds them
    /// all, b picks one its cache shows free and writes its IPAddress with the Service in one
    /// transaction, which fails on the address; b waits until its cache shows it taken, admits again
    /// and finds the range full. Nothing of b's Services is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn addresses_another_server_took_first_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(svcnet_store::redb::RedbStore::open(&dir.path().join("db")).unwrap());
        let (hold, held) = watch::channel(false);
        let a = server(store.clone()).await;
        let b = server(Arc::new(Lagging {
            inner: store.clone(),
            hold: held,
        }))
        .await;
        let ns_rt = resources::lookup("", "v1", "namespaces").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        let WriteOutcome::Committed { revision, .. } = store
            .write(Write::Put {
                key: object_key(ns_rt, None, "default"),
                value: Bytes::from(serde_json::to_vec(&ns).unwrap()),
                precondition: Precondition::Absent,
            })
            .await
            .unwrap()
        else {
            panic!("a fresh key commits")
        };
        a.cache.wait_for(revision).await;
        b.cache.wait_for(revision).await;

        let svc_rt = resources::lookup("", "v1", "services").unwrap();
        let route = ResourceRoute::object(svc_rt, Some("default".into()), None);
        let params = Params::default();
        let ctx = WriteCtx::internal(&route, &params, "test");
        let svc = |name: &str, ip: Option<&str>| {
            let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"port": 80}]}});
            if let Some(ip) = ip {
                s["spec"]["clusterIP"] = json!(ip);
            }
            s
        };
        hold.send_replace(true);
        let made = a.create(&ctx, svc("a", Some("10.0.0.5"))).await.unwrap();
        assert_eq!(made.code, 201);
        let Err(err) = b.create(&ctx, svc("b", Some("10.0.0.5"))).await else {
            panic!("b's create of a taken address succeeded")
        };
        assert_eq!(err.code, 422, "{}", err.message);
        assert!(
            err.message.contains("provided IP is already allocated"),
            "{}",
            err.message
        );
        for i in 0..5 {
            let made = a.create(&ctx, svc(&format!("a{i}"), None)).await.unwrap();
            assert_eq!(made.code, 201);
        }
        let lag = std::time::Duration::from_millis(300);
        tokio::spawn(async move {
            tokio::time::sleep(lag).await;
            hold.send_replace(false);
        });
        let started = std::time::Instant::now();
        let Err(err) = b.create(&ctx, svc("b2", None)).await else {
            panic!("b allocated from a full range")
        };
        assert!(err.message.contains("range is full"), "{}", err.message);
        assert!(
            started.elapsed() >= lag,
            "refused only once b's cache saw the addresses ({:?})",
            started.elapsed()
        );
        for name in ["b", "b2"] {
            assert!(
                store
                    .get(&object_key(svc_rt, Some("default"), name))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let (addresses, _) = store
            .snapshot_and_watch("/networking.k8s.io/ipaddresses/")
            .await
            .unwrap();
        assert_eq!(addresses.items.len(), 6);
        for kv in &addresses.items {
            let address: Value = serde_json::from_slice(&kv.value).unwrap();
            let parent = address["spec"]["parentRef"]["name"].as_str().unwrap();
            assert!(parent.starts_with('a'), "{parent} holds {}", kv.key);
        }
    }

    #[test]
    fn suffixes() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
