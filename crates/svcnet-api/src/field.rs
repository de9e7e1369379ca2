//! Field errors, formatted exactly as apimachinery's `field.Error` formats them.
//!
//! Validation anywhere in svcnet produces a list of [`FieldError`]s; the API server turns a non-empty list
//! into a 422 `Status` whose `details.causes` name each field. Keeping the wording identical to Kubernetes
//! matters because users and tests compare error texts with what a real cluster prints.

use std::fmt;

/// The kind of a field error, as apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// A value that should exist was not found (`FieldValueNotFound`).
    NotFound,
    /// A required value is missing (`FieldValueRequired`).
    Required,
    /// A value that must be unique is repeated (`FieldValueDuplicate`).
    Duplicate,
    /// A value is malformed or out of range (`FieldValueInvalid`).
    Invalid,
    /// A value is not one of the supported values (`FieldValueNotSupported`).
    NotSupported,
    /// A value is valid but not allowed here (`FieldValueForbidden`).
    Forbidden,
    /// A value is too long (`FieldValueTooLong`).
    TooLong,
    /// A list has too many items (`FieldValueTooMany`).
    TooMany,
    /// The server failed while validating (`InternalError`).
    Internal,
    /// A value has the wrong type (`FieldValueTypeInvalid`).
    TypeInvalid,
}

impl ErrorType {
    /// The `reason` a `StatusCause` carries for this type.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human text apimachinery prints for this type.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
            ErrorType::TypeInvalid => "Invalid value",
        }
    }
}

/// The offending value of a field error, printed the way Go's `%v` / `%q` / `%#v` would print it.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// No value is printed (apimachinery's `omitValue`).
    Omit,
    /// `null`.
    Null,
    /// An integer, printed bare.
    Int(i64),
    /// A boolean, printed bare.
    Bool(bool),
    /// A string, printed quoted as Go's `%q` does.
    Str(String),
    /// A value already rendered by the caller (e.g. `[]string{"a", "b"}` or a `fmt.Stringer`'s text).
    Raw(String),
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<i64> for BadValue {
    fn from(v: i64) -> Self {
        BadValue::Int(v)
    }
}
impl From<i32> for BadValue {
    fn from(v: i32) -> Self {
        BadValue::Int(v.into())
    }
}
impl From<bool> for BadValue {
    fn from(v: bool) -> Self {
        BadValue::Bool(v)
    }
}

/// One validation error on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What kind of error this is.
    pub kind: ErrorType,
    /// The field path, e.g. `spec.ports[0].port`.
    pub field: String,
    /// The offending value.
    pub bad_value: BadValue,
    /// Extra detail appended after the value, e.g. `must be between 1 and 65535, inclusive`.
    pub detail: String,
}

impl FieldError {
    fn new(
        kind: ErrorType,
        field: impl Into<String>,
        bad_value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.into(),
            bad_value,
            detail: detail.into(),
        }
    }

    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(field: impl Into<String>, value: impl Into<BadValue>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, value.into(), detail)
    }

    /// `field.Required(path, detail)`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, BadValue::Omit, detail)
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, BadValue::Omit, detail)
    }

    /// `field.Duplicate(path, value)`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self::new(ErrorType::Duplicate, field, value.into(), "")
    }

    /// `field.NotFound(path, value)`.
    pub fn not_found(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self::new(ErrorType::NotFound, field, value.into(), "")
    }

    /// `field.NotSupported(path, value, validValues)`: the detail lists the supported values quoted, as
    /// apimachinery does (`supported values: "TCP", "UDP", "SCTP"`).
    pub fn not_supported(field: impl Into<String>, value: impl Into<BadValue>, valid: &[&str]) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(ErrorType::NotSupported, field, value.into(), detail)
    }

    /// `field.TooLong(path, value, maxLength)`.
    pub fn too_long(field: impl Into<String>, max_len: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            field,
            BadValue::Omit,
            format!("may not be more than {max_len} bytes"),
        )
    }

    /// `field.TooMany(path, actual, max)`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::new(
            ErrorType::TooMany,
            field,
            BadValue::Int(actual as i64),
            format!("must have at most {max} items"),
        )
    }

    /// `field.InternalError(path, err)`.
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Internal, field, BadValue::Omit, detail)
    }

    /// The message without the field path, as `ErrorBody()` formats it; this is a cause's `message`.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.bad_value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::Internal, _)
            | (_, BadValue::Omit) => self.kind.text().to_string(),
            (_, BadValue::Null) => format!("{}: null", self.kind.text()),
            (_, BadValue::Int(v)) => format!("{}: {v}", self.kind.text()),
            (_, BadValue::Bool(v)) => format!("{}: {v}", self.kind.text()),
            (_, BadValue::Str(v)) => format!("{}: {}", self.kind.text(), go_quote(v)),
            (_, BadValue::Raw(v)) => format!("{}: {v}", self.kind.text()),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

pub use svcnet_kinds::go_quote;

/// Renders a list of strings as Go's `%#v` renders a `[]string`, e.g. `[]string{"a", "b"}`.
pub fn go_string_slice(items: &[String]) -> BadValue {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    BadValue::Raw(format!("[]string{{{}}}", quoted.join(", ")))
}

/// A field path under construction, e.g. `Path::new("spec").child("ports").index(0).child("port")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    /// A root path.
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `path.Child(name)`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `path.Index(i)`.
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    /// `path.Key(k)`.
    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{k}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

/// Formats a list of errors as an `Invalid` status message: one error bare, several in brackets joined by
/// `, ` (apimachinery's `NewInvalid`/aggregate formatting).
/// Identical messages are reported once, as apimachinery's aggregate does.
pub fn aggregate_message(errs: &[FieldError]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !parts.contains(&m) {
            parts.push(m);
        }
    }
    match parts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_apimachinery() {
        let p = Path::new("spec").child("ports").index(0).child("port");
        let e = FieldError::invalid(&p, 0, "must be between 1 and 65535, inclusive");
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let e = FieldError::required("spec.ports", "");
        assert_eq!(e.to_string(), "spec.ports: Required value");
        let e = FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]);
        assert_eq!(
            e.to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
        let e = FieldError::duplicate("spec.ports[1].name", "http");
        assert_eq!(e.body(), "Duplicate value: \"http\"");
    }

    #[test]
    fn aggregates_several_in_brackets() {
        let a = FieldError::required("a", "");
        let b = FieldError::forbidden("b", "may not be set");
        assert_eq!(aggregate_message(std::slice::from_ref(&a)), "a: Required value");
        assert_eq!(aggregate_message(&[a.clone(), a.clone()]), "a: Required value");
        assert_eq!(
            aggregate_message(&[a, b]),
            "[a: Required value, b: Forbidden: may not be set]"
        );
    }
}
