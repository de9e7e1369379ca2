//! The agent's streaming endpoints, at the kubelet's paths: `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}` and `/portForward/{ns}/{pod}`. The API server proxies
//! `pods/exec`, `pods/attach` and `pods/portforward` here with the connection upgrade untouched, so the
//! protocol is negotiated between kubectl and the agent: WebSocket (kubectl 1.30+, [`ws`]) or SPDY/3.1
//! (older kubectl, and port-forward tunnelled through WebSocket, [`spdy`], [`sessions`]).
//!
//! `attach` follows the container's log from now on (its stdout and stderr, which the runner writes
//! there); attaching stdin is refused, containers' stdin being /dev/null.
//!
//! Errors before the upgrade are Status objects, which kubectl shows as `Error from server (…): …`. At most [`MAX_SESSIONS`] sessions run at once.

mod exec;
mod sessions;
mod spdy;
mod ws;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, body::Incoming};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::Semaphore;

use super::logs::{Body, text};
use crate::runner::PodRunner;
use exec::ExecOptions;

/// Streaming sessions one agent serves at once; more are refused (429) rather than queued.
pub const MAX_SESSIONS: usize = 128;

/// A session with nothing sent either way for this long ends (the kubelet's default
/// `--streaming-connection-idle-timeout`): a client that vanished without closing its connection
/// must not hold one of the [`MAX_SESSIONS`] slots for ever.
pub(crate) const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

fn sessions() -> Arc<Semaphore> {
    static S: OnceLock<Arc<Semaphore>> = OnceLock::new();
    S.get_or_init(|| Arc::new(Semaphore::new(MAX_SESSIONS))).clone()
}

/// Whether `path` is one of the streaming endpoints.
pub(super) fn is_stream_path(path: &str) -> bool {
    ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|p| path.starts_with(p))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// The transport the client asked for.
enum Transport {
    WebSocket { key: String, protocol: &'static str },
    Spdy { protocol: &'static str },
}

fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Picks the transport and protocol version, as the kubelet negotiates them.
fn negotiate(req: &Request<Incoming>, kind: Kind) -> Result<Transport, (u16, String)> {
    let upgrade = header_values(req, "upgrade");
    let served: &[&'static str] = match kind {
        Kind::PortForward => &["portforward.k8s.io"],
        _ => &["v4.channel.k8s.io"],
    };
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = header_values(req, "sec-websocket-protocol");
        let ws_served: &[&'static str] = match kind {
            Kind::PortForward => &[ws::PORTFORWARD_PROTOCOL, ws::PORTFORWARD_CHANNELS],
            _ => ws::EXEC_PROTOCOLS,
        };
        let key = || {
            header_values(req, "sec-websocket-key")
                .into_iter()
                .next()
                .ok_or((400, "missing Sec-WebSocket-Key".to_string()))
        };
        // The kubelet serves channel port-forward to a client that names no subprotocol, too.
        if offered.is_empty() && kind == Kind::PortForward {
            return Ok(Transport::WebSocket {
                key: key()?,
                protocol: "",
            });
        }
        let protocol = ws_served
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| {
                (
                    400,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ws_served:?}"
                    ),
                )
            })?;
        return Ok(Transport::WebSocket {
            key: key()?,
            protocol,
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = header_values(req, "x-stream-protocol-version");
        let protocol = served
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| {
                (
                    403,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {served:?}"
                    ),
                )
            })?;
        return Ok(Transport::Spdy { protocol });
    }
    Err((400, "Upgrade request required".into()))
}

/// The ports of a channel port-forward: every `ports` (kube-apiserver's parameter) and `port` (the
/// kubelet's) value, each a comma-separated list, as the kubelet checks them.
fn channel_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "ports" || k == "port")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port < 1 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    // Two channels a port, and a channel is one byte.
    if ports.len() > 128 {
        return Err(format!(
            "too many ports ({}): at most 128 in one session",
            ports.len()
        ));
    }
    Ok(ports)
}

