//! The `netns` pod network (needs root): every pod gets its own network namespace, joined to the node by a
//! veth pair whose host side sits on the node bridge [`BRIDGE`], with a real address from the node's pod CIDR
//! and a default route via the bridge, whose address is the first one of the pod CIDR (the gateway, never a
//! pod's). Each pod also gets its own `/etc/resolv.conf` with Kubernetes' search path and its own
//! `/etc/hosts` as the kubelet writes it ([`hosts_file`]).
//!
//! Everything is done with iproute2's `ip`, in the network namespace the agent runs in (the node's):
//! - node: bridge `svcnet0` with `<gateway>/<mask>` and a fixed MAC address ([`gateway_mac`]), up,
//!   `net.ipv4.ip_forward` of this namespace on and ICMP redirects off (see below);
//! - pod: `ip netns add svcnet-<id>`, veth `sv<id>` (host side, on the bridge, in hairpin mode) ↔ `eth0`
//!   (pod side, with `<podIP>/32`), `lo` up, a link route to the gateway and the default route via it, and
//!   `/etc/netns/svcnet-<id>/{resolv.conf,hosts}`, which `ip netns exec` bind-mounts over `/etc` in a
//!   private mount namespace. `<id>` is eight hex digits of the pod's uid ([`short_id`]).
//!
//! Pods are routed, not bridged, to each other (Calico's model): with a `/32` address a pod has no
//! on-link neighbours but the gateway, so every packet between two pods passes the node's IP layer.
//! That is what lets the userspace proxy connect to an endpoint from the client pod's own address
//! (`IP_TRANSPARENT`): the endpoint's reply comes back through the node, where the proxy's socket takes
//! it, instead of going straight to the client pod over the bridge. The node's redirects ("reach that pod
//! directly") are pointless then and are switched off; a `/32` pod would refuse them anyway.
//!
//! Hairpin mode on each pod's bridge port lets a frame leave by the port it came in on: with the kernel
//! data plane a pod reaching itself through its own Service is DNATed back to itself while the bridge
//! handles the frame (`br_netfilter`), and the bridge drops such a frame otherwise (the kubelet's
//! `--hairpin-mode=hairpin-veth`, the bridge CNI's `hairpinMode`). It is set at attach and set again when
//! an agent restart re-uses the pod's namespace.
//!
//! Containers and exec probes run behind [`PodNet::exec_prefix`] (`ip netns exec svcnet-<id>`), which
//! execs the command, so the container's PID and process group are the ones the runner started.
//!
//! Every namespace the agent creates is recorded under `root/netns/<name>` (content: the pod's uid) *before*
//! it is created, and only recorded namespaces are ever deleted: an agent restart re-uses the namespace of a
//! pod that still exists (when it is still intact) and deletes those of pods that are gone; nothing another
//! agent on the same machine created is touched.
//!
//! When the agent itself runs under `ip netns exec <node>` (as the tests run it), its mounts are private to
//! it: the pods' `/run/netns/svcnet-<id>` entries are listed everywhere but usable only from the agent's
//! mount namespace, and they go away with it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::PodDNSConfig;

/// The node bridge every pod's host-side veth is attached to.
pub const BRIDGE: &str = "svcnet0";

/// The cluster's DNS domain (the kubelet's `--cluster-domain` default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Prefix of the pods' network namespace names; the test harness' node namespaces use `svcnet-t-`, which
/// [`is_pod_netns_name`] never matches.
const NETNS_PREFIX: &str = "svcnet-";

/// Where `ip netns exec` finds per-namespace files to bind-mount over `/etc`.
const ETC_NETNS: &str = "/etc/netns";

/// Errors of the netns pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// iproute2 is missing.
    #[error("the netns pod network needs iproute2's `ip`, which is not on PATH, /usr/sbin or /sbin")]
    NoIpTool,
    /// The pod CIDR cannot be used for real interfaces.
    #[error("pod CIDR {cidr} cannot be used by the netns pod network: {why}")]
    BadCidr {
        /// The node's pod CIDR.
        cidr: IpNet,
        /// Why not.
        why: &'static str,
    },
    /// An `ip` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetnsError + '_ {
    move |source| NetnsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Eight hex digits naming a pod's namespace and veth: the first eight hex digits of its uid (a UUID's
