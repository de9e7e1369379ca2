//! UDP frontends: a flow per client address, each with a socket connected to its endpoint.
//!
//! The listener task owns the flow table outright (no lock): it receives every datagram to the service
//! address, finds or creates the client's flow and sends the datagram on the flow's socket. Each flow has
//! a task that receives the endpoint's replies and sends them from the service socket, so they come from
//! the address the client talked to. A flow is forgotten after the idle timeout, when its endpoint leaves
//! the port, or when the endpoint answers with ICMP port unreachable (the next datagram picks again).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use svcnet_dataplane::FrontendKind;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;
use tracing::debug;

use crate::endpoints::{ActiveGuard, EndpointSet, Tried};
use crate::metrics::Reject;
use crate::now_ms;
use crate::port::PortShared;

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65536;

/// State both halves of a flow update.
#[derive(Debug, Default)]
struct FlowState {
    /// `now_ms()` of the last datagram either way.
    last: AtomicU64,
    /// The endpoint refused (ICMP): drop the flow.
    dead: AtomicBool,
}

struct Flow {
    upstream: Arc<UdpSocket>,
    state: Arc<FlowState>,
    /// The set the endpoint was chosen from; when the port's set is replaced, the endpoint is looked up
    /// again, and the flow dropped if it is gone.
    set: Arc<EndpointSet>,
    guard: ActiveGuard,
    replies: AbortHandle,
    port: Arc<PortShared>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
        self.port.metrics.active.dec();
    }
}

/// Relays datagrams of one frontend until the task is aborted (which drops every flow).
pub(crate) async fn serve(socket: Arc<UdpSocket>, port: Arc<PortShared>, kind: FrontendKind) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle = port.settings.udp_idle_ms;
    let mut sweep = tokio::time::interval(Duration::from_millis((idle / 2).clamp(10, 5000)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, client)) => datagram(&socket, &port, kind, &mut flows, &buf[..n], client).await,
                // ICMP errors for earlier sends and the like: nothing to do for the listener.
                Err(e) => debug!(service = %port.metrics_name(), error = %e, "udp receive"),
            },
            _ = sweep.tick() => {
                let now = now_ms();
                flows.retain(|_, f| alive(f, now, idle));
            }
        }
    }
}

fn alive(f: &Flow, now: u64, idle: u64) -> bool {
    !f.state.dead.load(Relaxed) && now.saturating_sub(f.state.last.load(Relaxed)) < idle
}

async fn datagram(
    socket: &Arc<UdpSocket>,
    port: &Arc<PortShared>,
    kind: FrontendKind,
    flows: &mut HashMap<SocketAddr, Flow>,
    data: &[u8],
    client: SocketAddr,
) {
    let now = now_ms();
    let view = port.view.load();
    let set = view.set_for(kind, client.ip(), &port.settings);
    if let Some(f) = flows.get_mut(&client) {
        let mut keep = alive(f, now, port.settings.udp_idle_ms);
        if keep && !Arc::ptr_eq(&f.set, set) {
            keep = set.index_of(f.guard.endpoint().addr).is_some();
            f.set = set.clone();
        }
        if !keep {
            flows.remove(&client);
        }
    }
    if !flows.contains_key(&client) {
        if !view.admits(kind, client.ip()) {
            return port.metrics.reject(Reject::SourceRange);
        }
        if set.is_empty() {
            return port.metrics.reject(Reject::NoEndpoints);
        }
        if flows.len() >= port.settings.udp_max_flows {
            let idle = port.settings.udp_idle_ms;
            flows.retain(|_, f| alive(f, now, idle));
            if flows.len() >= port.settings.udp_max_flows {
                return port.metrics.reject(Reject::FlowTableFull);
            }
        }
        let Some((_, guard)) = port.choose(&view, set, client.ip(), &Tried::default(), now) else {
            return port.metrics.reject(Reject::NoEndpoints);
        };
        let source = port
            .settings
            .source_for(&view, kind, client.ip(), guard.endpoint());
        let upstream = match connect(&port.settings, guard.endpoint().addr, source) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                debug!(service = %port.metrics_name(), endpoint = %guard.endpoint().addr, error = %e, "udp connect");
                guard.endpoint().back_off(now, port.settings.backoff_ms);
                return port.metrics.reject(Reject::ConnectFailed);
            }
        };
        let state = Arc::new(FlowState::default());
        let replies = tokio::spawn(replies(
            upstream.clone(),
            socket.clone(),
            client,
            state.clone(),
            port.clone(),
            guard.endpoint().clone(),
        ))
        .abort_handle();
        port.metrics.connections.inc();
        port.metrics.active.inc();
        flows.insert(
            client,
            Flow {
                upstream,
                state,
                set: set.clone(),
                guard,
                replies,
                port: port.clone(),
            },
        );
    }
    // The view's guard is not kept across the send.
    drop(view);
    let Some(f) = flows.get(&client) else { return };
    f.state.last.store(now, Relaxed);
    match f.upstream.send(data).await {
        Ok(n) => {
            port.metrics.bytes_in.inc_by(n as u64);
        }
        Err(e) => {
            debug!(service = %port.metrics_name(), error = %e, "udp send to endpoint");
            if e.kind() == io::ErrorKind::ConnectionRefused {
                f.state.dead.store(true, Relaxed);
            }
        }
    }
}

/// A UDP socket connected to `ep`, bound to `source` (the client's address, see [`crate::source`]) if
/// given; otherwise not bound first: the kernel picks the source address the route to the endpoint uses
/// (never a wildcard bind of ours).
fn connect(
    settings: &crate::port::Settings,
    ep: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> io::Result<UdpSocket> {
    let s = settings.source.socket(socket2::Type::DGRAM, ep, source)?;
    s.set_nonblocking(true)?;
    s.connect(&ep.into())?;
    UdpSocket::from_std(s.into())
}

async fn replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<FlowState>,
    port: Arc<PortShared>,
    ep: Arc<crate::endpoints::EpState>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => {
                state.last.store(now_ms(), Relaxed);
                if socket.send_to(&buf[..n], client).await.is_ok() {
                    port.metrics.bytes_out.inc_by(n as u64);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Nothing listens at the endpoint: skip it for a while and let the next datagram re-pick.
                ep.back_off(now_ms(), port.settings.backoff_ms);
                port.unpin(&port.view.load(), client.ip(), ep.addr);
                state.dead.store(true, Relaxed);
                return;
            }
            Err(e) => debug!(service = %port.metrics_name(), error = %e, "udp receive from endpoint"),
        }
    }
}
