//! The two entry points: [`apply`] (server-side apply) and [`track_update`]
//! (ownership tracking for create/update/patch), composed as kube-apiserver
//! composes its field managers: strip system metadata, reset fields owned by
//! the other half of a status subresource, take the manager's set, prune,
//! check conflicts, and touch a manager's time only when it changed things.

use serde_json::{Map, Value, json};

use crate::managed::{Managed, ManagerEntry, Operation, manager_id};
use crate::path::{PathElement, compare_paths, path_string};
use crate::schema::{KindDef, SCHEMA, Ty};
use crate::set::FieldSet;
use crate::typed::{Comparison, compare, ensure_named_fields, merge, remove_items, to_field_set};
use crate::{ApplyError, Conflict};

/// Options of an apply request.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// The field manager (`?fieldManager=`); required for apply.
    pub manager: &'a str,
    /// `?force=true`: take over conflicting fields.
    pub force: bool,
    /// The subresource applied to (`Some("status")`), `None` for the main
    /// resource.
    pub subresource: Option<&'a str>,
    /// The current time, RFC 3339 (`2024-05-01T10:00:00Z`).
    pub now: &'a str,
}

// Metadata the applied configuration may carry but the server owns.
const IGNORED_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
];

// Paths never recorded in managedFields (kube's stripMeta).
fn strip_set() -> FieldSet {
    let mut s = FieldSet::new();
    let f = |n: &str| PathElement::Field(n.to_string());
    s.insert(&[f("apiVersion")]);
    s.insert(&[f("kind")]);
    s.insert(&[f("metadata")]);
    for n in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[f("metadata"), f(n)]);
    }
    s
}

// Top-level fields a request to this (sub)resource does not change (kube's
// reset fields of the registry strategies).
fn reset_fields(kind: Option<&KindDef>, subresource: Option<&str>) -> &'static [&'static str] {
    match (kind, subresource) {
        (Some(k), None) if k.status_subresource => &["status"],
        (Some(k), Some("status")) if k.status_subresource => &["spec"],
        _ => &[],
    }
}

fn reset_set(fields: &[&str]) -> FieldSet {
    let mut s = FieldSet::new();
    for f in fields {
        s.insert(&[PathElement::Field(f.to_string())]);
    }
    s
}

fn gvk_string(api_version: &str, kind: &str) -> String {
    // schema.GroupVersionKind.String(): "group/version, Kind=kind".
    let gv = if api_version.contains('/') {
        api_version.to_string()
    } else {
        format!("/{api_version}")
    };
    format!("{gv}, Kind={kind}")
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.as_object_mut()?.get_mut("metadata")?.as_object_mut()
}

fn remove_managed_fields(obj: &mut Value) {
    if let Some(meta) = metadata_mut(obj) {
        meta.remove("managedFields");
    }
}

fn write_managed(obj: &mut Value, managed: &Managed) {
    let encoded = managed.encode();
    let Some(root) = obj.as_object_mut() else { return };
    match encoded {
        Some(list) => {
            let meta = root.entry("metadata").or_insert_with(|| json!({}));
            if !meta.is_object() {
                *meta = json!({});
            }
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("managedFields".into(), list);
            }
        }
        None => {
            if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
        }
    }
}

