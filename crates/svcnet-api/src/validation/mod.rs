//! apimachinery's generic validators and `ObjectMeta` validation, with Kubernetes' exact message texts.
//!
//! The format checks (`is_dns1123_label`, `is_qualified_name`, ...) return plain message strings, as
//! `k8s.io/apimachinery/pkg/util/validation` does, so callers can wrap them into [`FieldError`]s at the
//! right path. The `validate_*` functions return field errors directly. Users compare these texts with what a
//! real cluster prints, so the wording, punctuation and even the odd double space in the examples are kept
//! exactly as kube-apiserver (1.33) emits them.
//!
//! The regular expressions kube uses are simple enough that they are matched by hand here; the regex text is
//! still quoted in the messages because kube quotes it.

use std::collections::BTreeMap;

use crate::field::{FieldError, Path};

mod ip;
mod meta;

pub use ip::{
    canonical_family_ip, is_ipv6_string, is_valid_cidr, is_valid_ip, parse_cidr_sloppy, parse_ip_sloppy,
    validate_non_special_ip,
};
pub use meta::{
    go_string_list, go_time_string, prepare_object_meta_for_update, validate_finalizer_name,
    validate_finalizers, validate_kube_finalizer_name, validate_object_meta, validate_object_meta_update,
    validate_owner_references,
};

/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum length of a DNS-1035 label.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a label value (and of the name part of a qualified name).
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Maximum total size of all annotation keys and values of one object (256 KiB).
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * (1 << 10);
/// The detail kube attaches to changes of immutable fields.
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";
/// The detail kube attaches to negative values of non-negative fields.
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// `MaxLenError`: the message for a string that is too long.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} bytes")
}

/// `EmptyError`: the message for a string that must not be empty.
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

/// `InclusiveRangeError`: the message for a number outside `[lo, hi]`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// `RegexError`: a format message followed by examples and the regex, exactly as apimachinery builds it
/// (note the `', ` after each example, which yields kube's `'my-name',  or '123-abc'` double space).
pub fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{re}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(ex);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(re);
    out.push_str("')");
    out
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f) && is_lower_alnum(l) && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Matches the DNS-1123 subdomain regex: dot-separated DNS-1123 labels.
fn matches_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(matches_dns1123_label)
}

/// Matches `[a-z]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_lowercase() && is_lower_alnum(l) && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_label_key_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `IsDNS1123Label`: a lowercase RFC 1123 label, at most 63 bytes.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            // A valid subdomain that is not a valid label can only be wrong because of its dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`: a lowercase RFC 1123 subdomain, at most 253 bytes.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label`: an RFC 1035 label (starts with a letter), at most 63 bytes.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName` (= `IsLabelKey`): an optional DNS-1123 subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_` or `.`, starting and ending with an alphanumeric.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_ERR_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(LABEL_VALUE_MAX_LENGTH)));
    }
    if !matches_label_key_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_ERR_MSG,
                LABEL_KEY_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or at most 63 alphanumerics, `-`, `_` or `.` starting and ending with an
/// alphanumeric.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_label_key_name(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortNum`: 1 to 65535 inclusive.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// `IsInRange`: `lo` to `hi` inclusive.
pub fn is_in_range(value: i64, lo: i64, hi: i64) -> Vec<String> {
    if (lo..=hi).contains(&value) {
        Vec::new()
    } else {
        vec![inclusive_range_error(lo, hi)]
    }
}

