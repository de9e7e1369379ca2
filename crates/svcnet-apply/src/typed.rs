//! Schema-aware walks over JSON objects, following structured-merge-diff's
//! typed operations: the field set of an object, the comparison of two
//! objects, the merge of an applied configuration into a live object, and
//! the removal of a set of fields.

use serde_json::{Map, Value};

use crate::path::{Path, PathElement, go_quote, path_string, values_equal};
use crate::schema::{ListKey, Resolved, Ty, TyExt};
use crate::set::FieldSet;

/// Which fields changed between two objects. A field is in at most one set.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    /// Fields present only in the old object.
    pub removed: FieldSet,
    /// Fields present in both, with different values.
    pub modified: FieldSet,
    /// Fields present only in the new object.
    pub added: FieldSet,
}

/// Computes the path element of a list item. Errors carry kube's texts.
fn item_element(_items: &Ty, keys: Option<&[ListKey]>, item: &Value) -> Result<PathElement, String> {
    match keys {
        Some(keys) => {
            let Value::Object(m) = item else {
                return Err(if item.is_null() {
                    "associative list with keys may not have a null element".into()
                } else {
                    "associative list with keys may not have non-map elements".into()
                });
            };
            let mut fields = Vec::new();
            for key in keys {
                if let Some(v) = m.get(key.name) {
                    fields.push((key.name.to_string(), v.clone()));
                } else if let Some(d) = &key.default {
                    fields.push((key.name.to_string(), d.clone()));
                }
            }
            if fields.is_empty() {
                let names: Vec<String> = keys.iter().map(|k| go_quote(k.name)).collect();
                return Err(format!(
                    "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
                    names.join(" ")
                ));
            }
            Ok(PathElement::key(fields))
        }
        None => match item {
            Value::Object(_) => Err("associative list without keys has an element that's a map type".into()),
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => Err("associative list without keys has an element that's an explicit null".into()),
            v => Ok(PathElement::Value(v.clone())),
        },
    }
}

fn prefixed(path: &Path, msg: &str) -> String {
    if path.is_empty() {
        msg.to_string()
    } else {
        format!("{}: {msg}", path_string(path))
    }
}

// ---------------------------------------------------------------- field set

/// The set of fields an object sets, as structured-merge-diff's `ToFieldSet`:
/// leaves, list items and map entries are members; struct fields only when
/// they are leaves, null or empty objects.
pub fn to_field_set(value: &Value, ty: &Ty) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    field_set_walk(value, ty, &mut Vec::new(), &mut set)?;
    Ok(set)
}

