//! Decoding request bodies the way kube-apiserver does: JSON or YAML, the kind checked against the
//! endpoint, every field type-checked against the Kubernetes schema, and unknown fields reported (or
//! dropped) according to `fieldValidation`.
//!
//! Type checking and pruning come from a round trip through the k8s-openapi structs: what survives
//! `deserialize → serialize` is exactly the set of fields Kubernetes knows, so the difference between the
//! input and the round-tripped value is the set of unknown fields. This is the same "decode into the Go
//! struct" that kube-apiserver performs, and it keeps the stored form free of junk.

use serde_json::Value;
use svcnet_api::resources::ResourceType;

use crate::errors::ApiError;

/// How to treat unknown and duplicate fields (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject the request.
    Strict,
    /// Accept, drop the fields, and warn.
    Warn,
    /// Accept and drop silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter; kube-apiserver defaults to `Warn` when unset.
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}"
            ))),
        }
    }
}

/// Parses a body as JSON or YAML according to its content type.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml_to_json(body),
        crate::proto::MEDIA_TYPE => crate::proto::decode(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Parses YAML into JSON, rejecting what JSON cannot represent.
pub fn yaml_to_json(body: &[u8]) -> Result<Value, ApiError> {
    let y: serde_yaml::Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}")))?;
    serde_json::to_value(y).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Checks `apiVersion` and `kind` of a decoded body against the endpoint it was sent to.
pub fn check_kind(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object() else {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object".to_string(),
        ));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&obj.to_string(), 500)
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            truncate(&obj.to_string(), 500)
        )));
    }
    if api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({}) of the endpoint",
            rt.kind
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Round-trips an object through its typed form: the result holds only known fields, normalized.
pub fn roundtrip(rt: &ResourceType, v: &Value) -> Result<Value, String> {
    match crate::typed::of(rt) {
        Some(t) => (t.roundtrip)(v),
        // A kind without a typed form is stored as sent.
        None => Ok(v.clone()),
    }
}

/// Collects the paths of fields present in `input` but absent from `known` (the round-tripped form).
pub fn unknown_fields(input: &Value, known: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, known, String::new(), &mut out);
    out
}

fn walk(input: &Value, known: &Value, path: String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(kv) => walk(v, kv, p, out),
                    // null means "unset"; it is never an unknown field.
                    None if v.is_null() => {}
                    // Empty optional structs and lists may be dropped by serialization; they are known
                    // fields when the parent type has them, which we cannot tell here, so only report
                    // non-empty values.
                    None if is_empty_container(v) && known_empty_ok(k) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                walk(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

fn known_empty_ok(_key: &str) -> bool {
    // k8s-openapi keeps `Some(vec![])` and `Some(map)` as written, so an empty container that vanished
    // was dropped because the field is unknown... except where the typed form models the field as a
    // plain (non-Option) Vec that skips empty values. Being lenient here errs towards accepting input.
    true
}

/// Decodes a full object body for create/update: kind check, type check, unknown-field handling.
/// Returns the pruned object and any warnings to send back.
pub fn decode_object(
    rt: &ResourceType,
    input: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    check_kind(rt, &input)?;
    let known = roundtrip(rt, &input).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    let unknown = unknown_fields(&input, &known);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match fv {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            }
            FieldValidation::Ignore => {}
        }
    }
    if let Some(w) = svcnet_kinds::kinds::of(rt).rules.write_warning {
        warnings.push(w.to_string());
    }
    Ok((known, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use svcnet_api::resources::lookup;

    #[test]
    fn detects_unknown_fields() {
        let svc = lookup("", "v1", "services").unwrap();
        let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"foo": 1, "ports": [{"port": 80, "bar": true}], "selector": {"app": "x"}}});
        let err = decode_object(svc, body.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.message,
            "strict decoding error: unknown field \"spec.foo\", unknown field \"spec.ports[0].bar\""
        );
        let (obj, warnings) = decode_object(svc, body, FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(obj["spec"].get("foo").is_none());
        assert_eq!(obj["spec"]["selector"]["app"], "x");
    }

    #[test]
    fn rejects_wrong_types_and_kinds() {
        let svc = lookup("", "v1", "services").unwrap();
        let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": "eighty"}]}});
        assert_eq!(
            decode_object(svc, bad, FieldValidation::Strict).unwrap_err().code,
            400
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}});
        assert!(decode_object(svc, wrong, FieldValidation::Strict).is_err());
        let nokind = json!({"metadata": {"name": "a"}});
        assert!(
            check_kind(svc, &nokind)
                .unwrap_err()
                .message
                .contains("'Kind' is missing")
        );
        assert!(check_kind(svc, &json!([1, 2])).is_err());
    }

    #[test]
    fn yaml_bodies() {
        let v = parse_body(Some("application/yaml"), b"apiVersion: v1\nkind: Service\n").unwrap();
        assert_eq!(v["kind"], "Service");
        assert!(parse_body(Some("application/json"), b"{nope").is_err());
        assert_eq!(parse_body(Some("text/plain"), b"x").unwrap_err().code, 415);
    }
}
