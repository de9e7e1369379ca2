//! The agent's own endpoint: container logs at the kubelet's path (what `kubectl logs` reaches through
//! the API server), the streaming endpoints ([`super::stream`]: exec and port-forward) and `/healthz`.
//!
//! Logs are served only to a request with `Authorization: Bearer <credential>`, the credential derived
//! from the cluster token that the API server presents (see `svcnet_apiserver::logs::log_credential`):
//! another local process cannot read a pod's output just by finding the port. An agent that holds no
//! cluster token (a node that joined with its own certificate) checks the bearer credential as a
//! kubelet's webhook authentication does: a TokenReview by the API server must say it is the API
//! server's own user (`kube-apiserver-kubelet-client`); a yes is remembered for a minute. Every `PodLogOptions`
//! field is honoured as the kubelet does (`follow`, `previous`, `tailLines`, `limitBytes`, and
//! `timestamps`, `sinceSeconds`, `sinceTime` with the times the runner notes for log lines).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;

use crate::runner::{LogOptions, PodRunner};

pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn text(code: u16, s: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// The credential the log endpoint requires: hex SHA-256 of `svcnet-container-logs\0` and the cluster
/// token; the API server derives the same.
pub fn credential(token: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"svcnet-container-logs\0");
    ctx.update(token.as_bytes());
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The API server's user toward node agents, as a TokenReview names it.
const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// How long a TokenReview's yes is trusted.
const REVIEW_TTL: Duration = Duration::from_secs(60);

/// How the endpoint tells the API server's requests from others.
#[derive(Clone)]
pub(super) enum Check {
    /// The credential derived from the cluster token of the agent's kubeconfig.
    Local(Arc<str>),
    /// A TokenReview (the agent's own identity may ask), its yes kept for [`REVIEW_TTL`].
    Review {
        /// The agent's client.
        client: kube::Client,
        /// Credentials reviewed with a yes, and when.
        cache: Arc<Mutex<HashMap<String, Instant>>>,
    },
}

fn bearer(req: &hyper::Request<hyper::body::Incoming>) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// Whether `got` is the API server's credential.
async fn authorized(got: Option<String>, check: &Check) -> bool {
    let Some(got) = got else { return false };
    match check {
        Check::Local(want) => {
            got.len() == want.len()
                && got
                    .bytes()
                    .zip(want.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
        Check::Review { client, cache } => {
            let fresh = |c: &HashMap<String, Instant>| c.get(&got).is_some_and(|t| t.elapsed() < REVIEW_TTL);
            if fresh(&cache.lock().unwrap_or_else(|e| e.into_inner())) {
                return true;
            }
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(got.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = kube::Api::<TokenReview>::all(client.clone())
                .create(&Default::default(), &review)
                .await;
            let ok = match answer {
                Ok(r) => r.status.is_some_and(|s| {
                    s.authenticated == Some(true)
                        && s.user.and_then(|u| u.username).as_deref() == Some(KUBELET_CLIENT_USER)
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "reviewing the credential of a container-log request");
                    false
                }
            };
            if ok {
                let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                c.retain(|_, t| t.elapsed() < REVIEW_TTL);
                c.insert(got, Instant::now());
            }
            ok
        }
    }
}

/// Serves `/containerLogs/{ns}/{pod}/{container}` (the kubelet's path), the streaming paths and `/healthz`.
pub(super) async fn serve_logs(listener: TcpListener, runner: PodRunner, pods: Store<Pod>, check: Check) {
    let mut acceptor = svcnet_accept::Acceptor::new(listener, "container logs");
    loop {
        let Ok((tcp, _)) = acceptor.accept().await else {
            return;
        };
        let (runner, pods, check) = (runner.clone(), pods.clone(), check.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (runner, pods, check) = (runner.clone(), pods.clone(), check.clone());
                let (health, got) = (req.uri().path() == "/healthz", bearer(&req));
                async move {
                    if !health && !authorized(got, &check).await {
                        return Ok::<_, Infallible>(text(401, "Unauthorized".into()));
                    }
                    if super::stream::is_stream_path(req.uri().path()) {
                        return Ok(super::stream::handle(&runner, &pods, req));
                    }
                    Ok::<_, Infallible>(handle_log_request(&runner, &pods, &req))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn handle_log_request(
    runner: &PodRunner,
    pods: &Store<Pod>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" {
        return text(200, "ok".into());
    }
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| {
            form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let [first, ns, name, container] = parts.as_slice() else {
        return text(404, "not found".into());
    };
    if first != "containerLogs" {
        return text(404, "not found".into());
    }
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let Some(uid) = pods
        .state()
        .iter()
        .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == *name)
        .and_then(|p| p.uid())
    else {
        return text(404, format!("pod {ns}/{name} is not on this node"));
    };
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let since = match since(&query) {
        Ok(since) => since,
        Err(message) => return text(400, message),
    };
    let opts = LogOptions {
        previous: flag("previous"),
        tail: query.get("tailLines").and_then(|v| v.parse::<usize>().ok()),
        since,
        timestamps: flag("timestamps"),
    };
    // The kubelet's limitBytes: the first N bytes of what would be sent (a tail counts first).
    let limit = query.get("limitBytes").and_then(|v| v.parse::<u64>().ok());
    if flag("follow") && !opts.previous {
        return match runner.follow_logs_with(&uid, container, &opts) {
            Ok(stream) => {
                let stream = limit_stream(stream, limit);
                let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
                hyper::Response::new(BodyExt::boxed(body))
            }
            Err(e) => text(400, e.to_string()),
        };
    }
    match runner.logs_with(&uid, container, &opts) {
        Ok(mut bytes) => {
            if let Some(limit) = limit {
                bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            }
            hyper::Response::new(Full::new(Bytes::from(bytes)).map_err(|n| match n {}).boxed())
        }
        Err(e) => text(400, e.to_string()),
    }
}

/// The earliest time of lines to send: `sinceTime` (RFC 3339) or `sinceSeconds` before now.
fn since(query: &HashMap<String, String>) -> Result<Option<jiff::Timestamp>, String> {
    if let Some(t) = query.get("sinceTime").filter(|t| !t.is_empty()) {
        return t
            .parse::<jiff::Timestamp>()
            .map(Some)
            .map_err(|e| format!("invalid sinceTime {t:?}: {e}"));
    }
    match query.get("sinceSeconds") {
        None => Ok(None),
        Some(s) => {
            let secs: i64 = s.parse().map_err(|_| format!("invalid sinceSeconds {s:?}"))?;
            let span = jiff::SignedDuration::from_secs(secs.max(0));
            Ok(Some(
                jiff::Timestamp::now()
                    .checked_sub(span)
                    .unwrap_or(jiff::Timestamp::MIN),
            ))
        }
    }
}

/// Ends `stream` after `limit` bytes (cutting the last chunk), or passes it whole for `None`.
fn limit_stream<S>(
    stream: S,
    limit: Option<u64>,
) -> impl futures::Stream<Item = Bytes> + Send + Sync + 'static
where
    S: futures::Stream<Item = Bytes> + Send + Sync + 'static,
{
    stream.scan(limit.unwrap_or(u64::MAX), |left, mut chunk| {
        if *left == 0 {
            return futures::future::ready(None);
        }
        let take = usize::try_from(*left).unwrap_or(usize::MAX).min(chunk.len());
        chunk.truncate(take);
        *left -= take as u64;
        futures::future::ready(Some(chunk))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_pinned() {
        // The same vector is pinned in the API server (`svcnet_apiserver::logs`): the two sides must agree.
        assert_eq!(
            credential("secret-token"),
            "95fe057b38627bdae720ea8166c1e24faf0c972c7fdfd303e6d27659365f9735"
        );
    }

    #[tokio::test]
    async fn limit_cuts_a_stream() {
        let chunks = futures::stream::iter(["abc", "defg", "hi"].map(Bytes::from));
        let got: Vec<Bytes> = limit_stream(chunks, Some(5)).collect().await;
        assert_eq!(got, [Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
    }
}
