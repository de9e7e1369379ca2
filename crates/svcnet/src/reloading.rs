//! Kubernetes clients from a kubeconfig, whose client certificate follows its file.
//!
//! A joined node's kubeconfig names its certificate and key by path (both in one PEM file, as the
//! kubelet's `kubelet-client-current.pem`), and [`crate::join::rotate`] replaces that file before the
//! certificate expires. client-go re-reads such files; kube-rs reads them once. So a client built here
//! checks the file's modification time (at most once a second) and, when it changed, builds its
//! connections anew with the new certificate; requests already in flight (long watches) finish on the
//! old connection, whose certificate is still valid then.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use anyhow::Result;
use base64::Engine;
use futures::future::BoxFuture;
use kube::client::Body;

/// A client for the kubeconfig at `path`: its current context, its certificate files reloaded.
pub async fn client(path: &Path) -> Result<kube::Client> {
    client_via(path, None).await
}

/// [`client`], sending to `server` (an `https://` URL) instead of the kubeconfig's server when given:
/// a node's balancer over several API servers (`--api-servers`) with the node's own, renewed,
/// certificate.
pub async fn client_via(path: &Path, server: Option<&str>) -> Result<kube::Client> {
    let server: Option<http::Uri> = server.map(str::parse).transpose()?;
    let (cfg, cert_file) = load(path, server.as_ref()).await?;
    let default_ns = cfg.default_namespace.clone();
    let Some(cert_file) = cert_file else {
        return Ok(kube::Client::try_from(cfg)?);
    };
    let state = State {
        mtime: mtime(&cert_file),
        checked: Instant::now(),
        client: kube::Client::try_from(cfg)?,
    };
    let svc = Reloading {
        kubeconfig: path.to_path_buf(),
        server,
        cert_file,
        state: Arc::new(Mutex::new(state)),
    };
    Ok(kube::Client::new(svc, default_ns))
}

/// The kubeconfig's configuration with its certificate and key files read into it (a PEM file holding
/// both is split into its certificates and its key), and the certificate file to watch; sending to
/// `server` when given.
async fn load(path: &Path, server: Option<&http::Uri>) -> Result<(kube::Config, Option<PathBuf>)> {
    let mut kc = kube::config::Kubeconfig::read_from(path)?;
    let mut watched = None;
    for named in &mut kc.auth_infos {
        let Some(auth) = named.auth_info.as_mut() else {
            continue;
        };
        let (Some(cert), Some(key)) = (auth.client_certificate.clone(), auth.client_key.clone()) else {
            continue;
        };
        let (certs, _) = split_pem(&std::fs::read_to_string(&cert)?);
        let (_, keys) = split_pem(&std::fs::read_to_string(&key)?);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        auth.client_certificate_data = Some(b64(&certs));
        auth.client_key_data = Some(b64(&keys).into());
        auth.client_certificate = None;
        auth.client_key = None;
        watched = Some(PathBuf::from(cert));
    }
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    if let Some(server) = server {
        cfg.cluster_url = server.clone();
    }
    Ok((cfg, watched))
}

/// The certificate blocks and the private-key blocks of a PEM text.
pub(crate) fn split_pem(text: &str) -> (String, String) {
    let (mut certs, mut keys) = (String::new(), String::new());
    let mut current: Option<&mut String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(if line.contains("CERTIFICATE") {
                &mut certs
            } else {
                &mut keys
            });
        }
        if let Some(out) = current.as_deref_mut() {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("-----END ") {
            current = None;
        }
    }
    (certs, keys)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct State {
    mtime: Option<SystemTime>,
    checked: Instant,
    client: kube::Client,
}

#[derive(Clone)]
struct Reloading {
    kubeconfig: PathBuf,
    /// The server to send to instead of the kubeconfig's (see [`client_via`]).
    server: Option<http::Uri>,
    cert_file: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Reloading {
    /// The client to send with: rebuilt when the certificate file changed since it was built.
    async fn current(&self) -> kube::Client {
        let (client, stale) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let stale = st.checked.elapsed().as_secs() >= 1 && {
                st.checked = Instant::now();
                mtime(&self.cert_file) != st.mtime
            };
            (st.client.clone(), stale)
        };
        if !stale {
            return client;
        }
        let now = mtime(&self.cert_file);
        match load(&self.kubeconfig, self.server.as_ref())
            .await
            .and_then(|(cfg, _)| Ok(kube::Client::try_from(cfg)?))
        {
            Ok(fresh) => {
                tracing::info!(file = %self.cert_file.display(), "client certificate changed; new connections use it");
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.mtime = now;
                st.client = fresh.clone();
                fresh
            }
            // Half-written or unreadable: keep the old one and look again in a second.
            Err(e) => {
                tracing::warn!(error = %e, "reloading the client certificate");
                client
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for Reloading {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.current().await.send(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combined_pem_splits_into_certificates_and_key() {
        let text = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n";
        let (c, k) = split_pem(text);
        assert_eq!(c, "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n");
        assert_eq!(k, "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n");
    }
}
