//! Server-side apply and managed-fields tracking, as kube-apiserver does
//! them, as pure functions over `serde_json::Value` objects.
//!
//! - [`apply`] merges an applied configuration into the live object by
//!   structured-merge-diff rules, prunes fields the manager stopped
//!   applying, detects conflicts with other managers and records the
//!   manager's `metadata.managedFields` entry.
//! - [`track_update`] records field ownership for ordinary create, update
//!   and patch requests.
//! - [`FieldSet`] reads and writes the `FieldsV1` encoding.
//! - [`schema`] holds the list/map semantics of the kinds svcnet serves.

mod apply;
mod managed;
mod path;
pub mod schema;
mod set;
mod typed;

pub use apply::{ApplyOptions, apply, track_update};
pub use managed::{Managed, ManagerEntry, Operation, manager_id};
pub use path::{Path, PathElement, path_string};
pub use set::FieldSet;

use path::go_quote;
use serde_json::{Value, json};

/// The `reason` of the causes of an apply conflict status.
pub const CAUSE_FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// Its operation.
    pub operation: Operation,
    /// Its API version.
    pub api_version: String,
    /// Its subresource, if any.
    pub subresource: Option<String>,
    /// The field, e.g. `.spec.ports[port=80,protocol="TCP"].targetPort`.
    pub field: String,
}

impl Conflict {
    /// The manager identifier conflicts are grouped and sorted by.
    pub fn manager_id(&self) -> String {
        manager_id(
            &self.manager,
            self.operation,
            &self.api_version,
            self.subresource.as_deref().unwrap_or(""),
        )
    }

    /// Kube's `printManager`: `"name"`, `with subresource "s"`, and for
    /// updaters `using <apiVersion>`.
    pub fn describe_manager(&self) -> String {
        let mut s = go_quote(&self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            s = format!("{s} with subresource {}", go_quote(sub));
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    /// The `message` of this conflict's `Status.details.causes` entry.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.describe_manager())
    }
}

/// Kube's apply conflict message for a list of conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.describe_manager(),
            c.field
        );
    }
    let mut ids: Vec<String> = conflicts.iter().map(Conflict::manager_id).collect();
    ids.sort();
    ids.dedup();
    let mut lines = Vec::new();
    for id in ids {
        let group: Vec<&Conflict> = conflicts.iter().filter(|c| c.manager_id() == id).collect();
        if let Some(first) = group.first() {
            lines.push(format!("conflicts with {}:", first.describe_manager()));
        }
        lines.extend(group.iter().map(|c| format!("- {}", c.field)));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the configuration changes (HTTP 409,
    /// reason `Conflict`); retry with `force` to take them over.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The request is malformed (HTTP 400), e.g. `invalid object type: /v1,
    /// Kind=Service` or `metadata.managedFields must be nil`.
    #[error("{0}")]
    BadRequest(String),
    /// The applied configuration does not fit the schema, e.g. a duplicate
    /// key in an associative list.
    #[error("{0}")]
    Invalid(String),
    /// The live object's managedFields cannot be decoded (kube answers 500).
    #[error("{0}")]
    ManagedFields(String),
}

impl ApplyError {
    /// `(field, message)` pairs for `Status.details.causes` (reason
    /// [`CAUSE_FIELD_MANAGER_CONFLICT`]); empty unless this is a conflict.
    pub fn causes(&self) -> Vec<(String, String)> {
        match self {
            ApplyError::Conflicts(cs) => cs.iter().map(|c| (c.field.clone(), c.cause_message())).collect(),
            _ => Vec::new(),
        }
    }

    /// The HTTP status code kube answers with.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflicts(_) => 409,
            ApplyError::BadRequest(_) => 400,
            ApplyError::Invalid(_) | ApplyError::ManagedFields(_) => 500,
        }
    }

    /// A `metav1.Status` object for this error, as kube writes it.
    pub fn to_status(&self) -> Value {
        let (reason, details) = match self {
            ApplyError::Conflicts(_) => {
                let causes: Vec<Value> = self
                    .causes()
                    .into_iter()
                    .map(|(field, message)| {
                        json!({"reason": CAUSE_FIELD_MANAGER_CONFLICT, "message": message, "field": field})
                    })
                    .collect();
                ("Conflict", Some(json!({ "causes": causes })))
            }
            ApplyError::BadRequest(_) => ("BadRequest", None),
            ApplyError::Invalid(_) | ApplyError::ManagedFields(_) => ("InternalError", None),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
        });
        if let (Some(d), Some(m)) = (details, status.as_object_mut()) {
            m.insert("details".into(), d);
        }
        if let Some(m) = status.as_object_mut() {
            m.insert("code".into(), json!(self.code()));
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(manager: &str, field: &str) -> Conflict {
        Conflict {
            manager: manager.into(),
            operation: Operation::Update,
            api_version: "v1".into(),
            subresource: None,
            field: field.into(),
        }
    }

    #[test]
    fn single_conflict_message() {
        let e = ApplyError::Conflicts(vec![c(
            "kubectl-client-side-apply",
            r#".spec.ports[port=80,protocol="TCP"].targetPort"#,
        )]);
        assert_eq!(
            e.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .spec.ports[port=80,protocol="TCP"].targetPort"#
        );
        assert_eq!(
            e.causes(),
            vec![(
                r#".spec.ports[port=80,protocol="TCP"].targetPort"#.to_string(),
                r#"conflict with "kubectl-client-side-apply" using v1"#.to_string()
            )]
        );
        let status = e.to_status();
        assert_eq!(status["code"], 409);
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(status["details"]["causes"][0]["reason"], "FieldManagerConflict");
    }

    #[test]
    fn multi_conflict_message_groups_by_sorted_manager() {
        let mut applier = c("y", ".spec.c");
        applier.operation = Operation::Apply;
        applier.subresource = Some("status".into());
        let e = ApplyError::Conflicts(vec![applier, c("x", ".spec.a"), c("x", ".spec.b")]);
        assert_eq!(
            e.to_string(),
            "Apply failed with 3 conflicts: conflicts with \"x\" using v1:\n- .spec.a\n- .spec.b\nconflicts with \"y\" with subresource \"status\":\n- .spec.c"
        );
        let two = ApplyError::Conflicts(vec![c("x", ".spec.a"), c("x", ".spec.b")]);
        assert_eq!(
            two.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"x\" using v1:\n- .spec.a\n- .spec.b"
        );
    }

    #[test]
    fn bad_request_status() {
        let e = ApplyError::BadRequest("metadata.managedFields must be nil".into());
        assert_eq!(e.code(), 400);
        assert_eq!(e.to_status()["reason"], "BadRequest");
        assert!(e.causes().is_empty());
    }
}
