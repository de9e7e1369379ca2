//! Certificates, the bearer token and the kubeconfig that `svcnet up` hands to users.
//!
//! On first start we generate a CA, a serving certificate signed by it (valid for loopback, the listen
//! address and the in-cluster names of the `kubernetes` service) and a random admin token, and keep them
//! under `DIR/pki`. Later starts reuse them, so a kubeconfig written once keeps working across restarts.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// Errors while creating or loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// Stored PEM data could not be parsed.
    #[error("invalid PEM in {0}")]
    Pem(PathBuf),
    /// rustls rejected the certificate or key.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The credentials the API server serves with and checks against.
#[derive(Clone)]
pub struct Credentials {
    /// PEM of the CA certificate clients should trust.
    pub ca_pem: String,
    /// PEM of the serving certificate.
    pub cert_pem: String,
    /// PEM of the serving key.
    pub key_pem: String,
    /// The admin bearer token.
    pub token: String,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Written to a temporary name and renamed, so a crash never leaves a half-written key behind.
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "svcnet-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Loads the credentials under `dir/pki`, creating any that are missing. `extra_ips` are added to the
/// serving certificate's subject alternative names (the listen address, the `kubernetes` ClusterIP).
pub fn load_or_create(dir: &Path, extra_ips: &[IpAddr]) -> Result<Credentials, PkiError> {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki).map_err(io_err(&pki))?;
    // The CA key and the token live here: owner-only, also for a directory an older version made 0755.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&pki, fs::Permissions::from_mode(0o700)).map_err(io_err(&pki))?;
    }
    let (ca_crt, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let (srv_crt, srv_key) = (pki.join("apiserver.crt"), pki.join("apiserver.key"));
    let token_path = pki.join("token");

    if !ca_crt.exists() || !ca_key.exists() {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_crt, &cert.pem())?;
        // A new CA invalidates any old serving certificate.
        let _ = fs::remove_file(&srv_crt);
    }
    let ca_pem = fs::read_to_string(&ca_crt).map_err(io_err(&ca_crt))?;
    let ca_key_pem = fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;

    let mut sans: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for ip in extra_ips {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    // Re-issue the serving certificate when it lacks an address we now serve on.
    let sans_path = pki.join("apiserver.sans");
    let recorded = fs::read_to_string(&sans_path).unwrap_or_default();
    if !srv_crt.exists() || !srv_key.exists() || recorded != sans.join(",") {
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        // The issuer is rebuilt from the same parameters the CA was made with: the subject it puts
        // into the serving certificate then matches the CA certificate's subject exactly.
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "svcnet-apiserver");
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&srv_key, &key.serialize_pem())?;
        write_private(&srv_crt, &cert.pem())?;
        write_private(&sans_path, &sans.join(","))?;
    }
    if !token_path.exists() {
        let bytes: [u8; 24] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&token_path, &token)?;
    }
    Ok(Credentials {
        ca_pem,
        cert_pem: fs::read_to_string(&srv_crt).map_err(io_err(&srv_crt))?,
        key_pem: fs::read_to_string(&srv_key).map_err(io_err(&srv_key))?,
        token: fs::read_to_string(&token_path)
            .map_err(io_err(&token_path))?
            .trim()
            .to_string(),
    })
}

/// The verifier of client certificates: signed by the cluster CA, for client authentication.
pub fn client_verifier(creds: &Credentials) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut creds.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|_| PkiError::Pem("ca.crt".into()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))
}

