//! Sets of field paths (what a manager owns) and their `FieldsV1` encoding.
//!
//! A set is a tree: at each level, `members` are the path elements that are
//! themselves in the set, and `children` hold the sets below an element. In
//! `FieldsV1` an element that is a member and also has children writes a
//! `"."` entry, a member without children is `{}`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::path::{Path, PathElement};

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    // Invariant: no child set is empty.
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path. The empty path (the object root) is not representable
    /// and is ignored, as in structured-merge-diff.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether the path is in the set.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The subset below `pe`, if any.
    pub fn with_prefix(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe).filter(|c| !c.is_empty())
    }

    /// Members at this level.
    pub(crate) fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    /// Child sets at this level.
    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub(crate) fn insert_member(&mut self, pe: PathElement) {
        self.members.insert(pe);
    }

    pub(crate) fn set_child(&mut self, pe: PathElement, set: FieldSet) {
        if set.is_empty() {
            self.children.remove(&pe);
        } else {
            self.children.insert(pe, set);
        }
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, set) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(set),
                None => set.clone(),
            };
            out.set_child(pe.clone(), merged);
        }
        out
    }

    /// Paths in `self` but not in `other` (members are compared exactly;
    /// a member of `other` does not remove `self`'s children below it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, set) in &self.children {
            let diff = match other.children.get(pe) {
                Some(theirs) => set.difference(theirs),
                None => set.clone(),
            };
            out.set_child(pe.clone(), diff);
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, set) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                out.set_child(pe.clone(), set.intersection(theirs));
            }
        }
        out
    }

    /// Like [`FieldSet::difference`], but a member of `other` also removes
    /// everything below it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, set) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let diff = match other.children.get(pe) {
                Some(theirs) => set.recursive_difference(theirs),
                None => set.clone(),
            };
            out.set_child(pe.clone(), diff);
        }
        out
    }

    /// All paths, in structured-merge-diff's iteration order (members of a
    /// level first, then each child's paths).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for pe in &self.members {
            let mut p = prefix.clone();
            p.push(pe.clone());
            out.push(p);
        }
        for (pe, set) in &self.children {
            prefix.push(pe.clone());
            set.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Encodes the set as a `FieldsV1` JSON object.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !(self.members.is_empty() && self.children.is_empty()) {
            out.insert(".".to_string(), Value::Object(Map::new()));
        }
        // Members and children merged in path-element order; an element that
        // is both is written once, with "." inside.
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            let value = match self.children.get(pe) {
                Some(child) => child.emit(self.members.contains(pe)),
                None => Map::new(),
            };
            out.insert(pe.serialize(), Value::Object(value));
        }
        out
    }

    /// Decodes a `FieldsV1` JSON object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let (children, _) = read_level(v)?;
        Ok(children.unwrap_or_default())
    }
}

// Returns the set of the level's children (None when there are none) and
// whether the node itself is a member of its parent.
fn read_level(v: &Value) -> Result<(Option<FieldSet>, bool), String> {
    let Value::Object(map) = v else {
        return Err(format!("expected a JSON object in FieldsV1, got {v}"));
    };
    let mut is_member = false;
    let mut children: Option<FieldSet> = None;
    for (key, value) in map {
        if key == "." {
            is_member = true;
            continue;
        }
        let Some(pe) =
            PathElement::deserialize(key).map_err(|e| format!("parsing key as path element: {e}"))?
        else {
            continue;
        };
        let (grandchildren, child_is_member) = read_level(value)?;
        let set = children.get_or_insert_with(FieldSet::new);
        if child_is_member {
            set.members.insert(pe.clone());
        }
        if let Some(gc) = grandchildren {
            let merged = match set.children.get(&pe) {
                Some(existing) => existing.union(&gc),
                None => gc,
            };
            set.set_child(pe, merged);
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children, is_member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.to_string())
    }

    #[test]
    fn encodes_like_kube() {
        let port = PathElement::key(vec![
            ("port".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        let mut s = FieldSet::new();
        s.insert(&[f("metadata"), f("labels")]);
        s.insert(&[f("metadata"), f("labels"), f("app")]);
        s.insert(&[f("spec"), f("ports")]);
        s.insert(&[f("spec"), f("ports"), port.clone()]);
        for leaf in ["targetPort", "protocol", "port"] {
            s.insert(&[f("spec"), f("ports"), port.clone(), f(leaf)]);
        }
        let encoded = serde_json::to_string(&s.to_fields_v1()).unwrap();
        assert_eq!(
            encoded,
            r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}}}}"#
        );
        let back = FieldSet::from_fields_v1(&s.to_fields_v1()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn decodes_sets_and_ignores_unknown_elements() {
        let v = json!({"f:metadata":{"f:finalizers":{".":{},"v:\"a\"":{}}},"x:future":{}});
        let s = FieldSet::from_fields_v1(&v).unwrap();
        assert!(s.has(&[f("metadata"), f("finalizers")]));
        assert!(s.has(&[f("metadata"), f("finalizers"), PathElement::Value(json!("a"))]));
        assert!(!s.has(&[f("metadata")]));
        assert_eq!(s.paths().len(), 2);
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"bad": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("a"), f("b")]);
        a.insert(&[f("a"), f("c")]);
        let mut b = FieldSet::new();
        b.insert(&[f("a"), f("b")]);
        b.insert(&[f("d")]);
        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("a"), f("b")]]);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("a"), f("c")]]);
        let u = a.union(&b);
        assert_eq!(u.paths().len(), 3);
        let mut top = FieldSet::new();
        top.insert(&[f("a")]);
        assert_eq!(a.difference(&top), a);
        assert!(a.recursive_difference(&top).is_empty());
        assert!(a.difference(&a).is_empty());
        assert!(a.difference(&a).to_fields_v1().as_object().unwrap().is_empty());
    }
}