/// Applies `applied` (a full configuration with `apiVersion` and `kind`) to
/// `live` (`None` creates), returning the object to store, with its
/// `metadata.managedFields` updated.
///
/// The configuration's `metadata.managedFields` must be absent or null (kube
/// rejects it otherwise); its `resourceVersion`, `uid`, `creationTimestamp`
/// and `generation` are ignored (checking a `resourceVersion` precondition
/// is the caller's job); for kinds with a status subresource, `status` is
/// ignored on the main resource and `spec` on `status`.
pub fn apply(live: Option<&Value>, applied: &Value, opts: &ApplyOptions<'_>) -> Result<Value, ApplyError> {
    let api_version = str_at(applied, "apiVersion");
    let kind = str_at(applied, "kind");
    let wrong_type =
        || ApplyError::BadRequest(format!("invalid object type: {}", gvk_string(api_version, kind)));
    if !applied.is_object() || api_version.is_empty() || kind.is_empty() {
        return Err(wrong_type());
    }
    if let Some(live) = live
        && (str_at(live, "apiVersion") != api_version || str_at(live, "kind") != kind)
    {
        return Err(wrong_type());
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let kind_def = SCHEMA.kind(api_version, kind);
    let root = SCHEMA.root(api_version, kind);
    let subresource = opts.subresource.unwrap_or("");

    let mut live_obj = live.cloned().unwrap_or_else(|| json!({}));
    if !live_obj.is_object() {
        return Err(ApplyError::Invalid("the live object is not a JSON object".into()));
    }
    let mut managed = Managed::decode(live_obj.pointer("/metadata/managedFields"))
        .map_err(|e| ApplyError::ManagedFields(format!("failed to decode managed fields: {e}")))?;
    remove_managed_fields(&mut live_obj);

    let mut config = applied.clone();
    if let Some(meta) = metadata_mut(&mut config) {
        for f in IGNORED_METADATA {
            meta.remove(*f);
        }
    }
    let reset = reset_fields(kind_def, opts.subresource);
    if let Some(m) = config.as_object_mut() {
        for f in reset {
            m.remove(*f);
        }
    }

    let typed_err = |e: String| {
        let meta = applied.get("metadata").unwrap_or(&Value::Null);
        ApplyError::Invalid(format!(
            "failed to create typed patch object ({}/{}; {}): {e}",
            str_at(meta, "namespace"),
            str_at(meta, "name"),
            gvk_string(api_version, kind)
        ))
    };
    let config_set = to_field_set(&config, &root).map_err(typed_err)?;
    let merged = merge(&live_obj, &config, &root).map_err(typed_err)?;

    let me = manager_id(opts.manager, Operation::Apply, api_version, subresource);
    let previous = managed.entries.get(&me).cloned();
    let last_set = previous.as_ref().map(|e| e.set.clone()).unwrap_or_default();
    managed.entries.insert(
        me.clone(),
        ManagerEntry {
            manager: opts.manager.to_string(),
            operation: Operation::Apply,
            api_version: api_version.to_string(),
            subresource: subresource.to_string(),
            time: previous.and_then(|e| e.time),
            set: config_set,
        },
    );

    let merged = if last_set.is_empty() {
        merged
    } else {
        prune(&merged, &root, &managed, &last_set)
    };

    update_managers(
        &live_obj,
        &merged,
        &root,
        &mut managed,
        &me,
        opts.force,
        &reset_set(reset),
    )
    .map_err(ApplyError::Conflicts)?;

    let strip = strip_set();
    if let Some(entry) = managed.entries.get_mut(&me) {
        entry.set = entry.set.difference(&strip);
    }
    managed.drop_empty();

    // Kube only stamps the applier's time when the object changed.
    let changed = merged != live_obj;
    let mut out = if changed { merged } else { live_obj };
    if changed && let Some(entry) = managed.entries.get_mut(&me) {
        entry.time = Some(opts.now.to_string());
    }
    write_managed(&mut out, &managed);
    Ok(out)
}

/// Removes what the applier applied last time and no longer applies, unless
/// another manager (or the new configuration) owns it (structured-merge-diff's
/// prune, add-back-owned and add-back-dangling steps).
fn prune(merged: &Value, root: &Ty, managed: &Managed, last: &FieldSet) -> Value {
    let named = |s: &FieldSet| ensure_named_fields(s, root);
    let set_of = |v: &Value| named(&to_field_set(v, root).unwrap_or_default());
    let last = named(last);
    let pruned = remove_items(merged, root, &last);

    let owned = managed
        .entries
        .values()
        .fold(FieldSet::new(), |acc, e| acc.union(&e.set));
    let merged_set = set_of(merged);
    let keep = set_of(&pruned).union(&named(&owned));
    let pruned = remove_items(merged, root, &merged_set.difference(&keep));

    let dangling = merged_set.difference(&set_of(&pruned)).intersection(&last);
    remove_items(merged, root, &dangling)
}

/// Structured-merge-diff's `update`: compares the objects, and takes
/// changed fields away from every other manager (or reports them as
/// conflicts unless `force`), and removed fields from everyone.
fn update_managers(
    old: &Value,
    new: &Value,
    root: &Ty,
    managed: &mut Managed,
    workflow: &str,
    force: bool,
    reset: &FieldSet,
) -> Result<Comparison, Vec<Conflict>> {
    let mut cmp = compare(old, new, root);
    cmp.added = cmp.added.recursive_difference(reset);
    cmp.modified = cmp.modified.recursive_difference(reset);
    cmp.removed = cmp.removed.recursive_difference(reset);
    let changed = cmp.modified.union(&cmp.added);

    let mut conflicts: Vec<(String, FieldSet)> = Vec::new();
    for (id, entry) in &managed.entries {
        if id == workflow {
            continue;
        }
        let c = entry.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((id.clone(), c));
        }
    }
    if !force && !conflicts.is_empty() {
        let mut out = Vec::new();
        for (id, set) in &conflicts {
            let Some(e) = managed.entries.get(id) else {
                continue;
            };
            let mut paths = set.paths();
            paths.sort_by(|a, b| compare_paths(a, b));
            for p in paths {
                out.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation,
                    api_version: e.api_version.clone(),
                    subresource: (!e.subresource.is_empty()).then(|| e.subresource.clone()),
                    field: path_string(&p),
                });
            }
        }
        return Err(out);
    }
    for (id, set) in &conflicts {
        if let Some(e) = managed.entries.get_mut(id) {
            e.set = e.set.difference(set);
        }
    }
    if !cmp.removed.is_empty() {
        for (id, e) in managed.entries.iter_mut() {
            if id != workflow {
                e.set = e.set.difference(&cmp.removed);
            }
        }
    }
    managed.drop_empty();
    Ok(cmp)
}

