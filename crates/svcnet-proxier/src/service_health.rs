//! `healthCheckNodePort` servers: for a LoadBalancer Service with `externalTrafficPolicy: Local`, the
//! cloud load balancer asks every node over HTTP whether it has a local endpoint, and sends traffic only
//! to nodes that answer 200 (kube-proxy's service health server). What they answer depends only on the
//! service ports, not on how traffic is forwarded, so the [`runner`](crate::runner) keeps them for every
//! backend, from what it has programmed. One small thread per listening address; the answer is read from
//! shared state that [`ServiceServiceHealthServers::update`] keeps current.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{Shutdown, shutdown};
use svcnet_dataplane::{ServicePort, ServicePortName};
use tracing::{debug, info, warn};

#[derive(Debug, Default)]
struct Status {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

struct Server {
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    /// Each listening socket (a second handle to it, for [`ServiceHealthServers::stop`]) and its thread.
    listeners: Vec<(TcpListener, JoinHandle<()>)>,
    /// Addresses it could not listen on yet (the port still held, e.g. by the process this one took over
    /// from while it drains); retried by [`ServiceHealthServers::retry_missing`].
    missing: Vec<SocketAddr>,
    /// The local endpoint IPs each port of the Service contributes.
    ports: BTreeMap<ServicePortName, BTreeSet<IpAddr>>,
}

/// The health servers of all ports that have a `healthCheckNodePort`.
pub struct ServiceHealthServers {
    bind: Vec<IpAddr>,
    servers: HashMap<u16, Server>,
}

/// The body kube-proxy's health server answers with.
pub fn health_body(namespace: &str, name: &str, local_endpoints: usize) -> String {
    serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string()
}

fn local_ready(sp: &ServicePort) -> BTreeSet<IpAddr> {
    sp.all_endpoints
        .iter()
        .filter(|e| e.is_local && e.ready)
        .map(|e| e.ip)
        .collect()
}

/// Listens on `addr` and serves it from a thread of its own until `stop`; the listener's second handle
/// and the thread.
fn listen(
    addr: SocketAddr,
    status: &Arc<Mutex<Status>>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<(TcpListener, JoinHandle<()>)> {
    let l = TcpListener::bind(addr)?;
    let handle = l.try_clone()?;
    let (status, stop) = (status.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name(format!("svc-health-{}", addr.port()))
        .spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(c) => serve(c, &status),
                    // Out of file descriptors and the like: wait rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok((handle, thread))
}

fn serve(mut conn: TcpStream, status: &Mutex<Status>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    // The request itself does not matter (kube-proxy answers any path); read what has arrived so the
    // client does not see a reset for unread data.
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got += n;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let (code, body) = {
        let s = status.lock().unwrap_or_else(|e| e.into_inner());
        let code = if s.local_endpoints > 0 {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        (code, health_body(&s.namespace, &s.name, s.local_endpoints))
    };
    let resp = format!(
        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
}

impl ServiceHealthServers {
    /// Servers listen on `bind` (the node's IPs), or on every address when it is empty.
    pub fn new(bind: &[IpAddr]) -> ServiceHealthServers {
        ServiceHealthServers {
            bind: bind.to_vec(),
            servers: HashMap::new(),
        }
    }

    /// The ports health servers listen on.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.servers.keys().copied().collect();
        v.sort();
        v
    }

    /// Takes one port's change into account: `old` stops contributing, `new` starts.
    pub fn update(&mut self, old: Option<&ServicePort>, new: Option<&ServicePort>) {
        if let Some(old) = old
            && let Some(hc) = old.health_check_node_port
            && let Some(s) = self.servers.get_mut(&hc)
        {
            s.ports.remove(&old.name);
            if s.ports.is_empty() && new.and_then(|n| n.health_check_node_port) != Some(hc) {
                self.stop(hc);
            } else {
                Self::refresh(s);
            }
        }
        if let Some(new) = new
            && let Some(hc) = new.health_check_node_port
        {
            if !self.servers.contains_key(&hc) {
                let s = self.start(hc, new);
                self.servers.insert(hc, s);
            }
            if let Some(s) = self.servers.get_mut(&hc) {
                s.ports.insert(new.name.clone(), local_ready(new));
                Self::refresh(s);
            }
        }
    }

    /// Replaces everything with `ports` (full sync).
    pub fn reset<'a>(&mut self, ports: impl Iterator<Item = &'a Arc<ServicePort>>) {
        let mut wanted: HashMap<u16, Vec<&ServicePort>> = HashMap::new();
        for sp in ports {
            if let Some(hc) = sp.health_check_node_port {
                wanted.entry(hc).or_default().push(sp);
            }
        }
        let stale: Vec<u16> = self
            .servers
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for p in stale {
            self.stop(p);
        }
        for (hc, sps) in wanted {
            if !self.servers.contains_key(&hc) {
                let s = self.start(hc, sps[0]);
                self.servers.insert(hc, s);
            }
            if let Some(s) = self.servers.get_mut(&hc) {
                s.ports = sps.iter().map(|sp| (sp.name.clone(), local_ready(sp))).collect();
                Self::refresh(s);
            }
        }
    }

    fn refresh(s: &mut Server) {
        let all: BTreeSet<&IpAddr> = s.ports.values().flatten().collect();
        let mut st = s.status.lock().unwrap_or_else(|e| e.into_inner());
        st.local_endpoints = all.len();
        if let Some(name) = s.ports.keys().next() {
            st.namespace = name.namespace.to_string();
            st.name = name.name.to_string();
        }
    }

    fn start(&self, port: u16, sp: &ServicePort) -> Server {
        let status = Arc::new(Mutex::new(Status {
            namespace: sp.name.namespace.to_string(),
            name: sp.name.name.to_string(),
            local_endpoints: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<IpAddr> = if self.bind.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            self.bind.clone()
        };
        let mut listeners = Vec::new();
        let mut missing = Vec::new();
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            match listen(addr, &status, &stop) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    // A busy port must not stop the data plane; the load balancer sees this node as
                    // unhealthy meanwhile, which is the safe side. Said once; retried quietly.
                    warn!(%addr, error = %e, "cannot listen for healthCheckNodePort yet; retrying every second");
                    missing.push(addr);
                }
            }
        }
        debug!(port, "health check server started");
        Server {
            status,
            stop,
            listeners,
            missing,
            ports: BTreeMap::new(),
        }
    }

    /// Whether some health server still lacks a listener.
    pub fn has_missing(&self) -> bool {
        self.servers.values().any(|s| !s.missing.is_empty())
    }

    /// Tries again to listen where a health server could not; returns whether some address is still
    /// missing.
    pub fn retry_missing(&mut self) -> bool {
        for (port, s) in &mut self.servers {
            for addr in std::mem::take(&mut s.missing) {
                match listen(addr, &s.status, &s.stop) {
                    Ok(l) => {
                        info!(%addr, port, "listening for healthCheckNodePort");
                        s.listeners.push(l);
                    }
                    Err(_) => s.missing.push(addr),
                }
            }
        }
        self.has_missing()
    }

    fn stop(&mut self, port: u16) {
        if let Some(s) = self.servers.remove(&port) {
            s.stop.store(true, Ordering::Relaxed);
            for (listener, thread) in s.listeners {
                // shutdown(2), not close: on Linux it stops a socket listening at once, whoever else
                // holds it. Closing alone is not enough: a child process being spawned at that moment
                // (nft, conntrack) holds a copy of every descriptor until its exec, and a client that
                // connects in that window would be accepted and then reset instead of refused. It also
                // wakes the thread blocked in accept(), which sees the flag and exits.
                match shutdown(listener.as_raw_fd(), Shutdown::Both) {
                    Ok(()) => {
                        let _ = thread.join();
                    }
                    // Not joined: the thread may stay blocked in accept(); the flag ends it at its
                    // next connection.
                    Err(e) => warn!(port, error = %e, "cannot shut down health check listener"),
                }
            }
            debug!(port, "health check server stopped");
        }
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for p in self.ports() {
            self.stop(p);
        }
    }
}
