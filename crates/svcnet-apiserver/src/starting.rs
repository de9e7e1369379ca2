//! The API server's address while the server cannot run yet (its store, etcd, not reachable at
//! start-up): health probes get an answer instead of a refused connection. `/livez` is ok (the process
//! is alive and will come up), `/readyz` and `/healthz` fail naming the wait, as kube-apiserver's
//! `etcd` check does; every other request gets 503 ServiceUnavailable. A load balancer in front of
//! several API servers (`svcnet-apilb`, or any that probes `/readyz`) thereby skips this one.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tracing::debug;

/// The answer to `path` while waiting for `reason` (pure).
pub fn answer(path: &str, reason: &str) -> (StatusCode, &'static str, String) {
    let reason = reason.replace('\n', " ");
    let check = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match check {
        "livez" => (StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
        "readyz" | "healthz" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("[-]etcd failed: {reason}\n{check} check failed\n"),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("the API server is starting: {reason}"),
                "reason": "ServiceUnavailable", "code": 503,
            })
            .to_string(),
        ),
    }
}

/// Answers on `listener` (HTTPS with `tls`) as above until `until` resolves; the listener is then free
/// for the real server, and connections still queued reach it.
pub async fn serve_while(
    listener: &TcpListener,
    tls: Arc<rustls::ServerConfig>,
    reason: String,
    until: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let reason: Arc<str> = reason.into();
    tokio::pin!(until);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut until => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { debug!(error = %e, "accept while starting"); continue; }
            },
        };
        let (acceptor, reason) = (acceptor.clone(), reason.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (code, kind, body) = answer(req.uri().path(), &reason);
                let resp = Response::builder()
                    .status(code)
                    .header(header::CONTENT_TYPE, kind)
                    .body(Full::new(bytes::Bytes::from(body)))
                    .expect("static response");
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_but_not_ready() {
        let why = "waiting for etcd http://127.0.0.1:2379";
        assert_eq!(answer("/livez", why).0, StatusCode::OK);
        let (code, _, body) = answer("/readyz", why);
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, format!("[-]etcd failed: {why}\nreadyz check failed\n"));
        let (code, _, body) = answer("/api/v1/namespaces", why);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"reason\":\"ServiceUnavailable\""), "{body}");
    }
}
