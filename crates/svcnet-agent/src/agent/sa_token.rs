//! A pod's identity, as the kubelet gives it through the `kube-api-access` projected volume: a token of
//! the pod's ServiceAccount from the TokenRequest API, bound to the pod (it stops working when the pod is
//! deleted), the cluster CA and the namespace, as the files `token`, `ca.crt` and `namespace`.
//!
//! svcnet's pods are host processes, so the files live in the pod's directory
//! (`<root>/pods/<uid>/serviceaccount/`), named to the containers by `SVCNET_SERVICE_ACCOUNT_DIR`, and,
//! where the sandbox works (root), bind-mounted at Kubernetes' own path
//! [`SERVICE_ACCOUNT_MOUNT`] in the pod's mount namespace, where client libraries' in-cluster
//! configuration reads them. A pod gets them when it has the `kube-api-access-*` volume the API
//! server's ServiceAccount admission adds (not under `automountServiceAccountToken: false` on the pod,
//! else on the ServiceAccount); the node never reads ServiceAccounts, which the Node authorizer denies.
//!
//! Tokens are refreshed as the kubelet refreshes them: once 80 % of their lifetime has passed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

/// Where Kubernetes mounts a pod's ServiceAccount files, and where in-cluster client configuration
/// (client-go, kube-rs, the Python client) reads them.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The environment variable naming the pod's ServiceAccount directory on the host.
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "SVCNET_SERVICE_ACCOUNT_DIR";

/// The lifetime the kubelet asks for (`kube-api-access` volumes: 3607 s).
const EXPIRATION_SECONDS: i64 = 3607;

/// Why a pod's identity could not be given to it.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The API refused or failed (the ServiceAccount does not exist, …).
    #[error("token for service account {0:?}: {1}")]
    Api(String, kube::Error),
    /// The API answered without a token.
    #[error("token for service account {0:?}: the answer holds no token")]
    NoToken(String),
    /// The files could not be written.
    #[error("writing the service account files: {0}")]
    Io(#[from] std::io::Error),
}

impl TokenError {
    /// The error in the words of the kubelet's `FailedMount` event for the token volume.
    pub(super) fn event_message(&self) -> String {
        let cause = match self {
            TokenError::Api(_, kube::Error::Api(status)) => status.message.clone(),
            other => other.to_string(),
        };
        format!("MountVolume.SetUp failed for volume \"kube-api-access\" : failed to fetch token: {cause}")
    }
}

/// A token this agent holds for a pod: where it is written and when to renew it.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    pod: String,
    pod_uid: String,
    service_account: String,
    dir: PathBuf,
    refresh_at: SystemTime,
}

/// The pods' tokens on this node.
#[derive(Clone)]
pub(super) struct Tokens {
    client: Client,
    /// The cluster CA (PEM) written as `ca.crt`; `None`: the agent's kubeconfig had none.
    ca_pem: Option<String>,
    /// By pod uid; `None` for a pod that wants no token (not asked again on its every event).
    issued: Arc<Mutex<HashMap<String, Option<Issued>>>>,
    /// Pods whose failure is already told in an Event (once per pod until it succeeds: retries do not
    /// flood the events).
    reported: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// When a token issued at `now` that expires at `expires` is renewed: after 80 % of its lifetime.
fn refresh_time(now: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(now).unwrap_or(Duration::ZERO);
    now + life.mul_f64(0.8)
}

/// Writes `data` to `dir/name` so that a reader sees the old or the new file, never half of one.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
}

impl Tokens {
    pub(super) fn new(client: Client, ca_pem: Option<String>) -> Tokens {
        if ca_pem.is_none() {
            warn!("no cluster CA in the agent's kubeconfig: pods' service account directories get no ca.crt");
        }
        Tokens {
            client,
            ca_pem,
            issued: Default::default(),
            reported: Default::default(),
        }
    }

    /// Whether the pod gets a token: whether it has a projected volume with a `serviceAccountToken`
    /// source (the API server's ServiceAccount admission adds `kube-api-access-*` unless the pod or its
    /// ServiceAccount opts out), as the kubelet mounts what the pod's volumes say. The node never reads
    /// ServiceAccounts: the Node authorizer does not let it.
    fn automount(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .any(|s| s.service_account_token.is_some())
    }

