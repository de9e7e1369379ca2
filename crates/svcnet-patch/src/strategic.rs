//! Strategic merge patch (`application/strategic-merge-patch+json`) as
//! kube-apiserver applies it: apimachinery's `StrategicMergeMapPatch` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls` set.
//!
//! The algorithm follows `k8s.io/apimachinery/pkg/util/strategicpatch`
//! (`mergeMap`, `mergeSlice`, `mergePatchIntoOriginal`, ...), including its
//! ordering rules for merged lists, its quirks (new items of a merged list
//! are placed before the server-only items unless `$setElementOrder` says
//! otherwise; `$patch: delete` on a map leaves `{}`; `$patch: merge` is
//! rejected) and its error texts. Two deliberate differences, both because
//! kube decodes the result into a typed object and we store JSON:
//!
//! * directive keys and `null` map values are stripped from every value the
//!   patch contributes, so no `$patch`, `$retainKeys`, `$setElementOrder/...`
//!   or `$deleteFromPrimitiveList/...` key can reach the stored object;
//! * a `$setElementOrder` over lists that are empty on both sides is a no-op
//!   rather than Go's "no elements in any of the given slices" error.

use serde_json::{Map, Value};

use crate::error::PatchError;
use crate::gofmt::{go_list, go_lists, go_map, go_string_verb, go_type, json_kind};
use crate::schema::{PatchStrategy, TypeSchema, lookup_field, schema_for};

type Object = Map<String, Value>;
type Schema = Option<&'static TypeSchema>;
/// A list item with its identity (merge key value, or itself).
type Keyed = (Value, Value);

const DIRECTIVE: &str = "$patch";
const DELETE: &str = "delete";
const REPLACE: &str = "replace";
const MERGE: &str = "merge";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

const GO_MAP: &str = "map[string]interface {}";
const GO_LIST: &str = "[]interface {}";

/// Applies a strategic merge patch to `original`, with the patch metadata of
/// the object's `apiVersion` and `kind` (taken from `original`, or from
/// `patch` when `original` lacks them). Kinds without built-in metadata are
/// patched with every list atomic, as if no field had a patch strategy.
///
/// A `null` patch changes nothing; any other non-object patch, or a
/// non-object `original`, is an error.
pub fn strategic_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let schema = match type_of(original) {
        Some((api_version, kind)) => schema_for(api_version, kind),
        None => type_of(patch).and_then(|(api_version, kind)| schema_for(api_version, kind)),
    };
    strategic_merge_patch_with_schema(original, patch, schema)
}

/// Applies a strategic merge patch with explicit metadata (`None` means no
/// metadata: lists atomic, maps merged).
pub fn strategic_merge_patch_with_schema(
    original: &Value,
    patch: &Value,
    schema: Option<&'static TypeSchema>,
) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::InvalidDocument);
    };
    let patch = match patch {
        // kube decodes `null` into a nil map, which patches nothing.
        Value::Null => return Ok(Value::Object(original.clone())),
        Value::Object(patch) => patch,
        other => {
            return Err(PatchError::DecodeStrategicPatch(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(other)
            )));
        }
    };
    merge_map(original.clone(), patch.clone(), schema).map(Value::Object)
}

fn type_of(v: &Value) -> Option<(&str, &str)> {
    Some((v.get("apiVersion")?.as_str()?, v.get("kind")?.as_str()?))
}

/// The Go type a JSON value decodes to; apimachinery merges two values only
/// when these agree and replaces otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GoKind {
    Null,
    Bool,
    Int,
    Float,
    String,
    List,
    Map,
}

fn go_kind(v: &Value) -> GoKind {
    match v {
        Value::Null => GoKind::Null,
        Value::Bool(_) => GoKind::Bool,
        Value::Number(n) if n.is_f64() => GoKind::Float,
        Value::Number(_) => GoKind::Int,
        Value::String(_) => GoKind::String,
        Value::Array(_) => GoKind::List,
        Value::Object(_) => GoKind::Map,
    }
}

fn wrong_type(expected: &'static str, actual: &Value) -> PatchError {
    PatchError::WrongType {
        expected,
        actual: go_type(actual),
    }
}

fn no_merge_key(map: &Object, key: &str) -> PatchError {
    PatchError::MissingMergeKey {
        map: go_map(map),
        key: key.to_owned(),
    }
}

fn unknown_directive(directive: &Value, map: &Object) -> PatchError {
    PatchError::UnknownDirective {
        directive: go_string_verb(directive),
        map: go_map(map),
    }
}

/// The field name after `prefix/`; `None` when `key` is not of that form.
fn extract_key<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, tail) = key.split_once('/')?;
    (head == prefix).then_some(tail)
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Prepares a patch value that lands in the result without being merged.
/// Like apimachinery's `removeDirectives` a map carrying `$patch` is dropped
/// (`None`); other directive keys and `null` map values, which kube's typed
/// decoding would drop, are removed too.
fn sanitize(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(sanitize_object(map))),
        Value::Array(items) => Some(Value::Array(sanitize_list(items))),
        other => Some(other),
    }
}

fn sanitize_object(map: Object) -> Object {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| sanitize(v).map(|v| (k, v)))
        .collect()
}

fn sanitize_list(items: Vec<Value>) -> Vec<Value> {
    items.into_iter().filter_map(sanitize).collect()
}

