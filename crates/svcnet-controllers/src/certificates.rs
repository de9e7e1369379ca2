//! kube-controller-manager's certificate controllers for CertificateSigningRequests:
//!
//! - `csrapproving` ([`approval`]): a node-client request (signer
//!   `kubernetes.io/kube-apiserver-client-kubelet`, CN `system:node:<name>`, O `system:nodes`, usages
//!   within digital signature, key encipherment and client auth, no subject alternative names) is
//!   approved when a SubjectAccessReview says its requester may `create
//!   certificatesigningrequests/selfnodeclient` (a node renewing its own certificate) or `…/nodeclient`
//!   (a bootstrap token's user, through kubeadm's bindings). Anything else waits for a person
//!   (`kubectl certificate approve`).
//! - `csrsigning`: an approved request for `kubernetes.io/kube-apiserver-client-kubelet` or
//!   `kubernetes.io/kube-apiserver-client` is signed by the cluster CA, valid from five minutes ago
//!   (clock skew, as kube backdates; less for short lifetimes) for `spec.expirationSeconds` capped at `--cluster-signing-duration`;
//!   a request the signer refuses gets a `Failed` condition saying why.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use svcnet_informer::{Event, Informer};
use tracing::{info, warn};

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other API clients' certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// How the signer signs.
pub struct SignerConfig {
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
    /// Its key (PEM).
    pub ca_key_pem: String,
    /// The longest validity handed out (kube-controller-manager's `--cluster-signing-duration`, a year
    /// by default); `spec.expirationSeconds` can ask for less.
    pub max_duration: Duration,
}

/// Errors setting the signer up.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The CA certificate or key could not be read.
    #[error("the cluster CA: {0}")]
    Ca(#[from] rcgen::Error),
}

/// The subject a request asks for and its public key, if the request is a validly signed PKCS#10 PEM.
pub struct ParsedRequest {
    /// The common name.
    pub common_name: String,
    /// The organizations.
    pub organizations: Vec<String>,
    /// Whether it asks for subject alternative names.
    pub has_sans: bool,
    params: rcgen::CertificateSigningRequestParams,
}

/// Parses and verifies the request of a CSR (PEM).
pub fn parse_request(pem: &[u8]) -> Result<ParsedRequest, String> {
    let text =
        std::str::from_utf8(pem).map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    let params = rcgen::CertificateSigningRequestParams::from_pem(text).map_err(|e| e.to_string())?;
    let mut common_name = String::new();
    let mut organizations = Vec::new();
    for (ty, value) in params.params.distinguished_name.iter() {
        let text = match value {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
            _ => continue,
        };
        match ty {
            rcgen::DnType::CommonName => common_name = text,
            rcgen::DnType::OrganizationName => organizations.push(text),
            _ => {}
        }
    }
    Ok(ParsedRequest {
        common_name,
        organizations,
        has_sans: !params.params.subject_alt_names.is_empty(),
        params,
    })
}

/// kube's `ValidateKubeletClientCSR`: why the request is not a kubelet client certificate request.
pub fn kubelet_client_problem(req: &ParsedRequest, usages: &[String]) -> Option<String> {
    if req.organizations != ["system:nodes"] {
        return Some("subject organization is not system:nodes".into());
    }
    if req.has_sans {
        return Some("DNS, email, IP or URI subjectAltNames are not allowed".into());
    }
    if !req.common_name.starts_with("system:node:") {
        return Some("subject common name does not begin with system:node:".into());
    }
    let allowed = ["key encipherment", "digital signature", "client auth"];
    if !usages.iter().any(|u| u == "client auth") || usages.iter().any(|u| !allowed.contains(&u.as_str())) {
        return Some(format!(
            "usages did not match [digital signature client auth] or [digital signature key encipherment client auth]: {usages:?}"
        ));
    }
    None
}

fn condition(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty))
}

fn request_pem(csr: &CertificateSigningRequest) -> &[u8] {
    &csr.spec.request.0
}

/// Runs the approver and the signer until the watch ends.
pub async fn run_certificate_controllers(client: Client, signer: SignerConfig) -> Result<(), SignerError> {
    let key = rcgen::KeyPair::from_pem(&signer.ca_key_pem)?;
    let issuer = Arc::new(rcgen::Issuer::from_ca_cert_pem(&signer.ca_cert_pem, key)?);
    let csrs: Informer<CertificateSigningRequest> = Informer::new(crate::trim_managed_fields);
    csrs.spawn(Api::all(client.clone()));
    let mut events = csrs.subscribe();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    while let Some(ev) = events.recv().await {
        let Event::Apply { obj, .. } = ev else { continue };
        let name = obj.metadata.name.clone().unwrap_or_default();
        if condition(&obj, "Denied") || condition(&obj, "Failed") {
            continue;
        }
        if !condition(&obj, "Approved") {
            if let Err(e) = approve(&client, &api, &obj).await {
                warn!(csr = %name, error = %e, "csrapproving");
            }
            continue;
        }
        let issued = obj
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty());
        if issued {
            continue;
        }
        if let Err(e) = sign(&api, &obj, &issuer, signer.max_duration).await {
            warn!(csr = %name, error = %e, "csrsigning");
        }
    }
    Ok(())
}

