//! Network namespaces a test creates for itself (root only), commands run in them, and the checks that
//! let such tests skip cleanly where they cannot run.
//!
//! Nothing here changes the machine's own network namespace: every namespace is made here
//! (`svcnet-t-<random>-<tag>`, a name the node agent never takes for a pod's) and deleted when its
//! guard drops, also on panic; links, addresses and routes are made only inside them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Whether this process runs as root (network namespaces and nftables need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether `tool version_arg` runs and succeeds (e.g. `("nft", "--version")`).
pub fn have(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run network-namespace tests, if it cannot (not root, no iproute2).
pub fn can_run() -> Result<(), String> {
    if !is_root() {
        return Err("needs root".into());
    }
    if !have("ip", "-V") {
        return Err("needs root and iproute2's `ip`".into());
    }
    Ok(())
}

/// Runs `args[0]` with the other words as arguments, panicking with its stderr if it fails.
pub fn run(args: &[&str]) -> Output {
    run_with_input(args, None)
}

/// [`run`], writing `stdin` (if any) to the command's standard input.
pub fn run_with_input(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        // Dropped at the end of the statement: the command sees end of input.
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS…`, unchecked: the caller judges the output.
pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// A command that runs `program` inside the network namespace `netns` (`ip netns exec NETNS PROGRAM`);
/// add arguments and run it as any [`Command`].
pub fn command_in(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

/// A network namespace this process created, with `lo` up; deleted on drop.
pub struct Netns {
    /// Its name (`ip netns` and `/run/netns/<name>`).
    pub name: String,
}

impl Netns {
    /// Creates `svcnet-t-<random>-<tag>` with `lo` up.
    pub fn new(tag: &str) -> Netns {
        // A fresh `RandomState` hashes with fresh random keys: random enough to keep parallel tests (and
        // leftovers of killed runs) apart, without a dependency.
        let seed = RandomState::new().build_hasher().finish() as u32;
        let name = format!("svcnet-t-{seed:08x}-{tag}");
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its path, for `setns` (what `NftConfig::netns` and netlink sockets take).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NS args…`, checked.
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v);
    }

    /// `ip netns exec NS args…`, checked; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        self.exec_with_input(args, None)
    }

    /// [`Netns::exec`] with `stdin` written to the command.
    pub fn exec_with_input(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        String::from_utf8_lossy(&run_with_input(&v, stdin).stdout).into_owned()
    }

    /// The command prefix that runs `tool` in this namespace (for configurations that take a command
    /// line, such as `NftConfig::nft_command`).
    pub fn prefix(&self, tool: &str) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
            tool.into(),
        ]
    }

    /// Turns IPv6 duplicate address detection off for the interfaces made (or moved) here from now on:
    /// their link-local addresses are then usable at once. While `fe80::` of the bridge is tentative, the
    /// node sends no neighbour solicitation for packets it forwards with a foreign source address (such as
    /// a client's, not masqueraded), so the first of them would wait seconds for neighbour discovery.
    pub fn no_dad(&self) {
        self.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
    }

    /// Adds an IPv6 address (`fd00::1/64`) to `dev` without duplicate address detection, so that it is
    /// usable at once rather than tentative for a second or two.
    pub fn addr6(&self, addr: &str, dev: &str) {
        self.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
    }

    /// Waits (up to 10 s) until IPv6 is configured on `dev`, which is up with its peer: the kernel's
    /// `multicast ff00::/8` route on it exists. Until then multicast to all nodes (an unsolicited
    /// neighbour advertisement) has no route there and is dropped (`Ip6InNoRoutes`). The kernel
    /// configures a link only when it sees it operationally up, and for a veth that event can wait a
    /// second or more (the kernel sends such link events at most once a second, later under load).
    /// Panics if it never comes.
    pub fn wait_ipv6_ready(&self, dev: &str) {
        let ready = || {
            self.exec(&["ip", "-6", "route", "show", "table", "local", "dev", dev])
                .lines()
                .any(|l| l.starts_with("multicast ff00::/8"))
        };
        assert!(
            crate::eventually(std::time::Duration::from_secs(10), ready),
            "IPv6 not configured on {dev} in {}: {}",
            self.name,
            self.exec(&["ip", "-6", "addr", "show", "dev", dev])
        );
    }

    /// [`Netns::addr6`], deprecated at once (`preferred_lft 0`): usable when a socket binds to it, but
    /// never chosen as a source address, so the link's other address stays the default one (IPv6 source
    /// selection would otherwise prefer the address added last).
    pub fn addr6_secondary(&self, addr: &str, dev: &str) {
        self.ip(&[
            "-6",
            "addr",
            "add",
            addr,
            "dev",
            dev,
            "nodad",
            "preferred_lft",
            "0",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The `svcnet up` flags of a node with the netns pod network on flannel's and kube's usual ranges.
pub const POD_NETWORK_FLAGS: [&str; 6] = [
    "--pod-network",
    "netns",
    "--cluster-cidr",
    "10.244.0.0/16",
    "--service-cidr",
    "10.96.0.0/12",
];

/// The namespaces a cluster test made or caused: the node's, which `svcnet up` runs in (see
/// [`crate::Cluster::start_in_netns`]), and its pods' once the test knows their names; every one still
/// present is deleted on drop, and nothing else.
pub struct Namespaces {
    /// The node's namespace.
    pub node: Netns,
    pods: Vec<String>,
}

impl Namespaces {
    /// Creates the node's namespace (with `lo` up).
    pub fn create() -> Namespaces {
        Namespaces {
            node: Netns::new("node"),
            pods: Vec::new(),
        }
    }

    /// Remembers a pod's namespace `name` (the agent's `netns_name(uid)`) for deletion; returns it.
    pub fn track_pod(&mut self, name: String) -> String {
        if !self.pods.contains(&name) {
            self.pods.push(name.clone());
        }
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.pods {
            if Path::new("/run/netns").join(name).exists() {
                let _ = ip(&["netns", "del", name]);
            }
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
        // The node's namespace goes when `node` drops, after this.
    }
}
