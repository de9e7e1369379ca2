//! The API forwarder: how nodes in their own network namespaces reach an API server that listens on the
//! host's 127.0.0.1, without giving the host's namespace a route, link or address.
//!
//! A socket belongs to the network namespace it was created in, whatever thread later uses it. So the
//! forwarder binds one listener per node *inside that node's namespace* (a short-lived thread enters the
//! namespace with `setns(2)`, binds, and ends), on the node's own 127.0.0.1 and the API server's port, and
//! relays every connection it accepts to the host's 127.0.0.1 from its ordinary threads. TLS passes
//! through untouched: nodes join and then work against the very address (`https://127.0.0.1:PORT`) and
//! server certificate that kubectl on the host uses, each with its own client certificate.
//!
//! The other way, the API server reaches node agents (`kubectl logs`) through the forwarder's HTTP CONNECT
//! proxy on a Unix socket in the lab's directory ([`Egress`]; `svcnet up --kubelet-egress-uds`, as
//! kube-apiserver's egress selector): a tunnel to a node's address is opened from inside that node's
//! namespace, and only to the lab's node addresses.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::{debug, info, warn};

use crate::{LabError, io_err};

/// The line the forwarder prints once every listener is bound (`lab up` waits for it).
pub const READY_LINE: &str = "svcnet lab forwarder ready";

/// Runs `f` on a thread of its own inside the network namespace at `netns` (a `/run/netns/…` path): the
/// sockets it makes belong to that namespace; the caller's threads stay in theirs.
fn in_netns<T: Send>(
    netns: &Path,
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> Result<T, LabError> {
    let target = File::open(netns).map_err(io_err(what))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| io_err(what)(std::io::Error::from(e)))?;
            f().map_err(io_err(what))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(LabError::Io {
                what: what.to_string(),
                source: std::io::Error::other("the thread in the namespace panicked"),
            })
        })
    })
}

/// Binds `addr` inside the network namespace at `netns` (a `/run/netns/…` path).
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> Result<std::net::TcpListener, LabError> {
    let what = format!("listening on {addr} in {}", netns.display());
    in_netns(netns, &what, || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// Connects to `addr` from inside the network namespace at `netns`.
pub fn connect_in_netns(netns: &Path, addr: SocketAddr) -> Result<std::net::TcpStream, LabError> {
    let what = format!("connecting to {addr} from {}", netns.display());
    in_netns(netns, &what, || {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
}

/// The API server's way to the node agents: an HTTP CONNECT proxy on a Unix socket.
#[derive(Debug, Clone)]
pub struct Egress {
    /// The socket (`svcnet up --kubelet-egress-uds`).
    pub socket: PathBuf,
    /// Every node's address and namespace: the only tunnel ends allowed.
    pub nodes: Vec<(Ipv4Addr, PathBuf)>,
}

/// Relays connections accepted on listeners bound in `netns_paths` (on 127.0.0.1:`target`'s port) to
/// `target` on the host. Prints [`READY_LINE`] once all are bound; runs until the task is dropped.
pub async fn run(netns_paths: Vec<PathBuf>, target: SocketAddr, egress: Egress) -> Result<(), LabError> {
    let mut tasks = tokio::task::JoinSet::new();
    // A socket file left by an earlier forwarder of this lab would make the bind fail.
    let _ = std::fs::remove_file(&egress.socket);
    let proxy = UnixListener::bind(&egress.socket)
        .map_err(io_err(format!("listening on {}", egress.socket.display())))?;
    info!(socket = %egress.socket.display(), "serving the API server's tunnels to node agents");
    tasks.spawn(egress_loop(proxy, Arc::new(egress.nodes)));
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

async fn egress_loop(listener: UnixListener, nodes: Arc<Vec<(Ipv4Addr, PathBuf)>>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(tunnel(conn, nodes.clone()));
            }
            Err(e) => {
                warn!(error = %e, "accept on the egress socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The target of a `CONNECT host:port HTTP/1.1` request head.
fn connect_target(head: &str) -> Option<SocketAddr> {
    let mut words = head.lines().next()?.split_whitespace();
    (words.next()? == "CONNECT").then_some(())?;
    words.next()?.parse().ok()
}

/// One CONNECT request: a tunnel to a lab node's address, opened from inside that node.
async fn tunnel(mut conn: UnixStream, nodes: Arc<Vec<(Ipv4Addr, PathBuf)>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: whatever follows the head belongs to the tunnel.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || !matches!(conn.read(&mut byte).await, Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    let target = connect_target(&String::from_utf8_lossy(&head));
    let netns = target.and_then(|t| {
        nodes
            .iter()
            .find(|(ip, _)| IpAddr::V4(*ip) == t.ip())
            .map(|(_, path)| path.clone())
    });
    let (Some(target), Some(netns)) = (target, netns) else {
        // Only the lab's nodes: the proxy must not become a way anywhere else.
        warn!(request = %String::from_utf8_lossy(&head).lines().next().unwrap_or_default(), "refused a tunnel");
        let _ = conn.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        return;
    };
    let connected = tokio::task::spawn_blocking(move || connect_in_netns(&netns, target)).await;
    let upstream = match connected {
        Ok(Ok(s)) => TcpStream::from_std(s),
        Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            debug!(%target, error = %e, "tunnel target unreachable");
            let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        }
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
        debug!(%target, error = %e, "tunnel ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_heads() {
        assert_eq!(
            connect_target("CONNECT 172.18.0.11:10250 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("172.18.0.11:10250".parse().unwrap())
        );
        assert_eq!(connect_target("GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(connect_target("CONNECT example.com:80 HTTP/1.1\r\n\r\n"), None);
    }
}