/// apimachinery's `mergeMap`.
fn merge_map(mut original: Object, mut patch: Object, schema: Schema) -> Result<Object, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some(REPLACE) => {
                patch.shift_remove(DIRECTIVE);
                Ok(sanitize_object(patch))
            }
            Some(DELETE) => Ok(Object::new()),
            _ => Err(unknown_directive(directive, &patch)),
        };
    }

    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, schema)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field =
                extract_key(&key, DELETE_FROM_PRIMITIVE_LIST).ok_or(PatchError::BadPrimitiveListFormat)?;
            (field.to_owned(), true)
        } else {
            (key, false)
        };

        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }

        let Some(current) = original.get_mut(&key) else {
            // A deletion list for a missing list must not create it.
            if !is_delete_list && let Some(v) = sanitize(patch_value) {
                original.insert(key, v);
            }
            continue;
        };

        let merged = if go_kind(current) != go_kind(&patch_value) {
            if is_delete_list {
                continue;
            }
            sanitize(patch_value)
        } else {
            let (meta, sub) = lookup_field(schema, &key);
            match (std::mem::take(current), patch_value) {
                (Value::Object(cur), Value::Object(p)) => {
                    if meta.strategy == PatchStrategy::Replace {
                        Some(Value::Object(sanitize_object(p)))
                    } else {
                        Some(Value::Object(merge_map(cur, p, sub)?))
                    }
                }
                (Value::Array(cur), Value::Array(p)) => {
                    // Deletion lists apply whatever the field's strategy.
                    if meta.strategy == PatchStrategy::Merge || is_delete_list {
                        Some(Value::Array(merge_list(
                            cur,
                            p,
                            sub,
                            meta.merge_key,
                            is_delete_list,
                        )?))
                    } else {
                        Some(Value::Array(sanitize_list(p)))
                    }
                }
                (_, p) => sanitize(p),
            }
        };
        match merged {
            Some(v) => {
                original.insert(key, v);
            }
            None => {
                original.shift_remove(&key);
            }
        }
    }
    Ok(original)
}

/// apimachinery's `applyRetainKeysDirective`: drop every original key not
/// listed, after checking the patch only sets listed keys.
fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRetainKeysFormat);
    };
    let retained = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if !retained(k) {
            return Err(PatchError::BadRetainKeysFormat);
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

fn list_field<'a>(map: &'a Object, key: &str) -> Result<Option<&'a Vec<Value>>, PatchError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(other) => Err(wrong_type(GO_LIST, other)),
    }
}

/// apimachinery's `mergePatchIntoOriginal`: merges each list that has a
/// `$setElementOrder/<field>` and orders it by that list (patch items), then
/// the live order (server-only items).
fn apply_set_element_order(
    original: &mut Object,
    patch: &mut Object,
    schema: Schema,
) -> Result<(), PatchError> {
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in directive_keys {
        let Some(order) = patch.shift_remove(&directive_key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(wrong_type(GO_LIST, &order));
        };
        let field = extract_key(&directive_key, SET_ELEMENT_ORDER)
            .ok_or(PatchError::BadSetElementOrderFormat)?
            .to_owned();

        // A live `null` is no list to order; Go would fail on it.
        let original_list = match original.get(&field) {
            Some(Value::Null) => None,
            _ => list_field(original, &field)?.cloned(),
        };
        let patch_list = list_field(patch, &field)?.cloned();
        let (meta, sub) = lookup_field(schema, &field);
        validate_set_element_order(patch_list.as_deref().unwrap_or(&[]), &order, meta.merge_key)?;

        let live: &[Value] = original_list.as_deref().unwrap_or(&[]);
        let kind = element_kind(&[live, patch_list.as_deref().unwrap_or(&[])])?;
        let merged = match (&original_list, patch_list) {
            (None, None) => continue,
            (Some(live), None) => live.clone(),
            (None, Some(p)) => sanitize_list(p),
            (Some(live), Some(p)) => {
                if meta.strategy == PatchStrategy::Merge {
                    merge_list(live.clone(), p, sub, meta.merge_key, false)?
                } else {
                    sanitize_list(p)
                }
            }
        };

        let ordered = match kind {
            None => merged,
            Some(kind) => {
                // Lists of objects are ordered by merge key; apimachinery uses
                // the empty key when there is none, which then fails.
                let key = match (meta.merge_key, kind) {
                    (Some(k), _) => Some(k),
                    (None, GoKind::Map) => Some(""),
                    (None, _) => None,
                };
                let order_keys = item_keys(&order, key)?;
                let live_keys = item_keys(live, key)?;
                let (in_order, server_only) = partition(merged, &order_keys, key)?;
                normalize_order(in_order, server_only, &order_keys, &live_keys)
            }
        };
        original.insert(field.clone(), Value::Array(ordered));
        patch.shift_remove(&field);
    }
    Ok(())
}

/// apimachinery's `validatePatchWithSetOrderList`: the patch list (ignoring
/// deletions and directive items) must be a subsequence of the order list.
fn validate_set_element_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let merge_key = merge_key.filter(|k| !k.is_empty());
    let mut items = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if merge_key.is_some() {
            let Value::Object(m) = item else {
                return Err(wrong_type(GO_MAP, item));
            };
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some(DELETE) {
                continue;
            }
        }
        items.push(item);
    }
    let (mut p, mut s) = (0, 0);
    while let (Some(item), Some(ordered)) = (items.get(p), order.get(s)) {
        if item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)) {
            p += 1;
            continue;
        }
        if merge_key_value_equal(item, ordered, merge_key)? {
            p += 1;
        }
        s += 1;
    }
    // Patch items left over once the order list is exhausted are either
    // missing from it or out of order.
    if p < items.len() && s >= order.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch: go_list(patch_list),
            order: go_list(order),
        });
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, key: Option<&str>) -> Result<bool, PatchError> {
    let Some(key) = key else {
        return Ok(left == right);
    };
    let Value::Object(l) = left else {
        return Err(wrong_type(GO_MAP, left));
    };
    let Value::Object(r) = right else {
        return Err(wrong_type(GO_MAP, right));
    };
    let lv = l.get(key).ok_or_else(|| no_merge_key(l, key))?;
    let rv = r.get(key).ok_or_else(|| no_merge_key(r, key))?;
    Ok(lv == rv)
}

