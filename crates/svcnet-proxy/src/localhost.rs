//! NodePorts on the node's loopback addresses for a kernel data plane that cannot serve them.
//!
//! With iptables, kube-proxy answers `localhost:NODEPORT` on a node (it sets `route_localnet`); its
//! nftables mode cannot DNAT loopback traffic and lately serves these ports with small userspace
//! listeners on 127.0.0.1 instead (TCP only). A user on a node expects `curl localhost:30080` to work
//! whichever mode runs, so [`LocalhostNodePorts`] puts this crate's proxy beside a kernel backend,
//! listening on `127.0.0.1` and `::1` for the NodePorts only, TCP and UDP. Traffic from loopback counts
//! as the node's own: it uses the internal endpoints, as the kernel rules' local short-circuit does.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use svcnet_dataplane::{Backend, BackendError, Change, ServicePort, ServicePortName};
use tracing::warn;

use crate::{ProxyConfig, ProxyError, UserspaceBackend};

/// A kernel backend, with the NodePorts also proxied on loopback. See the module docs.
pub struct LocalhostNodePorts<B> {
    inner: B,
    proxy: UserspaceBackend,
    /// The ports handed to the proxy (those with a NodePort).
    proxied: HashSet<ServicePortName>,
}

/// Only the NodePort frontend of a port, for the loopback proxy.
fn node_port_only(sp: &Arc<ServicePort>) -> Option<Arc<ServicePort>> {
    sp.node_port?;
    let mut p = (**sp).clone();
    p.cluster_ips.clear();
    p.external_ips.clear();
    p.load_balancer_ips.clear();
    Some(Arc::new(p))
}

impl<B: Backend> LocalhostNodePorts<B> {
    /// Wraps `inner`. The proxy (one worker thread) listens on 127.0.0.1 and, if loopback has IPv6, ::1;
    /// its metrics go into `registry` as the userspace proxy's, labelled
    /// `frontends="localhost_nodeport"`.
    pub fn new(inner: B, registry: &mut Registry) -> Result<LocalhostNodePorts<B>, ProxyError> {
        let mut node_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        // Without IPv6 on loopback every sync would report ::1 listeners it cannot bind.
        if std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
            node_addresses.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        let cfg = ProxyConfig {
            workers: 1,
            node_addresses,
            ..Default::default()
        };
        let registry = registry.sub_registry_with_label(("frontends".into(), "localhost_nodeport".into()));
        let proxy = UserspaceBackend::new(cfg, registry)?;
        Ok(LocalhostNodePorts {
            inner,
            proxy,
            proxied: HashSet::new(),
        })
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The loopback proxy's failures are logged, not returned: a NodePort someone else holds on
    /// 127.0.0.1 (or a host without `::1`) must not make the kernel rules look broken and be rebuilt.
    fn proxy_result(r: Result<(), BackendError>) {
        if let Err(e) = r {
            warn!(error = %e, "localhost NodePorts");
        }
    }
}

impl<B: Backend> Backend for LocalhostNodePorts<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError> {
        self.inner.apply(changes)?;
        let mut local = Vec::new();
        for c in changes {
            // `port`: the port as it now is (or was, if removed); the proxy removes by name.
            let (port, old, new) = match c {
                Change::Upsert { old, new } => (new, old.as_ref(), node_port_only(new)),
                Change::Remove(old) => (old, None, None),
            };
            match new {
                Some(new) => {
                    let old = old
                        .filter(|_| self.proxied.contains(&port.name))
                        .and_then(node_port_only);
                    self.proxied.insert(port.name.clone());
                    local.push(Change::Upsert { old, new });
                }
                None => {
                    if self.proxied.remove(&port.name) {
                        local.push(Change::Remove(port.clone()));
                    }
                }
            }
        }
        if !local.is_empty() {
            Self::proxy_result(self.proxy.apply(&local));
        }
        Ok(())
    }

    fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError> {
        self.inner.sync_all(ports)?;
        let local: Vec<Arc<ServicePort>> = ports.iter().filter_map(node_port_only).collect();
        self.proxied = local.iter().map(|p| p.name.clone()).collect();
        Self::proxy_result(self.proxy.sync_all(&local));
        Ok(())
    }
}
