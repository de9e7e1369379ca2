//! The CertificateSigningRequest strategy, as kube's (`pkg/registry/certificates/certificates` and
//! `pkg/apis/certificates/validation`): on create the API server records who asked (`spec.username`,
//! `uid`, `groups`, `extra`) and clears the status; a main-resource update changes only metadata, the
//! `approval` subresource only the conditions, `status` the status; validation in kube's words (the
//! request a signed PKCS#10 PEM block, usages known, the signer name qualified, Approved and Denied
//! exclusive, a condition never removed, a certificate set once and only through `status`).

use base64::Engine;
use serde_json::{Value, json};
use svcnet_api::field::{BadValue, FieldError, Path};
use svcnet_api::validation::is_dns1123_label;

use super::Strategy;
use crate::authn::UserInfo;

/// CertificateSigningRequests.
pub(super) struct Csr;

/// kube's `allValidUsages`, sorted as its error lists them.
const USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Condition types whose status may only be `True`.
const TRUE_ONLY: &[&str] = &["Approved", "Denied", "Failed"];

impl Strategy for Csr {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }

    fn set_requester(&self, obj: &mut Value, user: &UserInfo) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        spec.insert("username".into(), json!(user.name));
        for (field, value) in [
            ("uid", (!user.uid.is_empty()).then(|| json!(user.uid))),
            ("groups", (!user.groups.is_empty()).then(|| json!(user.groups))),
            ("extra", (!user.extra.is_empty()).then(|| json!(user.extra))),
        ] {
            match value {
                Some(v) => spec.insert(field.into(), v),
                None => spec.remove(field),
            };
        }
    }

    fn prepare_update(&self, subresource: Option<&str>, new: &mut Value, old: &Value) {
        match subresource {
            // Only metadata changes through the main resource (status is kept generically).
            None => match old.get("spec") {
                Some(s) => new["spec"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("spec"));
                }
            },
            // Approval writes only the conditions.
            Some("approval") => {
                let conditions = new.pointer("/status/conditions").cloned();
                let mut rebuilt = old.clone();
                if let Some(m) = new.get("metadata") {
                    rebuilt["metadata"] = m.clone();
                }
                match conditions {
                    Some(c) => {
                        if !rebuilt.get("status").is_some_and(Value::is_object) {
                            rebuilt["status"] = json!({});
                        }
                        rebuilt["status"]["conditions"] = c;
                    }
                    None => {
                        if let Some(s) = rebuilt.get_mut("status").and_then(Value::as_object_mut) {
                            s.remove("conditions");
                        }
                    }
                }
                *new = rebuilt;
            }
            _ => {}
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = validate_spec(obj);
        errs.extend(validate_conditions(obj));
        let cert = obj
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let unchanged = old.is_some_and(|o| {
            o.pointer("/status/certificate")
                .and_then(Value::as_str)
                .unwrap_or_default()
                == cert
        });
        if !unchanged && let Err(e) = validate_certificate(cert) {
            errs.push(FieldError::invalid(
                "status.certificate",
                BadValue::Raw("\"<certificate data>\"".into()),
                e,
            ));
        }
        errs
    }

    fn admit_update<'a>(
        &'a self,
        rt: &'a svcnet_api::resources::ResourceType,
        subresource: Option<&'a str>,
        new: &'a mut Value,
        old: &'a Value,
        _hooks: &'a crate::hooks::KindHooks,
        _dry_run: bool,
    ) -> futures::future::BoxFuture<'a, Result<Vec<FieldError>, crate::errors::ApiError>> {
        Box::pin(std::future::ready(Ok(self.update_errors(
            rt,
            subresource,
            new,
            old,
        ))))
    }
}

