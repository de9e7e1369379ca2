//! Reading stored JSON leniently and formatting it as kube's printers do: labels, label selectors,
//! container lists, host:port pairs, truncated lists.

use super::*;

// ---------------------------------------------------------------------------------------------------
// JSON access helpers: absent, null and mistyped fields all read as Go's zero value.
// ---------------------------------------------------------------------------------------------------

pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    if cur.is_null() { None } else { Some(cur) }
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    let value = at(v, path)?;
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

pub(super) fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

pub(super) fn name(obj: &Value) -> Value {
    Value::String(str_at(obj, &["metadata", "name"]).to_string())
}

pub(super) fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------------
// Label helpers (`labels.FormatLabels`, `metav1.LabelSelectorAsSelector`).
// ---------------------------------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, or "<none>".
pub(super) fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()`; `Err` where kube's conversion fails (invalid keys,
/// values or operators). A nil or empty selector prints as "".
pub(super) fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = arr_at(selector, &["matchExpressions"]);
    if match_labels.map_or(0, Map::len) + expressions.len() == 0 {
        return Ok(String::new());
    }
    // (key, rendered requirement); kube sorts requirements by key only.
    let mut requirements: Vec<(String, String)> = Vec::new();
    for (key, value) in match_labels.into_iter().flatten() {
        let value = value.as_str().ok_or(())?;
        if !is_qualified_name(key) || !is_valid_label_value(value) {
            return Err(());
        }
        requirements.push((key.clone(), format!("{key}={value}")));
    }
    for expr in expressions {
        let key = str_at(expr, &["key"]);
        if !is_qualified_name(key) {
            return Err(());
        }
        let mut values = Vec::new();
        for v in arr_at(expr, &["values"]) {
            let v = v.as_str().ok_or(())?;
            if !is_valid_label_value(v) {
                return Err(());
            }
            values.push(v);
        }
        let rendered = match str_at(expr, &["operator"]) {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(());
                }
                let word = if op == "In" { "in" } else { "notin" };
                // More than one value prints sorted (without deduplication), like kube's safeSort.
                values.sort_unstable();
                format!("{key} {word} ({})", values.join(","))
            }
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    // Go's sort.Sort is an insertion sort (stable) for the handful of requirements a selector has.
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: "<none>" for an empty selector and "<error>" for an invalid one.
pub(super) fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Err(()) => "<error>".to_string(),
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
    }
}

/// `validation.IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters matching `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub(super) fn is_qualified_name(value: &str) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if !is_dns1123_subdomain(prefix) {
                return false;
            }
            *name
        }
        _ => return false,
    };
    !name.is_empty() && name.len() <= 63 && is_qualified_name_part(name)
}

pub(super) fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `validation.IsValidLabelValue`: empty, or at most 63 characters shaped like a qualified name part.
pub(super) fn is_valid_label_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= 63 && is_qualified_name_part(value))
}

/// `validation.IsDNS1123Subdomain`: at most 253 characters of dot-separated lowercase RFC 1123 labels.
pub(super) fn is_dns1123_subdomain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

/// `layoutContainerCells`: container names and images, each joined by commas.
pub(super) fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Go's `net.JoinHostPort`: IPv6 hosts get brackets.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `listWithMoreString`: the first entries, "+ N more..." when truncated, "<unset>" when empty.
pub(super) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}