fn decode(seg: &str) -> String {
    form_urlencoded::parse(format!("x={seg}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Answers a streaming request: the `101 Switching Protocols` that starts the session, or an error.
pub(super) fn handle(runner: &PodRunner, pods: &Store<Pod>, req: Request<Incoming>) -> Response<Body> {
    match start(runner, pods, req) {
        Ok(r) => r,
        Err((code, message)) => status(code, &message),
    }
}

/// An error as a Status, which kubectl prints as `Error from server (Reason): message` (plain text
/// would reach it as an empty Status: its decoder reads any body as one).
fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        429 => "TooManyRequests",
        501 => "NotImplemented",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let mut r = text(code, body.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn start(
    runner: &PodRunner,
    pods: &Store<Pod>,
    req: Request<Incoming>,
) -> Result<Response<Body>, (u16, String)> {
    let parts: Vec<String> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let (kind, ns, name, container) = match parts.as_slice() {
        [k, ns, name, c] if k == "exec" => (Kind::Exec, ns, name, Some(c.clone())),
        [k, ns, name, c] if k == "attach" => (Kind::Attach, ns, name, Some(c.clone())),
        [k, ns, name] if k == "portForward" => (Kind::PortForward, ns, name, None),
        _ => return Err((404, "not found".into())),
    };
    let pod = pods
        .state()
        .into_iter()
        .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == *name)
        .ok_or_else(|| (404, format!("pod {ns}/{name} is not on this node")))?;
    let uid = pod.uid().unwrap_or_default();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let flag = |k: &str| query.iter().any(|(n, v)| n == k && (v == "true" || v == "1"));
    let opts = ExecOptions {
        command: query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    // The container to exec in (and, for port-forward, the pod's first: it is the pod's network).
    let container = container.unwrap_or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default()
    });
    let target = runner.exec_target(&uid, &container).map_err(|e| match e {
        crate::runner::RunnerError::UnknownPod(_) => {
            (404, format!("pod {ns}/{name} is not running on this node"))
        }
        e => (404, e.to_string()),
    })?;
    if kind == Kind::Exec {
        if opts.command.is_empty() {
            return Err((
                400,
                "you must specify at least one command for the container".into(),
            ));
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err((400, "you must specify at least 1 of stdin, stdout, stderr".into()));
        }
    }
    if kind == Kind::Attach && opts.stdin {
        return Err((
            400,
            format!(
                "container {container} has no stdin to attach to: svcnet's process runner gives containers /dev/null (spec.stdin is not supported); attach without -i to follow its output"
            ),
        ));
    }
    let transport = negotiate(&req, kind)?;
    // Channel port-forward names its ports up front, in the query.
    let channel_ports = match &transport {
        Transport::WebSocket { protocol, .. }
            if kind == Kind::PortForward && *protocol != ws::PORTFORWARD_PROTOCOL =>
        {
            channel_ports(&query).map_err(|m| (400, m))?
        }
        _ => Vec::new(),
    };
    let net = sessions::PodNet {
        ip: target.pod_ip,
        netns_of: target.pid.filter(|_| !target.netns_prefix.is_empty()),
    };
    let action = match kind {
        Kind::Attach => {
            let from_now = crate::runner::LogOptions {
                previous: false,
                tail: Some(0),
                since: None,
                timestamps: false,
            };
            let logs = runner
                .follow_logs_with(&uid, &container, &from_now)
                .map_err(|e| (404, e.to_string()))?;
            exec::Action::Attach(logs)
        }
        _ => exec::Action::Exec(target),
    };
    let permit = sessions().try_acquire_owned().map_err(|_| {
        (
            429,
            format!("too many streaming sessions on this node (at most {MAX_SESSIONS}); try again later"),
        )
    })?;

    let mut resp = Response::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(HeaderName::from_static(k), v);
        }
    };
    set("connection", "Upgrade");
    match &transport {
        Transport::WebSocket { key, protocol } => {
            set("upgrade", "websocket");
            set(
                "sec-websocket-accept",
                &tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            );
            if !protocol.is_empty() {
                set("sec-websocket-protocol", protocol);
            }
        }
        Transport::Spdy { protocol } => {
            set("upgrade", "SPDY/3.1");
            set("x-stream-protocol-version", protocol);
        }
    }
    let pod_name = format!("{ns}/{name}");
    let (transport_name, protocol) = match &transport {
        Transport::WebSocket { protocol, .. } => ("websocket", *protocol),
        Transport::Spdy { protocol } => ("spdy", *protocol),
    };
    tracing::info!(pod = %pod_name, %container, session = ?kind, transport = transport_name, protocol, "streaming session");
    tokio::spawn(async move {
        let _permit = permit;
        let io = match hyper::upgrade::on(req).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        match (kind, transport) {
            (Kind::PortForward, Transport::WebSocket { protocol, .. })
                if protocol == ws::PORTFORWARD_PROTOCOL =>
            {
                let tunnel = ws::tunnel(io).await;
                sessions::portforward(tunnel, net, pod_name).await
            }
            (Kind::PortForward, Transport::WebSocket { .. }) => {
                ws::portforward(io, channel_ports, net, pod_name).await
            }
            (Kind::PortForward, Transport::Spdy { .. }) => {
                sessions::portforward(hyper_util::rt::TokioIo::new(io), net, pod_name).await
            }
            (_, Transport::WebSocket { .. }) => ws::exec(io, action, opts).await,
            (_, Transport::Spdy { .. }) => {
                sessions::exec(hyper_util::rt::TokioIo::new(io), action, opts).await
            }
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::channel_ports;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn channel_ports_are_read_as_the_kubelet_reads_them() {
        assert_eq!(channel_ports(&query(&[("ports", "80,8080")])), Ok(vec![80, 8080]));
        assert_eq!(
            channel_ports(&query(&[("port", "80"), ("port", "81")])),
            Ok(vec![80, 81])
        );
        assert_eq!(
            channel_ports(&query(&[])),
            Err("query parameter \"port\" is required".to_string())
        );
        assert_eq!(
            channel_ports(&query(&[("ports", "")])),
            Err("query parameter \"port\" cannot be empty".to_string())
        );
        assert!(
            channel_ports(&query(&[("ports", "http")]))
                .unwrap_err()
                .starts_with("unable to parse \"http\" as a port")
        );
        assert_eq!(
            channel_ports(&query(&[("ports", "0")])),
            Err("port \"0\" must be > 0".to_string())
        );
        let many = (1..=129).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        assert!(channel_ports(&query(&[("ports", &many)])).is_err());
    }
}
