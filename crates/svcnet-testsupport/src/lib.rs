//! The one test harness every svcnet crate's integration tests use (a dev-dependency only, never shipped).
//!
//! - [`cluster`]: a real `svcnet up` with its own data directory and loopback port, driven with real kubectl.
//!   The `svcnet` binary's path is an argument: only the `svcnet` crate's own tests know it, as
//!   `env!("CARGO_BIN_EXE_svcnet")`.
//! - [`agent`]: a real `svcnet agent` joining a cluster (by kubeconfig or by token), killed with its pods and
//!   proxy process on drop.
//! - [`etcd`]: a real etcd member on free loopback ports, or a cluster of several (the etcd store's and
//!   HA control plane's tests).
//! - [`users`]: credentials of other users for a cluster (client certificates signed by its CA, tokens)
//!   and kubeconfigs that use them.
//! - [`kubectl`]: which kubectl binaries the tests use and where they are.
//! - [`net`]: small std-thread TCP/UDP servers that answer with their identity, clients for them, a TCP
//!   relay a test can cut (a partition), free
//!   ports, and Service/EndpointSlice manifest text.
//! - [`netns`]: network namespaces a test creates and deletes (root only), commands run in them, and the
//!   checks that let such tests skip cleanly where they cannot run.
//! - [`lab`]: a dual-stack "node + pods + outside client" topology of namespaces with real servers and
//!   clients, for data-plane traffic tests.
//! - [`multinode`]: a real `svcnet lab` (a multi-node cluster of network namespaces) with kubectl on the
//!   host, commands in its nodes and client, and a snapshot of the host's network to compare before/after.
//! - [`raw`]: raw API requests through a kube-rs client (status and body as the server answered).
//! - [`process`]: another svcnet command (`proxy`, `dns`) as its own process, stopped by PID.
//! - [`eventually`]: the one "wait until" every harness and test polls with.
//!
//! Network safety: everything here stays on 127.0.0.0/8 in the machine's own network namespace; other
//! addresses, links and routes exist only inside namespaces the harness creates and deletes.

pub mod agent;
pub mod cluster;
pub mod etcd;
pub mod kubectl;
pub mod lab;
pub mod multinode;
pub mod neighbours;
pub mod net;
pub mod netns;
pub mod process;
#[cfg(feature = "kube")]
pub mod raw;
pub mod users;

use std::time::{Duration, Instant};

pub use cluster::Cluster;

/// Polls `f` every 50 ms until it returns true or `timeout` passes, then asks once more (a condition that
/// came true during the last sleep still counts). Returns whether `f` held.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
