//! Printing JSON values the way Go's `fmt` prints decoded JSON, so that error
//! texts read like the ones kube-apiserver sends (`map[name:a value:1]`,
//! `[a b]`, `<nil>`).

use serde_json::Value;

/// Go's `%v` of a value decoded into `interface{}`: maps with sorted keys,
/// lists space separated, `<nil>` for null.
pub(crate) fn go_value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// Go's `%v` of a `map[string]interface{}`.
pub(crate) fn go_map(m: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, m);
    out
}

/// Go's `%v` of a `[]interface{}`.
pub(crate) fn go_list(items: &[Value]) -> String {
    let mut out = String::new();
    write_list(&mut out, items);
    out
}

/// Go's `%v` of a list of lists, as `fmt.Sprint` prints a variadic argument.
pub(crate) fn go_lists(lists: &[&[Value]]) -> String {
    let mut out = String::from("[");
    for (i, list) in lists.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_list(&mut out, list);
    }
    out.push(']');
    out
}

/// Go's `%s` of a value: strings bare, anything else flagged as Go does.
pub(crate) fn go_string_verb(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => format!("%!s({}={})", go_type(other), go_value(other)),
    }
}

/// The Go type `encoding/json` gives a value decoded into `interface{}`
/// (with integers preserved, as kube-apiserver decodes patches).
pub(crate) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The JSON kind `encoding/json` names in "cannot unmarshal X into ..." errors.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => write_list(out, items),
        Value::Object(m) => write_map(out, m),
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        // Go prints integral floats without a fraction; precision beyond that
        // only matters for error texts, so Rust's shortest form is fine.
        if f.fract() == 0.0 && f.abs() < 1e21 {
            out.push_str(&format!("{f:.0}"));
        } else {
            out.push_str(&f.to_string());
        }
    }
}

fn write_list(out: &mut String, items: &[Value]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(out, item);
    }
    out.push(']');
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push_str("map[");
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        write_value(out, v);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_print_with_sorted_keys() {
        let v = json!({"value": "b", "name": 1, "nested": {"z": null, "a": [1, 2.5, true]}});
        assert_eq!(
            go_value(&v),
            "map[name:1 nested:map[a:[1 2.5 true] z:<nil>] value:b]"
        );
    }

    #[test]
    fn lists_of_lists_print_like_sprint() {
        let a = [json!("x"), json!(1)];
        let b = [json!({"k": "v"})];
        assert_eq!(go_lists(&[&a, &b]), "[[x 1] [map[k:v]]]");
    }

    #[test]
    fn string_verb_flags_non_strings() {
        assert_eq!(go_string_verb(&json!("foo")), "foo");
        assert_eq!(go_string_verb(&json!(3)), "%!s(int64=3)");
        assert_eq!(go_string_verb(&json!(true)), "%!s(bool=true)");
    }

    #[test]
    fn integral_floats_have_no_fraction() {
        assert_eq!(go_value(&json!(2.0)), "2");
        assert_eq!(go_type(&json!(2.0)), "float64");
        assert_eq!(go_type(&json!(2)), "int64");
        assert_eq!(go_type(&Value::Null), "%!s(<nil>)");
    }
}