fn is_reset_request(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Array(items)) => match items.as_slice() {
            [] => true,
            [Value::Object(m)] => m.values().all(|v| v.is_null() || v.as_str() == Some("")),
            _ => false,
        },
        _ => false,
    }
}

/// Which managedFields an update starts from (kube's `decodeLiveOrNew`):
/// the request's own, if it sent any that decode (an empty list or a single
/// empty entry resets them), else the live object's; subresource requests
/// always keep the live object's.
fn decode_live_or_new(old: Option<&Value>, new: &Value, is_subresource: bool) -> Managed {
    let live = || Managed::decode(old.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default();
    if is_subresource {
        return live();
    }
    let requested = new.pointer("/metadata/managedFields");
    if is_reset_request(requested) {
        return Managed::default();
    }
    match Managed::decode(requested) {
        Ok(m) if !m.entries.is_empty() => m,
        _ => live(),
    }
}

/// Records field ownership for a create (`old` is `None`), update or patch
/// by `manager` (kube derives it from `?fieldManager=` or the user agent,
/// e.g. `kubectl-client-side-apply`, `kubectl-edit`), returning `new` with
/// its `metadata.managedFields` updated.
///
/// The changed fields (all set fields on create) move to the manager's
/// `Update` entry; other managers lose them; entries left empty are dropped;
/// only the manager's entry gets `now` as its time, and only if it took
/// fields. Update entries beyond ten are folded into `ancient-changes`.
pub fn track_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) -> Value {
    let mut out = new.clone();
    if !out.is_object() {
        return out;
    }
    let pick = |key: &str| {
        let v = str_at(new, key);
        if v.is_empty() {
            old.map_or("", |o| str_at(o, key))
        } else {
            v
        }
    };
    let (api_version, kind) = (pick("apiVersion"), pick("kind"));
    if api_version.is_empty() {
        // Nothing to record the fields against; kube always knows it.
        return out;
    }
    let manager = if manager.is_empty() { "unknown" } else { manager };
    let sub = subresource.unwrap_or("");
    let kind_def = SCHEMA.kind(api_version, kind);
    let root = SCHEMA.root(api_version, kind);

    let mut managed = decode_live_or_new(old, new, subresource.is_some());

    let mut lhs = old.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let mut rhs = new.clone();
    for side in [&mut lhs, &mut rhs] {
        remove_managed_fields(side);
        // Go serializes non-pointer structs even when empty, so kube never
        // sees them appear; mirror that.
        if let (Some(k), Some(m)) = (kind_def, side.as_object_mut()) {
            for f in k.always_present {
                if m.get(*f).is_none_or(Value::is_null) {
                    m.insert(f.to_string(), json!({}));
                }
            }
        }
    }

    const WORKFLOW: &str = "current-operation";
    let reset = reset_set(reset_fields(kind_def, subresource));
    let cmp = match update_managers(&lhs, &rhs, &root, &mut managed, WORKFLOW, true, &reset) {
        Ok(cmp) => cmp,
        Err(_) => return out,
    };
    let taken = cmp.modified.union(&cmp.added).difference(&strip_set());
    if !taken.is_empty() {
        let id = manager_id(manager, Operation::Update, api_version, sub);
        let previous = managed
            .entries
            .get(&id)
            .map(|e| e.set.clone())
            .unwrap_or_default();
        managed.entries.insert(
            id,
            ManagerEntry {
                manager: manager.to_string(),
                operation: Operation::Update,
                api_version: api_version.to_string(),
                subresource: sub.to_string(),
                time: Some(now.to_string()),
                set: taken.union(&previous),
            },
        );
    }
    managed.drop_empty();
    managed.cap_update_managers(10);
    write_managed(&mut out, &managed);
    out
}

#[cfg(test)]
mod tests;
