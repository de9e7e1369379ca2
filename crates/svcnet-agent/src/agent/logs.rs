//! The agent's own endpoint: container logs at the kubelet's path (what `kubectl logs` reaches through
//! the API server), and `/healthz`.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;

use crate::runner::PodRunner;

type Body = BoxBody<Bytes, Infallible>;

fn text(code: u16, s: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Serves `/containerLogs/{ns}/{pod}/{container}` (the kubelet's path) and `/healthz`.
pub(super) async fn serve_logs(listener: TcpListener, runner: PodRunner, pods: Store<Pod>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (runner, pods) = (runner.clone(), pods.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (runner, pods) = (runner.clone(), pods.clone());
                async move { Ok::<_, Infallible>(handle_log_request(&runner, &pods, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
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
    let tail = query.get("tailLines").and_then(|v| v.parse::<usize>().ok());
    if flag("follow") && !flag("previous") {
        return match runner.follow_logs(&uid, container, tail) {
            Ok(stream) => {
                let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
                hyper::Response::new(BodyExt::boxed(body))
            }
            Err(e) => text(400, e.to_string()),
        };
    }
    match runner.logs(&uid, container, flag("previous"), tail) {
        Ok(bytes) => hyper::Response::new(Full::new(Bytes::from(bytes)).map_err(|n| match n {}).boxed()),
        Err(e) => text(400, e.to_string()),
    }
}