impl Csr {
    /// kube's update validation of a CSR: conditions only added through `/approval` (Approved, Denied)
    /// or by the signer (Failed), never removed; the certificate written once, through `/status`.
    fn update_errors(
        &self,
        rt: &svcnet_api::resources::ResourceType,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
    ) -> Vec<FieldError> {
        let mut errs = super::validate_update(rt, self, new, old);
        let find = |o: &Value, t: &str| -> Vec<Value> {
            o.pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().filter(|c| c["type"] == t).cloned().collect())
                .unwrap_or_default()
        };
        for t in ["Approved", "Denied", "Failed"] {
            if find(new, t).len() < find(old, t).len() {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type {t:?}"),
                ));
            }
        }
        if subresource != Some("approval") {
            for t in ["Approved", "Denied"] {
                let (was, is) = (find(old, t), find(new, t));
                if is.len() > was.len() {
                    errs.push(FieldError::forbidden(
                        "status.conditions",
                        format!("updates may not add a condition of type {t:?}"),
                    ));
                } else if is.len() == was.len() && is != was {
                    errs.push(FieldError::forbidden(
                        "status.conditions",
                        format!("updates may not modify a condition of type {t:?}"),
                    ));
                }
            }
        }
        let cert = |o: &Value| {
            o.pointer("/status/certificate")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if cert(new) != cert(old) {
            if subresource != Some("status") {
                errs.push(FieldError::forbidden(
                    "status.certificate",
                    "updates may not set certificate content",
                ));
            } else if !cert(old).is_empty() {
                errs.push(FieldError::forbidden(
                    "status.certificate",
                    "updates may not modify existing certificate content",
                ));
            }
        }
        errs
    }
}

/// Go's `%#v` of a byte slice, as kube prints an invalid `spec.request`.
fn go_bytes(b: &[u8]) -> BadValue {
    let items: Vec<String> = b.iter().map(|x| format!("0x{x:x}")).collect();
    BadValue::Raw(format!("[]byte{{{}}}", items.join(", ")))
}

/// The PEM-decoded request, if it is a validly signed PKCS#10 request (kube's `ParseCSR` and
/// `CheckSignature`), or kube's error.
pub fn parse_request(pem: &[u8]) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|_| "x509: malformed certificate request".to_string())?;
    req.verify_signature()
        .map_err(|_| "x509: ECDSA verification failure".to_string())?;
    Ok(block.contents.clone())
}

