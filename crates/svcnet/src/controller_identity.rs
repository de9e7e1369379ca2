//! Who the controllers of `svcnet up` are to the API server: not the admin, but each its own user, as
//! kubeadm sets kube-controller-manager up with `--use-service-account-credentials`.
//!
//! * `system:kube-controller-manager` (a client certificate signed by the cluster CA, in
//!   `DIR/controller-manager.conf` as kubeadm writes it): the shared informers, leader election, and
//!   the ServiceAccounts below with their tokens. Its ClusterRole may list and watch everything, create
//!   ServiceAccounts and their tokens, and little else.
//! * one ServiceAccount `kube-system/<controller>` per controller ([`svcnet_controllers::identity`]),
//!   bound to kube's `system:controller:<controller>` role: its client sends a token the API server's
//!   own TokenRequest issued (an hour, renewed at 80 %), kept in `DIR/controllers/<controller>.token`
//!   beside a kubeconfig naming that file, which kube-rs re-reads every minute.
//! * `system:kube-scheduler` (a client certificate, `DIR/scheduler.conf`) for the scheduler.
//!
//! The loops that run inside the API server process (namespace finalization, garbage collection,
//! allocation repair) write to the store directly and have no client at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use svcnet_apiserver::pki::{self, Credentials};
use svcnet_controllers::Clients;
use tracing::{debug, info, warn};

/// The user kube-controller-manager authenticates as.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The user kube-scheduler authenticates as.
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
/// Where the controllers' ServiceAccounts live.
const NAMESPACE: &str = "kube-system";
/// How long a controller's token lives (kube-controller-manager asks for an hour too).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How long to wait before trying again after a token could not be made.
const RETRY: Duration = Duration::from_secs(1);

/// The controllers' clients and what keeps their tokens fresh.
pub struct ControllerIdentities {
    /// kube-controller-manager's own client: shared informers and leader election.
    pub manager: kube::Client,
    /// Each controller's client.
    pub clients: Clients,
    /// Renews the tokens; run it supervised for as long as the controllers run.
    pub renew: futures::future::BoxFuture<'static, Result<()>>,
}

/// Makes the controller manager's and the scheduler's certificates and kubeconfigs, the controllers'
/// ServiceAccounts and first tokens, and their clients, for the API server at `server` (an `https://`
/// URL).
pub async fn start(data_dir: &Path, server: &str, creds: &Credentials) -> Result<ControllerIdentities> {
    let manager = certificate_client(
        data_dir,
        server,
        creds,
        CONTROLLER_MANAGER_USER,
        "controller-manager.conf",
    )
    .await?;
    let scheduler = certificate_client(data_dir, server, creds, SCHEDULER_USER, "scheduler.conf").await?;
    let dir = data_dir.join("controllers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut clients =
        Clients::single(manager.clone()).with(svcnet_controllers::identity::SCHEDULER, scheduler);
    for &name in svcnet_controllers::identity::SERVICE_ACCOUNTS {
        let token_file = dir.join(format!("{name}.token"));
        let lifetime = refresh_token(&manager, name, &token_file)
            .await
            .with_context(|| format!("a token for ServiceAccount {NAMESPACE}/{name}"))?;
        debug!(
            controller = name,
            lifetime_s = lifetime.as_secs(),
            "controller token issued"
        );
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{NAMESPACE}:{name}");
        pki::write_private_file(
            &kubeconfig,
            &pki::token_file_kubeconfig(server, creds, &user, &token_file),
        )?;
        clients = clients.with(name, crate::reloading::client(&kubeconfig).await?);
    }
    info!(
        controllers = svcnet_controllers::identity::SERVICE_ACCOUNTS.len(),
        "controllers run as their ServiceAccounts in kube-system"
    );
    let renew = Box::pin(renew_tokens(manager.clone(), dir));
    Ok(ControllerIdentities {
        manager,
        clients,
        renew,
    })
}

/// A client authenticating as `user` with a new certificate, through a kubeconfig at `DIR/<file>`.
async fn certificate_client(
    data_dir: &Path,
    server: &str,
    creds: &Credentials,
    user: &str,
    file: &str,
) -> Result<kube::Client> {
    let (cert, key) = pki::client_certificate(data_dir, user, &[], None)?;
    let path = data_dir.join(file);
    pki::write_private_file(
        &path,
        &pki::certificate_kubeconfig(server, creds, user, &cert, &key),
    )?;
    crate::reloading::client(&path).await
}

/// Makes sure the ServiceAccount `kube-system/<name>` exists, asks for a token of it and writes it to
/// `token_file`; returns the token's lifetime.
async fn refresh_token(manager: &kube::Client, name: &str, token_file: &Path) -> Result<Duration> {
    let accounts: Api<ServiceAccount> = Api::namespaced(manager.clone(), NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => info!(serviceaccount = name, namespace = NAMESPACE, "created"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    let status = issued
        .status
        .context("the TokenRequest came back without a status")?;
    pki::write_private_file(token_file, &status.token)?;
    let left = status
        .expiration_timestamp
        .0
        .duration_since(jiff::Timestamp::now());
    Ok(Duration::try_from(left).unwrap_or(TOKEN_LIFETIME))
}

/// Renews every controller's token at 80 % of its lifetime (the file is re-read by its client within a
/// minute), at once when its ServiceAccount is deleted (which revokes the token: it is made again with
/// a new token), and a token that could not be made every second until it can. Runs until dropped.
async fn renew_tokens(manager: kube::Client, dir: PathBuf) -> Result<()> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let mut due: Vec<(&'static str, tokio::time::Instant)> = svcnet_controllers::identity::SERVICE_ACCOUNTS
        .iter()
        .map(|&n| (n, tokio::time::Instant::now() + TOKEN_LIFETIME.mul_f64(0.8)))
        .collect();
    let accounts: Api<ServiceAccount> = Api::namespaced(manager.clone(), NAMESPACE);
    let mut deletions = std::pin::pin!(watcher(accounts, watcher::Config::default()).default_backoff());
    loop {
        let next = due
            .iter()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            event = deletions.next() => {
                if let Some(Ok(watcher::Event::Delete(sa))) = event {
                    let name = sa.metadata.name.unwrap_or_default();
                    if let Some((_, at)) = due.iter_mut().find(|(n, _)| *n == name) {
                        warn!(serviceaccount = %name, "a controller's ServiceAccount was deleted; making it again");
                        *at = tokio::time::Instant::now();
                    }
                }
                continue;
            }
        }
        let now = tokio::time::Instant::now();
        for (name, at) in due.iter_mut().filter(|(_, at)| *at <= now) {
            let token_file = dir.join(format!("{name}.token"));
            *at = match refresh_token(&manager, name, &token_file).await {
                Ok(lifetime) => {
                    debug!(controller = *name, "controller token renewed");
                    now + lifetime.mul_f64(0.8)
                }
                Err(e) => {
                    warn!(controller = *name, error = %format!("{e:#}"), "renewing the controller's token; retrying");
                    now + RETRY
                }
            };
        }
    }
}
