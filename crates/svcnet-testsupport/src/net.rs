//! Small sockets for data-plane tests in the machine's own namespace: std-thread servers that answer
//! with their identity, clients that ask who answered, free ports, and Service/EndpointSlice manifest
//! text to point a proxy at them.
//!
//! Each test uses its own 127.x.y.z addresses (all of 127/8 is local on Linux), so tests run in parallel
//! without port clashes; servers listen on ephemeral ports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How long a client waits to connect or for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// An address literal, parsed.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A port on `ip` with nothing listening (bound once, then closed): free for a server to take, or dead
/// for a client to be refused on.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 `GET path` on a new connection to `addr` (status servers, metrics, test backends):
/// `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A TCP server on `ip` (ephemeral port): each connection first gets `name\n`, then an echo of
/// everything it sends; the server half-closes after the client does.
pub fn tcp_server(ip: &str, name: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind test server");
    let addr = l.local_addr().unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let name = name.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                if s.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A UDP server on `ip`: answers each datagram with `name:` + the datagram.
pub fn udp_server(ip: &str, name: &str) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).expect("bind udp server");
    let addr = s.local_addr().unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from);
        }
    });
    addr
}

/// Connects from `src` (any port) to `dst`, or from the address the kernel picks when `src` is `None`;
/// answers are awaited for at most [`TIMEOUT`].
pub fn connect_from(src: impl Into<Option<IpAddr>>, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = match src.into() {
        None => TcpStream::connect_timeout(&dst, TIMEOUT)?,
        Some(src) => {
            let src = SocketAddr::new(src, 0);
            let s = socket2::Socket::new(socket2::Domain::for_address(src), socket2::Type::STREAM, None)?;
            s.bind(&src.into())?;
            s.connect_timeout(&dst.into(), TIMEOUT)?;
            s.into()
        }
    };
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// Connects and returns the connection and the identity line of the server behind it.
pub fn hello(
    src: impl Into<Option<IpAddr>>,
    dst: SocketAddr,
) -> std::io::Result<(BufReader<TcpStream>, String)> {
    let s = connect_from(src, dst)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((r, line.trim_end().to_string()))
}

/// Which server answers a fresh connection from `src` (`None`: the kernel's choice).
pub fn who(src: impl Into<Option<IpAddr>>, dst: SocketAddr) -> String {
    hello(src, dst).expect("connection through the proxy").1
}

/// Sends a line on an established connection and reads its echo.
pub fn echo(conn: &mut BufReader<TcpStream>, text: &str) -> String {
    conn.get_mut().write_all(format!("{text}\n").as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Whether a fresh connection from `src` (`None`: the kernel's choice) is turned away (reset or
/// refused, or closed without a byte) promptly.
pub fn refused(src: impl Into<Option<IpAddr>>, dst: SocketAddr) -> bool {
    let t = Instant::now();
    let r = match connect_from(src, dst) {
        Err(_) => true,
        Ok(mut s) => {
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(0) | Err(_))
        }
    };
    r && t.elapsed() < Duration::from_secs(2)
}

/// How often each name occurs.
pub fn count(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n).or_default() += 1;
    }
    m
}

/// A ClusterIP Service with one port (`target` may be a number or a port name); `extra` is added to
/// the spec (indented YAML lines).
pub fn service(name: &str, cluster_ip: &str, port: u16, target: &str, protocol: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {cluster_ip}\n  \
         ports: [{{name: p, port: {port}, targetPort: {target}, protocol: {protocol}}}]\n{extra}---\n"
    )
}

/// One EndpointSlice of `svc` per endpoint (a slice has one port list; ports differ per endpoint here),
/// each with the port `port_name`; named `SVC-PORT_NAME-I`, so that one Service's ports can each have
/// their own.
pub fn slices(svc: &str, port_name: &str, protocol: &str, endpoints: &[SocketAddr]) -> String {
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-{port_name}-{i}, \
                 namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\n\
                 ports: [{{name: {port_name}, port: {}, protocol: {protocol}}}]\n\
                 endpoints: [{{addresses: ['{}']}}]\n---\n",
                e.port(),
                e.ip()
            )
        })
        .collect()
}

/// A TCP relay on 127.0.0.1 to `target` that a test can cut and restore: a network partition between a
/// client and one server, with the server itself still up. Cutting closes every relayed connection and
/// refuses new ones until [`Relay::restore`]. Its threads end when the handle drops.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: std::sync::Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    cut: std::sync::atomic::AtomicBool,
    stopped: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<TcpStream>>,
}

impl RelayState {
    fn close_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Relay {
    /// Starts relaying a free port on 127.0.0.1 to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(RelayState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if st.cut.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close at once
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut conns = st.conns.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                conns.push(client);
                conns.push(server);
            }
        });
        Relay { addr, state }
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.close_all();
    }

    /// Relays again.
    pub fn restore(&self) {
        self.state.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.close_all();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}
