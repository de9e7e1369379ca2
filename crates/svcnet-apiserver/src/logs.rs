//! `pods/log`: what `kubectl logs` reads. As kube-apiserver proxies it to the kubelet, we proxy it to the
//! pod's node agent, at the node's InternalIP and the port it publishes in
//! `status.daemonEndpoints.kubeletEndpoint`, on the kubelet's path `/containerLogs/{ns}/{pod}/{container}`.
//! The body is streamed, so `kubectl logs -f` follows. With an egress proxy set
//! ([`crate::ApiServer::set_kubelet_egress`]) the connection to the agent is an HTTP CONNECT tunnel
//! through it, as kube-apiserver's egress selector makes one.
//!
//! The agent serves logs only to a request carrying the log credential ([`log_credential`]): SHA-256 of a
//! fixed label and the cluster's bearer token, which the API server and every agent (through its
//! kubeconfig) hold. A hash rather than the token itself, because this hop is plain HTTP: whoever
//! overhears it learns a credential that reads container logs, not the one that owns the cluster.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::ApiServer;
use crate::errors::ApiError;
use crate::request::{Params, ResourceRoute};

/// Where to fetch a container's log from.
pub struct LogSource {
    /// `ip:port` of the node agent.
    pub agent: String,
    /// The path and query on the agent.
    pub path: String,
    /// The credential the agent checks ([`log_credential`]).
    pub credential: String,
}

/// The credential an agent requires on its container-log endpoint: hex SHA-256 of
/// `svcnet-container-logs\0` and the cluster token. The agent computes the same
/// (`svcnet_agent::agent::logs_credential`); a test on each side pins the same vector.
pub fn log_credential(token: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"svcnet-container-logs\0");
    ctx.update(token.as_bytes());
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn pct(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The names of the containers listed at `pointer` in a pod.
fn container_names(pod: &Value, pointer: &str) -> Vec<String> {
    pod.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// kube-apiserver's `ValidatePodLogOptions`, with its messages.
fn validate_options(name: &str, params: &Params) -> Result<(), ApiError> {
    use svcnet_api::field::FieldError;
    let mut errs = Vec::new();
    if let Some(n) = params.int("tailLines")?
        && n < 0
    {
        errs.push(FieldError::invalid(
            "tailLines",
            n,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = params.int("limitBytes")?
        && n < 1
    {
        errs.push(FieldError::invalid("limitBytes", n, "must be greater than 0"));
    }
    let since_seconds = params.int("sinceSeconds")?;
    if since_seconds.is_some() && params.get("sinceTime").is_some() {
        errs.push(FieldError::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if let Some(n) = since_seconds
        && n < 1
    {
        errs.push(FieldError::invalid("sinceSeconds", n, "must be greater than 0"));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("PodLogOptions", "", name, &errs))
    }
}

impl ApiServer {
    /// `ip:port` of the node agent running `pod`; `waiting()` when the pod has no node yet or its
    /// node publishes no address or agent port.
    pub(crate) fn agent_of(&self, pod: &Value, waiting: impl Fn() -> ApiError) -> Result<String, ApiError> {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let Some(node) = node else { return Err(waiting()) };
        let nodes = svcnet_api::resources::lookup("", "v1", "nodes").expect("nodes are served");
        let node_obj = self.cached(nodes, None, node).ok_or_else(&waiting)?;
        let ip = node_obj
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
            })
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .ok_or_else(&waiting)?;
        let port = node_obj
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_i64)
            .ok_or_else(&waiting)?;
        Ok(if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        })
    }

    /// Resolves the agent URL for a `pods/log` request, with kube's errors for pods that have none.
    pub fn log_source(&self, route: &ResourceRoute, params: &Params) -> Result<LogSource, ApiError> {
        let name = route.name.as_deref().unwrap_or_default();
        let ns = route.namespace.as_deref().unwrap_or_default();
        let pod = self
            .cached(route.rt, Some(ns), name)
            .ok_or_else(|| ApiError::not_found(route.rt, name))?;
        let containers = container_names(&pod, "/spec/containers");
        let inits = container_names(&pod, "/spec/initContainers");
        let container = match params.get("container") {
            Some(c) => {
                if !containers.iter().chain(&inits).any(|x| x == c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                c.to_string()
            }
            None if containers.len() == 1 => containers[0].clone(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let waiting = || {
            ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ))
        };
        let agent = self.agent_of(&pod, waiting)?;
        validate_options(name, params)?;
        let mut query = Vec::new();
        if let Some(t) = params.get("sinceTime") {
            query.push(format!("sinceTime={}", pct(t)));
        }
        for key in ["follow", "previous", "timestamps"] {
            if params.flag(key) {
                query.push(format!("{key}=true"));
            }
        }
        for key in ["tailLines", "limitBytes", "sinceSeconds"] {
            if let Some(v) = params.int(key)? {
                query.push(format!("{key}={v}"));
            }
        }
        Ok(LogSource {
            credential: log_credential(self.tokens.admin()),
            agent,
            path: format!(
                "/containerLogs/{}/{}/{}{}{}",
                pct(ns),
                pct(name),
                pct(&container),
                if query.is_empty() { "" } else { "?" },
                query.join("&")
            ),
        })
    }
}

/// A connection to an agent: direct TCP or a tunnel through the egress proxy.
pub(crate) trait AgentIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AgentIo for T {}

/// Opens an HTTP CONNECT tunnel to `agent` through the proxy on the Unix socket `proxy`.
pub(crate) async fn connect_via(proxy: &Path, agent: &str) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {agent} HTTP/1.1\r\nHost: {agent}\r\n\r\n").as_bytes())
        .await?;
    // The proxy's answer head, byte by byte: nothing of the tunnelled stream may be read here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || s.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("the egress proxy closed the connection"));
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let status = status.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!(
            "the egress proxy answered {status:?}"
        )));
    }
    Ok(s)
}

/// Fetches the log from the agent, through the egress proxy at `egress` if one is set; the receiver
/// yields the body as it arrives.
pub async fn fetch(src: LogSource, egress: Option<&Path>) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("Get \"http://{}{}\": {e}", src.agent, src.path))
    };
    let stream: Box<dyn AgentIo> = match egress {
        Some(proxy) => Box::new(
            connect_via(proxy, &src.agent)
                .await
                .map_err(|e| unreachable(&e))?,
        ),
        None => Box::new(
            TcpStream::connect(&src.agent)
                .await
                .map_err(|e| unreachable(&e))?,
        ),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "log connection ended");
        }
    });
    let req = Request::get(&src.path)
        .header("host", &src.agent)
        .header("authorization", format!("Bearer {}", src.credential))
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| unreachable(&e))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let text = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let msg = String::from_utf8_lossy(&text).trim().to_string();
        return Err(ApiError {
            code: if status.is_client_error() { 400 } else { 500 },
            reason: if status.is_client_error() {
                "BadRequest"
            } else {
                "InternalError"
            },
            message: msg,
            details: None,
        });
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_credential_is_pinned() {
        // The same vector is pinned in the agent (`agent::logs`): the two sides must agree.
        assert_eq!(
            super::log_credential("secret-token"),
            "95fe057b38627bdae720ea8166c1e24faf0c972c7fdfd303e6d27659365f9735"
        );
    }
}