/// random head, so a human can map the name back), or an FNV-1a hash of the uid when it does not start with
/// eight hex digits.
pub fn short_id(uid: &str) -> String {
    let head: String = uid.chars().take(8).collect();
    if head.len() == 8 && head.chars().all(|c| c.is_ascii_hexdigit()) {
        return head.to_ascii_lowercase();
    }
    let hash = uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// The pod's network namespace: `svcnet-<id>`.
pub fn netns_name(uid: &str) -> String {
    format!("{NETNS_PREFIX}{}", short_id(uid))
}

/// The host side of the pod's veth pair: `sv<id>` (10 characters, within Linux's 15).
pub fn host_veth_name(uid: &str) -> String {
    format!("sv{}", short_id(uid))
}

/// Whether `name` has the shape of a pod namespace name (`svcnet-` and eight hex digits).
pub fn is_pod_netns_name(name: &str) -> bool {
    name.strip_prefix(NETNS_PREFIX)
        .is_some_and(|id| id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The node's gateway in `cidr`: its first usable address, which goes on the bridge and never to a pod.
/// Only IPv4 ranges outside 127.0.0.0/8 (the kernel drops loopback addresses on real interfaces) with room
/// for a gateway and a pod are accepted.
pub fn gateway(cidr: &IpNet) -> Result<IpAddr, NetnsError> {
    let bad = |why| NetnsError::BadCidr { cidr: *cidr, why };
    let IpNet::V4(v4) = cidr else {
        return Err(bad("only IPv4 pod CIDRs are supported yet"));
    };
    if v4.network().is_loopback() {
        return Err(bad(
            "it is a loopback range (give a real one, e.g. --cluster-cidr 10.244.0.0/16)",
        ));
    }
    if v4.prefix_len() > 29 {
        return Err(bad("it is too small for a gateway and pods"));
    }
    svcnet_alloc::nth_address(cidr, 1).ok_or_else(|| bad("it has no usable address"))
}

/// The bridge's MAC address: locally administered and derived from the gateway address (`0a:58:` and its
/// four bytes, as OVN-Kubernetes does), so it is the same after every agent restart.
pub fn gateway_mac(gw: IpAddr) -> String {
    let IpAddr::V4(v4) = gw else {
        // `gateway` gives IPv4 only; a v6 one would still get a fixed, locally administered address.
        return "0a:58:00:00:00:01".into();
    };
    let [a, b, c, d] = v4.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The pod's `/etc/resolv.conf` as the kubelet computes it (`GetPodDNS`), or `None` when the pod uses the
/// node's (`dnsPolicy: Default`). `ClusterFirst` (the default, and `ClusterFirstWithHostNet`): the cluster DNS
/// Service as nameserver, the search path `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`; `None`:
/// nothing but `dnsConfig`. `dnsConfig` is then appended (nameservers and searches without duplicates,
/// options by name, later ones winning), and the kubelet's limits apply (3 nameservers, 32 search domains).
/// The node's own search domains are not appended.
pub fn resolv_conf(
    namespace: &str,
    domain: &str,
    cluster_dns: Option<IpAddr>,
    policy: Option<&str>,
    config: Option<&PodDNSConfig>,
) -> Option<String> {
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    match policy.unwrap_or("ClusterFirst") {
        "Default" => return None,
        "None" => {}
        _ => {
            nameservers.extend(cluster_dns.map(|ip| ip.to_string()));
            searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ];
            options.push(("ndots".into(), Some("5".into())));
        }
    }
    if let Some(config) = config {
        for ns in config.nameservers.iter().flatten() {
            if !nameservers.contains(ns) {
                nameservers.push(ns.clone());
            }
        }
        for s in config.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in config.options.iter().flatten() {
            let Some(name) = o.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            options.retain(|(n, _)| *n != name);
            options.push((name, o.value.clone()));
        }
    }
    nameservers.truncate(3);
    searches.truncate(32);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for ns in &nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        let words: Vec<String> = options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", words.join(" ")));
    }
    Some(out)
}

/// iproute2's `ip`: on PATH, else the usual system directories.
fn find_ip() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
}

/// The node's pod network: creates and deletes pod namespaces. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PodNet {
    ip: PathBuf,
    /// `root/netns`: one file per namespace this agent created, named after it, holding the pod's uid.
    records: PathBuf,
    /// Where per-namespace `/etc` files go (`/etc/netns`).
    etc: PathBuf,
    /// The pods' interface MTU ([`PodNet::with_mtu`]).
    mtu: Option<u32>,
}

