//! Users other than the admin, for authentication and authorization tests: client certificates minted
//! with the cluster's own CA (as `kubeadm kubeconfig user` does) or with a stranger's, and kubeconfigs
//! that present a certificate or a bearer token to a [`Cluster`].

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Cluster;
use crate::kubectl::NEWEST;

/// A client certificate and its key, PEM.
pub struct ClientCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn client_cert(issuer: &Issuer<'_, KeyPair>, cn: &str, groups: &[&str]) -> ClientCert {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    for g in groups {
        params.distinguished_name.push(DnType::OrganizationName, *g);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A certificate for user `cn` in `groups` (rcgen keeps one O: at most one group), signed by the cluster's CA (`DIR/pki/ca.key`).
pub fn cluster_cert(c: &Cluster, cn: &str, groups: &[&str]) -> ClientCert {
    let key = std::fs::read_to_string(c.dir.join("pki/ca.key")).expect("the cluster's CA key");
    // The issuer's subject must equal the CA certificate's: svcnet's CA is `CN=svcnet-ca`.
    let issuer = Issuer::new(ca_params("svcnet-ca"), KeyPair::from_pem(&key).expect("CA key"));
    client_cert(&issuer, cn, groups)
}

/// A certificate for user `cn` signed by a CA of the same name that the cluster never saw.
pub fn stranger_cert(cn: &str, groups: &[&str]) -> ClientCert {
    let issuer = Issuer::new(ca_params("svcnet-ca"), KeyPair::generate().expect("key"));
    client_cert(&issuer, cn, groups)
}

/// How a kubeconfig's user authenticates.
pub enum Credential<'a> {
    /// A bearer token.
    Token(&'a str),
    /// A client certificate.
    Cert(&'a ClientCert),
}

/// Writes `DIR/kubeconfig-NAME`: the cluster's server and CA, with `cred` as the user. Returns its path.
pub fn kubeconfig(c: &Cluster, name: &str, cred: Credential<'_>) -> PathBuf {
    let admin = std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig");
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("CA in the kubeconfig");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match cred {
        Credential::Token(t) => format!("    token: {t}\n"),
        Credential::Cert(cert) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert.cert_pem),
            b64(&cert.key_pem)
        ),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: svcnet\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n{user}contexts:\n- name: svcnet\n  context:\n    cluster: svcnet\n    user: {name}\n    namespace: default\ncurrent-context: svcnet\n",
        addr = c.addr
    );
    let path = c.dir.join(format!("kubeconfig-{name}"));
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// A control plane alone (no agent, DNS or data plane) that knows further users by bearer token.
pub struct WithUsers {
    /// The cluster.
    pub c: Cluster,
    /// Each user's kubeconfig, in the order the users were given.
    pub kubeconfigs: Vec<PathBuf>,
    /// Where the token file lives (kept while the cluster runs).
    pub dir: tempfile::TempDir,
}

/// Starts [`WithUsers`]: `users` as `(name, token)` in kube-apiserver's static token file
/// (`--token-auth-file`), `extra` flags added, and `setup` (YAML: namespaces, roles, bindings) applied as
/// the admin.
pub fn control_plane_with_users(
    bin: impl AsRef<Path>,
    users: &[(&str, &str)],
    setup: &str,
    extra: &[&str],
) -> WithUsers {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.csv");
    let lines: String = users
        .iter()
        .enumerate()
        .map(|(i, (name, token))| format!("{token},{name},{}\n", i + 1))
        .collect();
    std::fs::write(&tokens, lines).expect("token file");
    let tokens = tokens.to_string_lossy().into_owned();
    let mut flags = vec![
        "--proxy-mode",
        "none",
        "--no-dns",
        "--no-agent",
        "--token-auth-file",
        &tokens,
    ];
    flags.extend_from_slice(extra);
    let c = Cluster::start_with(bin, &flags);
    c.ok_v("", &["apply", "-f", "-"], Some(setup));
    let kubeconfigs = users
        .iter()
        .map(|(name, token)| kubeconfig(&c, name, Credential::Token(token)))
        .collect();
    WithUsers { c, kubeconfigs, dir }
}

impl Cluster {
    /// Runs the newest kubectl with the kubeconfig `kubeconfig` (see [`kubeconfig`]).
    pub fn kubectl_as(&self, kubeconfig: &std::path::Path, args: &[&str]) -> Output {
        let path = kubeconfig.to_string_lossy().into_owned();
        self.kubectl_env(NEWEST, args, None, &[("KUBECONFIG", &path)])
    }
}

impl Cluster {
    /// `curl` to the API server (trusting its CA) with extra `args`, e.g. a header: (status, body).
    /// For what kubectl cannot send, such as a request without any credential (kubectl prompts).
    pub fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(self.dir.join("pki/ca.crt"))
            .args(args)
            .arg(format!("https://{}{path}", self.addr))
            .output()
            .expect("curl (scripts/test.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        assert!(
            out.status.success(),
            "curl {args:?} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}
