//! `pods/exec`, `pods/attach` and `pods/portforward`: after kube-apiserver's own checks (the pod exists,
//! the container is one of its own, the pod has not completed, it has a node), the request is proxied
//! to the pod's node agent with its connection upgrade untouched, as kube-apiserver's upgrade-aware
//! proxy hands it to the kubelet: the agent negotiates WebSocket or SPDY with kubectl itself and, once
//! it answers `101 Switching Protocols`, the two connections are spliced byte for byte. The hop to the
//! agent carries the same credential as `pods/log` ([`crate::logs::log_credential`]) and goes through
//! the egress proxy when one is set.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::errors::ApiError;
use crate::logs::{AgentIo, connect_via, log_credential};
use crate::request::ResourceRoute;
use crate::{ApiServer, Body, error_response};

/// The streaming subresources.
pub const STREAMING: &[&str] = &["exec", "attach", "portforward"];

/// Request headers that carry the upgrade negotiation to the agent.
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The largest response head or error body read from an agent.
const MAX_HEAD: usize = 64 * 1024;

fn pct(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl ApiServer {
    /// The agent address and path for a streaming request, after kube-apiserver's checks.
    fn stream_target(
        &self,
        route: &ResourceRoute,
        query: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let sub = route.subresource.as_deref().unwrap_or_default();
        let name = route.name.as_deref().unwrap_or_default();
        let ns = route.namespace.as_deref().unwrap_or_default();
        let pod = self
            .cached(route.rt, Some(ns), name)
            .ok_or_else(|| ApiError::not_found(route.rt, name))?;
        let params: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let no_host = || ApiError::bad_request(format!("pod {name} does not have a host assigned"));
        if sub == "portforward" {
            let agent = self.agent_of(&pod, no_host)?;
            return Ok((agent, format!("/portForward/{}/{}", pct(ns), pct(name))));
        }
        let names = |p: &str| -> Vec<String> {
            pod.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let containers = names("/spec/containers");
        let container = match params
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.as_str())
        {
            Some(c) if !c.is_empty() => {
                let known = containers
                    .iter()
                    .chain(&names("/spec/initContainers"))
                    .chain(&names("/spec/ephemeralContainers"))
                    .any(|x| x == c);
                if !known {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                c.to_string()
            }
            _ if containers.len() == 1 => containers[0].clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let what = if sub == "attach" { "attach to" } else { "exec into" };
            return Err(ApiError::bad_request(format!(
                "cannot {what} a container in a completed pod; current phase is {phase}"
            )));
        }
        let agent = self.agent_of(&pod, no_host)?;
        Ok((
            agent,
            format!("/{sub}/{}/{}/{}", pct(ns), pct(name), pct(&container)),
        ))
    }

    /// Serves a streaming subresource request (see the module doc).
    pub async fn stream_subresource(&self, route: &ResourceRoute, req: Request<Incoming>) -> Response<Body> {
        let (agent, path) = match self.stream_target(route, req.uri().query()) {
            Ok(t) => t,
            Err(e) => return error_response(&e),
        };
        // Only HTTP/1.1 can switch protocols (kubectl asks for it on these requests).
        if req.version() != http::Version::HTTP_11 || !req.headers().contains_key(http::header::UPGRADE) {
            return error_response(&ApiError::bad_request("Upgrade request required"));
        }
        let path = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            error_response(&ApiError::internal(format!(
                "error dialing backend: dial tcp {agent}: {e}"
            )))
        };
        let conn: std::io::Result<Box<dyn AgentIo>> = match self.kubelet_egress.get() {
            Some(proxy) => connect_via(proxy, &agent)
                .await
                .map(|s| Box::new(s) as Box<dyn AgentIo>),
            None => tokio::net::TcpStream::connect(&agent)
                .await
                .map(|s| Box::new(s) as Box<dyn AgentIo>),
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => return unreachable(&e),
        };
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {agent}\r\nAuthorization: Bearer {}\r\n",
            req.method(),
            log_credential(self.tokens.admin())
        );
        for name in FORWARDED {
            for v in req.headers().get_all(*name) {
                if let Ok(v) = v.to_str() {
                    head.push_str(&format!("{name}: {v}\r\n"));
                }
            }
        }
        head.push_str("\r\n");
        if let Err(e) = conn.write_all(head.as_bytes()).await {
            return unreachable(&e);
        }
        let (code, headers) = match read_head(&mut conn).await {
            Ok(h) => h,
            Err(e) => return unreachable(&e),
        };
        if code != 101 {
            // The agent's refusal (a Status), passed on with its code.
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_HEAD);
            let mut body = vec![0u8; len];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_exact(&mut body)).await;
            let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .and_then(|(_, v)| HeaderValue::from_str(v).ok())
                .unwrap_or(HeaderValue::from_static("text/plain"));
            r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
            return r;
        }
        let mut r = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                r.headers_mut().append(k, v);
            }
        }
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(client) => {
                    let mut client = TokioIo::new(client);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut conn).await {
                        debug!(error = %e, "streaming connection ended");
                    }
                }
                Err(e) => debug!(error = %e, "client upgrade failed"),
            }
        });
        r
    }
}

/// Reads an HTTP/1.1 response head byte by byte (nothing after it may be consumed: it belongs to the
/// upgraded stream): the status code and the headers.
async fn read_head(conn: &mut Box<dyn AgentIo>) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || conn.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("the node agent closed the connection"));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("malformed response from the node agent"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((code, headers))
}
