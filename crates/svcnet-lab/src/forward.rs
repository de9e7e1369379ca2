//! The API forwarder: how nodes in their own network namespaces reach an API server that listens on the
//! host's 127.0.0.1, without giving the host's namespace a route, link or address.
//!
//! A socket belongs to the network namespace it was created in, whatever thread later uses it. So the
//! forwarder binds one listener per node *inside that node's namespace* (a short-lived thread enters the
//! namespace with `setns(2)`, binds, and ends), on the node's own 127.0.0.1 and the API server's port, and
//! relays every connection it accepts to the host's 127.0.0.1 from its ordinary threads. TLS passes
//! through untouched: nodes use the very kubeconfig (server `https://127.0.0.1:PORT`) and server
//! certificate that kubectl on the host does.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::{LabError, io_err};

/// The line the forwarder prints once every listener is bound (`lab up` waits for it).
pub const READY_LINE: &str = "svcnet lab forwarder ready";

/// Binds `addr` inside the network namespace at `netns` (a `/run/netns/…` path).
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> Result<std::net::TcpListener, LabError> {
    let what = format!("listening on {addr} in {}", netns.display());
    let target = File::open(netns).map_err(io_err(what.clone()))?;
    // A thread of its own enters the namespace: the caller's threads stay in theirs.
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&target, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err(what.clone())(std::io::Error::from(e)))?;
            let listener = std::net::TcpListener::bind(addr).map_err(io_err(what.clone()))?;
            listener.set_nonblocking(true).map_err(io_err(what.clone()))?;
            Ok(listener)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(LabError::Io {
                what: what.clone(),
                source: std::io::Error::other("the binding thread panicked"),
            })
        })
    })
}

/// Relays connections accepted on listeners bound in `netns_paths` (on 127.0.0.1:`target`'s port) to
/// `target` on the host. Prints [`READY_LINE`] once all are bound; runs until the task is dropped.
pub async fn run(netns_paths: Vec<PathBuf>, target: SocketAddr) -> Result<(), LabError> {
    let mut tasks = tokio::task::JoinSet::new();
    for path in netns_paths {
        let std_listener = bind_in_netns(&path, SocketAddr::new([127, 0, 0, 1].into(), target.port()))?;
        let listener = TcpListener::from_std(std_listener)
            .map_err(io_err(format!("listening in {}", path.display())))?;
        info!(netns = %path.display(), %target, "forwarding the API server");
        tasks.spawn(accept_loop(listener, target, path));
    }
    println!("{READY_LINE}");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, netns: PathBuf) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(netns = %netns.display(), error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut conn = conn;
            let _ = conn.set_nodelay(true);
            match TcpStream::connect(target).await {
                Ok(mut upstream) => {
                    let _ = upstream.set_nodelay(true);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
                        debug!(%peer, error = %e, "relay ended");
                    }
                }
                Err(e) => warn!(%peer, %target, error = %e, "cannot reach the API server"),
            }
        });
    }
}
