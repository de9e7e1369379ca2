//! Leader election for the controllers of `svcnet up` on a shared store, as kube-controller-manager's
//! `--leader-elect`: every control-plane instance serves the API, but each controller runs only on the
//! instance holding its Lease (`kube-system/svcnet-endpointslice-controller`, `…-node-controller`,
//! `…-workload-controller`, `…-serviceaccount-controller`, `…-lb-ipam`, and the API server's own
//! `…-namespace-controller`, `…-garbage-collector` and `…-allocation-repair`), so two instances never fight
//! over one object (two EndpointSlices for a Service, two ReplicaSets for a Deployment), and the
//! controllers spread over the instances.
//!
//! The rules are client-go's: a Lease is free when it names no holder or when its record has not changed
//! for `lease duration` by this instance's own clock (no clock comparison between machines); the holder
//! renews every retry period and gives up when no renewal succeeded for the renew deadline. Losing the
//! Lease ends the process, as kube-controller-manager exits on "leaderelection lost": its controllers
//! spawned tasks that cannot be stopped one by one, and whoever runs svcnet restarts it as a candidate.
//! The identity is kept in the data directory, so a restarted instance takes its own Lease back at once
//! instead of waiting for it to expire.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The namespace of the controllers' Leases (kube-controller-manager's is there too).
pub const NAMESPACE: &str = "kube-system";

/// kube-controller-manager's `--leader-elect-*` settings.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderArgs {
    /// With `--etcd-servers`: run each controller only while holding its Lease in `kube-system`
    /// (`svcnet-<controller>`), so several instances never run one at once.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// How long a candidate waits after the Lease's last change before it takes the Lease (Go duration).
    #[arg(long, default_value = "15s", value_parser = crate::store_args::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    #[arg(long, default_value = "10s", value_parser = crate::store_args::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = crate::store_args::parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderArgs {
    /// Refuses settings under which two instances could both think they lead.
    pub fn check(&self) -> Result<()> {
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration {
            bail!("--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration");
        }
        if self.leader_elect_retry_period.is_zero()
            || self.leader_elect_retry_period >= self.leader_elect_renew_deadline
        {
            bail!(
                "--leader-elect-retry-period must be above 0 and shorter than --leader-elect-renew-deadline"
            );
        }
        Ok(())
    }
}

/// This instance's identity: the hostname and a random suffix made once per data directory.
pub fn identity(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("leader-identity");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = crate::hostname();
    let id = format!("{host}_{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The election of one instance: [`Election::run`] campaigns and then renews; the gate it returns
/// opens once this instance leads.
pub struct Election {
    api: Api<Lease>,
    /// The Lease's name.
    name: &'static str,
    me: String,
    args: LeaderArgs,
    /// The Lease's resourceVersion when this instance last saw it change, and when.
    observed: Option<(String, Instant)>,
}

fn seconds(d: Duration) -> i32 {
    d.as_secs_f64().ceil().max(1.0) as i32
}

impl Election {
    /// An election for `me` of the Lease `name` through `client`.
    pub fn new(client: kube::Client, name: &'static str, me: String, args: LeaderArgs) -> Self {
        Election {
            api: Api::namespaced(client, NAMESPACE),
            name,
            me,
            args,
            observed: None,
        }
    }

    /// One attempt to take or renew the Lease: whether this instance holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let current = self.api.get_opt(self.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.me.clone()),
                    lease_duration_seconds: Some(seconds(self.args.leader_elect_lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.me;
        let duration = spec
            .lease_duration_seconds
            .map_or(self.args.leader_elect_lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= duration);
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.me.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds(self.args.leader_elect_lease_duration));
        // The resourceVersion makes this a compare-and-swap: of two candidates, one wins.
        match self.api.replace(self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Campaigns until this instance leads (then `leading` turns true) and renews for as long as it
    /// can; returns an error when the Lease is lost, which ends the process (see the module docs).
    pub async fn run(mut self, leading: watch::Sender<bool>) -> Result<()> {
        let lease = format!("{NAMESPACE}/{}", self.name);
        info!(identity = %self.me, lease = %lease, "waiting to lead");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => debug!(lease = %lease, error = %e, "campaigning"),
            }
            tokio::time::sleep(self.args.leader_elect_retry_period).await;
        }
        info!(identity = %self.me, lease = %lease, "leading: this controller runs on this instance");
        let _ = leading.send(true);
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.args.leader_elect_retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => bail!("leader election lost: another instance holds {lease}"),
                Err(e) => {
                    warn!(lease = %lease, error = %e, "renewing the Lease");
                    if renewed.elapsed() >= self.args.leader_elect_renew_deadline {
                        bail!(
                            "leader election lost: {lease} could not be renewed for {}s: {e}",
                            self.args.leader_elect_renew_deadline.as_secs()
                        );
                    }
                }
            }
        }
    }
}

/// What a controller's loop ends with: nothing (its watches ended), or an error to report.
pub trait Ended {
    /// The outcome as the supervisor takes it.
    fn into_result(self) -> Result<()>;
}

impl Ended for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error>> Ended for std::result::Result<(), E> {
    fn into_result(self) -> Result<()> {
        self.map_err(Into::into)
    }
}

/// Hands out one gate per controller: open at once without leader election, else once this instance
/// holds the controller's Lease (the election runs supervised, named after the Lease).
pub struct Elector {
    /// `None` when leader election is off.
    elect: Option<(kube::Client, String, LeaderArgs)>,
}

impl Elector {
    /// Leader election for `me` through `client`, or none (`enabled` false: every gate is open).
    pub fn new(
        enabled: bool,
        client: &kube::Client,
        me: impl FnOnce() -> Result<String>,
        args: &LeaderArgs,
    ) -> Result<Self> {
        Ok(Elector {
            elect: if enabled {
                Some((client.clone(), me()?, args.clone()))
            } else {
                None
            },
        })
    }

    /// Runs `controller` as the supervised task `name` once this instance holds `lease` (at once
    /// without election): the shape of every leader-elected loop of `up`. A controller ends only when
    /// its watches do, which the supervisor reports as it reports any task that stops.
    pub fn spawn_elected<F>(
        &self,
        supervisor: &crate::supervise::Supervisor,
        name: &'static str,
        lease: &'static str,
        controller: F,
    ) where
        F: std::future::Future + Send + 'static,
        F::Output: Ended,
    {
        let gate = self.gate(supervisor, lease);
        supervisor.spawn(name, async move {
            wait(gate).await;
            controller.await.into_result()
        });
    }

    /// The gate of the controller whose Lease is `lease`.
    pub fn gate(
        &self,
        supervisor: &crate::supervise::Supervisor,
        lease: &'static str,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.elect.is_none());
        if let Some((client, me, args)) = &self.elect {
            let election = Election::new(client.clone(), lease, me.clone(), args.clone());
            supervisor.spawn(lease, election.run(tx));
        }
        rx
    }
}

/// Waits until `leading` turns true.
pub async fn wait(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|l| *l).await;
}
