//! What the nftables tests add to the shared namespace harness (`svcnet_testsupport::{netns, lab}`,
//! which holds the safety rules): backends that program a namespace, the lab's pods as endpoints, the
//! lab's configuration, and the check that skips these tests where root or a tool is missing.

use svcnet_dataplane::Endpoint;
use svcnet_nft::{NftBackend, NftConfig};
use svcnet_testsupport::lab::{
    Lab, NODE_IP, NODE_IP6, POD_CIDR, POD_CIDR6, POD_PORT, SERVICE_CIDR, SERVICE_CIDR6,
};
use svcnet_testsupport::netns::{Netns, have, is_root};

/// Whether the tests that need root, `ip`, `nft`, `conntrack` and `python3` can run; prints why not.
pub fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root (network namespaces, nftables)");
        return false;
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("nft", "--version"),
        ("conntrack", "--version"),
        ("python3", "--version"),
    ] {
        if !have(tool, arg) {
            eprintln!(
                "SKIP {test}: `{tool}` is not installed (apt-get install nftables conntrack iproute2 python3)"
            );
            return false;
        }
    }
    true
}

/// A namespace an nftables backend can program.
pub trait NftNetns {
    /// A backend that programs this namespace (`nft` and `conntrack` run inside it; no health server).
    fn backend(&self, cfg: NftConfig) -> NftBackend;
}

impl NftNetns for Netns {
    fn backend(&self, mut cfg: NftConfig) -> NftBackend {
        cfg.nft_command = self.prefix("nft");
        cfg.netns = Some(self.path());
        cfg.conntrack_command = self.prefix("conntrack");
        NftBackend::new(cfg)
    }
}

/// The lab as the nftables traffic tests use it.
pub trait NftLab {
    /// A backend that programs the node namespace.
    fn backend(&self, cfg: NftConfig) -> NftBackend;

    /// The given pods' IPv4 endpoints on the pod port (`local`: on this node).
    fn pod_eps(pods: &[usize], local: &[usize]) -> Vec<Endpoint> {
        pods.iter()
            .map(|&i| super::ep(&Lab::pod_ip_of(i), POD_PORT, local.contains(&i)))
            .collect()
    }

    /// The given pods' IPv6 endpoints on the pod port (`local`: on this node).
    fn pod_eps6(pods: &[usize], local: &[usize]) -> Vec<Endpoint> {
        pods.iter()
            .map(|&i| super::ep(&Lab::pod_ip6_of(i), POD_PORT, local.contains(&i)))
            .collect()
    }
}

impl NftLab for Lab {
    fn backend(&self, cfg: NftConfig) -> NftBackend {
        self.node.backend(cfg)
    }
}

/// The configuration the traffic tests use: pod CIDRs and service CIDRs of the lab, both families.
pub fn lab_config() -> NftConfig {
    NftConfig {
        pod_cidrs: vec![POD_CIDR.parse().unwrap(), POD_CIDR6.parse().unwrap()],
        service_cidrs: vec![SERVICE_CIDR.parse().unwrap(), SERVICE_CIDR6.parse().unwrap()],
        node_ips: vec![NODE_IP.parse().unwrap(), NODE_IP6.parse().unwrap()],
        ipv6: true,
        ..Default::default()
    }
}
