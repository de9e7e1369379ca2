//! TCP frontends: accept, check, pick an endpoint (retrying others when a connect fails), relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svcnet_dataplane::FrontendKind;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::endpoints::Tried;
use crate::metrics::Reject;
use crate::now_ms;
use crate::port::PortShared;

/// Accepts connections on one frontend until the task is aborted (the listener closes then; connections
/// already accepted run in their own tasks and finish on their own).
pub(crate) async fn serve(listener: TcpListener, port: Arc<PortShared>, kind: FrontendKind) {
    // Out of descriptors or memory: the acceptor backs off instead of spinning (the backlog holds the
    // connections meanwhile) and logs once per interval.
    let mut acceptor = svcnet_accept::Acceptor::new(listener, "userspace proxy");
    // Only a shut-down listener (its removal; the task is being aborted anyway) ends the loop.
    while let Ok((stream, peer)) = acceptor.accept().await {
        tokio::spawn(handle(stream, peer, port.clone(), kind));
    }
}

/// Closes a client connection with a reset, so the client learns at once that nobody will serve it.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn handle(mut client: TcpStream, peer: SocketAddr, port: Arc<PortShared>, kind: FrontendKind) {
    let view = port.view.load_full();
    let m = &port.metrics;
    if !view.admits(kind, peer.ip()) {
        m.reject(Reject::SourceRange);
        return reset(client);
    }
    let set = view.set_for(kind, peer.ip(), &port.settings).clone();
    if set.is_empty() {
        m.reject(Reject::NoEndpoints);
        return reset(client);
    }
    m.connections.inc();
    m.active.inc();
    let _active = scopeguard(&m.active);
    let settings = &port.settings;
    let mut tried = Tried::default();
    for attempt in 0..settings.connect_attempts.max(1) {
        let now = now_ms();
        let Some((i, guard)) = port.choose(&view, &set, peer.ip(), &tried, now) else {
            break;
        };
        let addr = guard.endpoint().addr;
        let source = settings.source_for(&view, kind, peer.ip(), guard.endpoint());
        match tokio::time::timeout(settings.connect_timeout, connect(settings, addr, source)).await {
            Ok(Ok(mut upstream)) => {
                // The client socket has TCP_NODELAY from its listener already.
                let _ = upstream.set_nodelay(true);
                if let Err(e) = relay(&mut client, &mut upstream, &port).await {
                    // One side failed (typically a reset): reset the other too, as a NAT would let it see.
                    debug!(service = %port.metrics_name(), endpoint = %addr, error = %e, "connection ended");
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    let _ = socket2::SockRef::from(&upstream).set_linger(Some(Duration::ZERO));
                }
                drop(guard);
                return;
            }
            failed => {
                let err = match failed {
                    Ok(Err(e)) => e,
                    _ => io::Error::from(io::ErrorKind::TimedOut),
                };
                debug!(service = %port.metrics_name(), endpoint = %addr, attempt, error = %err, "connect failed");
                guard.endpoint().back_off(now_ms(), settings.backoff_ms);
                port.unpin(&view, peer.ip(), addr);
                tried.add(i);
                m.retries.inc();
            }
        }
    }
    m.reject(Reject::ConnectFailed);
    reset(client);
}

/// Connects to the endpoint `addr`, from `source` if given (see [`crate::source`]).
async fn connect(
    settings: &crate::port::Settings,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> io::Result<TcpStream> {
    if source.is_none() {
        return TcpStream::connect(addr).await;
    }
    let s = settings.source.socket(socket2::Type::STREAM, addr, source)?;
    s.set_nonblocking(true)?;
    tokio::net::TcpSocket::from_std_stream(s.into())
        .connect(addr)
        .await
}

async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, port: &PortShared) -> io::Result<()> {
    let m = &port.metrics;
    let splice = port.settings.splice.then_some(port.settings.pipe_size);
    crate::relay::relay(client, upstream, splice, &m.bytes_in, &m.bytes_out).await
}

/// Decrements a gauge when dropped (the connection ended, however it ended).
fn scopeguard(g: &prometheus_client::metrics::gauge::Gauge) -> impl Drop + '_ {
    struct Dec<'a>(&'a prometheus_client::metrics::gauge::Gauge);
    impl Drop for Dec<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    Dec(g)
}

#[cfg(test)]
mod tests {
    /// The backend relies on this to save a setsockopt per accepted connection.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_tcp_nodelay(true).unwrap();
        s.bind(&"127.33.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(8).unwrap();
        let l: std::net::TcpListener = s.into();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap());
    }
}