/// May the requester create `certificatesigningrequests/<subresource>`? (kube's `authorize`).
async fn may(
    client: &Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, kube::Error> {
    let spec = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                verb: Some("create".into()),
                subresource: Some(subresource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn approve(
    client: &Client,
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
) -> Result<(), kube::Error> {
    if csr.spec.signer_name != KUBELET_CLIENT_SIGNER {
        return Ok(());
    }
    let Ok(req) = parse_request(request_pem(csr)) else {
        return Ok(());
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if kubelet_client_problem(&req, &usages).is_some() {
        return Ok(());
    }
    let own = csr.spec.username.as_deref() == Some(req.common_name.as_str());
    let message = if own && may(client, csr, "selfnodeclient").await? {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    } else if may(client, csr, "nodeclient").await? {
        "Auto approving kubelet client certificate after SubjectAccessReview."
    } else {
        return Ok(());
    };
    let name = csr.metadata.name.clone().unwrap_or_default();
    // Updates of `approval` and `status` (kube's role for this controller grants update on them, not
    // patch), conditional on the resourceVersion the decision was made on.
    let approved = with_condition(csr, "Approved", "AutoApproved", message);
    api.replace_subresource("approval", &name, &PostParams::default(), &approved)
        .await?;
    info!(csr = %name, user = csr.spec.username.as_deref().unwrap_or(""), "approved");
    Ok(())
}

/// `csr` with one more condition of `type_` (status True), stamped now.
fn with_condition(
    csr: &CertificateSigningRequest,
    type_: &str,
    reason: &str,
    message: &str,
) -> CertificateSigningRequest {
    let mut out = csr.clone();
    let status = out.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(
        serde_json::from_value(json!({
            "type": type_, "status": "True", "reason": reason, "message": message,
            "lastUpdateTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }))
        .expect("a condition"),
    );
    out
}

async fn fail(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    why: &str,
) -> Result<(), kube::Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let failed = with_condition(csr, "Failed", "SignerValidationFailure", why);
    api.replace_status(&name, &PostParams::default(), &failed).await?;
    warn!(csr = %name, reason = why, "refused to sign");
    Ok(())
}

async fn sign(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    max: Duration,
) -> Result<(), kube::Error> {
    let signer = csr.spec.signer_name.as_str();
    if signer != KUBELET_CLIENT_SIGNER && signer != CLIENT_SIGNER {
        return Ok(());
    }
    let req = match parse_request(request_pem(csr)) {
        Ok(r) => r,
        Err(e) => return fail(api, csr, &format!("unable to parse csr: {e}")).await,
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if signer == KUBELET_CLIENT_SIGNER
        && let Some(why) = kubelet_client_problem(&req, &usages)
    {
        return fail(api, csr, &why).await;
    }
    if signer == CLIENT_SIGNER
        && (!usages.iter().any(|u| u == "client auth") || usages.iter().any(|u| u == "server auth"))
    {
        return fail(
            api,
            csr,
            &format!("invalid usage for client certificate: {usages:?}"),
        )
        .await;
    }
    let lifetime = match csr.spec.expiration_seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64).min(max),
        _ => max,
    };
    let pem = match issue(&req, &usages, lifetime, issuer) {
        Ok(p) => p,
        Err(e) => return fail(api, csr, &format!("signing: {e}")).await,
    };
    let name = csr.metadata.name.clone().unwrap_or_default();
    // The certificate in PEM (ByteString encodes it as base64 on the wire).
    let mut signed = csr.clone();
    signed.status.get_or_insert_with(Default::default).certificate =
        Some(k8s_openapi::ByteString(pem.into_bytes()));
    api.replace_status(&name, &PostParams::default(), &signed).await?;
    info!(csr = %name, subject = %req.common_name, lifetime_s = lifetime.as_secs(), "signed");
    Ok(())
}

/// The certificate for `req` (its subject and key; our usages and validity), PEM.
fn issue(
    req: &ParsedRequest,
    usages: &[String],
    lifetime: Duration,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
) -> Result<String, rcgen::Error> {
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = req.params.params.distinguished_name.clone();
    params.not_before = now - svcnet_api::certificates::backdate(lifetime);
    params.not_after = now + lifetime;
    let serial: [u8; 16] = rand_bytes();
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
    for u in usages {
        match u.as_str() {
            "digital signature" => params.key_usages.push(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(rcgen::KeyUsagePurpose::KeyEncipherment),
            "client auth" => params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
            _ => {}
        }
    }
    params.use_authority_key_identifier_extension = true;
    let csr = rcgen::CertificateSigningRequestParams {
        params,
        public_key: req.params.public_key.clone(),
    };
    Ok(csr.signed_by(issuer)?.pem())
}

/// Random bytes for a serial number, positive (top bit clear) as RFC 5280 asks.
fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    for (i, chunk) in b.iter_mut().enumerate() {
        *chunk = uuid::Uuid::new_v4().as_bytes()[i % 16];
    }
    b[0] &= 0x7f;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str]) -> (String, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    #[test]
    fn node_client_requests_are_recognised_and_signed() {
        let (pem, _key) = request("system:node:a", &["system:nodes"]);
        let req = parse_request(pem.as_bytes()).unwrap();
        assert_eq!(req.common_name, "system:node:a");
        let usages: Vec<String> = ["digital signature", "client auth"].map(String::from).to_vec();
        assert_eq!(kubelet_client_problem(&req, &usages), None);
        let server: Vec<String> = ["server auth"].map(String::from).to_vec();
        assert!(kubelet_client_problem(&req, &server).is_some());
        let (other, _) = request("alice", &["system:nodes"]);
        let other = parse_request(other.as_bytes()).unwrap();
        assert_eq!(
            kubelet_client_problem(&other, &usages).as_deref(),
            Some("subject common name does not begin with system:node:")
        );

        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "svcnet-ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
        let cert = issue(&req, &usages, Duration::from_secs(3600), &issuer).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let x = pem.parse_x509().unwrap();
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        assert_eq!(x.subject().to_string(), "CN=system:node:a, O=system:nodes");
        assert_eq!(x.issuer().to_string(), "CN=svcnet-ca");
    }
}
