//! Joining a node as `kubeadm join` and the kubelet's TLS bootstrap do it: `svcnet agent --server URL
//! --token ID.SECRET --ca-cert-hash sha256:…`.
//!
//! 1. Discovery: the ConfigMap `kube-public/cluster-info` is read without credentials (and without
//!    trusting the server yet); its kubeconfig must carry the token's signature
//!    (`jws-kubeconfig-<id>`, [`svcnet_controllers::bootstrap_signer`]) and its CA's public key must
//!    have one of the pinned hashes (SHA-256 of the SubjectPublicKeyInfo, kubeadm's `pubkeypin`).
//! 2. TLS bootstrap: with the token, now over TLS verified against that CA, the agent sends a
//!    CertificateSigningRequest for `CN=system:node:<name>, O=system:nodes` (a new ECDSA P-256 key that
//!    never leaves the node), waits until the control plane approves and signs it, and writes the
//!    certificate and key (`DATA/pki/kubelet-client-current.pem`) and a kubeconfig naming them
//!    (`DATA/kubeconfig`). The token is not written anywhere.
//! 3. From then on the agent uses only that kubeconfig; a restart reuses it while the certificate is
//!    valid. [`rotate`] renews it before it expires (at 80 % of its lifetime, as the kubelet's
//!    certificate manager), asking as the node itself (`selfnodeclient`), and replaces the files;
//!    clients built by [`crate::kube_client`] pick the new certificate up ([`crate::reloading`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use svcnet_controllers::bootstrap_signer::{self, JWS_PREFIX, KUBECONFIG_KEY};
use svcnet_controllers::certificates::KUBELET_CLIENT_SIGNER;
use tracing::{info, warn};

/// `svcnet agent`'s joining flags (kubeadm join's).
#[derive(clap::Args, Debug, Clone)]
pub struct JoinArgs {
    /// The API server to join (`https://HOST:PORT`), as `svcnet token create --print-join-command`
    /// prints it.
    #[arg(long, requires_all = ["token", "ca_cert_hash"])]
    pub server: Option<String>,
    /// A bootstrap token (`ID.SECRET`, from `svcnet token create`): used only to find the cluster and
    /// to ask for this node's own certificate.
    #[arg(long, requires = "server")]
    pub token: Option<String>,
    /// The hash of the cluster CA's public key (`sha256:<hex>`), to trust the server only if its CA has
    /// it; may be repeated.
    #[arg(long = "ca-cert-hash", requires = "server")]
    pub ca_cert_hash: Vec<String>,
    /// How long to wait for the certificate to be approved and signed.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub bootstrap_timeout: u64,
    /// How long to keep trying to find the cluster (kubeadm's `--discovery-timeout`): the API server
    /// may not answer yet, or not have signed a token it just made.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub discovery_timeout: u64,
}

/// Where a node keeps its own credential: a kubeconfig naming a PEM file that holds its certificate and
/// key (as the kubelet's `kubelet.conf` names `kubelet-client-current.pem`), which [`rotate`] replaces.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The node's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its certificate and key, one PEM file.
    pub cert: PathBuf,
}

impl NodeFiles {
    /// A joined agent's: `DATA/kubeconfig` and `DATA/pki/kubelet-client-current.pem`.
    pub fn joined(data_dir: &Path) -> NodeFiles {
        NodeFiles {
            kubeconfig: data_dir.join("kubeconfig"),
            cert: data_dir.join("pki").join("kubelet-client-current.pem"),
        }
    }

    /// The node of `svcnet up` (kubeadm's `/etc/kubernetes/kubelet.conf`): `DIR/node.conf` beside
    /// the admin's `DIR/kubeconfig`, and `DIR/pki/kubelet-client-current.pem`.
    pub fn control_plane(data_dir: &Path) -> NodeFiles {
        NodeFiles {
            kubeconfig: data_dir.join("node.conf"),
            cert: data_dir.join("pki").join("kubelet-client-current.pem"),
        }
    }

    /// The validity of the certificate on disk (not before, not after; Unix seconds), if there is one.
    pub fn validity(&self) -> Option<(i64, i64)> {
        validity(&std::fs::read_to_string(&self.cert).ok()?)
    }
}

