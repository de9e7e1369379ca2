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
//! A pod's own projected volumes may ask for more tokens (`serviceAccountToken` sources with an
//! `audience` and `expirationSeconds`, for a vault or another service that checks them through the
//! issuer's discovery documents): [`Tokens::ensure_projected`] requests each, bound to the pod, and
//! `super::volumes` writes it at its `path` in the volume.
//!
//! Tokens are refreshed as the kubelet refreshes them: once 80 % of their lifetime has passed; a
//! renewed projected token is announced on a channel, so that the pod loop writes its volume again.

use std::collections::{BTreeMap, HashMap};
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
/// A projected token's lifetime when its source names none (the API server's default, 1 h).
const PROJECTED_EXPIRATION_SECONDS: i64 = 3600;

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
    /// A token of one of the pod's own projected volumes.
    #[error("volume {volume:?}: {source}")]
    Projected {
        /// The volume.
        volume: String,
        /// Why its token could not be had.
        source: Box<TokenError>,
    },
}

impl TokenError {
    /// The error in the words of the kubelet's `FailedMount` event for the token volume.
    pub(super) fn event_message(&self) -> String {
        let (volume, err) = match self {
            TokenError::Projected { volume, source } => (volume.as_str(), source.as_ref()),
            other => ("kube-api-access", other),
        };
        let cause = match err {
            TokenError::Api(_, kube::Error::Api(status)) => status.message.clone(),
            other => other.to_string(),
        };
        format!("MountVolume.SetUp failed for volume {volume:?} : failed to fetch token: {cause}")
    }
}

/// A token one of a pod's own projected volumes asks for: a `serviceAccountToken` source outside the
/// `kube-api-access-*` volume.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Projection {
    /// The volume.
    pub volume: String,
    /// The file in it.
    pub path: String,
    /// The audience (empty: the API server's own).
    pub audience: String,
    /// The lifetime asked for, in seconds.
    pub expiration: i64,
}

/// The pod's projected tokens, by (volume, path), as [`super::volumes::setup`] writes them.
pub(super) type ProjectedTokens = BTreeMap<(String, String), String>;

/// The [`Projection`]s of `pod`'s volumes.
pub(super) fn projections(pod: &Pod) -> Vec<Projection> {
    let mut out = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if v.name.starts_with(super::volumes::TOKEN_VOLUME_PREFIX) {
            continue;
        }
        let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        for t in sources
            .into_iter()
            .flatten()
            .filter_map(|s| s.service_account_token.as_ref())
        {
            out.push(Projection {
                volume: v.name.clone(),
                path: t.path.clone(),
                audience: t.audience.clone().unwrap_or_default(),
                expiration: t.expiration_seconds.unwrap_or(PROJECTED_EXPIRATION_SECONDS),
            });
        }
    }
    out
}

/// A projected token this agent holds.
#[derive(Debug, Clone)]
struct ProjectedToken {
    token: String,
    refresh_at: SystemTime,
}

/// A pod's projected tokens, and whom they are for.
#[derive(Debug, Clone)]
struct ProjectedPod {
    who: Holder,
    tokens: BTreeMap<Projection, ProjectedToken>,
}

/// Whom a pod's tokens are for: the pod they are bound to and its ServiceAccount.
#[derive(Debug, Clone)]
struct Holder {
    namespace: String,
    pod: String,
    pod_uid: String,
    service_account: String,
}

impl Holder {
    /// The pod `pod` (whose uid is `uid`) and the ServiceAccount it runs as (`default` if it names none).
    fn of(pod: &Pod, uid: &str) -> Holder {
        Holder {
            namespace: pod.namespace().unwrap_or_else(|| "default".into()),
            pod: pod.name_any(),
            pod_uid: uid.to_string(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
        }
    }
}

/// The `kube-api-access` token this agent holds for a pod: where it is written and when to renew it.
#[derive(Debug, Clone)]
struct Issued {
    who: Holder,
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
    /// The tokens of pods' own projected volumes, by pod uid.
    projected: Arc<Mutex<HashMap<String, ProjectedPod>>>,
    /// Where a pod whose projected token was renewed is announced (its uid).
    renewed: tokio::sync::mpsc::UnboundedSender<String>,
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
    /// The tokens, and the receiver of the uids of pods whose projected tokens were renewed (their
    /// volumes are to be written again).
    pub(super) fn new(
        client: Client,
        ca_pem: Option<String>,
    ) -> (Tokens, tokio::sync::mpsc::UnboundedReceiver<String>) {
        if ca_pem.is_none() {
            warn!("no cluster CA in the agent's kubeconfig: pods' service account directories get no ca.crt");
        }
        let (renewed, rx) = tokio::sync::mpsc::unbounded_channel();
        let tokens = Tokens {
            client,
            ca_pem,
            issued: Default::default(),
            reported: Default::default(),
            projected: Default::default(),
            renewed,
        };
        (tokens, rx)
    }

