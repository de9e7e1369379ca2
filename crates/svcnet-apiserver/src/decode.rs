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

/// Fills in a body's missing `kind` and `apiVersion` from the endpoint it was sent to and checks them,
/// as kube-apiserver's create and update handlers do: they decode with the endpoint's group, version and
/// kind as defaults (apimachinery's `gvkWithDefaults`), so clients that build objects without type
/// metadata (the Python client's `V1Service(metadata=…, spec=…)`) work. A body naming another kind or
/// version is refused with kube-apiserver's message for it.
pub fn default_kind(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object".to_string(),
        ));
    };
    let kind = match map.get("kind") {
        None | Some(Value::Null) => rt.kind.to_string(),
        Some(Value::String(k)) if k.is_empty() => rt.kind.to_string(),
        Some(Value::String(k)) => k.clone(),
        Some(other) => return Err(type_meta_error("kind", other)),
    };
    let api_version = match map.get("apiVersion") {
        None | Some(Value::Null) => rt.api_version(),
        Some(Value::String(v)) => {
            // A bare group ("apps/") takes the endpoint's version only when it is the endpoint's group.
            let (group, version) = svcnet_api::resources::split_api_version(v);
            match (group, version) {
                ("", "") => rt.api_version(),
                (g, "") if g == rt.group => rt.api_version(),
                _ => v.clone(),
            }
        }
        Some(other) => return Err(type_meta_error("apiVersion", other)),
    };
    check_type_meta(rt, &api_version, &kind)?;
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind));
    Ok(())
}

/// Refuses a `kind`/`apiVersion` pair (both already defaulted) that is not the endpoint's, in
/// kube-apiserver's words: its decoder converts whatever kind the body names into the endpoint's
/// internal type, which fails for another kind (no conversion) and for an unknown one (not in the
/// scheme); a known kind in another version of the same group converts but then is refused by version.
fn check_type_meta(rt: &ResourceType, api_version: &str, kind: &str) -> Result<(), ApiError> {
    let (group, version) = svcnet_api::resources::split_api_version(api_version);
    if group == rt.group && version == rt.version && kind == rt.kind {
        return Ok(());
    }
    if group == rt.group && kind == rt.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    let cause = if svcnet_api::resources::lookup_kind(api_version, kind).is_some() {
        // Go package names: the versioned type's package is its version, the internal one its group's
        // first label ("core" for the legacy group).
        let internal = match rt.group {
            "" => "core",
            g => g.split('.').next().unwrap_or(g),
        };
        format!(
            "converting ({version}.{kind}) to ({internal}.{}): unknown conversion",
            rt.kind
        )
    } else {
        format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        )
    };
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {}: {cause}",
        rt.kind
    )))
}

/// A `kind` or `apiVersion` that is not a string: kube's decoder fails reading the type metadata.
fn type_meta_error(field: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        _ => "object",
    };
    ApiError::bad_request(format!(
        "couldn't get version/kind; json parse error: json: cannot unmarshal {got} into Go struct field .{field} of type string"
    ))
}

/// Checks the type metadata of a server-side apply body as kube-apiserver's field manager does: apply
/// is not defaulted from the URL (an apply configuration states what it is), so a missing or other
/// `apiVersion` is refused first, then a kind that has no schema in that version.
pub fn check_apply_kind(rt: &ResourceType, obj: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {}",
            rt.api_version()
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == rt.kind {
        return Ok(());
    }
    if svcnet_api::resources::lookup_kind(api_version, kind).is_none() {
        // kube answers this one as a bare 500 (the type converter's error is not an API status).
        let gvk = format!("{}/{}, Kind={kind}", rt.group, rt.version);
        return Err(ApiError {
            code: 500,
            reason: "",
            message: format!(
                "failed to create typed patch object ({ns}/{name}; {gvk}): no corresponding type for {gvk}"
            ),
            details: None,
        });
    }
    check_type_meta(rt, api_version, kind)
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
    let mut input = input;
    default_kind(rt, &mut input)?;
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
    warnings.extend(crate::strategy::of(rt).warnings(&known));
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
        assert_eq!(
            decode_object(svc, wrong, FieldValidation::Strict)
                .unwrap_err()
                .message,
            "Pod in version \"v1\" cannot be handled as a Service: converting (v1.Pod) to (core.Service): unknown conversion"
        );
        assert!(default_kind(svc, &mut json!([1, 2])).is_err());
    }

    #[test]
    fn type_metadata_defaults_from_the_endpoint() {
        let svc = lookup("", "v1", "services").unwrap();
        let deploy = lookup("apps", "v1", "deployments").unwrap();
        let mut bare = json!({"metadata": {"name": "a"}});
        default_kind(svc, &mut bare).unwrap();
        assert_eq!(
            (&bare["apiVersion"], &bare["kind"]),
            (&json!("v1"), &json!("Service"))
        );
        let mut group_only = json!({"apiVersion": "apps/", "kind": "Deployment"});
        default_kind(deploy, &mut group_only).unwrap();
        assert_eq!(group_only["apiVersion"], "apps/v1");
        let mut kind_only = json!({"kind": "Deployment", "apiVersion": null});
        default_kind(deploy, &mut kind_only).unwrap();
        assert_eq!(kind_only["apiVersion"], "apps/v1");

        let msg = |rt, v: Value| default_kind(rt, &mut v.clone()).unwrap_err().message;
        assert_eq!(
            msg(deploy, json!({"apiVersion": "apps/v1beta1"})),
            "the API version in the data (apps/v1beta1) does not match the expected API version (apps/v1)"
        );
        assert_eq!(
            msg(svc, json!({"kind": "Frob"})),
            "Frob in version \"v1\" cannot be handled as a Service: no kind \"Frob\" is registered for version \"v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        assert_eq!(
            msg(deploy, json!({"kind": "Pod"})),
            "Pod in version \"v1\" cannot be handled as a Deployment: no kind \"Pod\" is registered for version \"apps/v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        assert_eq!(
            msg(svc, json!({"kind": 3})),
            "couldn't get version/kind; json parse error: json: cannot unmarshal number into Go struct field .kind of type string"
        );
    }

    #[test]
    fn apply_is_not_defaulted() {
        let svc = lookup("", "v1", "services").unwrap();
        let err = check_apply_kind(svc, &json!({"kind": "Service"}), "default", "a").unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                400,
                "Incorrect version specified in apply patch. Specified patch version: , expected: v1"
            )
        );
        let err = check_apply_kind(svc, &json!({"apiVersion": "v1"}), "default", "a").unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                500,
                "failed to create typed patch object (default/a; /v1, Kind=): no corresponding type for /v1, Kind="
            )
        );
        check_apply_kind(
            svc,
            &json!({"apiVersion": "v1", "kind": "Service"}),
            "default",
            "a",
        )
        .unwrap();
    }

    #[test]
    fn yaml_bodies() {
        let v = parse_body(Some("application/yaml"), b"apiVersion: v1\nkind: Service\n").unwrap();
        assert_eq!(v["kind"], "Service");
        assert!(parse_body(Some("application/json"), b"{nope").is_err());
        assert_eq!(parse_body(Some("text/plain"), b"x").unwrap_err().code, 415);
    }
}