    /// Gives the pod its token, CA and namespace in `dir` unless it has them (or wants none). The
    /// directory, or `None` for a pod without a token.
    pub(super) async fn ensure(&self, pod: &Pod, dir: PathBuf) -> Result<Option<PathBuf>, TokenError> {
        let Some(uid) = pod.uid() else { return Ok(None) };
        if let Some(have) = self.lock().get(&uid) {
            return Ok(have.as_ref().map(|i| i.dir.clone()));
        }
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        if !Self::automount(pod) {
            debug!(pod = %pod.name_any(), "no service account token volume: no token");
            self.lock().insert(uid, None);
            return Ok(None);
        }
        let mut issued = Issued {
            namespace: ns,
            pod: pod.name_any(),
            pod_uid: uid.clone(),
            service_account: sa,
            dir,
            refresh_at: SystemTime::now(),
        };
        self.issue(&mut issued).await?;
        info!(pod = %issued.pod, service_account = %issued.service_account, "service account token written");
        let dir = issued.dir.clone();
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        self.lock().insert(uid, Some(issued));
        Ok(Some(dir))
    }

    /// Requests a token bound to the pod and writes the files.
    async fn issue(&self, it: &mut Issued) -> Result<(), TokenError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &it.namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(EXPIRATION_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(it.pod.clone()),
                    uid: Some(it.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let now = SystemTime::now();
        let answer = api
            .create_token_request(&it.service_account, &PostParams::default(), &req)
            .await
            .map_err(|e| TokenError::Api(it.service_account.clone(), e))?;
        let status = answer
            .status
            .ok_or_else(|| TokenError::NoToken(it.service_account.clone()))?;
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(status.expiration_timestamp.0.as_second().max(0) as u64);
        std::fs::create_dir_all(&it.dir)?;
        write_atomic(&it.dir, "token", status.token.as_bytes())?;
        write_atomic(&it.dir, "namespace", it.namespace.as_bytes())?;
        if let Some(ca) = &self.ca_pem {
            write_atomic(&it.dir, "ca.crt", ca.as_bytes())?;
        }
        it.refresh_at = refresh_time(now, expires);
        Ok(())
    }

    /// Tells the pod's failure to get its token in a Warning Event (`FailedMount`, as the kubelet's),
    /// once until it succeeds.
    pub(super) async fn report(&self, pod: &Pod, err: &TokenError) {
        let Some(uid) = pod.uid() else { return };
        if !self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
        {
            return;
        }
        super::events::warn(&self.client, pod, "FailedMount", &err.event_message()).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Issued>>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews the tokens that are due, for as long as the agent runs; forgets the pods that left the
    /// node (`pods`, once listed). A failed renewal is tried again on the next round.
    pub(super) async fn refresh_loop(self, pods: Store<Pod>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if super::listed(&pods) {
                let live: std::collections::HashSet<String> = pods
                    .state()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| p.uid())
                    .collect();
                self.lock().retain(|uid, _| live.contains(uid));
            }
            let now = SystemTime::now();
            let due: Vec<Issued> = self
                .lock()
                .values()
                .flatten()
                .filter(|i| i.refresh_at <= now)
                .cloned()
                .collect();
            for mut it in due {
                match self.issue(&mut it).await {
                    Ok(()) => {
                        debug!(pod = %it.pod, "service account token renewed");
                        if let Some(Some(e)) = self.lock().get_mut(&it.pod_uid) {
                            e.refresh_at = it.refresh_at;
                        }
                    }
                    Err(e) => warn!(pod = %it.pod, error = %e, "could not renew the service account token"),
                }
            }
        }
    }
}

/// Makes Kubernetes' mount point exist on the node, so that a pod's mount namespace can bind its
/// directory there (a bind mount needs its target). The directory itself stays empty on the host.
pub(super) fn mount_point() -> Option<&'static str> {
    match std::fs::create_dir_all(SERVICE_ACCOUNT_MOUNT) {
        Ok(()) => Some(SERVICE_ACCOUNT_MOUNT),
        Err(e) => {
            warn!(path = SERVICE_ACCOUNT_MOUNT, error = %e, "cannot create the service account mount point: pods find their token through SVCNET_SERVICE_ACCOUNT_DIR only");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_of_their_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_time(now, now + Duration::from_secs(3600)),
            now + Duration::from_secs(2880)
        );
        // A token already expired (clock skew) is renewed at once.
        assert_eq!(refresh_time(now, now - Duration::from_secs(5)), now);
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "token", b"one").unwrap();
        write_atomic(dir.path(), "token", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("token")).unwrap(), b"two");
        assert!(!dir.path().join(".token.tmp").exists());
    }
}