fn field_set_walk(value: &Value, ty: &Ty, path: &mut Path, set: &mut FieldSet) -> Result<(), String> {
    match ty.resolve(Some(value)) {
        Resolved::Leaf => {
            set.insert(path);
        }
        Resolved::Object { ty, named } => {
            let Value::Object(m) = value else { return Ok(()) };
            for (k, v) in m {
                path.push(PathElement::Field(k.clone()));
                field_set_walk(v, ty.field(k), path, set)?;
                let empty = v.is_null() || v.as_object().is_some_and(Map::is_empty);
                if empty || !named {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Resolved::List { items, keys } => {
            let Value::Array(list) = value else { return Ok(()) };
            let mut pes = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                let pe = item_element(items, keys, item)
                    .map_err(|e| prefixed(path, &format!("element {i}: {e}")))?;
                pes.push(pe);
            }
            for (i, (pe, item)) in pes.iter().zip(list).enumerate() {
                // Duplicated items are owned as a whole, by their key only.
                let duplicated = pes.iter().enumerate().any(|(j, other)| j != i && other == pe);
                path.push(pe.clone());
                if !duplicated {
                    field_set_walk(item, items, path, set)?;
                }
                set.insert(path);
                path.pop();
            }
        }
    }
    Ok(())
}

/// Adds struct fields that have owned children as members themselves, as
/// structured-merge-diff's `EnsureNamedFieldsAreMembers`, so that removing
/// the set removes whole struct fields rather than leaving empty shells.
pub fn ensure_named_fields(set: &FieldSet, ty: &Ty) -> FieldSet {
    let mut out = FieldSet::new();
    for pe in set.members() {
        out.insert_member(pe.clone());
    }
    for (pe, child) in set.children() {
        let child_ty = match pe {
            PathElement::Field(name) => {
                if is_named(ty) {
                    out.insert_member(pe.clone());
                }
                ty.field(name).clone()
            }
            PathElement::Key(_) => match ty {
                Ty::List { items, .. } => (**items).clone(),
                _ => Ty::Untyped,
            },
            _ => Ty::Scalar,
        };
        out.set_child(pe.clone(), ensure_named_fields(child, &child_ty));
    }
    out
}

fn is_named(ty: &Ty) -> bool {
    matches!(ty, Ty::Struct(_) | Ty::Untyped)
}

// -------------------------------------------------------------- comparison

/// Compares two objects field by field.
pub fn compare(lhs: &Value, rhs: &Value, ty: &Ty) -> Comparison {
    let mut cmp = Comparison::default();
    compare_walk(Some(lhs), Some(rhs), ty, &mut Vec::new(), &mut cmp);
    cmp
}

fn compare_walk(lhs: Option<&Value>, rhs: Option<&Value>, ty: &Ty, path: &mut Path, cmp: &mut Comparison) {
    let shape = shape_of(ty, lhs, rhs);
    match shape {
        Resolved::Leaf => {
            match (lhs, rhs) {
                (None, Some(_)) => cmp.added.insert(path),
                (Some(_), None) => cmp.removed.insert(path),
                (Some(l), Some(r)) if !values_equal(l, r) => cmp.modified.insert(path),
                _ => {}
            }
            return;
        }
        Resolved::Object { ty, .. } => {
            let lm = lhs.and_then(Value::as_object);
            let rm = rhs.and_then(Value::as_object);
            for (k, lv, rv) in zip_maps(lm, rm) {
                path.push(PathElement::Field(k.to_string()));
                compare_walk(lv, rv, ty.field(k), path, cmp);
                path.pop();
            }
        }
        Resolved::List { items, keys } => {
            fn index<'v>(
                v: Option<&'v Value>,
                items: &Ty,
                keys: Option<&[ListKey]>,
            ) -> Vec<(PathElement, &'v Value)> {
                v.and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(|it| item_element(items, keys, it).ok().map(|pe| (pe, it)))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            let ls = index(lhs, items, keys);
            let rs = index(rhs, items, keys);
            let mut all: Vec<&PathElement> = Vec::new();
            for (pe, _) in ls.iter().chain(rs.iter()) {
                if !all.contains(&pe) {
                    all.push(pe);
                }
            }
            for pe in all {
                let lvals: Vec<&Value> = ls.iter().filter(|(p, _)| p == pe).map(|(_, v)| *v).collect();
                let rvals: Vec<&Value> = rs.iter().filter(|(p, _)| p == pe).map(|(_, v)| *v).collect();
                path.push(pe.clone());
                match (lvals.len(), rvals.len()) {
                    (l, r) if l <= 1 && r <= 1 => {
                        compare_walk(lvals.first().copied(), rvals.first().copied(), items, path, cmp)
                    }
                    (l, r) if l >= 2 && r >= 2 => {
                        let same = lvals.iter().zip(&rvals).all(|(a, b)| values_equal(a, b));
                        if !same {
                            cmp.modified.insert(path);
                        }
                    }
                    (l, _) if l >= 2 => {
                        if let Some(r) = rvals.first() {
                            compare_walk(None, Some(r), items, path, cmp);
                        }
                        cmp.removed.insert(path);
                    }
                    _ => {
                        if let Some(l) = lvals.first() {
                            compare_walk(Some(l), None, items, path, cmp);
                        }
                        cmp.added.insert(path);
                    }
                }
                path.pop();
            }
        }
    }
    // A granular container that appeared or vanished is itself a change.
    match (lhs, rhs) {
        (None, Some(_)) => cmp.added.insert(path),
        (Some(_), None) => cmp.removed.insert(path),
        _ => {}
    }
}

/// Resolves the shape for a pair of values: a leaf if the type or either
/// value says so, or if both sides are empty (which keeps the difference
/// between null and empty visible).
fn shape_of<'a>(ty: &'a Ty, lhs: Option<&Value>, rhs: Option<&Value>) -> Resolved<'a> {
    let absent = |v: Option<&Value>| matches!(v, None | Some(Value::Null));
    // An absent or null side takes whatever shape the other side has.
    let shape = match (absent(lhs), absent(rhs)) {
        (true, true) => return Resolved::Leaf,
        (true, false) => ty.resolve(rhs),
        (false, true) => ty.resolve(lhs),
        (false, false) => {
            let l = ty.resolve(lhs);
            let r = ty.resolve(rhs);
            if std::mem::discriminant(&l) != std::mem::discriminant(&r) {
                return Resolved::Leaf;
            }
            l
        }
    };
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if empty(lhs) && empty(rhs) {
        Resolved::Leaf
    } else {
        shape
    }
}

