//! Network namespaces a test makes for itself (root only): a "node" namespace that `svcnet up` runs in, and
//! the pods' namespaces below it, all deleted when the guard drops, and nothing else.

use std::path::Path;
use std::process::Command;

use svcnet_agent::netns::netns_name;

/// Why this machine cannot run network-namespace tests, if it cannot (not root, no iproute2).
pub fn can_run() -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("needs root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("needs root and iproute2's `ip`".into()),
    }
}

pub fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// The flags of a node with the netns pod network on flannel's and kube's usual ranges.
pub const POD_NETWORK_FLAGS: [&str; 6] = [
    "--pod-network",
    "netns",
    "--cluster-cidr",
    "10.244.0.0/16",
    "--service-cidr",
    "10.96.0.0/12",
];

/// The namespaces this test made or caused (the node's, and the pods' once their uids are known); every one
/// still present is deleted on drop, and nothing else.
pub struct Namespaces {
    /// The node's namespace.
    pub node: String,
    pods: Vec<String>,
}

impl Namespaces {
    pub fn create() -> Namespaces {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        let node = format!("svcnet-t-{seed:08x}");
        let out = ip(&["netns", "add", &node]);
        assert!(out.status.success(), "ip netns add {node}: {out:?}");
        let ns = Namespaces {
            node,
            pods: Vec::new(),
        };
        let out = ip(&["-n", &ns.node, "link", "set", "lo", "up"]);
        assert!(out.status.success(), "lo up: {out:?}");
        ns
    }

    /// Remembers a pod's namespace (by pod uid) for deletion; returns its name.
    pub fn track_pod(&mut self, uid: &str) -> String {
        let name = netns_name(uid);
        if !self.pods.contains(&name) {
            self.pods.push(name.clone());
        }
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.pods.iter().chain(std::iter::once(&self.node)) {
            if Path::new("/run/netns").join(name).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
        for name in &self.pods {
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}
