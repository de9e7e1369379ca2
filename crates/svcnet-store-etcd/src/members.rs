//! Keeping a dead etcd member out of the client's rotation (clientv3's balancer health checks).
//!
//! `etcd-client` balances requests over every endpoint it was given, but does not take out one that
//! stopped answering (etcd-client issue #39): with one member of three down, requests routed to it fail
//! with `tcp connect error` although the cluster has its quorum. Here each endpoint is probed on its own
//! connection every [`PROBE_EVERY`] with a linearizable read (which fails on a member cut off from the
//! quorum too); one that fails leaves the balanced client, one that answers again comes back. The last
//! endpoint in rotation is never taken out: with every member failing, the store's own health probe
//! reports it and requests fail with the cause.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tracing::{info, warn};

/// How often each member is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a member may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which endpoints are in rotation and what changes a probe round asks for (pure).
#[derive(Debug)]
pub(crate) struct Rotation {
    active: Vec<bool>,
}

/// A change to the balanced client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Take endpoint `i` out.
    Remove(usize),
    /// Put endpoint `i` back.
    Add(usize),
}

impl Rotation {
    pub(crate) fn new(n: usize) -> Rotation {
        Rotation {
            active: vec![true; n],
        }
    }

    /// The changes that one round of probe results (`healthy[i]` for endpoint `i`) asks for: failed
    /// endpoints out, answering ones back in, never the last one out.
    pub(crate) fn round(&mut self, healthy: &[bool]) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, &ok) in healthy.iter().enumerate() {
            if ok && !self.active[i] {
                self.active[i] = true;
                changes.push(Change::Add(i));
            }
        }
        for (i, &ok) in healthy.iter().enumerate() {
            if !ok && self.active[i] && self.active.iter().filter(|a| **a).count() > 1 {
                self.active[i] = false;
                changes.push(Change::Remove(i));
            }
        }
        changes
    }
}

/// Probes every endpoint and keeps the balanced `client`'s endpoints to the answering ones, forever.
pub(crate) async fn keep_rotation(client: Client, endpoints: Vec<String>, options: ConnectOptions) {
    let mut probes = Vec::new();
    for e in &endpoints {
        // A client of one endpoint connects lazily: building it never fails on a dead member.
        match Client::connect([e.as_str()], Some(options.clone())).await {
            Ok(c) => probes.push(c.kv_client()),
            Err(error) => {
                warn!(endpoint = %e, %error, "cannot probe this etcd member; it stays in rotation");
                return;
            }
        }
    }
    let mut rotation = Rotation::new(endpoints.len());
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let mut healthy = Vec::with_capacity(probes.len());
        for kv in &mut probes {
            let answer = tokio::time::timeout(PROBE_TIMEOUT, kv.get("health", None)).await;
            healthy.push(matches!(answer, Ok(Ok(_))));
        }
        for change in rotation.round(&healthy) {
            let result = match change {
                Change::Remove(i) => {
                    warn!(endpoint = %endpoints[i], "etcd member does not answer; taken out of rotation");
                    client.remove_endpoint(&endpoints[i]).await
                }
                Change::Add(i) => {
                    info!(endpoint = %endpoints[i], "etcd member answers again; back in rotation");
                    client.add_endpoint(&endpoints[i]).await
                }
            };
            if let Err(error) = result {
                warn!(%error, "changing the etcd client's endpoints");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_members_leave_and_come_back_but_one_always_stays() {
        let mut r = Rotation::new(3);
        assert_eq!(r.round(&[true, true, true]), []);
        assert_eq!(r.round(&[false, true, true]), [Change::Remove(0)]);
        assert_eq!(r.round(&[false, true, true]), []);
        // All failing: the last one stays.
        assert_eq!(r.round(&[false, false, false]), [Change::Remove(1)]);
        // Back first, then out: a member that comes back lets the last failing one go.
        assert_eq!(
            r.round(&[true, false, false]),
            [Change::Add(0), Change::Remove(2)]
        );
        assert_eq!(r.round(&[true, true, false]), [Change::Add(1)]);
    }
}