/// A pod's network as [`PodNet::setup_pod`] wants it.
#[derive(Debug, Clone)]
pub struct PodNetSpec<'a> {
    /// The pod's uid.
    pub uid: &'a str,
    /// The pod's address.
    pub ip: IpAddr,
    /// The node's pod CIDR (for the mask).
    pub cidr: IpNet,
    /// Its `/etc/resolv.conf`, or `None` for the node's.
    pub resolv_conf: Option<String>,
    /// Its `/etc/hosts` ([`hosts_file`]).
    pub hosts: String,
}

impl PodNet {
    /// A pod network keeping its records under `root/netns`. Fails when `ip` is missing.
    pub fn new(root: &Path) -> Result<PodNet, NetnsError> {
        let ip = find_ip().ok_or(NetnsError::NoIpTool)?;
        let records = root.join("netns");
        std::fs::create_dir_all(&records).map_err(io_err(&records))?;
        Ok(PodNet {
            ip,
            records,
            etc: PathBuf::from(ETC_NETNS),
            mtu: None,
        })
    }

    /// Gives new pods' veth pairs this MTU (`None`: the kernel's default).
    pub fn with_mtu(mut self, mtu: Option<u32>) -> PodNet {
        self.mtu = mtu;
        self
    }

    /// The words that run a command inside the pod's namespace: `ip netns exec svcnet-<id>`.
    pub fn exec_prefix(&self, uid: &str) -> Vec<String> {
        vec![
            self.ip.to_string_lossy().into_owned(),
            "netns".into(),
            "exec".into(),
            netns_name(uid),
        ]
    }

