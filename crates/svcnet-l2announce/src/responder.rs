//! The responder: one AF_PACKET socket per announcing interface, in a thread of its own, that answers
//! ARP requests and IPv6 neighbour solicitations for the addresses this node currently holds, and sends
//! gratuitous ARP / unsolicited neighbour advertisements on takeover.
//!
//! The socket is opened in the agent's network namespace (in `svcnet lab`, the node's), bound to one
//! interface, and carries a BPF filter that lets only ARP requests and neighbour solicitations through,
//! so the node's other traffic never wakes the thread. The set of held addresses is swapped atomically
//! by the announcer; the thread reads it for every request, so an address dropped from it is not
//! answered from the next frame on. For each held IPv6 address the interface joins the address's
//! solicited-node multicast group (through an ordinary IPv6 socket, as MetalLB's NDP responder does):
//! a real NIC's multicast filter would drop the solicitations otherwise.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use pnet_datalink::{Channel, DataLinkSender, NetworkInterface};
use socket2::{Domain, SockFilter, Socket, Type};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::{arp, ndp};

/// Errors opening the responder.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// No interface of that name in this network namespace.
    #[error("no interface {0:?} in this network namespace")]
    NoInterface(String),
    /// The interface has no MAC address (not Ethernet).
    #[error("interface {0:?} has no MAC address: L2 announcement needs an Ethernet interface")]
    NoMac(String),
    /// The packet socket could not be made (not root, or no CAP_NET_RAW).
    #[error("opening a packet socket on {interface}: {source} (L2 announcement needs CAP_NET_RAW)")]
    Socket {
        /// The interface.
        interface: String,
        /// Why.
        source: std::io::Error,
    },
}

/// ARP requests and ICMPv6 neighbour solicitations only (classic BPF, as `tcpdump -dd 'arp[6:2] = 1
/// or (ip6 and ip6[6] = 58 and ip6[40] = 135)'`; neighbour discovery never has extension headers).
fn request_filter() -> [SockFilter; 11] {
    [
        SockFilter::new(0x28, 0, 0, 12),     // 0: ldh [12]       (EtherType)
        SockFilter::new(0x15, 0, 2, 0x0806), // 1: jeq ARP → 2, else → 4
        SockFilter::new(0x28, 0, 0, 20),     // 2: ldh [20]       (ARP operation)
        SockFilter::new(0x15, 5, 6, 1),      // 3: jeq request → accept, else reject
        SockFilter::new(0x15, 0, 5, 0x86dd), // 4: jeq IPv6 → 5, else reject
        SockFilter::new(0x30, 0, 0, 20),     // 5: ldb [20]       (next header)
        SockFilter::new(0x15, 0, 3, 58),     // 6: jeq ICMPv6 → 7, else reject
        SockFilter::new(0x30, 0, 0, 54),     // 7: ldb [54]       (ICMPv6 type)
        SockFilter::new(0x15, 0, 1, 135),    // 8: jeq solicitation → accept, else reject
        SockFilter::new(0x06, 0, 0, 0xffff), // 9: accept
        SockFilter::new(0x06, 0, 0, 0),      // 10: reject
    ]
}

