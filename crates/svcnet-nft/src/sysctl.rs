//! The connection-tracking settings kube-proxy makes on its node (`--conntrack-*`): a table large enough
//! for the node's cores, a day before an idle established TCP flow is forgotten, an hour for one in
//! CLOSE_WAIT (Kubernetes' e2e test "should set TCP CLOSE_WAIT timeout" reads that back), and the optional
//! liberal TCP window check and UDP timeouts. Without them a DNATed flow that outlives the kernel's
//! defaults loses its translation mid-connection.
//!
//! Unlike kube-proxy, nothing is ever lowered (`nf_conntrack_max` already above the wanted size stays),
//! and a setting that cannot be written is reported, not fatal: `nf_conntrack_max` is read-only outside
//! the machine's first network namespace, where the timeouts, which every namespace has of its own, still
//! apply. The hash table size, which kube-proxy raises to a quarter of the table, is left to the kernel:
//! it is a module parameter shared by every namespace, and today's kernels size it from memory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// What kube-proxy's `conntrack` configuration says; [`Default`] is kube-proxy's defaults. A zero
/// duration or count leaves that setting as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSysctls {
    /// Table entries per CPU core (`--conntrack-max-per-core`, 32768).
    pub max_per_core: u64,
    /// The smallest table, whatever the number of cores (`--conntrack-min`, 131072).
    pub min: u64,
    /// Idle timeout of an established TCP flow (`--conntrack-tcp-timeout-established`, 24h).
    pub tcp_established_timeout: Duration,
    /// Timeout of a TCP flow in CLOSE_WAIT (`--conntrack-tcp-timeout-close-wait`, 1h).
    pub tcp_close_wait_timeout: Duration,
    /// Accept TCP packets outside the window (`--conntrack-tcp-be-liberal`, off): such packets are
    /// otherwise marked invalid, skip DNAT and reach the node as strays that it resets.
    pub tcp_be_liberal: bool,
    /// Timeout of a one-way UDP flow (`--conntrack-udp-timeout`, unset).
    pub udp_timeout: Duration,
    /// Timeout of a UDP flow with traffic both ways (`--conntrack-udp-timeout-stream`, unset).
    pub udp_stream_timeout: Duration,
}

impl Default for ConntrackSysctls {
    fn default() -> Self {
        ConntrackSysctls {
            max_per_core: 32768,
            min: 131072,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

/// What became of one setting.
#[derive(Debug)]
pub struct SysctlOutcome {
    /// The name under `net/netfilter/`.
    pub name: &'static str,
    /// The value wanted.
    pub wanted: u64,
    /// The value found before, if it could be read.
    pub before: Option<u64>,
    /// Whether it was written (false when it already had the value, or a larger table).
    pub written: bool,
    /// Why it could not be read or written.
    pub error: Option<io::Error>,
}

/// The directory the settings live in.
const DIR: &str = "/proc/sys/net/netfilter";

impl ConntrackSysctls {
    /// The settings to make on a machine with `cpus` cores, as (name, value, only raise).
    pub fn wanted(&self, cpus: usize) -> Vec<(&'static str, u64, bool)> {
        let mut v = Vec::new();
        if self.max_per_core > 0 {
            let max = (self.max_per_core * cpus as u64).max(self.min);
            v.push(("nf_conntrack_max", max, true));
        }
        let secs = [
            (
                "nf_conntrack_tcp_timeout_established",
                self.tcp_established_timeout,
            ),
            ("nf_conntrack_tcp_timeout_close_wait", self.tcp_close_wait_timeout),
            ("nf_conntrack_udp_timeout", self.udp_timeout),
            ("nf_conntrack_udp_timeout_stream", self.udp_stream_timeout),
        ];
        v.extend(
            secs.into_iter()
                .filter(|(_, d)| d.as_secs() > 0)
                .map(|(n, d)| (n, d.as_secs(), false)),
        );
        if self.tcp_be_liberal {
            v.push(("nf_conntrack_tcp_be_liberal", 1, false));
        }
        v
    }

    /// Makes the settings in this process's network namespace, or in the one at `netns` (a short-lived
    /// thread enters it: `/proc/sys/net` shows the namespace of whoever opens it).
    pub fn apply(&self, netns: Option<&Path>) -> io::Result<Vec<SysctlOutcome>> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = self.wanted(cpus);
        let Some(path) = netns else {
            return Ok(apply_here(&wanted));
        };
        let path: PathBuf = path.to_owned();
        std::thread::Builder::new()
            .name("svcnet-sysctl".into())
            .spawn(move || {
                let f = fs::File::open(&path)?;
                setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(apply_here(&wanted))
            })?
            .join()
            .map_err(|_| io::Error::other("sysctl thread panicked"))?
    }
}

fn apply_here(wanted: &[(&'static str, u64, bool)]) -> Vec<SysctlOutcome> {
    wanted
        .iter()
        .map(|&(name, value, only_raise)| {
            let path = Path::new(DIR).join(name);
            let before = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()));
            let mut out = SysctlOutcome {
                name,
                wanted: value,
                before: before.as_ref().ok().copied(),
                written: false,
                error: None,
            };
            match before {
                Ok(b) if b == value || (only_raise && b > value) => {}
                Ok(_) => match fs::write(&path, format!("{value}\n")) {
                    Ok(()) => out.written = true,
                    Err(e) => out.error = Some(e),
                },
                Err(e) => out.error = Some(io::Error::other(format!("reading {}: {e}", path.display()))),
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kube_proxys() {
        let w = ConntrackSysctls::default().wanted(2);
        assert_eq!(
            w,
            vec![
                ("nf_conntrack_max", 131072, true),
                ("nf_conntrack_tcp_timeout_established", 86400, false),
                ("nf_conntrack_tcp_timeout_close_wait", 3600, false),
            ]
        );
        // Enough cores scale the table past the floor.
        assert_eq!(
            ConntrackSysctls::default().wanted(8)[0],
            ("nf_conntrack_max", 262144, true)
        );
    }

    #[test]
    fn zero_leaves_a_setting_alone() {
        let c = ConntrackSysctls {
            max_per_core: 0,
            tcp_established_timeout: Duration::ZERO,
            tcp_close_wait_timeout: Duration::ZERO,
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(
            c.wanted(4),
            vec![
                ("nf_conntrack_udp_timeout", 30, false),
                ("nf_conntrack_tcp_be_liberal", 1, false)
            ]
        );
    }
}