    async fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let command = || format!("ip {}", args.join(" "));
        let out = tokio::process::Command::new(&self.ip)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| NetnsError::Command {
                command: command(),
                stderr: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetnsError::Command {
                command: command(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Sets up the node side once its pod CIDR is known: the bridge with the gateway address, up, and IPv4
    /// forwarding in this network namespace. Idempotent.
    pub async fn setup_node(&self, cidr: &IpNet) -> Result<(), NetnsError> {
        let gw = gateway(cidr)?;
        if self.ip(&["link", "show", "dev", BRIDGE]).await.is_err() {
            self.ip(&["link", "add", BRIDGE, "type", "bridge"]).await?;
        }
        // A bridge whose address was never set takes the lowest of its ports' addresses, so it would
        // change whenever a pod with a lower one is attached; the pods' neighbour entries for the gateway
        // would then point at a stale address and their traffic through the node stall until they expire
        // (tens of seconds). A set address stays.
        self.ip(&["link", "set", "dev", BRIDGE, "address", &gateway_mac(gw)])
            .await?;
        let addr = format!("{gw}/{}", cidr.prefix_len());
        self.ip(&["addr", "replace", &addr, "dev", BRIDGE]).await?;
        self.ip(&["link", "set", BRIDGE, "up"]).await?;
        // /proc/sys/net is per network namespace: this is the node's (the agent's) namespace only.
        let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
        std::fs::write(forward, "1\n").map_err(io_err(forward))?;
        // Pods are routed through the node (see the module docs): no redirects to each other. The kernel
        // sends one if `all` or the device says so; both are this namespace's.
        for dev in ["all", BRIDGE] {
            let path = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{dev}/send_redirects"));
            std::fs::write(&path, "0\n").map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Whether the pod's namespace is already set up as `spec` says (an agent restart re-uses it).
    async fn intact(&self, spec: &PodNetSpec<'_>) -> bool {
        let name = netns_name(spec.uid);
        let want = format!("inet {}/32 ", spec.ip);
        let pod_side = self
            .ip(&["-n", &name, "-o", "addr", "show", "dev", "eth0"])
            .await
            .is_ok_and(|out| out.contains(&want));
        let host_side = self
            .ip(&["-o", "link", "show", "dev", &host_veth_name(spec.uid)])
            .await
            .is_ok_and(|out| out.contains(&format!("master {BRIDGE} ")));
        pod_side && host_side
    }

    /// Gives the pod its namespace, veth pair, address, routes and resolv.conf; returns the namespace's name.
    /// Re-uses an intact namespace; anything half-made is deleted and made again. On failure nothing of the
    /// pod's network is left.
    pub async fn setup_pod(&self, spec: &PodNetSpec<'_>) -> Result<String, NetnsError> {
        let name = netns_name(spec.uid);
        let record = self.records.join(&name);
        if record.exists() && self.intact(spec).await {
            // Repaired on every agent start: a namespace from before hairpin mode, or someone reset it.
            self.hairpin(spec.uid).await?;
            self.write_etc(&name, spec)?;
            return Ok(name);
        }
        self.delete(&name).await;
        // Recorded before it exists: a crash half-way still leaves it ours to delete.
        std::fs::write(&record, spec.uid).map_err(io_err(&record))?;
        match self.create(spec, &name).await {
            Ok(()) => Ok(name),
            Err(e) => {
                self.teardown_name(&name).await;
                Err(e)
            }
        }
    }

    async fn create(&self, spec: &PodNetSpec<'_>, name: &str) -> Result<(), NetnsError> {
        let gw = gateway(&spec.cidr)?.to_string();
        let veth = host_veth_name(spec.uid);
        let addr = format!("{}/32", spec.ip);
        self.ip(&["netns", "add", name]).await?;
        let mtu = self.mtu.map(|m| m.to_string());
        let mut add = vec!["link", "add", "name", &veth];
        if let Some(m) = &mtu {
            add.extend(["mtu", m]);
        }
        add.extend(["type", "veth", "peer", "name", "eth0"]);
        if let Some(m) = &mtu {
            add.extend(["mtu", m]);
        }
        add.extend(["netns", name]);
        self.ip(&add).await?;
        self.ip(&["link", "set", &veth, "master", BRIDGE, "up"]).await?;
        self.hairpin(spec.uid).await?;
        self.ip(&["-n", name, "link", "set", "lo", "up"]).await?;
        self.ip(&["-n", name, "addr", "add", &addr, "dev", "eth0"])
            .await?;
        self.ip(&["-n", name, "link", "set", "eth0", "up"]).await?;
        self.ip(&["-n", name, "route", "add", &gw, "dev", "eth0", "scope", "link"])
            .await?;
        self.ip(&["-n", name, "route", "add", "default", "via", &gw, "dev", "eth0"])
            .await?;
        self.write_etc(name, spec)
    }

    /// Puts the pod's bridge port in hairpin mode (see the module docs).
    async fn hairpin(&self, uid: &str) -> Result<(), NetnsError> {
        let veth = host_veth_name(uid);
        self.ip(&[
            "link",
            "set",
            "dev",
            &veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])
        .await
        .map(drop)
    }

    /// The pod's files that `ip netns exec` bind-mounts over `/etc`.
    fn write_etc(&self, name: &str, spec: &PodNetSpec<'_>) -> Result<(), NetnsError> {
        self.write_etc_file(name, "resolv.conf", spec.resolv_conf.as_deref())?;
        self.write_etc_file(name, "hosts", Some(&spec.hosts))
    }

    fn write_etc_file(&self, name: &str, file_name: &str, text: Option<&str>) -> Result<(), NetnsError> {
        let dir = self.etc.join(name);
        let file = dir.join(file_name);
        match text {
            Some(text) => {
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                // Written beside and renamed, so a container starting meanwhile never reads half a file.
                let tmp = dir.join(format!(".{file_name}.tmp"));
                std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, &file).map_err(io_err(&file))
            }
            None => match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&file)(e)),
                _ => Ok(()),
            },
        }
    }

    /// Deletes the namespace `name`, its host veth and its `/etc/netns` files. Errors are ignored: each part
    /// may already be gone.
    async fn delete(&self, name: &str) {
        // Files first: once the namespace is gone from `ip netns list`, nothing of the pod is left behind.
        let _ = std::fs::remove_dir_all(self.etc.join(name));
        let _ = self.ip(&["netns", "del", name]).await;
        // Normally gone with the namespace; not if a stray process still holds the namespace alive.
        if let Some(id) = name.strip_prefix(NETNS_PREFIX) {
            let _ = self.ip(&["link", "del", &format!("sv{id}")]).await;
        }
    }

    async fn teardown_name(&self, name: &str) {
        self.delete(name).await;
        let _ = std::fs::remove_file(self.records.join(name));
    }

    /// Removes the pod's network, if this agent made it.
    pub async fn teardown_pod(&self, uid: &str) {
        let name = netns_name(uid);
        if self.records.join(&name).exists() {
            tracing::info!(netns = %name, "deleting pod network namespace");
            self.teardown_name(&name).await;
        }
    }

    /// The namespaces this agent made, as (name, pod uid).
    pub fn recorded(&self) -> Vec<(String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.records) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                is_pod_netns_name(&name).then_some(())?;
                let uid = std::fs::read_to_string(e.path()).ok()?;
                Some((name, uid.trim().to_string()))
            })
            .collect()
    }

    /// Deletes the namespaces of pods that are not in `live` (uids), e.g. after an agent restart.
    pub async fn teardown_gone(&self, live: &HashSet<String>) {
        for (name, uid) in self.recorded() {
            if !live.contains(&uid) {
                tracing::info!(netns = %name, pod = %uid, "deleting the network namespace of a pod that is gone");
                self.teardown_name(&name).await;
            }
        }
    }

    /// Deletes every namespace this agent made (the node goes away).
    pub async fn teardown_all(&self) {
        for (name, _) in self.recorded() {
            self.teardown_name(&name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodDNSConfigOption;

    #[test]
    fn names_come_from_the_uid() {
        let uid = "3F2a9c1e-0d4b-4c7e-9a51-7b1f3c2d4e5f";
        assert_eq!(short_id(uid), "3f2a9c1e");
        assert_eq!(netns_name(uid), "svcnet-3f2a9c1e");
        assert_eq!(host_veth_name(uid), "sv3f2a9c1e");
        assert!(host_veth_name(uid).len() <= 15);
        // Not hex: hashed, still eight hex digits, and stable.
        let odd = short_id("uid-web");
        assert_eq!(odd.len(), 8);
        assert!(odd.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(odd, short_id("uid-web"));
        assert_ne!(odd, short_id("uid-web2"));
        assert!(is_pod_netns_name(&netns_name("uid-web")));
        assert!(!is_pod_netns_name("svcnet-t-1234abcd"));
        assert!(!is_pod_netns_name("svcnet-3f2a9c1"));
        assert!(!is_pod_netns_name("other-3f2a9c1e"));
    }

    #[test]
    fn gateway_is_the_first_address_of_a_real_ipv4_range() {
        let cidr: IpNet = "10.244.3.0/24".parse().unwrap();
        assert_eq!(gateway(&cidr).unwrap().to_string(), "10.244.3.1");
        assert_eq!(gateway_mac(gateway(&cidr).unwrap()), "0a:58:0a:f4:03:01");
        for bad in ["127.244.0.0/24", "fd00::/64", "10.0.0.0/30"] {
            assert!(gateway(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_cluster_first_like_the_kubelet() {
        let dns: IpAddr = "10.96.0.10".parse().unwrap();
        let text = resolv_conf("web", "cluster.local", Some(dns), None, None).unwrap();
        assert_eq!(
            text,
            "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf("web", "cluster.local", Some(dns), Some("ClusterFirst"), None),
            Some(text)
        );
        assert_eq!(
            resolv_conf("web", "cluster.local", Some(dns), Some("Default"), None),
            None
        );
    }

    #[test]
    fn resolv_conf_appends_dns_config() {
        let dns: IpAddr = "10.96.0.10".parse().unwrap();
        let config = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "10.96.0.10".into()]),
            searches: Some(vec!["example.org".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let text = resolv_conf("a", "cluster.local", Some(dns), None, Some(&config)).unwrap();
        assert_eq!(
            text,
            "search a.svc.cluster.local svc.cluster.local cluster.local example.org\nnameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
        let none = resolv_conf("a", "cluster.local", Some(dns), Some("None"), Some(&config)).unwrap();
        assert_eq!(
            none,
            "search example.org\nnameserver 1.1.1.1\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
        );
    }
}
