//! Field paths: the elements that address a struct field, a keyed list item,
//! a set member or a list index, with the total order, the human-readable
//! form (`.spec.ports[port=80,protocol="TCP"].targetPort`) and the `f:`/`k:`/
//! `v:`/`i:` serialization that structured-merge-diff uses in `FieldsV1`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;
pub use svcnet_kinds::go_quote;

/// One step of a field path.
#[derive(Debug, Clone)]
pub enum PathElement {
    /// A field of a struct or an entry of a map (`f:name`, shown `.name`).
    Field(String),
    /// An item of an associative list, selected by its key fields, sorted by
    /// name (`k:{"port":80,"protocol":"TCP"}`, shown `[port=80,protocol="TCP"]`).
    Key(Vec<(String, Value)>),
    /// A member of a set of scalars (`v:"a"`, shown `[="a"]`).
    Value(Value),
    /// An item of a list by position (`i:0`, shown `[0]`).
    Index(usize),
}

/// A full path from the object root.
pub type Path = Vec<PathElement>;

impl PathElement {
    /// Builds a key element, sorting the key fields by name as kube does.
    pub fn key(mut fields: Vec<(String, Value)>) -> Self {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        PathElement::Key(fields)
    }

    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// Serializes this element the way it appears as a `FieldsV1` key.
    pub fn serialize(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut out = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&go_json(&Value::String(name.clone())));
                    out.push(':');
                    out.push_str(&go_json(value));
                }
                out.push('}');
                out
            }
            PathElement::Value(v) => format!("v:{}", go_json(v)),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key. `Ok(None)` means an unknown element type,
    /// which kube drops silently so that newer encodings do not break it.
    pub fn deserialize(s: &str) -> Result<Option<Self>, String> {
        let (kind, rest) = match (s.get(..1), s.get(1..2), s.get(2..)) {
            (Some(kind), Some(":"), Some(rest)) => (kind, rest),
            (_, Some(_), _) if s.len() >= 2 => return Err(format!("missing colon: {s}")),
            _ => return Err("key must be 2 characters long:".to_string()),
        };
        match kind {
            "f" => Ok(Some(PathElement::Field(rest.to_string()))),
            "v" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| e.to_string())?;
                Ok(Some(PathElement::Value(v)))
            }
            "k" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| e.to_string())?;
                let Value::Object(map) = v else {
                    return Err(format!("expected a JSON object in key element {s}"));
                };
                Ok(Some(PathElement::key(map.into_iter().collect())))
            }
            "i" => rest
                .parse::<usize>()
                .map(|i| Some(PathElement::Index(i)))
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathElement {
    // Same order as structured-merge-diff: fields < keys < values < indexes,
    // which is also the order of the keys in an encoded FieldsV1 object.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an
                        .as_bytes()
                        .cmp(bn.as_bytes())
                        .then_with(|| compare_values(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                f.write_str("[")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={}", go_to_string(value))?;
                }
                f.write_str("]")
            }
            PathElement::Value(v) => write!(f, "[={}]", go_to_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders a path as kube prints it in conflict messages.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(|pe| pe.to_string()).collect()
}

/// Compares two paths element by element, shorter first on a common prefix.
pub fn compare_paths(a: &[PathElement], b: &[PathElement]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let c = x.cmp(y);
        if c != Ordering::Equal {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
    let int = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let x = a.as_f64().unwrap_or(0.0);
            let y = b.as_f64().unwrap_or(0.0);
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// The total order structured-merge-diff defines on values: numbers (ints
/// and floats compared numerically), then strings, bools, lists, maps, null.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for ((xk, xv), (yk, yv)) in xs.iter().zip(ys.iter()) {
                let c = xk
                    .as_bytes()
                    .cmp(yk.as_bytes())
                    .then_with(|| compare_values(xv, yv));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xs.len().cmp(&ys.len())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Deep equality with numbers compared numerically (`80` equals `80.0`).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    compare_values(a, b) == Ordering::Equal
}

/// JSON as Go's encoder writes it: map keys sorted, and `<`, `>`, `&`,
/// U+2028 and U+2029 escaped. Those characters can only occur inside JSON
/// strings, so escaping the serialized text is safe.
pub fn go_json(v: &Value) -> String {
    let text = serde_json::to_string(&sorted(v)).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// structured-merge-diff's `value.ToString`, used in path strings: strings
/// Go-quoted (`%q`), numbers and bools plain.
pub fn go_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                go_float(n.as_f64().unwrap_or(0.0))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => go_quote(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_to_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", go_to_string(v)))
            .collect(),
    }
}

// Go's `%v` for float64 (`%g` with the shortest representation, exponent
// form outside [1e-4, 1e21)).
fn go_float(f: f64) -> String {
    if f == 0.0 || (f.abs() >= 1e-4 && f.abs() < 1e21) {
        return format!("{f}");
    }
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_element_string_and_serialization() {
        let pe = PathElement::key(vec![
            ("protocol".into(), json!("TCP")),
            ("port".into(), json!(80)),
        ]);
        assert_eq!(pe.to_string(), r#"[port=80,protocol="TCP"]"#);
        assert_eq!(pe.serialize(), r#"k:{"port":80,"protocol":"TCP"}"#);
        let back = PathElement::deserialize(&pe.serialize()).unwrap().unwrap();
        assert_eq!(back, pe);
    }

    #[test]
    fn path_string_matches_kube() {
        let path = vec![
            PathElement::Field("spec".into()),
            PathElement::Field("ports".into()),
            PathElement::key(vec![
                ("port".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
            PathElement::Field("targetPort".into()),
        ];
        assert_eq!(
            path_string(&path),
            r#".spec.ports[port=80,protocol="TCP"].targetPort"#
        );
        assert_eq!(PathElement::Value(json!("a")).to_string(), r#"[="a"]"#);
        assert_eq!(PathElement::Index(3).to_string(), "[3]");
    }

    #[test]
    fn order_is_fields_keys_values_indexes() {
        let mut v = [
            PathElement::Index(0),
            PathElement::Value(json!("x")),
            PathElement::key(vec![("name".into(), json!("a"))]),
            PathElement::Field("b".into()),
            PathElement::Field("a".into()),
        ];
        v.sort();
        let s: Vec<String> = v.iter().map(|p| p.serialize()).collect();
        assert_eq!(s, vec!["f:a", "f:b", r#"k:{"name":"a"}"#, r#"v:"x""#, "i:0"]);
    }

    #[test]
    fn deserialize_errors_and_unknown() {
        assert!(PathElement::deserialize("x").is_err());
        assert!(PathElement::deserialize("fx").is_err());
        assert!(PathElement::deserialize("k:[1]").is_err());
        assert!(PathElement::deserialize("i:abc").is_err());
        assert_eq!(PathElement::deserialize("z:whatever").unwrap(), None);
        assert_eq!(
            PathElement::deserialize("f:").unwrap(),
            Some(PathElement::Field(String::new()))
        );
    }

    #[test]
    fn go_quote_and_json_escaping() {
        assert_eq!(go_quote("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(go_json(&json!("<&>")), r#""\u003c\u0026\u003e""#);
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e21), "1e+21");
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(values_equal(&json!(80), &json!(80.0)));
        assert_eq!(compare_values(&json!(1), &json!("a")), Ordering::Less);
        assert_eq!(compare_values(&json!(null), &json!({})), Ordering::Greater);
    }
}