/// apimachinery's `sliceElementType`: all items of all lists must have one
/// type, which must not be a list. `None` when there are no items.
fn element_kind(lists: &[&[Value]]) -> Result<Option<GoKind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let k = go_kind(item);
        match kind {
            None if k == GoKind::List => return Err(PatchError::ListOfLists),
            None => kind = Some(k),
            Some(prev) if prev != k => return Err(PatchError::MixedListElements(go_lists(lists))),
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// The identity of a list item for ordering: its merge key value, or the item
/// itself for lists of primitives.
fn item_key(item: &Value, key: Option<&str>) -> Result<Value, PatchError> {
    match key {
        None => Ok(item.clone()),
        Some(k) => match item {
            Value::Object(m) => m.get(k).cloned().ok_or_else(|| no_merge_key(m, k)),
            other => Err(wrong_type(GO_MAP, other)),
        },
    }
}

fn item_keys(items: &[Value], key: Option<&str>) -> Result<Vec<Value>, PatchError> {
    items.iter().map(|i| item_key(i, key)).collect()
}

/// Splits `items` into those whose identity is in `keys` and the rest,
/// keeping each item's identity for the ordering that follows.
fn partition(
    items: Vec<Value>,
    keys: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Keyed>, Vec<Keyed>), PatchError> {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for item in items {
        let k = item_key(&item, key)?;
        if keys.contains(&k) {
            inside.push((k, item));
        } else {
            outside.push((k, item));
        }
    }
    Ok((inside, outside))
}

fn position(order: &[Value], k: &Value) -> Option<usize> {
    order.iter().position(|o| o == k)
}

/// apimachinery's `normalizeElementOrder`: patch items sorted by the patch
/// (or `$setElementOrder`) order, server-only items by the live order, then
/// interleaved: a server-only item goes first only while it precedes the
/// next patch item in the live list.
fn normalize_order(
    mut patch_items: Vec<Keyed>,
    mut server_only: Vec<Keyed>,
    patch_order: &[Value],
    server_order: &[Value],
) -> Vec<Value> {
    // Items missing from their order list keep their relative place at the
    // end; Go's comparator is not a strict order for them.
    patch_items.sort_by_cached_key(|(k, _)| position(patch_order, k).unwrap_or(usize::MAX));
    server_only.sort_by_cached_key(|(k, _)| position(server_order, k).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((lk, _)), Some((rk, _))) => matches!(
                (position(server_order, lk), position(server_order, rk)),
                (Some(l), Some(r)) if l < r
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, item)) = next {
            out.push(item);
        }
    }
    out
}

/// apimachinery's `mergeSlice` (for lists with strategy merge, and for
/// `$deleteFromPrimitiveList`).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Schema,
    merge_key: Option<&'static str>,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = element_kind(&[&original, &patch])? else {
        return Ok(original);
    };

    if kind != GoKind::Map {
        if is_delete_list {
            return Ok(original.into_iter().filter(|v| !patch.contains(v)).collect());
        }
        let live_keys = item_keys(&original, merge_key)?;
        let patch_keys = item_keys(&patch, merge_key)?;
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.into_iter().chain(patch) {
            if !merged.contains(&item) {
                merged.push(item);
            }
        }
        let (in_patch, server_only) = partition(merged, &patch_keys, merge_key)?;
        return Ok(normalize_order(in_patch, server_only, &patch_keys, &live_keys));
    }

    let Some(key) = merge_key.filter(|k| !k.is_empty()) else {
        return Err(PatchError::NoMergeKeyDeclared(
            schema.map(|s| s.name).unwrap_or_default().to_owned(),
        ));
    };
    let (original, patch) = split_special_items(original, patch, key)?;
    let patch_keys = item_keys(&patch, Some(key))?;
    let live_keys = item_keys(&original, Some(key))?;

    let mut merged = original;
    for (item, item_key) in patch.into_iter().zip(&patch_keys) {
        let Value::Object(item) = item else {
            continue;
        };
        let slot = merged
            .iter()
            .position(|m| m.get(key) == Some(item_key))
            .and_then(|i| merged.get_mut(i));
        match slot {
            Some(slot) => match std::mem::take(slot) {
                Value::Object(cur) => *slot = Value::Object(merge_map(cur, item, schema)?),
                other => *slot = other,
            },
            None => merged.extend(sanitize(Value::Object(item))),
        }
    }
    let (in_patch, server_only) = partition(merged, &patch_keys, Some(key))?;
    Ok(normalize_order(in_patch, server_only, &patch_keys, &live_keys))
}

