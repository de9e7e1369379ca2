//! What the listeners of one service port share: the published view of the port (swapped atomically on
//! every change), its affinity table, its metrics, and the proxy-wide settings.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use svcnet_dataplane::{Balance, FrontendKind};

use crate::affinity::Affinity;
use crate::endpoints::{ActiveGuard, EndpointSet, EpState, Tried};
use crate::metrics::PortMetrics;

/// Proxy-wide settings the connection handlers read.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) connect_attempts: usize,
    pub(crate) backoff_ms: u64,
    pub(crate) udp_idle_ms: u64,
    pub(crate) udp_max_flows: usize,
    pub(crate) local_addrs: Vec<IpAddr>,
    pub(crate) splice: bool,
    pub(crate) pipe_size: usize,
    /// Which clients' addresses the connections to endpoints keep.
    pub(crate) source: crate::source::SourcePolicy,
}

impl Settings {
    /// The address a connection of `client` (through a `kind` frontend) to `ep` comes from; `None`: the
    /// proxy's own. A node-local endpoint never gets a transparent one: its replies would be routed to the
    /// client pod rather than back to the proxy.
    pub(crate) fn source_for(
        &self,
        view: &PortView,
        kind: FrontendKind,
        client: IpAddr,
        ep: &EpState,
    ) -> Option<IpAddr> {
        if kind.is_external() && view.external_local && !self.is_local_client(client) {
            // The endpoint is this node's (the policy keeps only those), reached through the node's
            // router rather than the client's bridge, so the transparent reply path holds.
            return self.source.external_local_source_for(client, ep.addr);
        }
        if ep.local {
            return None;
        }
        self.source.source_for(kind, client, ep.addr)
    }

    /// kube-proxy's rule: external traffic that starts on this node is treated as internal.
    pub(crate) fn is_local_client(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local_addrs.contains(&ip) || ip.to_canonical().is_loopback()
    }
}

/// The forwarding state of one service port at one moment; replaced whole, never mutated.
#[derive(Debug)]
pub(crate) struct PortView {
    pub(crate) balance: Balance,
    /// Affinity timeout in ms; `None`: no affinity.
    pub(crate) affinity_ms: Option<u64>,
    pub(crate) source_ranges: Vec<IpNet>,
    /// `externalTrafficPolicy: Local`: outside clients keep their address (see [`Settings::source_for`]).
    pub(crate) external_local: bool,
    pub(crate) internal: Arc<EndpointSet>,
    pub(crate) external: Arc<EndpointSet>,
}

impl PortView {
    /// The endpoint set for a client of a frontend kind.
    pub(crate) fn set_for(
        &self,
        kind: FrontendKind,
        client: IpAddr,
        settings: &Settings,
    ) -> &Arc<EndpointSet> {
        if kind.is_external() && !settings.is_local_client(client) {
            &self.external
        } else {
            &self.internal
        }
    }

    /// Whether a client may use a frontend of this kind (`loadBalancerSourceRanges`).
    pub(crate) fn admits(&self, kind: FrontendKind, client: IpAddr) -> bool {
        kind != FrontendKind::LoadBalancer
            || self.source_ranges.is_empty()
            || self
                .source_ranges
                .iter()
                .any(|r| r.contains(&client.to_canonical()))
    }
}

/// Shared by every listener (and connection) of a service port.
#[derive(Debug)]
pub(crate) struct PortShared {
    pub(crate) view: ArcSwap<PortView>,
    pub(crate) affinity: Affinity,
    pub(crate) metrics: PortMetrics,
    pub(crate) settings: Arc<Settings>,
}

impl PortShared {
    /// `namespace/name:port`, for logs.
    pub(crate) fn metrics_name(&self) -> &str {
        &self.metrics.service
    }

    /// Picks an endpoint of `set` for `client` (affinity first), counting it as active. `None`: nothing
    /// left that has not been tried.
    pub(crate) fn choose(
        &self,
        view: &PortView,
        set: &EndpointSet,
        client: IpAddr,
        tried: &Tried,
        now: u64,
    ) -> Option<(usize, ActiveGuard)> {
        let i = match view.affinity_ms {
            None => set.pick(view.balance, client, tried, now)?,
            Some(timeout) => {
                let pinned = self
                    .affinity
                    .get(client, timeout, now)
                    .and_then(|addr| set.index_of(addr))
                    .filter(|&i| set.usable(i, tried, now, false));
                match pinned {
                    Some(i) => i,
                    None => {
                        // The pin is gone, expired, or its endpoint was removed or is failing: re-pin.
                        let i = set.pick(view.balance, client, tried, now)?;
                        self.affinity.set(client, set.get(i).addr, timeout, now);
                        i
                    }
                }
            }
        };
        let ep = set.get(i);
        ep.selections.inc();
        Some((i, ep.hold()))
    }

    /// Forgets `client`'s affinity if it points at `addr` (a connect to it failed).
    pub(crate) fn unpin(&self, view: &PortView, client: IpAddr, addr: SocketAddr) {
        if let Some(timeout) = view.affinity_ms
            && self.affinity.get(client, timeout, crate::now_ms()) == Some(addr)
        {
            self.affinity.forget(client);
        }
    }
}