/// kubeadm's `pubkeypin.Hash`: `sha256:` and the hex SHA-256 of the certificate's SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| anyhow!("the CA certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| anyhow!("the CA certificate: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(format!(
        "sha256:{}",
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// The validity (not before, not after; Unix seconds) of the first certificate in `pem`.
fn validity(pem: &str) -> Option<(i64, i64)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The agent's kubeconfig: its own from an earlier join while its certificate is valid, else a new one
/// through discovery and TLS bootstrap with `args` (an error if there is neither).
pub async fn node_kubeconfig(data_dir: &Path, node: &str, args: &JoinArgs) -> Result<PathBuf> {
    let files = NodeFiles::joined(data_dir);
    let kc = files.kubeconfig.clone();
    let now = jiff::Timestamp::now().as_second();
    if kc.exists()
        && let Some((_, not_after)) = files.validity()
        && not_after > now
    {
        info!(kubeconfig = %kc.display(), "using this node's certificate from an earlier join");
        return Ok(kc);
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        bail!(
            "no valid certificate in {}: join with --server, --token and --ca-cert-hash (svcnet token create --print-join-command prints them), or give --kubeconfig",
            data_dir.display()
        );
    };
    let (id, secret) = svcnet_apiserver::bootstrap_token::parse(token).ok_or_else(|| {
        anyhow!("--token {token:?} is not a bootstrap token: want [a-z0-9]{{6}}.[a-z0-9]{{16}}")
    })?;
    let ca_pem = discover(
        server,
        id,
        secret,
        &args.ca_cert_hash,
        Duration::from_secs(args.discovery_timeout),
    )
    .await?;
    let client = client_for(server, &ca_pem, Credential::Token(token))?;
    let (cert_pem, key_pem) = request_certificate(&client, node, Duration::from_secs(args.bootstrap_timeout))
        .await
        .context("asking for this node's certificate with the bootstrap token")?;
    write_credentials(&files, server, &ca_pem, &cert_pem, &key_pem)?;
    info!(kubeconfig = %kc.display(), node, "joined: from now on this node uses its own certificate");
    Ok(kc)
}

/// How often discovery is tried again (kubeadm waits 5 s; a token just made is signed within a second).
const DISCOVERY_RETRY: Duration = Duration::from_secs(1);

/// kubeadm's discovery by token: the cluster CA (PEM), once the signature and the hash check out.
/// As kubeadm's, it keeps trying for `timeout` while the API server cannot be read or has not signed
/// the token yet (the bootstrap signer signs a new token a moment after it is made); a signature or CA
/// hash that does not check out fails at once.
pub async fn discover(
    server: &str,
    id: &str,
    secret: &str,
    pins: &[String],
    timeout: Duration,
) -> Result<String> {
    let uri: http::Uri = server.parse().with_context(|| format!("--server {server:?}"))?;
    let mut cfg = kube::Config::new(uri);
    // Nothing is trusted yet: the answer is checked by the token's signature and the CA's hash.
    cfg.accept_invalid_certs = true;
    let client = kube::Client::try_from(cfg)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let err = match cluster_info(&client, server, id).await {
            Ok((kubeconfig, jws)) => return trust(&kubeconfig, &jws, id, secret, pins),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + DISCOVERY_RETRY > deadline {
            return Err(err.context(format!("discovery gave up after {} s", timeout.as_secs())));
        }
        warn!(error = %format!("{err:#}"), "discovery: retrying");
        tokio::time::sleep(DISCOVERY_RETRY).await;
    }
}

/// The cluster-info kubeconfig and the token's JWS of it, as the server shows them now.
async fn cluster_info(client: &kube::Client, server: &str, id: &str) -> Result<(String, String)> {
    let (ns, name) = bootstrap_signer::CLUSTER_INFO;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading {ns}/{name} from {server}"))?;
    let mut data = cm.data.unwrap_or_default();
    let kubeconfig = data
        .remove(KUBECONFIG_KEY)
        .ok_or_else(|| anyhow!("there is no {KUBECONFIG_KEY} in the {name} ConfigMap"))?;
    let Some(jws) = data.remove(&format!("{JWS_PREFIX}{id}")) else {
        bail!(
            "there is no JWS signed token in the {name} ConfigMap. This token id {id:?} is invalid for this cluster, can't connect"
        );
    };
    Ok((kubeconfig, jws))
}

/// The cluster CA of a cluster-info kubeconfig, if the token signed it and the CA has a pinned hash.
fn trust(kubeconfig: &str, jws: &str, id: &str, secret: &str, pins: &[String]) -> Result<String> {
    if !bootstrap_signer::verify_detached(jws, kubeconfig, id, secret) {
        bail!("failed to verify JWS signature of received cluster info object, can't trust this API Server");
    }
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).context("the cluster-info kubeconfig")?;
    let ca_b64 = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| anyhow!("the cluster-info kubeconfig names no CA"))?;
    let ca_pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64.trim())?)?;
    let hash = ca_cert_hash(&ca_pem)?;
    if !pins.iter().any(|p| p.eq_ignore_ascii_case(&hash)) {
        bail!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {hash:?} are pinned (--ca-cert-hash {})",
            pins.join(", ")
        );
    }
    Ok(ca_pem)
}

enum Credential<'a> {
    Token(&'a str),
}

fn client_for(server: &str, ca_pem: &str, cred: Credential<'_>) -> Result<kube::Client> {
    let mut cfg = kube::Config::new(server.parse()?);
    let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    cfg.root_cert = Some(der);
    match cred {
        Credential::Token(t) => cfg.auth_info.token = Some(t.to_string().into()),
    }
    Ok(kube::Client::try_from(cfg)?)
}