/// apimachinery's `mergeSliceWithSpecialElements`: applies `$patch: delete`
/// items to the live list and `$patch: replace` to the whole list; returns
/// the live list and the remaining patch items.
fn split_special_items(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some((map, directive)) = item.as_object().and_then(|m| m.get(DIRECTIVE).map(|d| (m, d))) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE) => {
                let target = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                original.retain(|o| o.get(key) != Some(target));
            }
            // Keep scanning so later directive items are still validated.
            Some(REPLACE) => replace = true,
            Some(MERGE) => return Err(PatchError::MergeDirectiveInList),
            _ => return Err(unknown_directive(directive, map)),
        }
    }
    if replace {
        Ok((sanitize_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;
    use serde_json::json;

    /// A schema shaped like apimachinery's own test type, for the generic
    /// cases: `mergingList` merged by `name`, `mergingIntList` merged as a
    /// set, the `nonMerging*` lists atomic, `replacingMap` replaced whole.
    static ITEM: TypeSchema = TypeSchema {
        name: "mergeItem",
        fields: &[
            Field::merge("mergingList", "name").of(&ITEM),
            Field::merge_set("mergingIntList"),
            Field::merge("mergeItemPtr", "name").of(&ITEM),
            Field::atomic("nonMergingList"),
            Field::atomic("nonMergingIntList"),
            Field::nested("simpleMap", &ITEM),
            Field {
                name: "replacingMap",
                meta: crate::schema::FieldMeta {
                    strategy: PatchStrategy::Replace,
                    merge_key: None,
                    retain_keys: false,
                },
                schema: None,
            },
        ],
    };

    fn generic(original: Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_patch_with_schema(&original, &patch, Some(&ITEM))
    }

    fn smp(original: &Value, patch: Value) -> Value {
        strategic_merge_patch(original, &patch).unwrap()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "labels": {"app": "web", "tier": "fe"},
                "finalizers": ["a", "b"],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}
                ]
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "args": ["--x", "--y"]
                    },
                    {"name": "sidecar", "image": "side:1"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k1", "operator": "Exists"}]
            },
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"}
                ],
                "podIPs": [{"ip": "10.0.0.1"}]
            }
        })
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "https", "port": 443, "targetPort": 8443}
                ],
                "selector": {"app": "web"}
            },
            "status": {"conditions": [{"type": "A", "status": "True"}]}
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "c:1", "env": [{"name": "A", "value": "1"}]}]}
                }
            },
            "status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}
        })
    }

    fn has_directive_keys(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| is_directive_key(k) || has_directive_keys(v)),
            Value::Array(items) => items.iter().any(has_directive_keys),
            _ => false,
        }
    }

    // ---- kinds and their merge keys ----------------------------------------

    #[test]
    fn service_ports_merge_by_port() {
        let out = smp(
            &service(),
            json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 9443}
            ])
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn new_merge_list_items_go_before_server_only_items() {
        // apimachinery places items the live list does not know first when
        // no $setElementOrder is given (kubectl always sends one).
        let out = smp(
            &service(),
            json!({"spec": {"ports": [{"port": 8080, "name": "alt"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"port": 8080, "name": "alt"},
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443}
            ])
        );
    }

    #[test]
    fn service_status_conditions_merge_by_type() {
        let out = smp(
            &service(),
            json!({"status": {"conditions": [{"type": "B", "status": "False"}, {"type": "A", "status": "False"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "B", "status": "False"}, {"type": "A", "status": "False"}])
        );
    }

    #[test]
    fn pod_containers_merge_by_name() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(containers[0]["name"], json!("app"));
        assert_eq!(containers[0]["image"], json!("app:1"));
        assert_eq!(containers[1], json!({"name": "sidecar", "image": "side:2"}));
    }

    #[test]
    fn container_env_merges_by_name_and_args_are_atomic() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                "args": ["--z"]
            }]}}),
        );
        let app = &out["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(app["args"], json!(["--z"]));
        assert_eq!(app["ports"], json!([{"containerPort": 8080, "protocol": "TCP"}]));
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 8080, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn delete_directive_removes_env_var() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}])
        );
    }

    #[test]
    fn delete_directive_removes_container() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"name": "app", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "sidecar", "image": "side:1"}])
        );
    }

    #[test]
    fn replace_directive_replaces_merge_list() {
        let out = smp(
            &pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "o:1"}])
        );
    }

    #[test]
    fn tolerations_are_atomic() {
        let out = smp(
            &pod(),
            json!({"spec": {"tolerations": [{"key": "k2", "operator": "Exists"}]}}),
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "k2", "operator": "Exists"}])
        );
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = smp(&pod(), json!({"metadata": {"finalizers": ["b", "c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(&pod(), json!({"metadata": {"finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn finalizers_delete_from_primitive_list() {
        let out = smp(
            &pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert!(!has_directive_keys(&out));
    }

    #[test]
    fn finalizers_add_and_delete_in_one_patch() {
        let out = smp(
            &pod(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["b", "c"],
                "finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["a"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let out = smp(
            &pod(),
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true},
                {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u2"}
            ]}}),
        );
        let refs = out["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0]["controller"], json!(true));
        assert_eq!(refs[1]["uid"], json!("u2"));
    }

    #[test]
    fn pod_status_conditions_and_ips() {
        let out = smp(
            &pod(),
            json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "podIPs": [{"ip": "fd00::1"}]
            }}),
        );
        assert_eq!(out["status"]["phase"], json!("Running"));
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}])
        );
        assert_eq!(
            out["status"]["podIPs"],
            json!([{"ip": "fd00::1"}, {"ip": "10.0.0.1"}])
        );
    }

    #[test]
    fn node_addresses_and_conditions_merge_by_type() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.1.0.1"}, {"type": "Hostname", "address": "n"}],
                "conditions": [{"type": "Ready", "status": "False"}]
            }
        });
        let out = smp(
            &node,
            json!({
                "spec": {"podCIDRs": ["fd00::/64"], "taints": []},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "10.1.0.2"}],
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            }),
        );
        assert_eq!(out["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
        assert_eq!(out["spec"]["taints"], json!([]));
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.1.0.2"}, {"type": "Hostname", "address": "n"}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn deployment_template_reuses_pod_spec_metadata() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "c:1", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}])
        );
    }

    #[test]
    fn deployment_status_conditions_merge_by_type() {
        let out = smp(
            &deployment(),
            json!({"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "X"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "False", "reason": "X"}
            ])
        );
    }

    #[test]
    fn deployment_strategy_retain_keys() {
        let out = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["replicas"], json!(2));
    }

    #[test]
    fn replica_set_template_containers_merge() {
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}},
            "status": {"conditions": [{"type": "ReplicaFailure", "status": "True"}]}
        });
        let out = smp(
            &rs,
            json!({
                "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}},
                "status": {"conditions": [{"type": "ReplicaFailure", "status": "False"}]}
            }),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "ReplicaFailure", "status": "False"}])
        );
    }

    #[test]
    fn pod_volume_retain_keys_switches_source() {
        let out = smp(
            &pod(),
            json!({"spec": {"volumes": [{"name": "data", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cm"}}])
        );
    }

    #[test]
    fn ephemeral_containers_merge_by_name() {
        let mut p = pod();
        p["spec"]["ephemeralContainers"] =
            json!([{"name": "dbg", "image": "busybox", "env": [{"name": "X", "value": "1"}]}]);
        let out = smp(
            &p,
            json!({"spec": {"ephemeralContainers": [{"name": "dbg", "env": [{"name": "Y", "value": "2"}]}]}}),
        );
        assert_eq!(
            out["spec"]["ephemeralContainers"],
            json!([{"name": "dbg", "image": "busybox", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}])
        );
    }

    #[test]
    fn endpoint_slice_lists_are_atomic_but_metadata_merges() {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "s", "finalizers": ["x"]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
            "ports": [{"port": 80}]
        });
        let out = smp(
            &slice,
            json!({"metadata": {"finalizers": ["y"]}, "endpoints": [{"addresses": ["10.0.0.3"]}]}),
        );
        assert_eq!(out["endpoints"], json!([{"addresses": ["10.0.0.3"]}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["y", "x"]));
    }

    #[test]
    fn lease_spec_fields_are_replaced() {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        });
        let out = smp(
            &lease,
            json!({"spec": {"holderIdentity": "b", "renewTime": "2024-01-01T00:00:00.000000Z"}}),
        );
        assert_eq!(
            out["spec"],
            json!({"holderIdentity": "b", "leaseDurationSeconds": 15, "renewTime": "2024-01-01T00:00:00.000000Z"})
        );
    }

    #[test]
    fn endpoints_subsets_are_atomic() {
        let ep = json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]
        });
        let out = smp(&ep, json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}));
        assert_eq!(out["subsets"], json!([{"addresses": [{"ip": "10.0.0.2"}]}]));
    }

    #[test]
    fn namespace_spec_finalizers_are_atomic() {
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "finalizers": ["m"]},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active", "conditions": [{"type": "A", "status": "True"}]}
        });
        let out = smp(
            &ns,
            json!({
                "metadata": {"finalizers": ["n"]},
                "spec": {"finalizers": ["other"]},
                "status": {"conditions": [{"type": "B", "status": "True"}]}
            }),
        );
        assert_eq!(out["spec"]["finalizers"], json!(["other"]));
        // New set members go first unless $setElementOrder says otherwise.
        assert_eq!(out["metadata"]["finalizers"], json!(["n", "m"]));
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "B", "status": "True"}, {"type": "A", "status": "True"}])
        );
    }

    #[test]
    fn event_is_merged_with_metadata_only() {
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "count": 1, "message": "m"});
        let out = smp(&ev, json!({"count": 2, "lastTimestamp": "t"}));
        assert_eq!(out["count"], json!(2));
        assert_eq!(out["lastTimestamp"], json!("t"));
    }

    #[test]
    fn unknown_kinds_have_atomic_lists() {
        let cr = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "finalizers": ["a"]},
            "spec": {"items": [{"name": "a", "v": 1}], "nested": {"x": 1, "y": 2}}
        });
        let out = smp(
            &cr,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "b"}], "nested": {"y": null, "z": 3}}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"]["items"], json!([{"name": "b"}]));
        assert_eq!(out["spec"]["nested"], json!({"x": 1, "z": 3}));
    }

    #[test]
    fn kind_comes_from_patch_when_original_has_none() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "a"}]}});
        let out = strategic_merge_patch(
            &original,
            &json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 81}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 81}, {"port": 80, "name": "a"}])
        );
    }

    // ---- maps, nulls and map directives ------------------------------------

    #[test]
    fn null_deletes_and_unmatched_null_is_ignored() {
        let out = smp(
            &pod(),
            json!({"metadata": {"labels": {"tier": null, "new": null, "x": "y"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "x": "y"}));
        let out = smp(&pod(), json!({"status": null}));
        assert!(out.get("status").is_none());
    }

    #[test]
    fn nulls_inside_new_values_are_dropped() {
        let out = smp(
            &pod(),
            json!({"spec": {"securityContext": {"runAsUser": 1, "fsGroup": null}}}),
        );
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1}));
    }

    #[test]
    fn replace_directive_on_map() {
        let out = smp(
            &pod(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
    }

    #[test]
    fn delete_directive_on_map_leaves_empty_map() {
        let out = smp(&pod(), json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert_eq!(out["metadata"]["labels"], json!({}));
    }

    #[test]
    fn top_level_directives() {
        assert_eq!(smp(&pod(), json!({"$patch": "delete"})), json!({}));
        assert_eq!(
            smp(&pod(), json!({"$patch": "replace", "kind": "Pod", "x": null})),
            json!({"kind": "Pod"})
        );
    }

    #[test]
    fn merge_directive_on_map_is_rejected_like_kube() {
        let err = strategic_merge_patch(
            &pod(),
            &json!({"metadata": {"labels": {"$patch": "merge", "a": "b"}}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown patch type: merge in map: map[$patch:merge a:b]"
        );
        assert_eq!(err.http_status(), 500);
    }

    #[test]
    fn unknown_directive_value_is_rejected() {
        let err = strategic_merge_patch(&pod(), &json!({"spec": {"$patch": 7}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown patch type: %!s(int64=7) in map: map[$patch:7]"
        );
    }

    #[test]
    fn new_map_with_directive_is_dropped_like_kube() {
        let out = smp(
            &pod(),
            json!({"spec": {"dnsConfig": {"$patch": "replace", "nameservers": ["1.1.1.1"]}}}),
        );
        assert!(out["spec"].get("dnsConfig").is_none());
    }

    #[test]
    fn replace_strategy_map_is_replaced() {
        let out = generic(
            json!({"replacingMap": {"a": 1, "b": 2}, "simpleMap": {"a": 1, "b": 2}}),
            json!({"replacingMap": {"c": 3}, "simpleMap": {"c": 3}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"replacingMap": {"c": 3}, "simpleMap": {"a": 1, "b": 2, "c": 3}})
        );
    }

    #[test]
    fn type_changes_replace() {
        let out = smp(
            &pod(),
            json!({"spec": {"tolerations": {"not": "a list"}, "containers": "x"}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!({"not": "a list"}));
        assert_eq!(out["spec"]["containers"], json!("x"));
        let out = generic(json!({"a": 1}), json!({"a": 1.5})).unwrap();
        assert_eq!(out, json!({"a": 1.5}));
    }

    #[test]
    fn key_order_is_preserved() {
        let out = smp(
            &pod(),
            json!({"zzz": 1, "metadata": {"name": "q"}, "kind": "Pod"}),
        );
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec", "status", "zzz"]);
        let meta: Vec<&String> = out["metadata"].as_object().unwrap().keys().collect();
        assert_eq!(meta, ["name", "labels", "finalizers", "ownerReferences"]);
    }

    #[test]
    fn empty_patch_is_identity() {
        assert_eq!(smp(&pod(), json!({})), pod());
        assert_eq!(strategic_merge_patch(&pod(), &Value::Null).unwrap(), pod());
    }

    #[test]
    fn bad_documents_and_bodies() {
        assert_eq!(
            strategic_merge_patch(&json!([1]), &json!({})).unwrap_err(),
            PatchError::InvalidDocument
        );
        let err = strategic_merge_patch(&pod(), &json!("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "json: cannot unmarshal string into Go value of type map[string]interface {}"
        );
        assert_eq!(err.http_status(), 400);
    }

    // ---- list merging (apimachinery's generic cases) -------------------------

    #[test]
    fn scalars_merge_uniquely() {
        let out = generic(
            json!({"mergingIntList": [1, 2]}),
            json!({"mergingIntList": [2, 3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [1, 2, 3]}));
        let out = generic(
            json!({"mergingIntList": [1, 1, 2]}),
            json!({"mergingIntList": [2]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [1, 2]}));
    }

    #[test]
    fn delete_all_duplicates_in_merging_list() {
        let out = generic(
            json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingList": [{"name": 2, "value": "a"}]}));
    }

    #[test]
    fn delete_missing_item_is_a_no_op() {
        let out = generic(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 9, "$patch": "delete"}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingList": [{"name": 1}]}));
    }

    #[test]
    fn replace_with_nothing_empties_the_list() {
        let out = generic(
            json!({"mergingList": [{"name": 1}, {"name": 2}]}),
            json!({"mergingList": [{"$patch": "replace"}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingList": []}));
    }

    #[test]
    fn empty_lists_merge_to_empty() {
        let out = generic(json!({"mergingList": []}), json!({"mergingList": []})).unwrap();
        assert_eq!(out, json!({"mergingList": []}));
        let out = generic(json!({"mergingList": [{"name": 1}]}), json!({"mergingList": []})).unwrap();
        assert_eq!(out, json!({"mergingList": [{"name": 1}]}));
    }

    #[test]
    fn nested_merging_lists() {
        let out = generic(
            json!({"mergingList": [{"name": 1, "mergingList": [{"name": "a", "v": 1}, {"name": "b"}]}]}),
            json!({"mergingList": [{"name": 1, "mergingList": [{"name": "a", "v": 2}], "nonMergingList": [{"x": 1}]}]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"mergingList": [{
                "name": 1,
                "mergingList": [{"name": "a", "v": 2}, {"name": "b"}],
                "nonMergingList": [{"x": 1}]
            }]})
        );
    }

    #[test]
    fn non_merging_lists_are_replaced() {
        let out = generic(
            json!({"nonMergingList": [{"name": 1}, {"name": 2}], "nonMergingIntList": [1, 2]}),
            json!({"nonMergingList": [{"name": 3}], "nonMergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"nonMergingList": [{"name": 3}], "nonMergingIntList": [3]})
        );
    }

    #[test]
    fn duplicate_patch_items_merge_into_one() {
        let out = generic(
            json!({"mergingList": [{"name": 1, "a": 1}]}),
            json!({"mergingList": [{"name": 1, "b": 2}, {"name": 1, "c": 3}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingList": [{"name": 1, "a": 1, "b": 2, "c": 3}]}));
    }

    #[test]
    fn delete_from_primitive_list_edge_cases() {
        // Missing items, a null live list and a missing live list are left alone.
        let out = generic(
            json!({"mergingIntList": [1, 2]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [1, 2]}));
        let out = generic(
            json!({"mergingIntList": null}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": null}));
        let out = generic(
            json!({"foo": ["bar"]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"foo": ["bar"]}));
        // Deletion lists apply to atomic lists too.
        let out = generic(
            json!({"nonMergingIntList": [1, 2, 3]}),
            json!({"$deleteFromPrimitiveList/nonMergingIntList": [2]}),
        )
        .unwrap();
        assert_eq!(out, json!({"nonMergingIntList": [1, 3]}));
    }

    #[test]
    fn bad_delete_from_primitive_list_key() {
        let err = generic(json!({}), json!({"$deleteFromPrimitiveListX/a": [1]})).unwrap_err();
        assert_eq!(err, PatchError::BadPrimitiveListFormat);
        assert_eq!(err.http_status(), 400);
        let err = generic(json!({}), json!({"$deleteFromPrimitiveList": [1]})).unwrap_err();
        assert_eq!(err, PatchError::BadPrimitiveListFormat);
    }

    // ---- $setElementOrder ------------------------------------------------------

    #[test]
    fn set_element_order_reorders_containers() {
        let out = smp(
            &pod(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["name"], json!("sidecar"));
        assert_eq!(out["spec"]["containers"][1]["name"], json!("app"));
        assert!(!has_directive_keys(&out));
    }

    #[test]
    fn set_element_order_places_new_items() {
        // kubectl's patch for adding item 3 at the front of [1, 2].
        let out = generic(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}],
                "mergingList": [{"name": 3, "value": 3}]
            }),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "other": "a"}, {"name": 2, "value": 2}]})
        );
        let out = generic(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": 2}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
            }),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"mergingList": [{"name": 4, "value": 4}, {"name": 1}, {"name": 2, "value": 2}, {"name": 3, "value": 3}]})
        );
    }

    #[test]
    fn set_element_order_keeps_server_only_items_in_live_position() {
        let live = json!({"mergingList": [
            {"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 7}, {"name": 9}, {"name": 8},
            {"name": 3, "value": 3}, {"name": 4, "value": 4}
        ]});
        let patch =
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]});
        let out = generic(live, patch).unwrap();
        let names: Vec<i64> = out["mergingList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_i64().unwrap())
            .collect();
        assert_eq!(names, [2, 1, 7, 9, 8, 4, 3]);

        let live = json!({"mergingList": [
            {"name": 1, "other": "a"}, {"name": 3}, {"name": 4}, {"name": 2}, {"name": 9}
        ]});
        let patch =
            json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]});
        let out = generic(live, patch).unwrap();
        let names: Vec<i64> = out["mergingList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_i64().unwrap())
            .collect();
        assert_eq!(names, [4, 2, 3, 1, 9]);
    }

    #[test]
    fn delete_in_one_list_and_reorder_another() {
        let out = generic(
            json!({
                "mergingList": [{"name": "a", "value": "a"}, {"name": "b", "value": "b"}],
                "mergeItemPtr": [{"name": "c", "value": "c"}, {"name": "d", "value": "d"}]
            }),
            json!({
                "$setElementOrder/mergingList": [{"name": "b"}],
                "$setElementOrder/mergeItemPtr": [{"name": "d"}, {"name": "c"}],
                "mergingList": [{"$patch": "delete", "name": "a"}]
            }),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "mergingList": [{"name": "b", "value": "b"}],
                "mergeItemPtr": [{"name": "d", "value": "d"}, {"name": "c", "value": "c"}]
            })
        );
    }

    #[test]
    fn set_element_order_for_primitive_lists() {
        let out = generic(
            json!({"mergingIntList": [1, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [1, 2, 3]}));
        let out = generic(
            json!({"mergingIntList": [1, 2, 4]}),
            json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [3, 1, 2, 4]}));
        // Order entries the list does not have are ignored.
        let out = generic(
            json!({"mergingIntList": [1, 3]}),
            json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingIntList": [3, 1]}));
    }

    #[test]
    fn set_element_order_with_duplicates_in_live_list() {
        let out = generic(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3}, {"name": 2, "value": "dup2"}, {"name": 4}]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"mergingList": [
                {"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"}, {"name": 1}, {"name": 4}, {"name": 3}
            ]})
        );
    }

    #[test]
    fn set_element_order_for_a_new_list() {
        let out = generic(
            json!({}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}], "mergingList": [{"name": 2}, {"name": 1, "x": null}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"mergingList": [{"name": 2}, {"name": 1}]}));
        let out = generic(
            json!({"a": 1}),
            json!({"$setElementOrder/mergingList": [{"name": 2}]}),
        )
        .unwrap();
        assert_eq!(out, json!({"a": 1}));
    }

    #[test]
    fn set_element_order_must_agree_with_patch_order() {
        let err = generic(
            json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::SetElementOrderMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains("doesn't match $setElementOrder list"),
            "{err}"
        );
        let err = generic(
            json!({"mergingIntList": [1, 3, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("The order in patch list:\n[3 1]\n doesn't match"),
            "{err}"
        );
    }

    #[test]
    fn set_element_order_malformed() {
        let err = generic(json!({}), json!({"$setElementOrder/mergingList": "x"})).unwrap_err();
        assert_eq!(
            err,
            PatchError::WrongType {
                expected: "[]interface {}",
                actual: "string"
            }
        );
        let err = generic(json!({}), json!({"$setElementOrderX": []})).unwrap_err();
        assert_eq!(err, PatchError::BadSetElementOrderFormat);
        let err = generic(
            json!({"mergingList": [{"name": 1}]}),
            json!({"$setElementOrder/mergingList": [{"value": 1}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[value:1] does not contain declared merge key: name"
        );
    }

    // ---- $retainKeys --------------------------------------------------------

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let out = generic(
            json!({"simpleMap": {"name": "foo", "value": "bar", "other": "x"}}),
            json!({"simpleMap": {"$retainKeys": ["name", "value"], "value": "baz"}}),
        )
        .unwrap();
        assert_eq!(out, json!({"simpleMap": {"name": "foo", "value": "baz"}}));
    }

    #[test]
    fn retain_keys_allows_null_and_directive_fields() {
        let out = generic(
            json!({"simpleMap": {"name": "foo", "value": "bar", "mergingIntList": [1, 2]}}),
            json!({"simpleMap": {
                "$retainKeys": ["name", "mergingIntList"],
                "value": null,
                "$deleteFromPrimitiveList/mergingIntList": [1]
            }}),
        )
        .unwrap();
        assert_eq!(out, json!({"simpleMap": {"name": "foo", "mergingIntList": [2]}}));
    }

    #[test]
    fn retain_keys_rejects_bad_patches() {
        let err = generic(
            json!({"simpleMap": {"name": "foo"}}),
            json!({"simpleMap": {"$retainKeys": ["name"], "value": "x"}}),
        )
        .unwrap_err();
        assert_eq!(err, PatchError::BadRetainKeysFormat);
        assert_eq!(err.http_status(), 400);
        let err = generic(
            json!({"simpleMap": {}}),
            json!({"simpleMap": {"$retainKeys": "name"}}),
        )
        .unwrap_err();
        assert_eq!(err, PatchError::BadRetainKeysFormat);
    }

    #[test]
    fn retain_keys_in_list_items() {
        let out = generic(
            json!({"mergingList": [{"name": 1, "a": 1, "b": 2}, {"name": 2, "a": 1}]}),
            json!({"mergingList": [{"name": 1, "$retainKeys": ["name", "b", "c"], "c": 3}]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"mergingList": [{"name": 1, "b": 2, "c": 3}, {"name": 2, "a": 1}]})
        );
    }

    // ---- invalid patches -------------------------------------------------------

    #[test]
    fn missing_merge_key_is_an_error() {
        let err = generic(
            json!({"mergingList": [{"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"value": "b"}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[value:b] does not contain declared merge key: name"
        );
        assert_eq!(err.http_status(), 500);
        let err =
            strategic_merge_patch(&pod(), &json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
        let err = strategic_merge_patch(&pod(), &json!({"spec": {"containers": [{"$patch": "delete"}]}}))
            .unwrap_err();
        assert!(matches!(err, PatchError::MissingMergeKey { .. }));
    }

    #[test]
    fn merge_directive_in_list_is_an_error() {
        let err = generic(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1, "$patch": "merge"}]}),
        )
        .unwrap_err();
        assert_eq!(err, PatchError::MergeDirectiveInList);
        let err = generic(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1, "$patch": "nope"}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown patch type: nope in map: map[$patch:nope name:1]"
        );
    }

    #[test]
    fn lists_of_lists_and_mixed_lists_are_errors() {
        let err = generic(json!({"mergingIntList": [[1]]}), json!({"mergingIntList": [[2]]})).unwrap_err();
        assert_eq!(err, PatchError::ListOfLists);
        assert_eq!(err.http_status(), 422);
        let err = generic(json!({"mergingIntList": [1]}), json!({"mergingIntList": ["a"]})).unwrap_err();
        assert_eq!(err.to_string(), "list element types are not identical: [[1] [a]]");
        let err = generic(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": ["a"]}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::MixedListElements(_)));
    }

    #[test]
    fn merge_list_of_objects_needs_a_merge_key() {
        static ELEM: TypeSchema = TypeSchema {
            name: "elem",
            fields: &[],
        };
        static NO_KEY: TypeSchema = TypeSchema {
            name: "noKey",
            fields: &[Field::merge_set("list").of(&ELEM)],
        };
        let err = strategic_merge_patch_with_schema(
            &json!({"list": [{"a": 1}]}),
            &json!({"list": [{"a": 2}]}),
            Some(&NO_KEY),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "cannot merge lists without merge key for elem");
    }

    // ---- no directive ever reaches the result ----------------------------------

    #[test]
    fn directives_inside_new_values_are_stripped() {
        let out = smp(
            &pod(),
            json!({"spec": {
                "containers": [{
                    "name": "new",
                    "image": "n:1",
                    "env": [{"name": "X", "$patch": "delete"}, {"name": "Y"}],
                    "$setElementOrder/env": [{"name": "Y"}],
                    "$retainKeys": ["name"],
                    "resources": {"limits": {"cpu": "1", "memory": null}}
                }],
                "initContainers": [{"name": "i", "$deleteFromPrimitiveList/args": ["a"]}],
                "tolerations": [{"$patch": "replace"}, {"key": "t"}]
            }}),
        );
        assert!(!has_directive_keys(&out), "{out}");
        let new = &out["spec"]["containers"][0];
        assert_eq!(
            new,
            &json!({"name": "new", "image": "n:1", "env": [{"name": "Y"}], "resources": {"limits": {"cpu": "1"}}})
        );
        assert_eq!(out["spec"]["initContainers"], json!([{"name": "i"}]));
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "t"}]));
    }

    #[test]
    fn original_is_not_modified() {
        let original = pod();
        let _ = strategic_merge_patch(&original, &json!({"metadata": {"labels": {"$patch": "delete"}}}));
        let _ = strategic_merge_patch(&original, &json!({"spec": {"containers": [{"image": "broken"}]}}));
        assert_eq!(original, pod());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "name",
            "containers",
            "env",
            "finalizers",
            "metadata",
            "spec",
            "ports",
            "port",
            "value",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/finalizers",
            "$deleteFromPrimitiveList/finalizers",
            "$deleteFromPrimitiveList",
            "$setElementOrder",
        ])
        .prop_map(str::to_owned)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            prop::sample::select(vec!["a", "b", "delete", "replace", "merge", "name"]).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::vec((key(), json_value()), 0..5).prop_map(|entries| {
            let mut map: Object = entries.into_iter().collect();
            map.insert("apiVersion".into(), Value::from("v1"));
            map.insert("kind".into(), Value::from("Pod"));
            Value::Object(map)
        })
    }

    fn has_directive_keys(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| is_directive_key(k) || has_directive_keys(v)),
            Value::Array(items) => items.iter().any(has_directive_keys),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_never_leaks_directives(original in object(), patch in json_value()) {
            if let Ok(out) = strategic_merge_patch(&original, &patch)
                && !has_directive_keys(&original)
            {
                prop_assert!(!has_directive_keys(&out), "{}", out);
            }
        }

        #[test]
        fn empty_patch_is_identity(original in object()) {
            prop_assert_eq!(strategic_merge_patch(&original, &Value::Object(Object::new())).unwrap(), original);
        }
    }
}