/// `IsValidPortName`: an IANA service name (RFC 6335), lower case only: at most 15 characters of
/// `[-a-z0-9]`, at least one letter, no leading, trailing or doubled hyphen.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// `IsFullyQualifiedDomainName`: a DNS-1123 subdomain with at least two labels; a trailing dot is allowed.
pub fn is_fully_qualified_domain_name(path: &Path, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = is_dns1123_subdomain(name);
    if !errs.is_empty() {
        return vec![FieldError::invalid(path, name, errs.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let errs = is_dns1123_label(label);
        if !errs.is_empty() {
            return vec![FieldError::invalid(path, label, errs.join(","))];
        }
    }
    Vec::new()
}

/// A name format check for one kind (`ValidateNameFunc`): `prefix` is true when the value is a
/// `generateName` prefix, which may end in `-` because random characters follow.
pub type NameValidator = fn(&str, bool) -> Vec<String>;

/// Replaces a trailing `-` of a `generateName` prefix so the rest can be checked as a complete name. Like
/// kube, this drops the character before the dash as well (`maskTrailingDash`).
fn mask_trailing_dash(name: &str) -> String {
    if name.ends_with('-') {
        if name.len() >= 2 {
            // Safe to slice: the last byte is '-', an ASCII character, so len-2 may split a multi-byte
            // character only if the second last char is multi-byte; fall back to char-based trimming then.
            let mut chars: Vec<char> = name.chars().collect();
            chars.truncate(chars.len().saturating_sub(2));
            let mut s: String = chars.into_iter().collect();
            s.push('a');
            return s;
        }
        // kube would panic on a lone "-"; treating it as "a" accepts the prefix, which is the closest
        // non-panicking behaviour (the generated name is validated again anyway).
        return "a".to_string();
    }
    name.to_string()
}

/// `NameIsDNSSubdomain`: the name format of most kinds.
pub fn name_is_dns_subdomain(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        return is_dns1123_subdomain(&mask_trailing_dash(name));
    }
    is_dns1123_subdomain(name)
}

/// `path.ValidatePathSegmentName`: the name format of the RBAC kinds (`system:basic-user` is valid):
/// anything that is a URL path segment.
pub fn name_is_path_segment(name: &str, prefix: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if !prefix && (name == "." || name == "..") {
        errs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// kube's `ValidateIPAddressName`: an IPAddress is named by its address, in canonical form so that one
/// address has exactly one name (and one object) whatever way it is written.
pub fn name_is_ip_address(name: &str, _prefix: bool) -> Vec<String> {
    match parse_ip_sloppy(name) {
        None => vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()],
        Some(ip) => {
            let canonical = ip.to_string();
            if canonical == name {
                Vec::new()
            } else {
                vec![format!("must be in canonical form ({canonical:?})")]
            }
        }
    }
}

/// `NameIsDNSLabel`: the name format of Namespaces (RFC 1123 label).
pub fn name_is_dns_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        return is_dns1123_label(&mask_trailing_dash(name));
    }
    is_dns1123_label(name)
}

/// `NameIsDNS1035Label`: the name format of Services (RFC 1035 label: must start with a letter).
pub fn name_is_dns1035_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        return is_dns1035_label(&mask_trailing_dash(name));
    }
    is_dns1035_label(name)
}

/// `ValidateNamespaceName`: namespaces are DNS-1123 labels.
pub fn validate_namespace_name(name: &str, prefix: bool) -> Vec<String> {
    name_is_dns_label(name, prefix)
}

/// `ValidateNonnegativeField`.
pub fn validate_nonnegative_field(value: i64, path: &Path) -> Vec<FieldError> {
    if value < 0 {
        vec![FieldError::invalid(path, value, IS_NEGATIVE_ERROR_MSG)]
    } else {
        Vec::new()
    }
}

