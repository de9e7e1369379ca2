//! The lab's network namespaces and links: names, addresses, and the `ip` commands that make and remove
//! them. Everything here happens inside namespaces whose names start with [`prefix`]; the machine's own
//! namespace is never changed (a veth is created *in* the underlay namespace with its peer moved straight
//! into the node's, so not even a transient link appears on the host).
//!
//! Each namespace is configured with one `ip -n NS -batch -` run, which keeps `lab up` fast.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::LabError;

/// The underlay subnet (a /24 that exists only inside each lab; every lab may use the same one).
pub const UNDERLAY: &str = "172.18.0.0/24";
/// Prefix length of [`UNDERLAY`].
pub const UNDERLAY_PREFIX: u8 = 24;
/// The client's underlay address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
/// The bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";
/// The name of every node's and the client's underlay interface.
pub const UPLINK: &str = "eth0";
/// Most nodes a lab can have (their addresses are `172.18.0.11` up to `.210`).
pub const MAX_NODES: usize = 200;
/// The LoadBalancer IPs of every lab (the control plane's `--lb-pool`): the top of the underlay, above
/// every node, so that the client reaches them on-link and the node elected for each answers ARP.
pub const LB_POOL: &str = "172.18.0.224-172.18.0.254";

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The prefix of every namespace of lab `name`: `svl-<name>-`.
pub fn prefix(name: &str) -> String {
    format!("svl-{name}-")
}

/// Whether `name` can name a lab: 1 to 20 characters of `[a-z0-9-]`, starting with a letter, not ending
/// with '-' (it becomes part of namespace names and of a DNS-label-like directory name).
pub fn valid_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Node `i`'s name (from 1): `node1`, `node2`, …
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

/// Node `i`'s underlay address (from 1): `172.18.0.(10+i)`.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 18, 0, (10 + i) as u8)
}

/// Node `i`'s zone label: `zone-a`, `zone-b`, `zone-c`, then again (three zones, as a region has).
pub fn zone(i: usize) -> String {
    let letter = (b'a' + ((i - 1) % 3) as u8) as char;
    format!("zone-{letter}")
}

/// The namespace of `member` (a node's name, `client` or `underlay`) in lab `lab`.
pub fn netns(lab: &str, member: &str) -> String {
    format!("{}{member}", prefix(lab))
}

/// The path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The named namespaces that exist now whose names start with `prefix`.
pub fn existing(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args, None)
}

/// Runs `ip -n NS -batch -` with `lines` as its input: one process for a whole namespace's setup.
pub fn ip_batch(ns: &str, lines: &[String]) -> Result<(), LabError> {
    let mut text = lines.join("\n");
    text.push('\n');
    run("ip", &["-n", ns, "-batch", "-"], Some(&text)).map(|_| ())
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, LabError> {
    let command = || format!("{program} {}", args.join(" "));
    let fail = |stderr: String| LabError::Command {
        command: command(),
        stderr,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// A member of the underlay: its namespace, the name of its port on the bridge, and its address.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its namespace.
    pub netns: String,
    /// Its port on the underlay bridge (in the underlay namespace).
    pub port: String,
    /// Its address on [`UPLINK`].
    pub ip: Ipv4Addr,
}

/// Creates the underlay namespace with its bridge, and each member's namespace, linked to the bridge with
/// its address on [`UPLINK`]. Members' namespaces get `lo` up; nothing else (the node agent sets up the
/// rest of a node). On failure the caller removes what was made (every name carries the lab's prefix).
pub fn create(underlay: &str, members: &[Member]) -> Result<(), LabError> {
    ip(&["netns", "add", underlay])?;
    for m in members {
        ip(&["netns", "add", &m.netns])?;
    }
    // Not a router: the underlay forwards frames only, and its namespace has no address at all.
    let mut lines = vec![
        "link set lo up".to_string(),
        format!("link add {BRIDGE} type bridge"),
        format!("link set {BRIDGE} up"),
    ];
    for m in members {
        lines.push(format!(
            "link add {} type veth peer name {UPLINK} netns {}",
            m.port, m.netns
        ));
        lines.push(format!("link set {} master {BRIDGE} up", m.port));
    }
    ip_batch(underlay, &lines)?;
    for m in members {
        ip_batch(
            &m.netns,
            &[
                "link set lo up".into(),
                format!("addr add {}/{UNDERLAY_PREFIX} dev {UPLINK}", m.ip),
                format!("link set {UPLINK} up"),
            ],
        )?;
    }
    Ok(())
}

/// Sets a member's bridge port up or down (a cable plugged in or pulled at the switch).
pub fn set_port(underlay: &str, port: &str, up: bool) -> Result<(), LabError> {
    ip(&[
        "-n",
        underlay,
        "link",
        "set",
        port,
        if up { "up" } else { "down" },
    ])
    .map(|_| ())
}

/// Whether a member's bridge port is up.
pub fn port_up(underlay: &str, port: &str) -> bool {
    ip(&["-n", underlay, "-o", "link", "show", "dev", port])
        .is_ok_and(|out| out.contains(",UP") || out.contains("<UP"))
}

/// Deletes the named namespace (its links go with it). A namespace already gone is not an error.
pub fn delete(name: &str) -> Result<(), LabError> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(valid_name("demo"));
        assert!(valid_name("t-1a2b"));
        for bad in ["", "Demo", "1lab", "a_b", "lab-", "a-very-long-lab-name-x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(netns("demo", "node2"), "svl-demo-node2");
        assert_eq!(node_ip(1).to_string(), "172.18.0.11");
        assert_eq!(node_ip(MAX_NODES).to_string(), "172.18.0.210");
        assert_eq!(zone(1), "zone-a");
        assert_eq!(zone(3), "zone-c");
        assert_eq!(zone(4), "zone-a");
        // Every interface name fits Linux's 15 characters.
        assert!(node_name(MAX_NODES).len() <= 15);
    }
}
