//! The ARP responder: one AF_PACKET socket on the announcing interface, in a thread of its own, that
//! answers requests for the addresses this node currently holds and sends gratuitous ARP on takeover.
//!
//! The socket is opened in the agent's network namespace (in `svcnet lab`, the node's), bound to one
//! interface, and carries a BPF filter that lets only ARP requests through, so the node's other traffic
//! never wakes the thread. The set of held addresses is swapped atomically by the announcer; the thread
//! reads it for every request, so an address dropped from it is not answered from the next frame on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pnet_datalink::{Channel, DataLinkSender, NetworkInterface};
use socket2::{Domain, SockFilter, Socket, Type};
use tracing::{debug, info, warn};

use crate::arp;
use crate::metrics::Metrics;

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

/// ARP requests only: EtherType 0x0806 and operation 1 (classic BPF, as `tcpdump -dd 'arp[6:2] = 1'`).
fn arp_request_filter() -> [SockFilter; 6] {
    [
        SockFilter::new(0x28, 0, 0, 12),     // ldh [12]       (EtherType)
        SockFilter::new(0x15, 0, 3, 0x0806), // jeq ARP, else reject
        SockFilter::new(0x28, 0, 0, 20),     // ldh [20]       (ARP operation)
        SockFilter::new(0x15, 0, 1, 1),      // jeq request, else reject
        SockFilter::new(0x06, 0, 0, 0xffff), // accept
        SockFilter::new(0x06, 0, 0, 0),      // reject
    ]
}

/// The responder of one interface. Dropping it stops its thread within its read timeout.
pub struct Responder {
    interface: String,
    mac: [u8; 6],
    held: Arc<ArcSwap<BTreeSet<Ipv4Addr>>>,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
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
        let fail = |source| ResponderError::Socket {
            interface: interface.to_string(),
            source,
        };
        // Protocol 0: the socket receives nothing until pnet binds it to the interface, by which time
        // the filter is in place.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(fail)?;
        socket.attach_filter(&arp_request_filter()).map_err(fail)?;
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
        let held: Arc<ArcSwap<BTreeSet<Ipv4Addr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let replies = metrics.arp_replies.clone();
        let tx = Arc::new(Mutex::new(tx));
        {
            let (held, stop, replies, tx) = (held.clone(), stop.clone(), replies.clone(), tx.clone());
            let name = interface.to_string();
            std::thread::Builder::new()
                .name("l2announce-arp".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let frame = match rx.next() {
                            Ok(f) => f,
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                // A link going away: keep trying at the read timeout's pace, quietly.
                                debug!(interface = %name, error = %e, "reading ARP");
                                std::thread::sleep(Duration::from_millis(200));
                                continue;
                            }
                        };
                        let Some(req) = arp::parse_request(frame) else {
                            continue;
                        };
                        // Our own gratuitous ARP (seen as outgoing), and the node's own questions.
                        if req.sender_mac == mac || !held.load().contains(&req.target_ip) {
                            continue;
                        }
                        let mut tx = tx.lock().unwrap_or_else(|e| e.into_inner());
                        match tx.send_to(&arp::reply(mac, &req), None) {
                            Some(Ok(())) => {
                                replies.inc();
                            }
                            Some(Err(e)) => debug!(interface = %name, error = %e, "sending an ARP reply"),
                            None => {}
                        }
                    }
                })
                .map_err(fail)?;
        }
        info!(interface, mac = %fmt_mac(mac), "answering ARP for the LoadBalancer IPs this node holds");
        Ok(Responder {
            interface: interface.to_string(),
            mac,
            held,
            tx,
            stop,
            metrics,
        })
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
    pub fn set(&self, ips: BTreeSet<Ipv4Addr>) {
        if **self.held.load() != ips {
            self.metrics.announced_ips.set(ips.len() as i64);
            self.held.store(Arc::new(ips));
        }
    }

    /// Broadcasts a gratuitous ARP for `ip`.
    pub fn gratuitous(&self, ip: Ipv4Addr) {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.send_to(&arp::gratuitous(self.mac, ip), None) {
            Some(Ok(())) => {
                self.metrics.gratuitous.inc();
                debug!(interface = %self.interface, %ip, "sent gratuitous ARP");
            }
            Some(Err(e)) => warn!(interface = %self.interface, %ip, error = %e, "sending gratuitous ARP"),
            None => {}
        }
    }
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
