//! The WebSocket transports kubectl 1.30+ speaks:
//! - remote command (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every binary message is one channel byte
//!   (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize) and its data; v5 adds the CLOSE signal
//!   (`255, channel`) with which the client ends its stdin;
//! - `SPDY/3.1+portforward.k8s.io`: a SPDY connection tunnelled through binary messages as a plain byte
//!   stream ([`tunnel`]);
//! - port-forward over channels (`v4.channel.k8s.io`, or no subprotocol), the kubelet's older WebSocket
//!   port-forward that client libraries speak (kube-rs, the Python client): see [`portforward`].

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::exec::{ExecOptions, Output};
use super::sessions::{PodNet, dial, dial_error};

/// The remote-command subprotocols served, best first.
pub(crate) const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The port-forward subprotocol kubectl 1.31+ speaks: SPDY tunnelled through WebSocket.
pub(crate) const PORTFORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward subprotocol of client libraries: the ports' data and errors on channels.
pub(crate) const PORTFORWARD_CHANNELS: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The terminal size in a resize message (`{"Width":…,"Height":…}`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TermSize {
    pub width: u16,
    pub height: u16,
}

async fn server(io: Upgraded) -> WebSocketStream<TokioIo<Upgraded>> {
    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

/// Serves one exec session over the upgraded connection.
pub(crate) async fn exec(io: Upgraded, action: super::exec::Action, opts: ExecOptions) {
    let mut ws = server(io).await;
    let super::exec::Session {
        mut stdin,
        resize: resize_tx,
        out: mut out_rx,
    } = super::exec::start(action, opts);
    let idle = tokio::time::sleep(super::IDLE_TIMEOUT);
    tokio::pin!(idle);
    loop {
        idle.as_mut()
            .reset(tokio::time::Instant::now() + super::IDLE_TIMEOUT);
        tokio::select! {
            _ = &mut idle => {
                tracing::info!("exec session idle for too long; ending it");
                return;
            }
            room = stdin.room(), if stdin.waiting() => stdin.hand_over(room),
            msg = ws.next(), if !stdin.waiting() => match msg {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    STDIN => stdin.push(data.slice(1..)),
                    RESIZE => {
                        if let Ok(size) = serde_json::from_slice::<TermSize>(&data[1..]) {
                            let _ = resize_tx.try_send((size.width, size.height));
                        }
                    }
                    CLOSE if data.get(1) == Some(&STDIN) => stdin.end().await,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            out = out_rx.recv() => match out {
                Some(Output::Stdout(b)) => { if ws.send(framed(STDOUT, &b)).await.is_err() { return; } }
                Some(Output::Stderr(b)) => { if ws.send(framed(STDERR, &b)).await.is_err() { return; } }
                Some(Output::Status(b)) => { if ws.send(framed(ERROR, &b)).await.is_err() { return; } }
                None => break,
            },
        }
    }
    close(ws).await;
}

/// A normal closure: clients read it as the end of every stream.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Ends a WebSocket normally (the client reads its streams' EOF from a normal closure), then waits
/// briefly for the client's own close so that nothing unread resets the connection.
async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(normal_close()).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Turns the upgraded connection into the byte stream its binary messages carry (each write one
/// message), for a protocol tunnelled through WebSocket.
pub(crate) async fn tunnel(io: Upgraded) -> DuplexStream {
    let ws = server(io).await;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(msg)) = stream.next().await {
                let data = match msg {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink
                            .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(normal_close()).await;
        };
        // Either direction ending ends the tunnel: the SPDY session above has finished or lost its peer.
        tokio::select! {
            _ = inbound => {}
            _ = outbound => {}
        }
    });
    theirs
}

/// Serves one port-forward session in the channel protocol (the kubelet's `portforward/websocket.go`):
/// port `i` of `ports` (the query's) has channel `2i` for its data and `2i + 1` for its errors, and the
/// first message on each channel carries the port, little-endian. Each port is one connection to the
/// pod for the whole session, made at once; a port the pod refuses gets the kubelet's message on its
/// error channel. The session ends when the client leaves or every port's connection has ended.
pub(crate) async fn portforward(io: Upgraded, ports: Vec<u16>, net: PodNet, pod: String) {
    let (mut sink, mut stream) = server(io).await.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(64);
    // Dropped with the session: every port's task ends with it.
    let mut tasks = tokio::task::JoinSet::new();
    let mut to_pod = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, error] {
            if sink.send(framed(channel, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        to_pod.push(Some(tx));
        let (port, pod, out) = (*port, pod.clone(), out_tx.clone());
        tasks.spawn(async move {
            let sock = match dial(net, port).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = out
                        .send(framed(error, dial_error(net, port, &pod, &e).as_bytes()))
                        .await;
                    return;
                }
            };
            carry(sock, rx, data, out).await;
        });
    }
    drop(out_tx);
    let idle = tokio::time::sleep(super::IDLE_TIMEOUT);
    tokio::pin!(idle);
    loop {
        idle.as_mut()
            .reset(tokio::time::Instant::now() + super::IDLE_TIMEOUT);
        tokio::select! {
            _ = &mut idle => {
                tracing::info!(pod, "port-forward session idle for too long; ending it");
                return;
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    // Even channels carry data to a port; the client writes nothing else.
                    let channel = usize::from(b[0]);
                    if channel % 2 == 0
                        && let Some(slot) = to_pod.get_mut(channel / 2)
                        && let Some(tx) = slot
                        && tx.send(b.slice(1..)).await.is_err()
                    {
                        *slot = None;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            out = out_rx.recv() => match out {
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
        }
    }
    let _ = sink.send(normal_close()).await;
}

/// Carries one port's bytes between the client's data channel and the pod's socket until the pod
/// closes its side (the protocol has no end-of-stream from the client: its end is the session's).
async fn carry(
    sock: tokio::net::TcpStream,
    mut from_client: tokio::sync::mpsc::Receiver<Bytes>,
    data: u8,
    out: tokio::sync::mpsc::Sender<Message>,
) {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let upstream = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(framed(data, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = downstream => {}
        _ = upstream => {}
    }
}
