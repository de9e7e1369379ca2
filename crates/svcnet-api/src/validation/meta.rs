//! `ObjectMeta` validation on create and update (`ValidateObjectMeta`, `ValidateObjectMetaUpdate`): names,
//! labels, annotations, owner references, finalizers and managed fields, with kube's message texts.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::{
    FIELD_IMMUTABLE_ERROR_MSG, NameValidator, validate_annotations, validate_labels, validate_namespace_name,
    validate_nonnegative_field, validate_qualified_name,
};
use crate::field::{BadValue, FieldError, Path, go_quote};

/// Splits an `apiVersion` as `schema.ParseGroupVersion` does; `None` means unparseable (kube then uses an
/// empty group and version).
fn parse_group_version(api_version: &str) -> Option<(&str, &str)> {
    if api_version.is_empty() {
        return Some(("", ""));
    }
    match api_version.matches('/').count() {
        0 => Some(("", api_version)),
        1 => api_version.split_once('/'),
        _ => None,
    }
}

fn go_opt_bool_ptr(v: Option<bool>) -> String {
    match v {
        // Go prints a pointer's address with %#v; there is no meaningful address here, so print the
        // pointee in a way that is still recognisable.
        Some(b) => format!("&{b}"),
        None => "(*bool)(nil)".to_string(),
    }
}

/// Renders an owner reference as Go's `%#v` would (approximately: pointers print their value).
fn go_owner_reference(r: &OwnerReference) -> String {
    format!(
        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
        go_quote(&r.api_version),
        go_quote(&r.kind),
        go_quote(&r.name),
        go_quote(&r.uid),
        go_opt_bool_ptr(r.controller),
        go_opt_bool_ptr(r.block_owner_deletion)
    )
}

fn validate_owner_reference(r: &OwnerReference, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (group, version) = parse_group_version(&r.api_version).unwrap_or(("", ""));
    if version.is_empty() {
        errs.push(FieldError::invalid(
            path.child("apiVersion"),
            r.api_version.as_str(),
            "version must not be empty",
        ));
    }
    if r.kind.is_empty() {
        errs.push(FieldError::invalid(
            path.child("kind"),
            r.kind.as_str(),
            "must not be empty",
        ));
    }
    if r.name.is_empty() {
        errs.push(FieldError::invalid(
            path.child("name"),
            r.name.as_str(),
            "must not be empty",
        ));
    }
    if r.uid.is_empty() {
        errs.push(FieldError::invalid(
            path.child("uid"),
            r.uid.as_str(),
            "must not be empty",
        ));
    }
    // BannedOwners: core/v1 Events may not own anything.
    if group.is_empty() && version == "v1" && r.kind == "Event" {
        errs.push(FieldError::invalid(
            path,
            BadValue::Raw(go_owner_reference(r)),
            "/v1, Kind=Event is disallowed from being an owner",
        ));
    }
    errs
}

