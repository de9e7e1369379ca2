//! Sessions over SPDY ([`super::spdy`]): `kubectl exec` with the `v4.channel.k8s.io` remote-command
//! protocol (one stream per standard stream, plus `error` and `resize`), and `kubectl port-forward`
//! with `portforward.k8s.io` (an `error` and a `data` stream per forwarded connection, paired by their
//! `requestID`), which kubectl 1.31+ tunnels through WebSocket and older ones use directly.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::exec::{ExecOptions, Output};
use super::spdy::{self, Event};
use super::ws::TermSize;

/// How long the client has to open the streams it asked for (the kubelet's stream creation timeout).
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// Serves one exec session over SPDY.
pub(crate) async fn exec<IO>(io: IO, action: super::exec::Action, opts: ExecOptions)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = spdy::serve(io);
    // The streams the client opens: error always, then one per requested standard stream; a terminal
    // merges stderr into stdout and adds resize.
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut want = vec!["error"];
    for (on, name) in [
        (opts.stdin, "stdin"),
        (opts.stdout, "stdout"),
        (opts.stderr && !opts.tty, "stderr"),
        (opts.tty, "resize"),
    ] {
        if on {
            want.push(name);
        }
    }
    let opened = tokio::time::timeout(STREAM_WAIT, async {
        while !want.iter().all(|w| ids.contains_key(*w)) {
            match rx.next().await {
                Ok(Some(Event::Stream { id, headers })) => {
                    if let Some(t) = spdy::header(&headers, "streamtype") {
                        ids.insert(t.to_string(), id);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
        true
    })
    .await;
    if opened != Ok(true) {
        tracing::debug!(streams = ?ids, "exec client did not open its streams");
        return;
    }
    let id = |name: &str| ids.get(name).copied();
    let super::exec::Session {
        mut stdin,
        resize: resize_tx,
        out: mut out_rx,
    } = super::exec::start(action, opts);
    let idle = tokio::time::sleep(super::IDLE_TIMEOUT);
    tokio::pin!(idle);
    let mut resize_buf = Vec::new();
    loop {
        idle.as_mut()
            .reset(tokio::time::Instant::now() + super::IDLE_TIMEOUT);
        tokio::select! {
            _ = &mut idle => {
                tracing::info!("exec session idle for too long; ending it");
                return;
            }
            room = stdin.room(), if stdin.waiting() => stdin.hand_over(room),
            ev = rx.next(), if !stdin.waiting() => match ev {
                Ok(Some(Event::Data { id: sid, data, fin })) => {
                    if Some(sid) == id("stdin") {
                        stdin.push(data);
                        if fin {
                            // Ended after what it carried is delivered.
                            stdin.end().await;
                        }
                    } else if Some(sid) == id("resize") {
                        resize_buf.extend_from_slice(&data);
                        // Go's JSON encoder ends each size with a newline.
                        while let Some(nl) = resize_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = resize_buf.drain(..=nl).collect();
                            if let Ok(s) = serde_json::from_slice::<TermSize>(&line) {
                                let _ = resize_tx.try_send((s.width, s.height));
                            }
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            out = out_rx.recv() => {
                let (sid, data) = match out {
                    Some(Output::Stdout(b)) => (id("stdout"), b),
                    Some(Output::Stderr(b)) => (id("stderr"), b),
                    Some(Output::Status(b)) => (id("error"), b),
                    None => break,
                };
                if let Some(sid) = sid && !tx.data(sid, data, false).await {
                    return;
                }
            }
        }
    }
    // Every stream the client reads ends (stdout and stderr first: kubectl reads the status after them).
    for name in ["stdout", "stderr", "error"] {
        if let Some(sid) = id(name) {
            tx.data(sid, Bytes::new(), true).await;
        }
    }
    // The client closes the connection once it has read everything.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = rx.next().await {}
    })
    .await;
}

/// One forwarded connection: its two streams and the way to its socket.
#[derive(Default)]
struct Forward {
    error: Option<u32>,
    data: Option<u32>,
    to_pod: Option<mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Where forwarded connections go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PodNet {
    /// The pod's address.
    pub ip: IpAddr,
    /// A process in the pod's own network namespace, in the netns pod network (`None` in the host
    /// pod network, where pods share the node's).
    pub netns_of: Option<u32>,
}

/// Connects to the pod's `port`: in a pod network namespace as a container runtime does, to
/// `localhost` inside it (so servers bound to 127.0.0.1 in the pod are reached), then to the pod's
/// address; in the host pod network, to the pod's address.
pub(super) async fn dial(net: PodNet, port: u16) -> std::io::Result<TcpStream> {
    let timeout = Duration::from_secs(10);
    let Some(pid) = net.netns_of else {
        return match tokio::time::timeout(timeout, TcpStream::connect((net.ip, port))).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    // setns changes the calling thread only: a thread of its own, which ends after the connect.
    std::thread::spawn(move || {
        let connect = || -> std::io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let local = SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpStream::connect_timeout(&local, timeout)
                .or_else(|_| std::net::TcpStream::connect_timeout(&SocketAddr::new(net.ip, port), timeout))
        };
        let _ = tx.send(connect());
    });
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended"))??;
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}

/// Serves one port-forward session over SPDY: each connection the client forwards becomes a TCP
/// connection from the agent to the pod's port ([`dial`]).
pub(crate) async fn portforward<IO>(io: IO, pod_ip: PodNet, pod: String)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = spdy::serve(io);
    let mut forwards: HashMap<String, Forward> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    loop {
        let next = tokio::time::timeout(super::IDLE_TIMEOUT, rx.next()).await;
        let Ok(next) = next else {
            tracing::info!(pod, "port-forward session idle for too long; ending it");
            break;
        };
        let ev = match next {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward session ended");
                break;
            }
        };
        match ev {
            Event::Stream { id, headers } => {
                let kind = spdy::header(&headers, "streamtype")
                    .unwrap_or_default()
                    .to_string();
                let request = spdy::header(&headers, "requestid")
                    .unwrap_or_default()
                    .to_string();
                let port = spdy::header(&headers, "port").unwrap_or_default().to_string();
                by_stream.insert(id, request.clone());
                let fwd = forwards.entry(request.clone()).or_default();
                match kind.as_str() {
                    "error" => fwd.error = Some(id),
                    "data" => fwd.data = Some(id),
                    _ => {
                        tracing::debug!(stream = kind, "unknown port-forward stream type");
                        continue;
                    }
                }
                if let (Some(error), Some(data), None) = (fwd.error, fwd.data, &fwd.task) {
                    let (to_pod, from_client) = mpsc::channel::<Bytes>(64);
                    fwd.to_pod = Some(to_pod);
                    fwd.task = Some(tokio::spawn(forward(
                        tx.clone(),
                        (error, data),
                        pod_ip,
                        port,
                        pod.clone(),
                        from_client,
                    )));
                }
            }
            Event::Data { id, data, fin } => {
                let Some(fwd) = by_stream.get(&id).and_then(|r| forwards.get_mut(r)) else {
                    continue;
                };
                if fwd.data != Some(id) {
                    continue;
                }
                if !data.is_empty()
                    && let Some(to_pod) = &fwd.to_pod
                    && to_pod.send(data).await.is_err()
                {
                    fwd.to_pod = None;
                }
                if fin {
                    // The client's side is done: the pod's socket sees its end of input.
                    fwd.to_pod = None;
                }
            }
            Event::Reset { id } => {
                if let Some(fwd) = by_stream.remove(&id).and_then(|r| forwards.remove(&r))
                    && let Some(task) = fwd.task
                {
                    task.abort();
                }
            }
        }
        // Forgets connections that have ended.
        forwards.retain(|_, f| f.task.as_ref().is_none_or(|t| !t.is_finished()));
        by_stream.retain(|_, r| forwards.contains_key(r));
    }
    for f in forwards.into_values() {
        if let Some(t) = f.task {
            t.abort();
        }
    }
}

/// An error as Go's net package words it (`connection refused`), which is what kubectl users know.
fn go_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let desc = nix::errno::Errno::from_raw(n).desc();
            let mut chars = desc.chars();
            chars
                .next()
                .map(|c| c.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
        None => e.to_string(),
    }
}

/// What a client is told when the pod's `port` cannot be reached, in the kubelet's words.
pub(super) fn dial_error(net: PodNet, port: u16, pod: &str, e: &std::io::Error) -> String {
    let addr = SocketAddr::new(net.ip, port);
    format!(
        "error forwarding port {port} to pod {pod}: dial tcp {addr}: connect: {}",
        go_error(e)
    )
}

/// Carries one forwarded connection between its streams and a TCP connection to the pod.
async fn forward(
    tx: spdy::Sender,
    (error, data): (u32, u32),
    net: PodNet,
    port: String,
    pod: String,
    mut from_client: mpsc::Receiver<Bytes>,
) {
    let fail = |message: String| {
        let tx = tx.clone();
        async move {
            tx.data(error, Bytes::from(message), true).await;
            tx.data(data, Bytes::new(), true).await;
        }
    };
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return fail(format!("invalid port {port:?}")).await;
    };
    let sock = match dial(net, port).await {
        Ok(s) => s,
        Err(e) => return fail(dial_error(net, port, &pod, &e)).await,
    };
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let upstream = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; spdy::MAX_DATA];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !tx.data(data, Bytes::copy_from_slice(&buf[..n]), false).await {
                        return;
                    }
                }
            }
        }
        // The pod closed its side: both streams end (kubectl waits for the error stream's end).
        tx.data(data, Bytes::new(), true).await;
        tx.data(error, Bytes::new(), true).await;
    };
    let up = tokio::spawn(upstream);
    downstream.await;
    // Whatever the client still sends has nowhere to go once the pod has closed.
    let _ = tokio::time::timeout(Duration::from_secs(1), up).await;
}
