//! Pod addresses: which pod of this node has which address of the node's pod CIDR, and a claim on each
//! address that other svcnet agents on the same host can see.
//!
//! **Why claims.** In Kubernetes each pod has a network namespace of its own, so two clusters may hand out
//! the same address without meeting. svcnet's host pod network has none: a pod binds its own loopback
//! address in the host's namespace, and every cluster started with the defaults allocates from the same
//! `127.244.0.0/24`. Two clusters on one machine would then give two pods one address: the second pod's
//! server cannot bind, yet its readiness probe reaches the first pod's server and passes, and its Service
//! sends traffic to a pod of the other cluster. So each address is claimed on the host while a pod holds
//! it, with an abstract Unix socket named after the address (`svcnet.pod-ip.<ip>`): binding one is atomic
//! (a second bind fails with `EADDRINUSE`), it needs no privilege and no file, it belongs to the network
//! namespace the addresses live in, and the kernel drops it when the agent exits, however it exits, so no
//! claim outlives its agent. An address claimed elsewhere is skipped like a recently released one.
//!
//! **Why released addresses wait.** A deleted pod's address may still be in endpoints, conntrack entries
//! and DNS caches, so a new pod that got it at once would receive traffic still meant for the old one. The
//! CNI host-local IPAM avoids this by handing out addresses round-robin; here the last [`RECENT_IPS`]
//! released addresses stay out of the allocator until the range has nothing else.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use svcnet_alloc::{ClusterIpAllocator, SplitMix64};
use tracing::{debug, warn};

/// How many released pod addresses wait before they can be handed out again (fewer when the range runs
/// out).
pub(crate) const RECENT_IPS: usize = 64;

/// A host-wide claim on one pod address, held while a pod of this agent has it.
#[derive(Debug)]
struct Claim {
    /// Never read: the bound socket is the claim, and dropping it gives the address back.
    _socket: UnixDatagram,
}

/// Why an address could not be claimed.
enum Unclaimed {
    /// Another svcnet agent on this host (another cluster, or another node in the same namespace with an
    /// overlapping range) holds it.
    Taken,
    /// Claims do not work here (say, a sandbox without Unix sockets): the address is used unclaimed, as
    /// before claims existed.
    Unsupported(std::io::Error),
}

impl Claim {
    fn take(ip: IpAddr) -> Result<Claim, Unclaimed> {
        let name = format!("svcnet.pod-ip.{ip}");
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).map_err(Unclaimed::Unsupported)?;
        match UnixDatagram::bind_addr(&addr) {
            Ok(socket) => Ok(Claim { _socket: socket }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Unclaimed::Taken),
            Err(e) => Err(Unclaimed::Unsupported(e)),
        }
    }
}

/// One pod's address and its claim.
#[derive(Debug)]
struct Lease {
    ip: IpAddr,
    _claim: Option<Claim>,
}

/// The node's pod addresses: the allocator over its pod CIDR (once the control plane assigned one), the
/// address of each pod, and the addresses waiting before reuse.
#[derive(Debug, Default)]
pub(crate) struct PodIps {
    alloc: Option<ClusterIpAllocator>,
    by_uid: HashMap<String, Lease>,
    /// An address of the pod CIDR no pod may have (the netns bridge's gateway).
    reserved: Option<IpAddr>,
    /// Addresses released lately, or found claimed by another agent, oldest first, kept out of the
    /// allocator for a while.
    recent: VecDeque<IpAddr>,
}

impl PodIps {
    /// Whether the pod CIDR is known (pods can get addresses).
    pub(crate) fn has_range(&self) -> bool {
        self.alloc.is_some()
    }

    /// Starts allocating from `alloc`, keeping `reserved` (if any) for the node itself.
    pub(crate) fn set_range(&mut self, mut alloc: ClusterIpAllocator, reserved: Option<IpAddr>) {
        if let Some(r) = reserved {
            let _ = alloc.allocate(r);
        }
        // Addresses adopted before the range was known stay their pods'.
        for lease in self.by_uid.values() {
            if alloc.in_range(lease.ip) {
                let _ = alloc.allocate(lease.ip);
            }
        }
        self.alloc = Some(alloc);
        self.reserved = reserved;
    }

    /// Records the address of a pod adopted from a previous agent (which may come before the pod CIDR is
    /// known): the pod keeps it, and claims it again on the host.
    pub(crate) fn adopt(&mut self, uid: &str, ip: IpAddr) {
        if self.by_uid.contains_key(uid) {
            return;
        }
        if let Some(alloc) = self.alloc.as_mut()
            && alloc.in_range(ip)
        {
            let _ = alloc.allocate(ip);
        }
        let claim = match Claim::take(ip) {
            Ok(c) => Some(c),
            Err(Unclaimed::Taken) => {
                warn!(%ip, pod = uid, "the adopted pod's address is claimed by another svcnet agent on this host");
                None
            }
            Err(Unclaimed::Unsupported(_)) => None,
        };
        self.by_uid.insert(uid.to_string(), Lease { ip, _claim: claim });
    }

    /// The address of the pod `uid`: the one it already has (given earlier, or `existing` from its status
    /// when the agent restarted), else a new one from the pod CIDR. `None` until the CIDR is known, or when
    /// it is full.
    pub(crate) fn get(&mut self, uid: &str, existing: Option<IpAddr>) -> Option<IpAddr> {
        if let Some(l) = self.by_uid.get(uid) {
            return Some(l.ip);
        }
        let reserved = self.reserved;
        let alloc = self.alloc.as_mut()?;
        let lease = match existing {
            // Re-adopt after an agent restart: the pod keeps its address (unless it is the gateway's).
            Some(ip) if alloc.in_range(ip) && Some(ip) != reserved => {
                let _ = alloc.allocate(ip);
                let claim = match Claim::take(ip) {
                    Ok(c) => Some(c),
                    Err(Unclaimed::Taken) => {
                        warn!(%ip, pod = uid, "the pod's address is claimed by another svcnet agent on this host");
                        None
                    }
                    Err(Unclaimed::Unsupported(_)) => None,
                };
                Lease { ip, _claim: claim }
            }
            _ => self.allocate(uid)?,
        };
        let ip = lease.ip;
        self.by_uid.insert(uid.to_string(), lease);
        Some(ip)
    }

