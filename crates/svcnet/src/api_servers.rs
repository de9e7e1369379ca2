//! How the node's commands (`svcnet agent`, `svcnet proxy`, `svcnet dns`, the node's proxy process)
//! reach the control plane: the kubeconfig's credentials and CA, and with `--api-servers` every API
//! server named there through one local balancer ([`svcnet_apilb`], which says why it is a balancer
//! and not a client that knows several URLs), so that losing one API server never needs a restart.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, anyhow};

use crate::supervise::Supervisor;

/// `--api-servers` and `--api-lb-listen`, the same in every node command.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ApiServersArgs {
    /// API servers to fail over between, comma-separated `https://HOST:PORT` URLs (e.g. every instance of
    /// an HA control plane). The process then reaches the API through a balancer on loopback that checks
    /// each server's /readyz and moves its connections (and so its watches) when one fails; the
    /// kubeconfig's credentials and CA are still used, its server is not. The servers' certificates must be
    /// valid for 127.0.0.1 (svcnet's are).
    #[arg(long, value_delimiter = ',', value_name = "URL", value_parser = parse_server)]
    pub api_servers: Vec<http::Uri>,
    /// Where the balancer over --api-servers listens [default: 127.0.0.1:6444 for `svcnet agent`, which
    /// writes a kubeconfig naming it for kubectl; a free loopback port for the other commands].
    #[arg(long, value_name = "ADDR", requires = "api_servers")]
    pub api_lb_listen: Option<SocketAddr>,
}

fn parse_server(text: &str) -> Result<http::Uri, String> {
    svcnet_apilb::parse_server(text).map_err(|e| e.to_string())
}

/// A running balancer: its address, and its task for the command's supervisor.
pub struct Balancer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), svcnet_apilb::Error>>,
}

impl Balancer {
    /// The `https://` URL of the balancer.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Waits until the balancer stops (it should not: only its listening socket failing ends it).
    pub async fn stopped(&mut self) -> anyhow::Error {
        match (&mut self.task).await {
            Ok(Ok(())) => anyhow!("returned; it should run until the process stops"),
            Ok(Err(e)) => e.into(),
            Err(e) => anyhow!("{e}"),
        }
    }

    /// Hands the balancer to `supervisor` as `api-server-balancer`.
    pub fn supervise(self, supervisor: &Supervisor) {
        let mut this = self;
        supervisor.spawn("api-server-balancer", async move { Err(this.stopped().await) });
    }
}

/// The kubeconfig's client settings, or the pod's service account without one.
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))
        }
        None => kube::Config::incluster()
            .map_err(|e| anyhow!("no --kubeconfig, and not running in a pod with a service account ({e})")),
    }
}

/// The client a node command uses, from the kubeconfig at `kubeconfig` (or the pod's service account
/// without one): straight to the kubeconfig's server, or, with `--api-servers`, through a balancer
/// started here (listening on `--api-lb-listen`, else `default_listen`). Either way a client
/// certificate the kubeconfig names by file is followed when it is renewed (see [`crate::reloading`]).
pub async fn connect(
    kubeconfig: Option<&Path>,
    args: &ApiServersArgs,
    default_listen: SocketAddr,
    registry: Option<&mut prometheus_client::registry::Registry>,
) -> Result<(kube::Client, Option<Balancer>)> {
    let cfg = kube_config(kubeconfig).await?;
    if args.api_servers.is_empty() {
        let client = match kubeconfig {
            Some(path) => crate::reloading::client(path).await?,
            None => kube::Client::try_from(cfg)?,
        };
        return Ok((client, None));
    }
    let metrics = registry.map(svcnet_apilb::Metrics::new).unwrap_or_default();
    let listen = args.api_lb_listen.unwrap_or(default_listen);
    let lb = svcnet_apilb::ApiLb::bind(
        svcnet_apilb::Config {
            listen,
            servers: args.api_servers.clone(),
            client: cfg.clone(),
            check_interval: std::time::Duration::from_secs(1),
        },
        metrics,
    )
    .await
    .context("--api-lb-listen")?;
    let addr = lb.local_addr();
    let client = match kubeconfig {
        Some(path) => crate::reloading::client_via(path, Some(&lb.url())).await?,
        None => {
            let mut through = cfg;
            through.cluster_url = lb.url().parse()?;
            kube::Client::try_from(through)?
        }
    };
    let task = tokio::spawn(lb.run());
    Ok((client, Some(Balancer { addr, task })))
}

/// Where `svcnet agent` with `--api-servers` writes the kubeconfig naming its balancer for kubectl:
/// `DIR/kubeconfig`, unless that is the node's own kubeconfig `from` (a joined node's, which must keep
/// naming the server it joined), then `DIR/balancer.kubeconfig`.
pub fn balancer_kubeconfig_path(data_dir: &Path, from: &Path) -> std::path::PathBuf {
    let usual = data_dir.join("kubeconfig");
    let same = match (usual.canonicalize(), from.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => usual == from,
    };
    if same {
        data_dir.join("balancer.kubeconfig")
    } else {
        usual
    }
}

/// Writes a copy of the kubeconfig at `from` whose current cluster's server is `server` (owner-only):
/// the kubeconfig for kubectl on a node, naming the local balancer.
pub fn write_kubeconfig_via(from: &Path, server: &str, to: &Path) -> Result<()> {
    let mut kc = kube::config::Kubeconfig::read_from(from)
        .with_context(|| format!("kubeconfig {}", from.display()))?;
    let context = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| anyhow!("kubeconfig {}: no current context", from.display()))?;
    let cluster = kc
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        .ok_or_else(|| anyhow!("kubeconfig {}: no cluster {cluster_name:?}", from.display()))?;
    cluster.server = Some(server.to_string());
    // Relative file names would now resolve against the new file's directory: made absolute.
    let dir = from.parent().unwrap_or(Path::new("."));
    let absolute = |f: &mut Option<String>| {
        if let Some(name) = f.as_ref().filter(|n| Path::new(n).is_relative()) {
            *f = Some(dir.join(name).display().to_string());
        }
    };
    absolute(&mut cluster.certificate_authority);
    for auth in kc.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        absolute(&mut auth.client_certificate);
        absolute(&mut auth.client_key);
        absolute(&mut auth.token_file);
    }
    let text = serde_yaml::to_string(&kc)?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = to.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, to).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_node_keeps_its_own_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("kubeconfig");
        std::fs::write(&own, "").unwrap();
        assert_eq!(
            balancer_kubeconfig_path(dir.path(), &own),
            dir.path().join("balancer.kubeconfig")
        );
        let admin = dir.path().join("admin.conf");
        assert_eq!(balancer_kubeconfig_path(dir.path(), &admin), own);
    }

    #[test]
    fn the_node_kubeconfig_names_the_balancer_and_keeps_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("admin.conf");
        std::fs::write(
            &from,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    \
             certificate-authority: pki/ca.crt\nusers:\n- name: u\n  user:\n    token: secret-token\n    \
             client-certificate: pki/me.crt\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
        )
        .unwrap();
        let to = dir.path().join("node").join("kubeconfig");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        write_kubeconfig_via(&from, "https://127.0.0.1:6444", &to).unwrap();
        let kc = kube::config::Kubeconfig::read_from(&to).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6444"));
        let ca = dir.path().join("pki/ca.crt").display().to_string();
        assert_eq!(cluster.certificate_authority.as_deref(), Some(ca.as_str()));
        let text = std::fs::read_to_string(&to).unwrap();
        assert!(text.contains("secret-token"), "{text}");
        assert!(
            text.contains(&dir.path().join("pki/me.crt").display().to_string()),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