/// Sends a CSR for this node's client certificate and waits for it: (certificate PEM, key PEM).
pub async fn request_certificate(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: KUBELET_CLIENT_SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    info!(csr = %name, "waiting for the certificate to be approved and signed");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let cur = api.get(&name).await?;
        let status = cur.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            // The kubelet's words (`csr.WaitForCertificate`).
            let what = match c.type_.as_str() {
                "Denied" => "is denied",
                "Failed" => "failed",
                _ => continue,
            };
            bail!(
                "certificate signing request {name} {what}, reason: {}, message: {}",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            );
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok((String::from_utf8(cert.0)?, key.serialize_pem()));
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "certificate signing request {name} was not signed within {}s (approve it with `kubectl certificate approve {name}`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes the certificate and key and the kubeconfig naming them, each replaced whole (owner-only, in
/// an owner-only directory).
pub fn write_credentials(
    files: &NodeFiles,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<()> {
    if let Some(pki) = files.cert.parent() {
        std::fs::create_dir_all(pki)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pki, std::fs::Permissions::from_mode(0o700))?;
    }
    let cert = &files.cert;
    write_private(cert, &format!("{cert_pem}{key_pem}"))?;
    let file = cert.display().to_string();
    let kubeconfig = svcnet_apiserver::pki::render_kubeconfig(
        server,
        ca_pem,
        "node",
        &[("client-certificate", file.clone()), ("client-key", file)],
        None,
    );
    write_private(&files.kubeconfig, &kubeconfig)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// kubeadm init's cluster-info: `kube-public/cluster-info` holding a kubeconfig with the cluster's
/// address and CA, which anyone may read (and which the bootstrap signer signs for every token).
/// Written with server-side apply so the signatures, another manager's, stay.
pub async fn publish_cluster_info(client: &kube::Client, server: &str, ca_pem: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: \"\"
contexts: null
current-context: \"\"
kind: Config
preferences: {{}}
users: null
"
    );
    let (ns, name) = bootstrap_signer::CLUSTER_INFO;
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {KUBECONFIG_KEY: kubeconfig},
    });
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::apply("svcnet-up").force(),
            &kube::api::Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// When to renew a certificate valid from `not_before` to `not_after`: at 80 % of its lifetime.
pub fn renewal_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 4 / 5
}

/// Renews this node's certificate at 80 % of its lifetime, for ever: a new key and CSR sent with the
/// current certificate through `client` (the agent's own, which follows the certificate file; with
/// `--api-servers` through the node's balancer) and approved as `selfnodeclient`, the files replaced
/// once it is signed. A failed
/// attempt is retried after 10 s (up to the certificate's expiry, after which only a new join helps).
pub async fn rotate(files: NodeFiles, node: String, client: kube::Client) -> Result<()> {
    loop {
        let pem = std::fs::read_to_string(&files.cert).context("reading this node's certificate")?;
        let (not_before, not_after) =
            validity(&pem).ok_or_else(|| anyhow!("{} holds no certificate", files.cert.display()))?;
        let at = renewal_at(not_before, not_after);
        let now = jiff::Timestamp::now().as_second();
        if at > now {
            info!(renew_in_s = at - now, "next certificate renewal");
            tokio::time::sleep(Duration::from_secs((at - now) as u64)).await;
        }
        match renew(&files, &node, &client).await {
            Ok(()) => info!(node = %node, "renewed this node's certificate"),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "renewing this node's certificate; retrying in 10s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

async fn renew(files: &NodeFiles, node: &str, client: &kube::Client) -> Result<()> {
    let kc = &files.kubeconfig;
    let (cert_pem, key_pem) = request_certificate(client, node, Duration::from_secs(300)).await?;
    let text = std::fs::read_to_string(kc)?;
    let parsed = kube::config::Kubeconfig::from_yaml(&text)?;
    let cluster = parsed
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow!("{} names no cluster", kc.display()))?;
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.unwrap_or_default().trim())?,
    )?;
    write_credentials(
        files,
        cluster.server.as_deref().unwrap_or_default(),
        &ca_pem,
        &cert_pem,
        &key_pem,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_four_fifths() {
        assert_eq!(renewal_at(1000, 2000), 1800);
    }

    #[test]
    fn ca_hash_is_of_the_public_key() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "ca");
        let key = rcgen::KeyPair::generate().unwrap();
        let a = params.clone().self_signed(&key).unwrap().pem();
        let b = params.self_signed(&key).unwrap().pem();
        // Two certificates of one key pin alike.
        assert_eq!(ca_cert_hash(&a).unwrap(), ca_cert_hash(&b).unwrap());
        use rcgen::PublicKeyData;
        let want = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
        let hex: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ca_cert_hash(&a).unwrap(), format!("sha256:{hex}"));
    }
}