    /// A new address, claimed on the host. Addresses claimed elsewhere go to the waiting list; the scan is
    /// bounded by the range's size, since each step takes one address out of the allocator.
    fn allocate(&mut self, uid: &str) -> Option<Lease> {
        // Seeded by the uid: a pod's address does not depend on the order pods arrive in.
        let mut rng = SplitMix64::new(
            uid.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
        );
        let mut gave_back = false;
        loop {
            let alloc = self.alloc.as_mut()?;
            let ip = match alloc.allocate_next(&mut rng) {
                Ok(ip) => ip,
                // The range is full but for waiting addresses: give them all back, once.
                Err(_) if !gave_back && !self.recent.is_empty() => {
                    gave_back = true;
                    for ip in std::mem::take(&mut self.recent) {
                        alloc.release(ip);
                    }
                    continue;
                }
                Err(_) => return None,
            };
            match Claim::take(ip) {
                Ok(claim) => {
                    return Some(Lease {
                        ip,
                        _claim: Some(claim),
                    });
                }
                Err(Unclaimed::Unsupported(e)) => {
                    debug!(%ip, error = %e, "pod addresses cannot be claimed on this host; using it unclaimed");
                    return Some(Lease { ip, _claim: None });
                }
                Err(Unclaimed::Taken) => {
                    debug!(%ip, "pod address claimed by another svcnet agent on this host; skipping it");
                    self.wait(ip);
                }
            }
        }
    }

    /// Gives the pod `uid`'s address up: its claim at once, the address itself after [`RECENT_IPS`] others.
    pub(crate) fn release(&mut self, uid: &str) {
        if let Some(lease) = self.by_uid.remove(uid) {
            self.wait(lease.ip);
        }
    }

    fn wait(&mut self, ip: IpAddr) {
        self.recent.push_back(ip);
        while self.recent.len() > RECENT_IPS {
            let oldest = self.recent.pop_front();
            if let (Some(ip), Some(a)) = (oldest, self.alloc.as_mut()) {
                a.release(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    // Each test has a range of its own: claims are host-wide, so tests running at once would otherwise
    // take each other's addresses.
    fn ips(cidr: &str) -> PodIps {
        let mut ips = PodIps::default();
        ips.set_range(ClusterIpAllocator::new(cidr.parse().unwrap()).unwrap(), None);
        ips
    }

    /// A deleted pod's address is not handed to the next pods (it may still be in endpoints, conntrack
    /// and caches), until the range has nothing else.
    #[test]
    fn released_pod_ips_wait_before_reuse() {
        let mut ips = ips("10.251.0.0/24");
        let mut released = Vec::new();
        for i in 0..40 {
            let uid = format!("old-{i}");
            released.push(ips.get(&uid, None).unwrap());
            ips.release(&uid);
        }
        for i in 0..150 {
            let ip = ips.get(&format!("new-{i}"), None).unwrap();
            assert!(!released.contains(&ip), "{ip} reused at once");
        }
        // A full range hands the waiting addresses out again rather than failing.
        let mut small = self::ips("10.251.1.0/29");
        let first = small.get("a", None).unwrap();
        small.release("a");
        let got: Vec<_> = (0..8)
            .filter_map(|i| small.get(&format!("b-{i}"), None))
            .collect();
        assert!(got.contains(&first), "{got:?}");
    }

    /// Two agents on one host with the same pod range (two clusters started with the defaults) never give
    /// two pods the same address, and an address comes free for the other once its pod is gone.
    #[test]
    fn agents_on_one_host_never_share_an_address() {
        let (mut a, mut b) = (ips("10.251.2.0/28"), ips("10.251.2.0/28"));
        let from_a: HashSet<_> = (0..7).filter_map(|i| a.get(&format!("a-{i}"), None)).collect();
        let from_b: HashSet<_> = (0..7).filter_map(|i| b.get(&format!("b-{i}"), None)).collect();
        assert_eq!(from_a.len(), 7);
        assert_eq!(from_b.len(), 7, "the range has room for both: {from_b:?}");
        assert!(from_a.is_disjoint(&from_b), "{from_a:?} {from_b:?}");
        // The range (14 addresses) is full: b gets nothing more while a holds its seven.
        assert_eq!(b.get("b-extra", None), None);
        // Once a's pods are gone, b can have their addresses, after its waiting list is given back.
        for i in 0..7 {
            a.release(&format!("a-{i}"));
        }
        drop(a);
        let got = b
            .get("b-extra", None)
            .expect("an address freed by the other agent");
        assert!(from_a.contains(&got), "{got}");
    }

    /// A pod keeps the address in its status across an agent restart, and that address is claimed again.
    #[test]
    fn a_restarted_agent_keeps_and_claims_its_pods_addresses() {
        let mut before = ips("10.251.3.0/28");
        let ip = before.get("p", None).unwrap();
        drop(before);
        let mut after = ips("10.251.3.0/28");
        assert_eq!(after.get("p", Some(ip)), Some(ip));
        let mut other = ips("10.251.3.0/28");
        let theirs: Vec<_> = (0..13)
            .filter_map(|i| other.get(&format!("o-{i}"), None))
            .collect();
        assert!(!theirs.contains(&ip), "{theirs:?}");
    }
}
