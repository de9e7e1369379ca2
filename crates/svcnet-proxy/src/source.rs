//! Whose address a connection to an endpoint comes from.
//!
//! kube-proxy rewrites only the destination of a pod's connection to a ClusterIP: the endpoint sees the
//! client pod's own address, and applications rely on it (access logs, rate limits, allow-lists). A
//! userspace proxy opens a second connection, which would come from the node's address; to keep the
//! client's, the proxy binds that connection to the client's address before connecting:
//!
//! - pods in the node's own network namespace (svcnet's host pod network) have local (loopback)
//!   addresses, so a plain bind works;
//! - pods in their own network namespaces have addresses the node does not own: the bind needs
//!   `IP_TRANSPARENT`, and the endpoint's replies, addressed to the client pod, need to be delivered to
//!   the proxy's socket rather than forwarded to the pod ([`crate::TransparentRouting`]).
//!
//! The bind uses port 0 with `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the source port at connect
//! time for the whole 4-tuple: the pod's own ephemeral ports are never taken, and many connections of one
//! client to different endpoints share ports. Clients outside the pod ranges (the node's own processes,
//! NodePort and LoadBalancer clients) and a pod reaching itself (hairpin, which kube-proxy masquerades
//! too, as a packet from and to the same address would be a martian) connect from the proxy's address,
//! except outside clients of a Service with `externalTrafficPolicy: Local`, which keep theirs as the
//! policy promises (transparently, with pods in their own namespaces).
//! So does a connection whose bind fails (logged once): a kept address is worth less than the connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ipnet::IpNet;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Socket, Type};
use svcnet_dataplane::FrontendKind;
use tracing::warn;

/// Which clients keep their address, and how.
#[derive(Debug, Default)]
pub(crate) struct SourcePolicy {
    /// Client ranges whose address is kept (the pod CIDRs).
    pub(crate) ranges: Vec<IpNet>,
    /// Bind with `IP_TRANSPARENT` (the client's address is not local).
    pub(crate) transparent: bool,
    /// A bind failed once already (logged once, then quiet).
    pub(crate) warned: AtomicBool,
}

impl SourcePolicy {
    /// The address to connect from for `client` reaching `endpoint` through a `kind` frontend, or `None`
    /// for the proxy's own.
    pub(crate) fn source_for(
        &self,
        kind: FrontendKind,
        client: IpAddr,
        endpoint: SocketAddr,
    ) -> Option<IpAddr> {
        let client = client.to_canonical();
        let keep = kind == FrontendKind::ClusterIp
            && client != endpoint.ip().to_canonical()
            && client.is_ipv4() == endpoint.is_ipv4()
            && self.ranges.iter().any(|r| r.contains(&client));
        keep.then_some(client)
    }

    /// The address to connect from for an outside `client` of an external frontend (NodePort,
    /// LoadBalancer, externalIP) of a Service with `externalTrafficPolicy: Local`, or `None` for the
    /// proxy's own. kube-proxy leaves such traffic un-NATed so the endpoint sees the client, which is the
    /// point of the policy; the endpoint is on this node and answers through the node (the client is not
    /// on its bridge), where the transparent routing hands the reply back to the proxy. Pods and the
    /// node's own processes are not outside clients: they keep the proxy's address, as before.
    pub(crate) fn external_local_source_for(&self, client: IpAddr, endpoint: SocketAddr) -> Option<IpAddr> {
        let client = client.to_canonical();
        let keep = self.transparent
            && client != endpoint.ip().to_canonical()
            && client.is_ipv4() == endpoint.is_ipv4()
            && !client.is_loopback()
            && !self.ranges.iter().any(|r| r.contains(&client));
        keep.then_some(client)
    }

    /// A socket of type `ty` for a connection to `endpoint`, bound to `source` if given. A failed bind
    /// falls back to an unbound socket (the proxy's address), logged once.
    pub(crate) fn socket(
        &self,
        ty: Type,
        endpoint: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(endpoint), ty, None)?;
        if let Some(src) = source
            && let Err(e) = self.bind(&s, ty, src)
        {
            if !self.warned.swap(true, Relaxed) {
                warn!(client = %src, error = %e, "cannot connect from the client's address; using the proxy's (logged once)");
            }
            // The failed bind may have left options set on it: start again with a clean socket.
            return Socket::new(Domain::for_address(endpoint), ty, None);
        }
        Ok(s)
    }

    fn bind(&self, s: &Socket, ty: Type, src: IpAddr) -> io::Result<()> {
        if ty == Type::STREAM {
            // The source port is picked at connect, for the 4-tuple (Linux 4.2+; ignored before).
            let _ = setsockopt(s, sockopt::IpBindAddressNoPort, &true);
        }
        if self.transparent {
            match src {
                IpAddr::V4(_) => s.set_ip_transparent_v4(true)?,
                IpAddr::V6(_) => s.set_ip_transparent_v6(true)?,
            }
        }
        s.bind(&SocketAddr::new(src, 0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SourcePolicy {
        SourcePolicy {
            ranges: vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/64".parse().unwrap(),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn pods_keep_their_address_through_cluster_ips_only() {
        let p = policy();
        let ep: SocketAddr = "10.244.0.7:8080".parse().unwrap();
        let pod: IpAddr = "10.244.0.5".parse().unwrap();
        assert_eq!(p.source_for(FrontendKind::ClusterIp, pod, ep), Some(pod));
        // A v4-mapped client on a dual-stack listener is the same pod.
        let mapped: IpAddr = "::ffff:10.244.0.5".parse().unwrap();
        assert_eq!(p.source_for(FrontendKind::ClusterIp, mapped, ep), Some(pod));
        // The node, an outside client, NodePorts and LoadBalancers, and hairpin: the proxy's address.
        assert_eq!(
            p.source_for(FrontendKind::ClusterIp, "127.0.0.1".parse().unwrap(), ep),
            None
        );
        assert_eq!(
            p.source_for(FrontendKind::ClusterIp, "192.168.1.9".parse().unwrap(), ep),
            None
        );
        assert_eq!(p.source_for(FrontendKind::NodePort, pod, ep), None);
        assert_eq!(p.source_for(FrontendKind::LoadBalancer, pod, ep), None);
        assert_eq!(
            p.source_for(FrontendKind::ClusterIp, "10.244.0.7".parse().unwrap(), ep),
            None
        );
        // Families must match.
        let ep6: SocketAddr = "[fd00:10:244::7]:8080".parse().unwrap();
        assert_eq!(p.source_for(FrontendKind::ClusterIp, pod, ep6), None);
        // Outside clients of eTP Local Services keep theirs, transparently only; pods and the node do not.
        let outside: IpAddr = "172.18.0.2".parse().unwrap();
        assert_eq!(p.external_local_source_for(outside, ep), None, "not transparent");
        let t = SourcePolicy {
            transparent: true,
            ..policy()
        };
        assert_eq!(t.external_local_source_for(outside, ep), Some(outside));
        assert_eq!(t.external_local_source_for(pod, ep), None);
        assert_eq!(
            t.external_local_source_for("127.0.0.1".parse().unwrap(), ep),
            None
        );
        assert_eq!(t.external_local_source_for(outside, ep6), None);
        // No ranges: never.
        assert_eq!(
            SourcePolicy::default().source_for(FrontendKind::ClusterIp, pod, ep),
            None
        );
    }
}