/// Keys of both maps: the left's in order, then the right's new ones.
fn zip_maps<'a>(
    l: Option<&'a Map<String, Value>>,
    r: Option<&'a Map<String, Value>>,
) -> Vec<(&'a str, Option<&'a Value>, Option<&'a Value>)> {
    let mut out = Vec::new();
    if let Some(l) = l {
        for (k, v) in l {
            out.push((k.as_str(), Some(v), r.and_then(|r| r.get(k))));
        }
    }
    if let Some(r) = r {
        for (k, v) in r {
            if l.is_none_or(|l| !l.contains_key(k)) {
                out.push((k.as_str(), None, Some(v)));
            }
        }
    }
    out
}

// ------------------------------------------------------------------- merge

/// Merges `rhs` (the applied configuration) into `lhs` (the live object):
/// leaves and atomic values from `rhs` win, granular objects merge by key,
/// associative lists by item key, keeping the live order around the
/// applied items as structured-merge-diff does.
pub fn merge(lhs: &Value, rhs: &Value, ty: &Ty) -> Result<Value, String> {
    Ok(merge_walk(Some(lhs), Some(rhs), ty, &mut Vec::new())?.unwrap_or(Value::Null))
}

fn merge_walk(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: &Ty,
    path: &mut Path,
) -> Result<Option<Value>, String> {
    match shape_of(ty, lhs, rhs) {
        Resolved::Leaf => Ok(rhs.or(lhs).cloned()),
        Resolved::Object { ty, .. } => {
            let lm = lhs.and_then(Value::as_object);
            let rm = rhs.and_then(Value::as_object);
            let mut out = Map::new();
            for (k, lv, rv) in zip_maps(lm, rm) {
                path.push(PathElement::Field(k.to_string()));
                let merged = merge_walk(lv, rv, ty.field(k), path)?;
                path.pop();
                if let Some(v) = merged {
                    out.insert(k.to_string(), v);
                }
            }
            Ok(if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            })
        }
        Resolved::List { items, keys } => merge_list(lhs, rhs, items, keys, path),
    }
}

type Indexed<'a> = Vec<(PathElement, &'a Value)>;
// Observed value per element; None marks a duplicated element.
type Observed<'a> = Vec<(PathElement, Option<&'a Value>)>;

fn index_list<'a>(
    list: Option<&'a Value>,
    items: &Ty,
    keys: Option<&[ListKey]>,
    allow_duplicates: bool,
    path: &Path,
) -> Result<(Indexed<'a>, Observed<'a>), String> {
    let mut pes = Vec::new();
    // Observed value per element; None marks a duplicated element, whose
    // copies are not merged.
    let mut observed: Vec<(PathElement, Option<&'a Value>)> = Vec::new();
    let Some(Value::Array(list)) = list else {
        return Ok((pes, observed));
    };
    for (i, item) in list.iter().enumerate() {
        let pe = item_element(items, keys, item).map_err(|e| prefixed(path, &format!("element {i}: {e}")))?;
        if let Some(slot) = observed.iter_mut().find(|(p, _)| *p == pe) {
            if !allow_duplicates {
                return Err(prefixed(path, &format!("duplicate entries for key {pe}")));
            }
            slot.1 = None;
        } else {
            observed.push((pe.clone(), Some(item)));
        }
        pes.push((pe, item));
    }
    Ok((pes, observed))
}

fn lookup<'a>(observed: &[(PathElement, Option<&'a Value>)], pe: &PathElement) -> Option<Option<&'a Value>> {
    observed.iter().find(|(p, _)| p == pe).map(|(_, v)| *v)
}