/// `ValidateOwnerReferences`: required parts, banned owners, and at most one controller.
pub fn validate_owner_references(refs: &[OwnerReference], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        errs.extend(validate_owner_reference(r, path));
        if r.controller == Some(true) {
            let current = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => {
                    let all: Vec<String> = refs.iter().map(go_owner_reference).collect();
                    errs.push(FieldError::invalid(
                        path,
                        BadValue::Raw(format!("[]v1.OwnerReference{{{}}}", all.join(", "))),
                        format!(
                            "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                        ),
                    ));
                }
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// Renders a string list as Go's `%#v` does, including the nil case.
pub fn go_string_list(items: Option<&[String]>) -> BadValue {
    match items {
        None => BadValue::Raw("[]string(nil)".to_string()),
        Some(items) => {
            let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
            BadValue::Raw(format!("[]string{{{}}}", quoted.join(", ")))
        }
    }
}

/// `ValidateFinalizerName` (apimachinery): a qualified name.
pub fn validate_finalizer_name(name: &str, path: &Path) -> Vec<FieldError> {
    validate_qualified_name(name, path)
}

/// Finalizer names kube knows without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `validateKubeFinalizerName` (core API group): a qualified name that is either a standard finalizer or
/// domain-prefixed.
pub fn validate_kube_finalizer_name(name: &str, path: &Path) -> Vec<FieldError> {
    let errs = validate_finalizer_name(name, path);
    if errs.is_empty() && !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        return vec![FieldError::invalid(
            path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        )];
    }
    errs
}

/// `ValidateFinalizers` (apimachinery): each name (reported at the list path, as kube does) and the
/// `orphan`/`foregroundDeletion` conflict.
pub fn validate_finalizers(finalizers: &[String], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in finalizers {
        errs.extend(validate_finalizer_name(f, path));
    }
    let orphan = finalizers.iter().any(|f| f == "orphan");
    let foreground = finalizers.iter().any(|f| f == "foregroundDeletion");
    if orphan && foreground {
        errs.push(FieldError::invalid(
            path,
            go_string_list(Some(finalizers)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

fn validate_managed_fields(meta: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, entry) in meta.managed_fields.iter().flatten().enumerate() {
        let p = path.index(i);
        let op = entry.operation.as_deref().unwrap_or("");
        if op != "Apply" && op != "Update" {
            errs.push(FieldError::invalid(
                p.child("operation"),
                op,
                "must be `Apply` or `Update`",
            ));
        }
        let ft = entry.fields_type.as_deref().unwrap_or("");
        if !ft.is_empty() && ft != "FieldsV1" {
            errs.push(FieldError::invalid(
                p.child("fieldsType"),
                ft,
                "must be `FieldsV1`",
            ));
        }
        let manager = entry.manager.as_deref().unwrap_or("");
        if manager.len() > 128 {
            errs.push(FieldError::too_long(p.child("manager"), 128));
        }
        if manager.chars().any(|c| c.is_control()) {
            errs.push(FieldError::invalid(
                p.child("manager"),
                manager,
                "must only contain printable characters",
            ));
        }
        if entry.subresource.as_deref().unwrap_or("").len() > 256 {
            errs.push(FieldError::too_long(p.child("subresource"), 256));
        }
    }
    errs
}

fn opt_str(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// The parts of `ObjectMeta` validation shared by create and update.
fn validate_object_meta_common(meta: &ObjectMeta, requires_namespace: bool, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = opt_str(&meta.namespace);
    if requires_namespace {
        if ns.is_empty() {
            errs.push(FieldError::required(path.child("namespace"), ""));
        } else {
            for msg in validate_namespace_name(ns, false) {
                errs.push(FieldError::invalid(path.child("namespace"), ns, msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }
    errs.extend(validate_nonnegative_field(
        meta.generation.unwrap_or(0),
        &path.child("generation"),
    ));
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(validate_annotations(annotations, &path.child("annotations")));
    }
    errs.extend(validate_owner_references(
        meta.owner_references.as_deref().unwrap_or(&[]),
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        meta.finalizers.as_deref().unwrap_or(&[]),
        &path.child("finalizers"),
    ));
    errs.extend(validate_managed_fields(meta, &path.child("managedFields")));
    errs
}

fn kube_finalizer_errors(meta: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let fpath = path.child("finalizers");
    meta.finalizers
        .iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, f)| validate_kube_finalizer_name(f, &fpath.index(i)))
        .collect()
}

/// `ValidateObjectMeta` as the core API group applies it on create: `generateName` and `name` formats
/// (per kind, via `name_fn`), namespace, generation, labels, annotations, owner references, finalizers
/// (both apimachinery's check at `finalizers` and core's per-item check at `finalizers[i]`) and managed
/// fields. Name generation is expected to have happened already.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    requires_namespace: bool,
    name_fn: NameValidator,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = opt_str(&meta.generate_name);
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(FieldError::invalid(
                path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    let name = opt_str(&meta.name);
    if name.is_empty() {
        errs.push(FieldError::required(
            path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_fn(name, false) {
            errs.push(FieldError::invalid(path.child("name"), name, msg));
        }
    }
    errs.extend(validate_object_meta_common(meta, requires_namespace, path));
    errs.extend(kube_finalizer_errors(meta, path));
    errs
}

/// Formats a timestamp as Go's `time.Time.String()` does for UTC (`2006-01-02 15:04:05.999999999 +0000
/// UTC`), which is how kube prints a changed `creationTimestamp`.
pub fn go_time_string(t: &Time) -> String {
    let ts = t.0;
    let base = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = ts.subsec_nanosecond();
    let frac = if nanos > 0 {
        let s = format!(".{:09}", nanos);
        s.trim_end_matches('0').to_string()
    } else {
        String::new()
    };
    format!("{base}{frac} +0000 UTC")
}

fn time_value(t: Option<&Time>) -> BadValue {
    match t {
        Some(t) => BadValue::Raw(go_time_string(t)),
        None => BadValue::Raw("0001-01-01 00:00:00 +0000 UTC".to_string()),
    }
}

fn time_ptr_value(t: Option<&Time>) -> BadValue {
    match t {
        Some(t) => BadValue::Raw(go_time_string(t)),
        None => BadValue::Null,
    }
}

/// `ValidateObjectMetaUpdate` as the core API group applies it: no new finalizers while deleting,
/// `resourceVersion` present, generation not decremented, immutable identity fields, then the same
/// format checks as on create (except the name format).
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_set: BTreeSet<&String> = old.finalizers.iter().flatten().collect();
        let extra: BTreeSet<&String> = new
            .finalizers
            .iter()
            .flatten()
            .filter(|f| !old_set.contains(f))
            .collect();
        if !extra.is_empty() {
            let list: Vec<String> = extra.into_iter().cloned().collect();
            let rendered = match go_string_list(Some(&list)) {
                BadValue::Raw(s) => s,
                _ => String::new(),
            };
            errs.push(FieldError::forbidden(
                path.child("finalizers"),
                format!("no new finalizers can be added if the object is being deleted, found new finalizers {rendered}"),
            ));
        }
    }
    let rv = opt_str(&new.resource_version);
    if rv.is_empty() {
        errs.push(FieldError::invalid(
            path.child("resourceVersion"),
            rv,
            "must be specified for an update",
        ));
    }
    let (new_gen, old_gen) = (new.generation.unwrap_or(0), old.generation.unwrap_or(0));
    if new_gen < old_gen {
        errs.push(FieldError::invalid(
            path.child("generation"),
            new_gen,
            "must not be decremented",
        ));
    }
    for (field, n, o) in [
        ("name", &new.name, &old.name),
        ("namespace", &new.namespace, &old.namespace),
        ("uid", &new.uid, &old.uid),
    ] {
        if opt_str(n) != opt_str(o) {
            errs.push(FieldError::invalid(
                path.child(field),
                opt_str(n),
                FIELD_IMMUTABLE_ERROR_MSG,
            ));
        }
    }
    if new.creation_timestamp != old.creation_timestamp {
        errs.push(FieldError::invalid(
            path.child("creationTimestamp"),
            time_value(new.creation_timestamp.as_ref()),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    if new.deletion_timestamp != old.deletion_timestamp {
        errs.push(FieldError::invalid(
            path.child("deletionTimestamp"),
            time_ptr_value(new.deletion_timestamp.as_ref()),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds {
        let v = match new.deletion_grace_period_seconds {
            Some(v) => BadValue::Int(v),
            None => BadValue::Null,
        };
        errs.push(FieldError::invalid(
            path.child("deletionGracePeriodSeconds"),
            v,
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
    if let Some(labels) = &new.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }
    if let Some(annotations) = &new.annotations {
        errs.extend(validate_annotations(annotations, &path.child("annotations")));
    }
    errs.extend(validate_owner_references(
        new.owner_references.as_deref().unwrap_or(&[]),
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        new.finalizers.as_deref().unwrap_or(&[]),
        &path.child("finalizers"),
    ));
    errs.extend(validate_managed_fields(new, &path.child("managedFields")));
    errs.extend(kube_finalizer_errors(new, path));
    errs
}

/// The metadata fix-ups kube-apiserver's generic registry applies before update validation
/// (`rest.BeforeUpdate`): an omitted `uid` is taken from the stored object, `creationTimestamp` changes are
/// silently ignored, and a set `deletionTimestamp` / `deletionGracePeriodSeconds` cannot be removed. Run this
/// before [`validate_object_meta_update`] to match what a client sees from a real cluster.
pub fn prepare_object_meta_for_update(new: &mut ObjectMeta, old: &ObjectMeta) {
    if opt_str(&new.uid).is_empty() {
        new.uid = old.uid.clone();
    }
    if old.creation_timestamp.is_some() {
        new.creation_timestamp = old.creation_timestamp.clone();
    }
    if old.deletion_timestamp.is_some() && new.deletion_timestamp != old.deletion_timestamp {
        new.deletion_timestamp = old.deletion_timestamp.clone();
    }
    if old.deletion_grace_period_seconds.is_some() && new.deletion_grace_period_seconds.is_none() {
        new.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    }
}