fn validate_spec(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = Path::new("spec");
    let request = obj
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(request)
        .unwrap_or_default();
    if let Err(e) = parse_request(&raw) {
        errs.push(FieldError::invalid(
            spec.child("request").as_str(),
            go_bytes(&raw),
            e,
        ));
    }
    let usages: Vec<&str> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required(spec.child("usages").as_str(), ""));
    }
    for (i, u) in usages.iter().enumerate() {
        let path = spec.child("usages").index(i);
        if !USAGES.contains(u) {
            errs.push(FieldError::not_supported(path.as_str(), *u, USAGES));
        } else if usages[..i].contains(u) {
            errs.push(FieldError::duplicate(path.as_str(), *u));
        }
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    errs.extend(validate_signer_name(spec.child("signerName").as_str(), signer));
    if let Some(secs) = obj.pointer("/spec/expirationSeconds").and_then(Value::as_i64)
        && secs < 600
    {
        errs.push(FieldError::invalid(
            spec.child("expirationSeconds").as_str(),
            secs,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs
}

/// kube's `ValidateSignerName`: `domain/path`, the domain of DNS labels with at least one dot.
fn validate_signer_name(path: &str, signer: &str) -> Vec<FieldError> {
    if signer.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    if signer == "kubernetes.io/legacy-unknown" {
        return vec![FieldError::invalid(
            path,
            signer,
            "the legacy signerName is not allowed via this API version",
        )];
    }
    let Some((domain, _name)) = signer.split_once('/').filter(|(_, n)| !n.contains('/')) else {
        return vec![FieldError::invalid(
            path,
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut errs = Vec::new();
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        let problems = is_dns1123_label(label);
        if !problems.is_empty() {
            for p in problems {
                errs.push(FieldError::invalid(
                    path,
                    domain,
                    format!("validating label {label:?}: {p}"),
                ));
            }
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            path,
            domain,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    errs
}

fn validate_conditions(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("status").child("conditions");
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (mut approved, mut denied) = (false, false);
    let mut seen: Vec<String> = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let at = path.index(i);
        let ty = c.get("type").and_then(Value::as_str).unwrap_or_default();
        let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
        if ty.is_empty() {
            errs.push(FieldError::required(at.child("type").as_str(), ""));
        }
        let allowed: &[&str] = if TRUE_ONLY.contains(&ty) {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if status.is_empty() {
            errs.push(FieldError::required(at.child("status").as_str(), ""));
        } else if !allowed.contains(&status) {
            errs.push(FieldError::not_supported(
                at.child("status").as_str(),
                status,
                allowed,
            ));
        }
        match ty {
            "Approved" => {
                approved = true;
                if denied {
                    errs.push(FieldError::invalid(
                        at.child("type").as_str(),
                        ty,
                        "Approved and Denied conditions are mutually exclusive",
                    ));
                }
            }
            "Denied" => {
                denied = true;
                if approved {
                    errs.push(FieldError::invalid(
                        at.child("type").as_str(),
                        ty,
                        "Approved and Denied conditions are mutually exclusive",
                    ));
                }
            }
            _ => {}
        }
        if seen.iter().any(|s| s == ty) {
            errs.push(FieldError::duplicate(at.child("type").as_str(), ty));
        }
        seen.push(ty.to_string());
    }
    errs
}

/// kube's `validateCertificate`: empty, or PEM blocks that are all certificates.
fn validate_certificate(b64: &str) -> Result<(), String> {
    if b64.is_empty() {
        return Ok(());
    }
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "must contain at least one CERTIFICATE PEM block".to_string())?;
    let mut blocks = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let Ok(block) = block else { break };
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        block
            .parse_x509()
            .map_err(|_| "x509: malformed certificate".to_string())?;
        blocks += 1;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_b64(cn: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect()
    }

    #[test]
    fn create_validation_in_kubes_words() {
        let good = json!({"spec": {"request": request_b64("system:node:a"),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"], "expirationSeconds": 3600}});
        assert!(
            Csr.validate(&good, None).is_empty(),
            "{:?}",
            messages(&Csr.validate(&good, None))
        );
        let bad = json!({"spec": {"request": base64::engine::general_purpose::STANDARD.encode("x"),
            "signerName": "example", "usages": ["client auth", "flying", "client auth"],
            "expirationSeconds": 599}});
        let m = messages(&Csr.validate(&bad, None));
        assert_eq!(
            m[0],
            "spec.request: Invalid value: []byte{0x78}: PEM block type must be CERTIFICATE REQUEST"
        );
        assert!(
            m[1].starts_with("spec.usages[1]: Unsupported value: \"flying\": supported values: \"any\""),
            "{m:?}"
        );
        assert_eq!(m[2], "spec.usages[2]: Duplicate value: \"client auth\"");
        assert_eq!(
            m[3],
            "spec.signerName: Invalid value: \"example\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
        );
        assert_eq!(
            m[4],
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"
        );
        let both = json!({"spec": good["spec"].clone(), "status": {"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}});
        assert_eq!(
            messages(&Csr.validate(&both, None)),
            [
                "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
            ]
        );
    }

    #[test]
    fn requester_and_update_rules() {
        let mut obj = json!({"spec": {"username": "forged", "uid": "x"}});
        Csr.set_requester(
            &mut obj,
            &UserInfo::new("system:bootstrap:abcdef", &["system:bootstrappers"]),
        );
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert!(obj["spec"].get("uid").is_none());
        let old = json!({"metadata": {"name": "a"}, "spec": {"signerName": "x/y"},
            "status": {"certificate": "Zm9v"}});
        let mut new = json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "spec": {"signerName": "changed"},
            "status": {"certificate": "YmFy", "conditions": [{"type": "Approved", "status": "True"}]}});
        Csr.prepare_update(Some("approval"), &mut new, &old);
        assert_eq!(new["spec"]["signerName"], "x/y");
        assert_eq!(new["status"]["certificate"], "Zm9v");
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(new["metadata"]["labels"]["k"], "v");
    }
}