fn merge_list(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    items: &Ty,
    keys: Option<&[ListKey]>,
    path: &mut Path,
) -> Result<Option<Value>, String> {
    let (rhs_pes, observed_rhs) = index_list(rhs, items, keys, false, path)?;
    let (lhs_pes, observed_lhs) = index_list(lhs, items, keys, true, path)?;

    // Items present on both sides, in the applied order: they are emitted
    // in that order, with live-only items kept near their live neighbours.
    let mut shared: std::collections::VecDeque<&PathElement> = rhs_pes
        .iter()
        .map(|(pe, _)| pe)
        .filter(|pe| lookup(&observed_lhs, pe).is_some())
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<&PathElement> = Vec::new();
    let mut out = Vec::new();

    let merge_item = |pe: &PathElement, l: Option<&Value>, r: Option<&Value>, path: &mut Path| {
        path.push(pe.clone());
        let res = merge_walk(l, r, items, path);
        path.pop();
        res
    };

    let (mut li, mut ri) = (0, 0);
    while li < lhs_pes.len() || ri < rhs_pes.len() {
        if let (Some((lpe, _)), Some((rpe, _))) = (lhs_pes.get(li), rhs_pes.get(ri)) {
            if lpe == rpe {
                merged_rhs.push(lpe);
                let l = lookup(&observed_lhs, lpe).flatten();
                let r = lookup(&observed_rhs, lpe).flatten();
                if let Some(v) = merge_item(lpe, l, r, path)? {
                    out.push(v);
                }
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if lookup(&observed_rhs, lpe).is_some() && next_shared.is_some_and(|n| n != lpe) {
                // A shared item, but not the one wanted in this round.
                li += 1;
                continue;
            }
        }
        if let Some((lpe, litem)) = lhs_pes.get(li) {
            if lookup(&observed_rhs, lpe).is_none() {
                if let Some(v) = merge_item(lpe, Some(litem), None, path)? {
                    out.push(v);
                }
                li += 1;
                continue;
            } else if merged_rhs.contains(&lpe) {
                li += 1;
            }
        }
        if let Some((rpe, _)) = rhs_pes.get(ri) {
            merged_rhs.push(rpe);
            let l = lookup(&observed_lhs, rpe).flatten();
            let r = lookup(&observed_rhs, rpe).flatten();
            if let Some(v) = merge_item(rpe, l, r, path)? {
                out.push(v);
            }
            ri += 1;
            if next_shared.is_some_and(|n| n == rpe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(if out.is_empty() {
        None
    } else {
        Some(Value::Array(out))
    })
}

// ------------------------------------------------------------------ remove

/// Removes the fields of `set` from `value`. A container emptied by the
/// removal (or atomic, with something below it removed) disappears, as it
/// would once kube turns the null it leaves into an omitted field.
pub fn remove_items(value: &Value, ty: &Ty, set: &FieldSet) -> Value {
    remove_walk(value, ty, set).unwrap_or(Value::Object(Map::new()))
}

fn remove_walk(value: &Value, ty: &Ty, set: &FieldSet) -> Option<Value> {
    match ty.resolve(Some(value)) {
        Resolved::Leaf => match value {
            Value::Object(_) | Value::Array(_) => None,
            v => Some(v.clone()),
        },
        Resolved::Object { ty, .. } => {
            let Value::Object(m) = value else {
                return Some(value.clone());
            };
            let mut out = Map::new();
            for (k, v) in m {
                let pe = PathElement::Field(k.clone());
                if set.has(std::slice::from_ref(&pe)) {
                    continue;
                }
                match set.with_prefix(&pe) {
                    Some(sub) => {
                        if let Some(v) = remove_walk(v, ty.field(k), sub) {
                            out.insert(k.clone(), v);
                        }
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            }
        }
        Resolved::List { items, keys } => {
            let Value::Array(list) = value else {
                return Some(value.clone());
            };
            let mut out = Vec::new();
            for item in list {
                let Ok(pe) = item_element(items, keys, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has(std::slice::from_ref(&pe)) {
                    continue;
                }
                match set.with_prefix(&pe) {
                    Some(sub) => {
                        if let Some(v) = remove_walk(item, items, sub) {
                            out.push(v);
                        }
                    }
                    None => out.push(item.clone()),
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Array(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Ty {
        Ty::Struct("Service")
    }

    fn fv1(set: &FieldSet) -> String {
        serde_json::to_string(&set.to_fields_v1()).unwrap()
    }

    #[test]
    fn field_set_of_applied_config() {
        let cfg = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "labels": {"app": "a"}},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}
        });
        let set = to_field_set(&cfg, &svc()).unwrap();
        assert_eq!(
            fv1(&set),
            r#"{"f:apiVersion":{},"f:kind":{},"f:metadata":{"f:labels":{"f:app":{}},"f:name":{}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:targetPort":{}}},"f:selector":{}}}"#
        );
    }

    #[test]
    fn field_set_errors_name_the_path() {
        // A defaulted key (protocol) makes a key on its own, as in kube.
        assert!(to_field_set(&json!({"spec": {"ports": [{"name": "x"}]}}), &svc()).is_ok());
        let pod = json!({"spec": {"containers": [{"image": "x"}]}});
        let err = to_field_set(&pod, &Ty::Struct("Pod")).unwrap_err();
        assert_eq!(
            err,
            ".spec.containers: element 0: associative list with keys has an element that omits all key fields [\"name\"] (and doesn't have default values for any key fields)"
        );
        let cfg = json!({"metadata": {"finalizers": [{"a": 1}]}});
        assert!(to_field_set(&cfg, &svc()).is_err());
    }

    #[test]
    fn compare_reports_containers_and_leaves() {
        let a = json!({"spec": {"ports": [{"port": 80, "targetPort": 1}]}});
        let b = json!({"spec": {"ports": [{"port": 80, "targetPort": 2}, {"port": 81}]}, "metadata": {"labels": {"x": "y"}}});
        let c = compare(&a, &b, &svc());
        assert_eq!(
            fv1(&c.modified),
            r#"{"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{"f:targetPort":{}}}}}"#
        );
        assert_eq!(
            fv1(&c.added),
            r#"{"f:metadata":{".":{},"f:labels":{".":{},"f:x":{}}},"f:spec":{"f:ports":{"k:{\"port\":81,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}}}}"#
        );
        assert!(c.removed.is_empty());
        let back = compare(&b, &a, &svc());
        assert_eq!(back.removed, c.added);
    }

    #[test]
    fn merge_lists_by_key_and_keeps_live_only_items() {
        let live = json!({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 443, "name": "b"}], "selector": {"x": "1", "y": "2"}}});
        let cfg = json!({"spec": {"ports": [{"port": 8080}, {"port": 80, "targetPort": 9}], "selector": {"z": "3"}}});
        let merged = merge(&live, &cfg, &svc()).unwrap();
        assert_eq!(
            merged,
            json!({"spec": {"ports": [{"port": 8080}, {"port": 80, "name": "a", "targetPort": 9}, {"port": 443, "name": "b"}], "selector": {"z": "3"}}})
        );
    }

    #[test]
    fn merge_rejects_duplicate_applied_keys() {
        let cfg = json!({"spec": {"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}});
        let err = merge(&json!({}), &cfg, &svc()).unwrap_err();
        assert_eq!(
            err,
            r#".spec.ports: duplicate entries for key [port=80,protocol="TCP"]"#
        );
    }

    #[test]
    fn remove_drops_emptied_containers() {
        let v = json!({"metadata": {"name": "n", "labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}]}});
        let mut set = FieldSet::new();
        set.insert(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
            PathElement::Field("a".into()),
        ]);
        set.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("ports".into()),
            PathElement::key(vec![
                ("port".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
        ]);
        assert_eq!(remove_items(&v, &svc(), &set), json!({"metadata": {"name": "n"}}));
    }

    #[test]
    fn ensure_named_fields_marks_struct_fields_only() {
        let mut set = FieldSet::new();
        let p = |v: &[&str]| {
            v.iter()
                .map(|s| PathElement::Field(s.to_string()))
                .collect::<Vec<_>>()
        };
        set.insert(&p(&["metadata", "labels", "a"]));
        let out = ensure_named_fields(&set, &svc());
        assert!(out.has(&p(&["metadata"])));
        assert!(out.has(&p(&["metadata", "labels"])));
        assert!(out.has(&p(&["metadata", "labels", "a"])));
        let deduced = ensure_named_fields(&set, &Ty::Deduced);
        assert!(!deduced.has(&p(&["metadata"])));
    }
}
