//! `metadata.managedFields`: decoding the entries of a live object, manager
//! identity (kube's manager identifier), and encoding back in kube's order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::path::go_json;
use crate::set::FieldSet;

/// The operation a managedFields entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or patch.
    Update,
}

impl Operation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone)]
pub struct ManagerEntry {
    /// Manager name.
    pub manager: String,
    /// Operation.
    pub operation: Operation,
    /// API version the fields were recorded in.
    pub api_version: String,
    /// Subresource (empty for the main resource).
    pub subresource: String,
    /// Time of the last change, RFC 3339, as stored.
    pub time: Option<String>,
    /// Owned fields.
    pub set: FieldSet,
}

/// Kube's manager identifier: the JSON of the entry without fields, time
/// and type, and without apiVersion for appliers (so an applier stays the
/// same manager across versions).
pub fn manager_id(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> String {
    let mut out = String::from("{");
    let mut parts = Vec::new();
    if !manager.is_empty() {
        parts.push(format!("\"manager\":{}", go_json(&Value::String(manager.into()))));
    }
    parts.push(format!("\"operation\":\"{}\"", operation.as_str()));
    if operation == Operation::Update && !api_version.is_empty() {
        parts.push(format!(
            "\"apiVersion\":{}",
            go_json(&Value::String(api_version.into()))
        ));
    }
    if !subresource.is_empty() {
        parts.push(format!(
            "\"subresource\":{}",
            go_json(&Value::String(subresource.into()))
        ));
    }
    out.push_str(&parts.join(","));
    out.push('}');
    out
}

impl ManagerEntry {
    /// This entry's manager identifier.
    pub fn id(&self) -> String {
        manager_id(
            &self.manager,
            self.operation,
            &self.api_version,
            &self.subresource,
        )
    }
}

/// All entries of an object, by manager identifier.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    /// Entries by identifier.
    pub entries: BTreeMap<String, ManagerEntry>,
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

impl Managed {
    /// Decodes `metadata.managedFields` (absent or null is empty), with
    /// kube's validation texts.
    pub fn decode(list: Option<&Value>) -> Result<Managed, String> {
        let mut managed = Managed::default();
        let items = match list {
            None | Some(Value::Null) => return Ok(managed),
            Some(Value::Array(items)) => items,
            Some(_) => return Err("managedFields must be a list".into()),
        };
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                return Err(format!("managed fields entry {i} is not an object"));
            };
            let operation = match str_field(m, "operation") {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err("operation must be `Apply` or `Update`".into()),
            };
            let api_version = str_field(m, "apiVersion");
            if api_version.is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match str_field(m, "fieldsType") {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                other => {
                    return Err(format!(
                        "invalid fieldsType {other:?} in managed fields entry {i}"
                    ));
                }
            }
            let set = match m.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(v) => FieldSet::from_fields_v1(v)
                    .map_err(|e| format!("error decoding versioned set: error decoding set: {e}"))?,
            };
            let entry = ManagerEntry {
                manager: str_field(m, "manager").to_string(),
                operation,
                api_version: api_version.to_string(),
                subresource: str_field(m, "subresource").to_string(),
                time: m.get("time").and_then(Value::as_str).map(str::to_string),
                set,
            };
            managed.entries.insert(entry.id(), entry);
        }
        Ok(managed)
    }

    /// Drops entries that own nothing.
    pub fn drop_empty(&mut self) {
        self.entries.retain(|_, e| !e.set.is_empty());
    }

    /// Encodes the entries in kube's order (operation, time, manager,
    /// apiVersion, subresource); `None` when there are none, as kube then
    /// leaves `managedFields` unset.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut entries: Vec<&ManagerEntry> = self.entries.values().collect();
        entries.sort_by(|p, q| {
            p.operation
                .cmp(&q.operation)
                .then_with(|| unix_seconds(p.time.as_deref()).cmp(&unix_seconds(q.time.as_deref())))
                .then_with(|| p.manager.cmp(&q.manager))
                .then_with(|| p.api_version.cmp(&q.api_version))
                .then_with(|| p.subresource.cmp(&q.subresource))
        });
        let list = entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                if !e.manager.is_empty() {
                    m.insert("manager".into(), Value::String(e.manager.clone()));
                }
                m.insert("operation".into(), Value::String(e.operation.as_str().into()));
                m.insert("apiVersion".into(), Value::String(e.api_version.clone()));
                if let Some(t) = &e.time {
                    m.insert("time".into(), Value::String(t.clone()));
                }
                m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), Value::String(e.subresource.clone()));
                }
                Value::Object(m)
            })
            .collect();
        Some(Value::Array(list))
    }

    /// Merges the oldest update entries into per-version `ancient-changes`
    /// buckets so that at most `max` update entries remain, as kube does
    /// after every update (its limit is 10).
    pub fn cap_update_managers(&mut self, max: usize) {
        let mut updaters: Vec<(String, i64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.operation == Operation::Update)
            .map(|(id, e)| (id.clone(), unix_seconds(e.time.as_deref())))
            .collect();
        if updaters.len() <= max {
            return;
        }
        updaters.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let mut first_by_version: BTreeMap<String, String> = BTreeMap::new();
        let mut length = updaters.len();
        for (id, _) in updaters {
            if length <= max {
                break;
            }
            let Some(entry) = self.entries.get(&id).cloned() else {
                continue;
            };
            let bucket = manager_id("ancient-changes", Operation::Update, &entry.api_version, "");
            match first_by_version.get(&entry.api_version) {
                Some(first) => {
                    if !self.entries.contains_key(&bucket)
                        && let Some(mut first_entry) = self.entries.remove(first)
                    {
                        first_entry.manager = "ancient-changes".into();
                        first_entry.subresource = String::new();
                        self.entries.insert(bucket.clone(), first_entry);
                    }
                    if let Some(b) = self.entries.get_mut(&bucket) {
                        b.set = entry.set.union(&b.set);
                        b.time = entry.time.clone();
                    }
                    self.entries.remove(&id);
                    length -= 1;
                }
                None => {
                    first_by_version.insert(entry.api_version.clone(), id);
                }
            }
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time; 0 when absent or invalid
/// (kube sorts a missing time as 0).
pub fn unix_seconds(t: Option<&str>) -> i64 {
    t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |ts| ts.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_match_kube() {
        assert_eq!(
            manager_id("kubectl-client-side-apply", Operation::Update, "v1", ""),
            r#"{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1"}"#
        );
        assert_eq!(
            manager_id("kubectl", Operation::Apply, "v1", "status"),
            r#"{"manager":"kubectl","operation":"Apply","subresource":"status"}"#
        );
    }

    #[test]
    fn decode_validates_like_kube() {
        let ok = json!([{"manager": "m", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:type": {}}}}]);
        let m = Managed::decode(Some(&ok)).unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.encode().unwrap(), ok);
        let bad_op = json!([{"operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1"}]);
        assert_eq!(
            Managed::decode(Some(&bad_op)).unwrap_err(),
            "operation must be `Apply` or `Update`"
        );
        let no_version = json!([{"operation": "Apply", "fieldsType": "FieldsV1"}]);
        assert_eq!(
            Managed::decode(Some(&no_version)).unwrap_err(),
            "apiVersion must not be empty"
        );
        let no_type = json!([{"operation": "Apply", "apiVersion": "v1"}]);
        assert_eq!(
            Managed::decode(Some(&no_type)).unwrap_err(),
            "missing fieldsType in managed fields entry 0"
        );
        let bad_type = json!([{"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV2"}]);
        assert_eq!(
            Managed::decode(Some(&bad_type)).unwrap_err(),
            "invalid fieldsType \"FieldsV2\" in managed fields entry 0"
        );
        assert!(Managed::decode(Some(&json!("x"))).is_err());
        assert!(Managed::decode(None).unwrap().encode().is_none());
    }

    #[test]
    fn encode_sorts_apply_first_then_time() {
        let mut m = Managed::default();
        let mut set = FieldSet::new();
        set.insert(&[crate::path::PathElement::Field("a".into())]);
        for (name, op, t) in [
            ("z", Operation::Update, "2024-01-01T00:00:00Z"),
            ("y", Operation::Update, "2023-01-01T00:00:00Z"),
            ("x", Operation::Apply, "2025-01-01T00:00:00Z"),
        ] {
            let e = ManagerEntry {
                manager: name.into(),
                operation: op,
                api_version: "v1".into(),
                subresource: String::new(),
                time: Some(t.into()),
                set: set.clone(),
            };
            m.entries.insert(e.id(), e);
        }
        let names: Vec<String> = m
            .encode()
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["x", "y", "z"]);
    }

    #[test]
    fn caps_update_managers_into_ancient_changes() {
        let mut m = Managed::default();
        for i in 0..12 {
            let mut set = FieldSet::new();
            set.insert(&[crate::path::PathElement::Field(format!("f{i}"))]);
            let e = ManagerEntry {
                manager: format!("m{i:02}"),
                operation: Operation::Update,
                api_version: "v1".into(),
                subresource: String::new(),
                time: Some(format!("2024-01-01T00:00:{i:02}Z")),
                set,
            };
            m.entries.insert(e.id(), e);
        }
        m.cap_update_managers(10);
        assert_eq!(m.entries.len(), 10);
        let bucket = &m.entries[&manager_id("ancient-changes", Operation::Update, "v1", "")];
        assert_eq!(bucket.set.paths().len(), 3);
        assert_eq!(bucket.time.as_deref(), Some("2024-01-01T00:00:02Z"));
    }
}