/// `ValidateQualifiedName`: each message becomes an `Invalid` error at `path`.
pub fn validate_qualified_name(value: &str, path: &Path) -> Vec<FieldError> {
    is_qualified_name(value)
        .into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

/// `ValidateDNS1123Label`: each message becomes an `Invalid` error at `path`.
pub fn validate_dns1123_label(value: &str, path: &Path) -> Vec<FieldError> {
    is_dns1123_label(value)
        .into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

/// `ValidateDNS1123Subdomain`: each message becomes an `Invalid` error at `path`.
pub fn validate_dns1123_subdomain(value: &str, path: &Path) -> Vec<FieldError> {
    is_dns1123_subdomain(value)
        .into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

/// `ValidateLabelName`.
pub fn validate_label_name(name: &str, path: &Path) -> Vec<FieldError> {
    validate_qualified_name(name, path)
}

/// `ValidateLabels`: keys are qualified names, values valid label values. Like kube, every error is
/// reported at the map's path (not keyed); keys are visited in sorted order so output is deterministic.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        errs.extend(validate_label_name(k, path));
        for msg in is_valid_label_value(v) {
            errs.push(FieldError::invalid(path, v.as_str(), msg));
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are qualified names compared case-insensitively, and all keys and values
/// together may not exceed 256 KiB.
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for k in annotations.keys() {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
    }
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT_BYTES));
    }
    errs
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::field::go_quote;

    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const KEY_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dns1123_label_table() {
        let long = "a".repeat(64);
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("a", vec![]),
            ("my-name", vec![]),
            ("123-abc", vec![]),
            (&long[..63], vec![]),
            ("", strs(&[LABEL_MSG])),
            ("Foo_bar", strs(&[LABEL_MSG])),
            ("-a", strs(&[LABEL_MSG])),
            ("a-", strs(&[LABEL_MSG])),
            ("A", strs(&[LABEL_MSG])),
            ("a.b", strs(&["must not contain dots"])),
            (&long, strs(&["must be no more than 63 bytes"])),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1123_label(input), want, "input {input:?}");
        }
    }

    #[test]
    fn dns1035_and_subdomain_table() {
        assert!(is_dns1035_label("my-svc").is_empty());
        assert_eq!(is_dns1035_label("1abc"), strs(&[DNS1035_MSG]));
        assert_eq!(is_dns1035_label("abc-"), strs(&[DNS1035_MSG]));
        assert_eq!(
            is_dns1035_label(&"a".repeat(64)),
            strs(&["must be no more than 63 bytes"])
        );
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert!(is_dns1123_subdomain("1.2.3.4").is_empty());
        for bad in ["", "a..b", ".a", "a.", "A.com", "a_b.com", "-a.com"] {
            assert_eq!(is_dns1123_subdomain(bad), strs(&[SUBDOMAIN_MSG]), "input {bad:?}");
        }
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        assert_eq!(
            is_dns1123_subdomain(&long),
            strs(&["must be no more than 253 bytes"])
        );
    }

    #[test]
    fn qualified_name_table() {
        for ok in [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "example.com/Upper_Case.x",
            "a",
        ] {
            assert!(is_qualified_name(ok).is_empty(), "input {ok:?}");
        }
        assert_eq!(
            is_qualified_name(""),
            strs(&["name part must be non-empty", KEY_NAME_MSG])
        );
        assert_eq!(
            is_qualified_name("a/"),
            strs(&["name part must be non-empty", KEY_NAME_MSG])
        );
        assert_eq!(is_qualified_name("/a"), strs(&["prefix part must be non-empty"]));
        assert_eq!(is_qualified_name("-a"), strs(&[KEY_NAME_MSG]));
        assert_eq!(
            is_qualified_name("Bad_Prefix/a"),
            vec![format!("prefix part {SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            strs(&["name part must be no more than 63 bytes"])
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec!["a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string()]
        );
    }

    #[test]
    fn label_value_table() {
        for ok in ["", "a", "My_Value.1", "12345"] {
            assert!(is_valid_label_value(ok).is_empty(), "input {ok:?}");
        }
        assert_eq!(is_valid_label_value("-a"), strs(&[VALUE_MSG]));
        assert_eq!(is_valid_label_value("a b"), strs(&[VALUE_MSG]));
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)),
            strs(&["must be no more than 63 bytes"])
        );
    }

    #[test]
    fn port_num_and_name_table() {
        assert!(is_valid_port_num(1).is_empty());
        assert!(is_valid_port_num(65535).is_empty());
        for bad in [0, -1, 65536] {
            assert_eq!(
                is_valid_port_num(bad),
                strs(&["must be between 1 and 65535, inclusive"])
            );
        }
        assert_eq!(
            is_in_range(5, 1, 3),
            strs(&["must be between 1 and 3, inclusive"])
        );
        for ok in ["http", "h-t-t-p", "a1", "x"] {
            assert!(is_valid_port_name(ok).is_empty(), "input {ok:?}");
        }
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("abcdefghijklmnop", vec!["must be no more than 15 bytes"]),
            (
                "Http",
                vec!["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"],
            ),
            ("1234", vec!["must contain at least one letter (a-z)"]),
            ("a--b", vec!["must not contain consecutive hyphens"]),
            ("-ab", vec!["must not begin or end with a hyphen"]),
            (
                "",
                vec![
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                    "must contain at least one letter (a-z)",
                ],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(is_valid_port_name(input), strs(&want), "input {input:?}");
        }
    }

    #[test]
    fn ip_and_cidr_parsing() {
        let p = Path::new("x");
        for ok in [
            "1.2.3.4",
            "010.001.2.3",
            "::1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "::ffff:01.2.3.4",
        ] {
            assert!(is_valid_ip(&p, ok).is_empty(), "input {ok:?}");
        }
        for bad in [
            "",
            "1.2.3",
            "256.1.1.1",
            "1.2.3.4/32",
            "fe80::1%eth0",
            "a.b.c.d",
            " 1.2.3.4",
        ] {
            assert_eq!(
                is_valid_ip(&p, bad)
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>(),
                vec![format!(
                    "x: Invalid value: {}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    go_quote(bad)
                )],
            );
        }
        for ok in [
            "10.0.0.0/8",
            "1.2.3.4/32",
            "0.0.0.0/0",
            "2001:db8::/64",
            "010.0.0.0/8",
            "::/0",
        ] {
            assert!(is_valid_cidr(&p, ok).is_empty(), "input {ok:?}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "2001:db8::/129",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert_eq!(
                is_valid_cidr(&p, bad)
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>(),
                vec![format!(
                    "x: Invalid value: {}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    go_quote(bad)
                )],
            );
        }
        assert!(is_ipv6_string("2001:db8::1"));
        assert!(!is_ipv6_string("::ffff:1.2.3.4"));
        assert!(!is_ipv6_string("1.2.3.4"));
    }

    #[test]
    fn non_special_ip_table() {
        let p = Path::new("spec.externalIPs[0]");
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("1.2.3.4", vec![]),
            ("2001:db8::1", vec![]),
            ("0.0.0.0", vec!["may not be unspecified (0.0.0.0)"]),
            ("::", vec!["may not be unspecified (::)"]),
            (
                "127.0.0.1",
                vec!["may not be in the loopback range (127.0.0.0/8, ::1/128)"],
            ),
            (
                "::1",
                vec!["may not be in the loopback range (127.0.0.0/8, ::1/128)"],
            ),
            (
                "169.254.169.254",
                vec!["may not be in the link-local range (169.254.0.0/16, fe80::/10)"],
            ),
            (
                "fe80::1",
                vec!["may not be in the link-local range (169.254.0.0/16, fe80::/10)"],
            ),
            (
                "224.0.0.1",
                vec!["may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"],
            ),
            (
                "ff02::1",
                vec!["may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"],
            ),
        ];
        for (ip, want) in cases {
            let got: Vec<String> = validate_non_special_ip(ip, &p)
                .into_iter()
                .map(|e| e.detail)
                .collect();
            assert_eq!(got, strs(&want), "input {ip:?}");
        }
    }

    #[test]
    fn fqdn_table() {
        let p = Path::new("f");
        assert!(is_fully_qualified_domain_name(&p, "example.com").is_empty());
        assert!(is_fully_qualified_domain_name(&p, "example.com.").is_empty());
        assert_eq!(
            is_fully_qualified_domain_name(&p, "")[0].to_string(),
            "f: Required value"
        );
        assert_eq!(
            is_fully_qualified_domain_name(&p, "example")[0].to_string(),
            "f: Invalid value: \"example\": should be a domain with at least two segments separated by dots"
        );
    }

    #[test]
    fn name_validators() {
        assert!(name_is_dns1035_label("my-svc-", true).is_empty());
        assert!(name_is_dns_subdomain("pod.name-", true).is_empty());
        assert_eq!(name_is_dns1035_label("1svc-", true), strs(&[DNS1035_MSG]));
        assert!(!name_is_dns_label("my-ns-", false).is_empty());
        assert!(name_is_dns_label("my-ns-", true).is_empty());
        assert!(validate_namespace_name("default", false).is_empty());
        // A lone dash must not panic.
        assert!(name_is_dns_subdomain("-", true).is_empty());
    }

    fn meta(json: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json).expect("valid ObjectMeta")
    }

    fn rendered(errs: Vec<FieldError>) -> Vec<String> {
        errs.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn object_meta_create_table() {
        let p = Path::new("metadata");
        let cases: Vec<(serde_json::Value, Vec<String>)> = vec![
            (serde_json::json!({"name": "ok", "namespace": "default"}), vec![]),
            (
                serde_json::json!({"namespace": "default"}),
                vec!["metadata.name: Required value: name or generateName is required".into()],
            ),
            (
                serde_json::json!({"name": "Foo_bar", "namespace": "default"}),
                vec![format!("metadata.name: Invalid value: \"Foo_bar\": {DNS1035_MSG}")],
            ),
            (
                serde_json::json!({"name": "ok"}),
                vec!["metadata.namespace: Required value".into()],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "Bad"}),
                vec![format!("metadata.namespace: Invalid value: \"Bad\": {LABEL_MSG}")],
            ),
            (
                serde_json::json!({"name": "ok", "generateName": "1x-", "namespace": "d"}),
                vec![format!("metadata.generateName: Invalid value: \"1x-\": {DNS1035_MSG}")],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "generation": -1}),
                vec!["metadata.generation: Invalid value: -1: must be greater than or equal to 0".into()],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "labels": {"-bad": "x", "good": "-bad"}}),
                vec![
                    format!("metadata.labels: Invalid value: \"-bad\": {KEY_NAME_MSG}"),
                    format!("metadata.labels: Invalid value: \"-bad\": {VALUE_MSG}"),
                ],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "annotations": {"Example.COM/Mixed": "v", "a b": "v"}}),
                vec![format!("metadata.annotations: Invalid value: \"a b\": {KEY_NAME_MSG}")],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "finalizers": ["example.com/f", "kubernetes", "custom"]}),
                vec!["metadata.finalizers[2]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified".into()],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "finalizers": ["orphan", "foregroundDeletion"]}),
                vec!["metadata.finalizers: Invalid value: []string{\"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set".into()],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "finalizers": ["a/b/c"]}),
                vec![
                    "metadata.finalizers: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
                    "metadata.finalizers[0]: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
                ],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "ownerReferences": [{"apiVersion": "", "kind": "", "name": "", "uid": ""}]}),
                vec![
                    "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty".into(),
                    "metadata.ownerReferences.kind: Invalid value: \"\": must not be empty".into(),
                    "metadata.ownerReferences.name: Invalid value: \"\": must not be empty".into(),
                    "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty".into(),
                ],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "ownerReferences": [{"apiVersion": "a/b/c", "kind": "K", "name": "n", "uid": "u"}]}),
                vec!["metadata.ownerReferences.apiVersion: Invalid value: \"a/b/c\": version must not be empty".into()],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "d", "ownerReferences": [{"apiVersion": "v1", "kind": "Event", "name": "n", "uid": "u"}]}),
                vec!["metadata.ownerReferences: Invalid value: v1.OwnerReference{APIVersion:\"v1\", Kind:\"Event\", Name:\"n\", UID:\"u\", Controller:(*bool)(nil), BlockOwnerDeletion:(*bool)(nil)}: /v1, Kind=Event is disallowed from being an owner".into()],
            ),
        ];
        for (json, want) in cases {
            let m = meta(json.clone());
            assert_eq!(
                rendered(validate_object_meta(&m, true, name_is_dns1035_label, &p)),
                want,
                "meta {json}"
            );
        }
        let m = meta(
            serde_json::json!({"name": "n", "namespace": "d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "A", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "apps/v1", "kind": "B", "name": "b", "uid": "2", "controller": true}]}),
        );
        let errs = validate_object_meta(&m, true, name_is_dns1035_label, &p);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .detail
                .ends_with("Found \"true\" in references for A/a and B/b"),
            "{}",
            errs[0]
        );
        let m = meta(serde_json::json!({"name": "n"}));
        assert_eq!(
            rendered(validate_object_meta(&m, false, name_is_dns_subdomain, &p)),
            Vec::<String>::new()
        );
        let m = meta(serde_json::json!({"name": "n", "namespace": "x"}));
        assert_eq!(
            rendered(validate_object_meta(&m, false, name_is_dns_subdomain, &p)),
            vec!["metadata.namespace: Forbidden: not allowed on this type".to_string()]
        );
    }

    #[test]
    fn annotation_size_limit() {
        let p = Path::new("metadata.annotations");
        let mut a = BTreeMap::new();
        a.insert("k".to_string(), "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES - 1));
        assert!(validate_annotations(&a, &p).is_empty());
        a.insert("k".to_string(), "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES));
        assert_eq!(
            rendered(validate_annotations(&a, &p)),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes".to_string()]
        );
    }

    #[test]
    fn object_meta_update_table() {
        let p = Path::new("metadata");
        let old = meta(
            serde_json::json!({"name": "a", "namespace": "d", "uid": "u1", "resourceVersion": "5",
            "creationTimestamp": "2024-01-02T03:04:05Z", "generation": 2}),
        );
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                serde_json::json!({"name": "a", "namespace": "d", "uid": "u1", "resourceVersion": "5", "creationTimestamp": "2024-01-02T03:04:05Z", "generation": 2}),
                vec![],
            ),
            (
                serde_json::json!({"name": "a", "namespace": "d", "uid": "u1", "creationTimestamp": "2024-01-02T03:04:05Z", "generation": 2}),
                vec!["metadata.resourceVersion: Invalid value: \"\": must be specified for an update"],
            ),
            (
                serde_json::json!({"name": "b", "namespace": "e", "uid": "u2", "resourceVersion": "5", "creationTimestamp": "2024-01-02T03:04:06Z", "generation": 1}),
                vec![
                    "metadata.generation: Invalid value: 1: must not be decremented",
                    "metadata.name: Invalid value: \"b\": field is immutable",
                    "metadata.namespace: Invalid value: \"e\": field is immutable",
                    "metadata.uid: Invalid value: \"u2\": field is immutable",
                    "metadata.creationTimestamp: Invalid value: 2024-01-02 03:04:06 +0000 UTC: field is immutable",
                ],
            ),
            (
                serde_json::json!({"name": "a", "namespace": "d", "uid": "u1", "resourceVersion": "5", "creationTimestamp": "2024-01-02T03:04:05Z", "generation": 2, "deletionGracePeriodSeconds": 30}),
                vec!["metadata.deletionGracePeriodSeconds: Invalid value: 30: field is immutable"],
            ),
        ];
        for (json, want) in cases {
            let m = meta(json.clone());
            assert_eq!(
                rendered(validate_object_meta_update(&m, &old, &p)),
                strs(&want),
                "meta {json}"
            );
        }
        let deleting = meta(
            serde_json::json!({"name": "a", "resourceVersion": "1", "deletionTimestamp": "2024-01-02T03:04:05Z", "finalizers": ["example.com/a"]}),
        );
        let mut new = deleting.clone();
        new.finalizers = Some(vec!["example.com/a".into(), "example.com/b".into()]);
        assert_eq!(
            rendered(validate_object_meta_update(&new, &deleting, &p)),
            vec!["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/b\"}".to_string()]
        );
        // The registry fix-ups make omitted uid and changed creationTimestamp acceptable, as in kube.
        let mut new = meta(
            serde_json::json!({"name": "a", "namespace": "d", "resourceVersion": "5", "creationTimestamp": "2030-01-01T00:00:00Z", "generation": 2}),
        );
        prepare_object_meta_for_update(&mut new, &old);
        assert!(validate_object_meta_update(&new, &old, &p).is_empty());
    }

    #[test]
    fn go_time_format() {
        let t: Time = serde_json::from_value(serde_json::json!("2024-01-02T03:04:05.5Z")).expect("time");
        assert_eq!(go_time_string(&t), "2024-01-02 03:04:05.5 +0000 UTC");
    }

    #[test]
    fn managed_fields_checks() {
        let p = Path::new("metadata");
        let m = meta(
            serde_json::json!({"name": "a", "namespace": "d", "managedFields": [
            {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1"},
            {"manager": "x", "operation": "Bogus", "fieldsType": "FieldsV2"}]}),
        );
        assert_eq!(
            rendered(validate_object_meta(&m, true, name_is_dns1035_label, &p)),
            vec![
                "metadata.managedFields[1].operation: Invalid value: \"Bogus\": must be `Apply` or `Update`"
                    .to_string(),
                "metadata.managedFields[1].fieldsType: Invalid value: \"FieldsV2\": must be `FieldsV1`"
                    .to_string(),
            ]
        );
    }
}