/// Asks clients for a certificate and checks that they hold its key (the handshake signature), but
/// leaves the chain to the authenticator: as in kube-apiserver, a certificate from another CA makes the
/// request anonymous (401, unless a token authenticates it) instead of failing the handshake.
#[derive(Debug)]
struct AskForClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AskForClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Builds the rustls server configuration (HTTP/2 and HTTP/1.1 via ALPN, as kube-apiserver offers).
/// Clients may present a certificate (X.509 client authentication: its chain is checked against the
/// cluster CA by [`client_verifier`] when the connection's user is worked out, see [`crate::authn`]).
pub fn server_config(creds: &Credentials) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let certs = rustls_pemfile::certs(&mut creds.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::Pem("apiserver.crt".into()))?;
    let key = rustls_pemfile::private_key(&mut creds.key_pem.as_bytes())
        .map_err(|_| PkiError::Pem("apiserver.key".into()))?
        .ok_or_else(|| PkiError::Pem("apiserver.key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AskForClientCert(client_verifier(creds)?));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Renders a kubeconfig for `server` (an `https://` URL) that trusts our CA and uses the admin token.
pub fn kubeconfig(server: &str, creds: &Credentials) -> String {
    render_kubeconfig(
        server,
        &creds.ca_pem,
        "svcnet-admin",
        &[("token", creds.token.clone())],
        Some("default"),
    )
}

/// The one shape of every kubeconfig svcnet writes: a cluster `svcnet` at `server` trusting the CA
/// `ca_pem` (embedded), a user `user` whose `user:` fields are `credential`, and the context joining
/// them (in `namespace`, if given).
pub fn render_kubeconfig(
    server: &str,
    ca_pem: &str,
    user: &str,
    credential: &[(&str, String)],
    namespace: Option<&str>,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let fields: String = credential
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    let namespace = namespace
        .map(|n| format!("    namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: svcnet
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
{fields}contexts:
- name: svcnet
  context:
    cluster: svcnet
    user: {user}
{namespace}current-context: svcnet
preferences: {{}}
"
    )
}

/// A client certificate signed by the cluster CA under `dir/pki` for the user `common_name` in the
/// groups `organizations` (X.509 authentication: CN is the user, O the groups), and its key, both PEM.
/// This is how kubeadm makes `controller-manager.conf` and `scheduler.conf`: the components of the
/// control-plane machine get users of their own instead of the admin's credential. Valid for `lifetime`
/// from now (backdated as kube's signers do, see [`svcnet_api::certificates::backdate`]); `None` takes rcgen's default validity,
/// as the serving certificate does, for certificates made anew on every start.
pub fn client_certificate(
    dir: &Path,
    common_name: &str,
    organizations: &[&str],
    lifetime: Option<std::time::Duration>,
) -> Result<(String, String), PkiError> {
    let ca_key = dir.join("pki").join("ca.key");
    let ca_key_pem = fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&ca_key_pem)?);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    for org in organizations {
        params.distinguished_name.push(DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if let Some(lifetime) = lifetime {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - svcnet_api::certificates::backdate(lifetime);
        params.not_after = now + lifetime;
    }
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Renders a kubeconfig for `server` that trusts our CA and authenticates as `user` with the client
/// certificate and key given (PEM, embedded), as kubeadm's component kubeconfigs do.
pub fn certificate_kubeconfig(
    server: &str,
    creds: &Credentials,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    render_kubeconfig(
        server,
        &creds.ca_pem,
        user,
        &[
            ("client-certificate-data", b64(cert_pem)),
            ("client-key-data", b64(key_pem)),
        ],
        None,
    )
}

/// Renders a kubeconfig for `server` that trusts our CA and sends the bearer token kept in the file
/// `token_file` (re-read as it changes: kube-rs reads such a file again every minute, client-go too).
pub fn token_file_kubeconfig(server: &str, creds: &Credentials, user: &str, token_file: &Path) -> String {
    render_kubeconfig(
        server,
        &creds.ca_pem,
        user,
        &[("tokenFile", token_file.display().to_string())],
        None,
    )
}

/// Writes `contents` to `path` with owner-only permissions (a kubeconfig, a token), atomically.
pub fn write_private_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_private(path, contents)
}

/// Writes the kubeconfig to `path` with owner-only permissions.
pub fn write_kubeconfig(path: &Path, server: &str, creds: &Credentials) -> Result<(), PkiError> {
    write_private(path, &kubeconfig(server, creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), &[]).unwrap();
        let b = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(a.token, b.token);
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.token.len(), 48);
        server_config(&a).unwrap();
        // A new SAN re-issues the serving certificate but keeps CA and token.
        let c = load_or_create(dir.path(), &["127.0.0.9".parse().unwrap()]).unwrap();
        assert_ne!(c.cert_pem, a.cert_pem);
        assert_eq!(c.ca_pem, a.ca_pem);
        assert!(kubeconfig("https://127.0.0.1:6443", &c).contains("token: "));
    }

    /// Every kubeconfig shape svcnet writes is YAML a client reads back to what was meant.
    #[test]
    fn kubeconfigs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let creds = load_or_create(dir.path(), &[]).unwrap();
        let read = |text: &str| serde_yaml::from_str::<serde_yaml::Value>(text).unwrap();
        let admin = read(&kubeconfig("https://127.0.0.1:6443", &creds));
        assert_eq!(
            admin["users"][0]["user"]["token"].as_str(),
            Some(creds.token.as_str())
        );
        assert_eq!(
            admin["contexts"][0]["context"]["namespace"].as_str(),
            Some("default")
        );
        assert_eq!(
            admin["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        let certs = read(&certificate_kubeconfig("https://x:1", &creds, "u", "C", "K"));
        assert_eq!(certs["users"][0]["name"].as_str(), Some("u"));
        assert_eq!(
            certs["users"][0]["user"]["client-certificate-data"].as_str(),
            Some("Qw==")
        );
        assert_eq!(
            certs["users"][0]["user"]["client-key-data"].as_str(),
            Some("Sw==")
        );
        assert!(certs["contexts"][0]["context"].get("namespace").is_none());
        assert_eq!(certs["contexts"][0]["context"]["user"].as_str(), Some("u"));
        let file = read(&token_file_kubeconfig(
            "https://x:1",
            &creds,
            "sa",
            Path::new("/t/tok"),
        ));
        assert_eq!(file["users"][0]["user"]["tokenFile"].as_str(), Some("/t/tok"));
        assert_eq!(file["current-context"].as_str(), Some("svcnet"));
    }
}
