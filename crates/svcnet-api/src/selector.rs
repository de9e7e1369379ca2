//! Label selectors and field selectors, parsed and matched as apimachinery's `labels.Parse` and
//! `fields.ParseSelector` do.
//!
//! The API server uses them for `labelSelector` / `fieldSelector` on list and watch; controllers use label
//! selectors to find a Service's pods. Parsing is strict: a bad selector is a 400 for the client, never a
//! match-everything surprise.

use serde_json::Value;
use std::collections::BTreeMap;

use crate::resources::ResourceType;
use crate::validation;
use svcnet_kinds::FieldLabel;

/// Why a selector could not be parsed; the text is what the client sees in a `BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// The operator of one label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `key=value` or `key==value` or `key in (a,b)`.
    In(Vec<String>),
    /// `key!=value` or `key notin (a,b)`; also matches objects without the label.
    NotIn(Vec<String>),
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N` (integer comparison).
    Gt(i64),
    /// `key<N` (integer comparison).
    Lt(i64),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What the label must satisfy.
    pub op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
            Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|x| x > *n),
            Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|x| x < *n),
        }
    }
}

/// A parsed label selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// The requirements, all of which must match.
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Comma,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Open,
    Close,
    Bang,
    Gt,
    Lt,
}

fn lex(s: &str) -> Result<Vec<Tok>, SelectorError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1
            }
            '=' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::DoubleEq);
                    i += 2
                } else {
                    out.push(Tok::Eq);
                    i += 1
                }
            }
            '!' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::NotEq);
                    i += 2
                } else {
                    out.push(Tok::Bang);
                    i += 1
                }
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n\r,()=!<>".contains(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                });
            }
        }
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let errs = validation::is_qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: key: Invalid value: {}: {}",
            crate::field::go_quote(key),
            errs.join("; ")
        )))
    }
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    let errs = validation::is_valid_label_value(v);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[0][{v}]: Invalid value: {}: {}",
            crate::field::go_quote(v),
            errs.join("; ")
        )))
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax (`a=b,c!=d,e in (x,y),!f,g`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let toks = lex(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let unexpected = |t: Option<&Tok>, want: &str| {
            SelectorError(match t {
                Some(t) => format!("found '{}', expected: {want}", tok_text(t)),
                None => format!("found '', expected: {want}"),
            })
        };
        while i < toks.len() {
            let (key, negated) = match &toks[i] {
                Tok::Bang => match toks.get(i + 1) {
                    Some(Tok::Ident(k)) => {
                        i += 2;
                        (k.clone(), true)
                    }
                    t => return Err(unexpected(t, "identifier")),
                },
                Tok::Ident(k) => {
                    i += 1;
                    (k.clone(), false)
                }
                t => return Err(unexpected(Some(t), "!, identifier")),
            };
            check_key(&key)?;
            let op = if negated {
                Op::DoesNotExist
            } else {
                match toks.get(i) {
                    None | Some(Tok::Comma) => Op::Exists,
                    Some(Tok::Eq | Tok::DoubleEq | Tok::NotEq) => {
                        let neg = toks[i] == Tok::NotEq;
                        i += 1;
                        let v = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            // `a=` selects the empty value, as apimachinery allows.
                            None | Some(Tok::Comma) => String::new(),
                            t => return Err(unexpected(t, "identifier")),
                        };
                        check_value(&v)?;
                        if neg { Op::NotIn(vec![v]) } else { Op::In(vec![v]) }
                    }
                    Some(Tok::Gt | Tok::Lt) => {
                        let gt = toks[i] == Tok::Gt;
                        i += 1;
                        let n = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.parse::<i64>().map_err(|_| {
                                    SelectorError(format!(
                                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                                    ))
                                })?
                            }
                            t => return Err(unexpected(t, "identifier")),
                        };
                        if gt { Op::Gt(n) } else { Op::Lt(n) }
                    }
                    Some(Tok::In | Tok::NotIn) => {
                        let neg = toks[i] == Tok::NotIn;
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(unexpected(toks.get(i), "'('"));
                        }
                        i += 1;
                        let mut vals = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    check_value(v)?;
                                    vals.push(v.clone());
                                    i += 1;
                                }
                                Some(Tok::Comma) | Some(Tok::Close) => vals.push(String::new()),
                                t => return Err(unexpected(t, "',', ')' or identifier")),
                            }
                            match toks.get(i) {
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                t => return Err(unexpected(t, "',' or ')'")),
                            }
                        }
                        if neg { Op::NotIn(vals) } else { Op::In(vals) }
                    }
                    t => return Err(unexpected(t, "'=', '!=', '==', 'in', notin'")),
                }
            };
            reqs.push(Requirement { key, op });
            match toks.get(i) {
                None => {}
                Some(Tok::Comma) => {
                    i += 1;
                    if i == toks.len() {
                        return Err(unexpected(None, "identifier after ','"));
                    }
                }
                t => return Err(unexpected(t, "','")),
            }
        }
        Ok(LabelSelector { requirements: reqs })
    }

    /// Builds the selector a Service's `spec.selector` map means (every pair must match exactly).
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                })
                .collect(),
        }
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => s.clone(),
        Tok::Comma => ",".into(),
        Tok::Eq => "=".into(),
        Tok::DoubleEq => "==".into(),
        Tok::NotEq => "!=".into(),
        Tok::In => "in".into(),
        Tok::NotIn => "notin".into(),
        Tok::Open => "(".into(),
        Tok::Close => ")".into(),
        Tok::Bang => "!".into(),
        Tok::Gt => ">".into(),
        Tok::Lt => "<".into(),
    }
}

/// The `metadata.labels` of an object as a map (empty when absent or malformed).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// True for `!=`.
    pub negated: bool,
}

/// A parsed field selector: all terms must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The terms, all of which must match.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d,e==f`, honouring backslash escapes of `,`, `=`, `!` and `\` in values.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = find_op(&part, "!=") {
                (f, v, true)
            } else if let Some((f, v)) = find_op(&part, "==") {
                (f, v, false)
            } else if let Some((f, v)) = find_op(&part, "=") {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                value: unescape(&value),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a `metadata.name=X` term requires, if the selector has one (lets lists narrow early).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }

    /// Whether an object of resource type `rt` satisfies every term (the kind decides how its
    /// selectable fields read).
    pub fn matches(&self, rt: &ResourceType, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = field_value(rt, obj, &t.field);
            (actual == t.value) != t.negated
        })
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn find_op(term: &str, op: &str) -> Option<(String, String)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i + op.len() <= bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if term[i..].starts_with(op) {
            return Some((term[..i].to_string(), term[i + op.len()..].to_string()));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The string value of a selectable field, with the conversions kube's field-label functions apply
/// (booleans as `true`/`false`, the defaults they assume for absent fields).
pub fn field_value(rt: &ResourceType, obj: &Value, field: &str) -> String {
    let label = svcnet_kinds::kinds::of(rt)
        .field_labels
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, l)| *l);
    match label {
        Some(FieldLabel::At(pointer)) => return str_at(obj, pointer),
        Some(FieldLabel::BoolOrFalse) => {
            let pointer = format!("/{}", field.replace('.', "/"));
            return obj
                .pointer(&pointer)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string();
        }
        None => {}
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),zone notin (a),gpu,!legacy")
            .unwrap();
        assert_eq!(s.requirements.len(), 6);
        let l = labels(&[("app", "web"), ("env", "prod"), ("gpu", "1"), ("zone", "b")]);
        assert!(s.matches(&l));
        let l2 = labels(&[("app", "web"), ("env", "prod"), ("gpu", "1"), ("legacy", "x")]);
        assert!(!s.matches(&l2));
        assert!(
            LabelSelector::parse("app==web")
                .unwrap()
                .matches(&labels(&[("app", "web")]))
        );
        assert!(
            LabelSelector::parse("n>3")
                .unwrap()
                .matches(&labels(&[("n", "4")]))
        );
        assert!(
            !LabelSelector::parse("n<3")
                .unwrap()
                .matches(&labels(&[("n", "4")]))
        );
    }

    #[test]
    fn not_equal_matches_missing_label() {
        let s = LabelSelector::parse("tier!=db").unwrap();
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "app=",
            "=x",
            "a in b",
            "a in (b",
            "a,,b",
            "a b",
            "a=b,",
            "Bad Key=1",
            "a=b c",
        ] {
            if bad == "app=" {
                continue; // the empty value is legal
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
        assert!(LabelSelector::parse("app=").is_ok());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selectors() {
        let pod_rt = crate::resources::lookup("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let s = FieldSelector::parse("spec.nodeName=n1,metadata.name!=q").unwrap();
        assert!(s.matches(pod_rt, &pod));
        let s = FieldSelector::parse("spec.hostNetwork=false").unwrap();
        assert!(s.matches(pod_rt, &pod));
        let s = FieldSelector::parse("metadata.name==p").unwrap();
        assert_eq!(s.required_value("metadata.name"), Some("p"));
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(s.terms[0].value, "a,b");
        assert!(FieldSelector::parse("nonsense").is_err());
        let ev = json!({"involvedObject": {"name": "x", "kind": "Service"}, "source": {"component": "c"}});
        assert!(
            FieldSelector::parse("involvedObject.name=x,involvedObject.kind=Service,source=c")
                .unwrap()
                .matches(crate::resources::lookup("", "v1", "events").unwrap(), &ev)
        );
    }
}