/// The responder of one interface. Dropping it stops its thread within its read timeout.
pub struct Responder {
    interface: String,
    mac: [u8; 6],
    /// The source of the advertisements: the interface's link-local address (RFC 4861 wants one of
    /// the interface's own), or `None` when it has none (IPv6 off there, or not configured yet). Read
    /// again before every unsolicited advertisement: an agent started before the link was configured
    /// would otherwise send from the announced address itself for ever.
    link_local: Arc<ArcSwapOption<Ipv6Addr>>,
    held: Arc<ArcSwap<BTreeSet<IpAddr>>>,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
    /// The socket holding the solicited-node group memberships, and the groups joined.
    groups: Mutex<(Option<Socket>, BTreeSet<Ipv6Addr>)>,
    index: u32,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Responder {
    /// Opens the responder on `interface` and starts its thread.
    pub fn open(interface: &str, metrics: Metrics) -> Result<Responder, ResponderError> {
        let iface: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == interface)
            .ok_or_else(|| ResponderError::NoInterface(interface.to_string()))?;
        let mac = iface
            .mac
            .map(|m| m.octets())
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| ResponderError::NoMac(interface.to_string()))?;
        let link_local = Arc::new(ArcSwapOption::from(link_local_of(&iface).map(Arc::new)));
        let fail = |source| ResponderError::Socket {
            interface: interface.to_string(),
            source,
        };
        // Protocol 0: the socket receives nothing until pnet binds it to the interface, by which time
        // the filter is in place.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(fail)?;
        socket.attach_filter(&request_filter()).map_err(fail)?;
        let config = pnet_datalink::Config {
            // The thread looks at its stop flag this often.
            read_timeout: Some(Duration::from_millis(200)),
            promiscuous: false,
            socket_fd: Some(socket.into_raw_fd()),
            ..Default::default()
        };
        let (tx, mut rx) = match pnet_datalink::channel(&iface, config).map_err(fail)? {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => {
                return Err(fail(std::io::Error::other("not an Ethernet channel")));
            }
        };
        let held: Arc<ArcSwap<BTreeSet<IpAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tx = Arc::new(Mutex::new(tx));
        {
            let (held, stop, tx, metrics) = (held.clone(), stop.clone(), tx.clone(), metrics.clone());
            let link_local = link_local.clone();
            let name = interface.to_string();
            std::thread::Builder::new()
                .name("l2announce".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let frame = match rx.next() {
                            Ok(f) => f,
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                // A link going away: keep trying at the read timeout's pace, quietly.
                                debug!(interface = %name, error = %e, "reading ARP/NDP");
                                std::thread::sleep(Duration::from_millis(200));
                                continue;
                            }
                        };
                        // Our own gratuitous ARP (seen as outgoing), and the node's own questions, are
                        // not answered.
                        if frame.len() < 12 || frame[6..12] == mac {
                            continue;
                        }
                        let (reply, counter) = if let Some(req) = arp::parse_request(frame) {
                            if !held.load().contains(&IpAddr::V4(req.target_ip)) {
                                continue;
                            }
                            (arp::reply(mac, &req).to_vec(), &metrics.arp_replies)
                        } else if let Some(sol) = ndp::parse_solicitation(frame) {
                            if !held.load().contains(&IpAddr::V6(sol.target)) {
                                continue;
                            }
                            let src = link_local.load().as_deref().copied().unwrap_or(sol.target);
                            (ndp::advertisement(mac, src, &sol).to_vec(), &metrics.ndp_replies)
                        } else {
                            continue;
                        };
                        let mut tx = tx.lock().unwrap_or_else(|e| e.into_inner());
                        match tx.send_to(&reply, None) {
                            Some(Ok(())) => {
                                counter.inc();
                            }
                            Some(Err(e)) => debug!(interface = %name, error = %e, "sending an ARP/NDP reply"),
                            None => {}
                        }
                    }
                })
                .map_err(fail)?;
        }
        info!(interface, mac = %fmt_mac(mac), "answering ARP and NDP for the LoadBalancer IPs this node holds");
        Ok(Responder {
            interface: interface.to_string(),
            mac,
            link_local,
            held,
            tx,
            groups: Mutex::new((None, BTreeSet::new())),
            index: iface.index,
            stop,
            metrics,
        })
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// How many ARP replies were sent.
    pub fn replies(&self) -> u64 {
        self.metrics.arp_replies.get()
    }

    /// Answers for exactly `ips` from now on.
    pub fn set(&self, ips: BTreeSet<IpAddr>) {
        if **self.held.load() != ips {
            self.join_groups(&ips);
            self.held.store(Arc::new(ips));
        }
    }

    /// Makes the interface a member of exactly the solicited-node groups of the IPv6 addresses in
    /// `ips`. A failure (IPv6 off on the interface) is logged: the addresses are still answered
    /// where the interface passes the solicitations up anyway (veth, promiscuous bridges).
    fn join_groups(&self, ips: &BTreeSet<IpAddr>) {
        let want: BTreeSet<Ipv6Addr> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(ndp::solicited_node(*v6)),
                IpAddr::V4(_) => None,
            })
            .collect();
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let (socket, joined) = &mut *groups;
        if want == *joined {
            return;
        }
        if socket.is_none() {
            match Socket::new(Domain::IPV6, Type::DGRAM, None) {
                Ok(s) => *socket = Some(s),
                Err(e) => {
                    warn!(interface = %self.interface, error = %e, "no IPv6 socket for the solicited-node groups");
                    return;
                }
            }
        }
        let Some(sock) = socket.as_ref() else { return };
        for group in joined.difference(&want) {
            if let Err(e) = sock.leave_multicast_v6(group, self.index) {
                debug!(interface = %self.interface, %group, error = %e, "leaving a solicited-node group");
            }
        }
        for group in want.difference(joined) {
            if let Err(e) = sock.join_multicast_v6(group, self.index) {
                warn!(interface = %self.interface, %group, error = %e, "joining a solicited-node group");
            }
        }
        *joined = want;
    }

    /// Tells the segment that `ip` is here now: a gratuitous ARP (IPv4) or an unsolicited neighbour
    /// advertisement to all nodes (IPv6).
    pub fn gratuitous(&self, ip: IpAddr) {
        let (frame, counter, what) = match ip {
            IpAddr::V4(v4) => (
                arp::gratuitous(self.mac, v4).to_vec(),
                &self.metrics.gratuitous,
                "gratuitous ARP",
            ),
            IpAddr::V6(v6) => (
                ndp::unsolicited(self.mac, self.refresh_link_local().unwrap_or(v6), v6).to_vec(),
                &self.metrics.unsolicited_nas,
                "unsolicited neighbour advertisement",
            ),
        };
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.send_to(&frame, None) {
            Some(Ok(())) => {
                counter.inc();
                debug!(interface = %self.interface, %ip, "sent {what}");
            }
            Some(Err(e)) => warn!(interface = %self.interface, %ip, error = %e, "sending {what}"),
            None => {}
        }
    }

    /// The interface's link-local address as it is now (also for the replies from then on); the one
    /// known before if the interface cannot be read.
    fn refresh_link_local(&self) -> Option<Ipv6Addr> {
        if let Some(iface) = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == self.interface)
        {
            let now = link_local_of(&iface);
            if now != self.link_local.load().as_deref().copied() {
                debug!(interface = %self.interface, link_local = ?now, "the interface's link-local address changed");
                self.link_local.store(now.map(Arc::new));
            }
        }
        self.link_local.load().as_deref().copied()
    }
}

/// The interface's IPv6 link-local address, if it has one.
fn link_local_of(iface: &NetworkInterface) -> Option<Ipv6Addr> {
    iface.ips.iter().find_map(|n| match n.ip() {
        IpAddr::V6(ip) if ip.is_unicast_link_local() => Some(ip),
        _ => None,
    })
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The interface that carries `ip` in this network namespace (the node's underlay, for `--node-ip`).
pub fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.ips.iter().any(|n| n.ip() == ip))
        .map(|i| i.name)
}