    /// The tokens of `pod`'s own projected volumes, each requested (bound to the pod, for its audience
    /// and lifetime) unless this agent holds it already.
    pub(super) async fn ensure_projected(&self, pod: &Pod) -> Result<ProjectedTokens, TokenError> {
        let wanted = projections(pod);
        let Some(uid) = pod.uid().filter(|_| !wanted.is_empty()) else {
            return Ok(ProjectedTokens::new());
        };
        let held = self.projected_lock().get(&uid).cloned();
        let mut held = held.unwrap_or_else(|| ProjectedPod {
            who: Holder::of(pod, &uid),
            tokens: BTreeMap::new(),
        });
        for p in &wanted {
            if held.tokens.contains_key(p) {
                continue;
            }
            let token = self
                .request(&held.who, p)
                .await
                .map_err(|e| TokenError::Projected {
                    volume: p.volume.clone(),
                    source: Box::new(e),
                })?;
            held.tokens.insert(p.clone(), token);
        }
        let out = held
            .tokens
            .iter()
            .map(|(p, t)| ((p.volume.clone(), p.path.clone()), t.token.clone()))
            .collect();
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        self.projected_lock().insert(uid, held);
        Ok(out)
    }

    /// A token of `who`'s ServiceAccount bound to its pod, for a projection.
    async fn request(&self, who: &Holder, p: &Projection) -> Result<ProjectedToken, TokenError> {
        let audiences = if p.audience.is_empty() {
            Vec::new()
        } else {
            vec![p.audience.clone()]
        };
        let (token, refresh_at) = self.token_request(who, audiences, p.expiration).await?;
        Ok(ProjectedToken { token, refresh_at })
    }

    fn projected_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProjectedPod>> {
        self.projected.lock().unwrap_or_else(|e| e.into_inner())
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
        if !Self::automount(pod) {
            debug!(pod = %pod.name_any(), "no service account token volume: no token");
            self.lock().insert(uid, None);
            return Ok(None);
        }
        let mut issued = Issued {
            who: Holder::of(pod, &uid),
            dir,
            refresh_at: SystemTime::now(),
        };
        self.issue(&mut issued).await?;
        info!(pod = %issued.who.pod, service_account = %issued.who.service_account, "service account token written");
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
        let (token, refresh_at) = self
            .token_request(&it.who, Vec::new(), EXPIRATION_SECONDS)
            .await?;
        std::fs::create_dir_all(&it.dir)?;
        write_atomic(&it.dir, "token", token.as_bytes())?;
        write_atomic(&it.dir, "namespace", it.who.namespace.as_bytes())?;
        if let Some(ca) = &self.ca_pem {
            write_atomic(&it.dir, "ca.crt", ca.as_bytes())?;
        }
        it.refresh_at = refresh_at;
        Ok(())
    }

    /// The TokenRequest for `it`'s ServiceAccount, bound to its pod: the token and when to renew it.
    async fn token_request(
        &self,
        it: &Holder,
        audiences: Vec<String>,
        expiration: i64,
    ) -> Result<(String, SystemTime), TokenError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &it.namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences,
                expiration_seconds: Some(expiration),
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
        Ok((status.token, refresh_time(now, expires)))
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
                self.projected_lock().retain(|uid, _| live.contains(uid));
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
                        debug!(pod = %it.who.pod, "service account token renewed");
                        if let Some(Some(e)) = self.lock().get_mut(&it.who.pod_uid) {
                            e.refresh_at = it.refresh_at;
                        }
                    }
                    Err(e) => {
                        warn!(pod = %it.who.pod, error = %e, "could not renew the service account token")
                    }
                }
            }
            self.renew_projected(now).await;
        }
    }
}

impl Tokens {
    /// Renews the projected tokens due at `now` and announces each pod whose tokens changed.
    async fn renew_projected(&self, now: SystemTime) {
        let due: Vec<(Holder, Projection)> = self
            .projected_lock()
            .values()
            .flat_map(|held| {
                held.tokens
                    .iter()
                    .filter(|(_, t)| t.refresh_at <= now)
                    .map(|(p, _)| (held.who.clone(), p.clone()))
            })
            .collect();
        for (who, p) in due {
            match self.request(&who, &p).await {
                Ok(token) => {
                    debug!(pod = %who.pod, volume = %p.volume, "projected service account token renewed");
                    if let Some(held) = self.projected_lock().get_mut(&who.pod_uid) {
                        held.tokens.insert(p, token);
                    }
                    let _ = self.renewed.send(who.pod_uid.clone());
                }
                Err(e) => {
                    warn!(pod = %who.pod, volume = %p.volume, error = %e, "could not renew the projected service account token")
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
