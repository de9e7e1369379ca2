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
///
/// Connections accepted meanwhile are closed once `until` resolves (HTTP/1.1 answers also say
/// `Connection: close`): a client keeps its connection alive and retries a 503 on it (kube-rs and
/// client-go both do), so a connection left with this answerer would get 503 for ever while the real
/// server serves everyone else.
pub async fn serve_while(
    listener: &TcpListener,
    tls: Arc<rustls::ServerConfig>,
    reason: String,
    until: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let reason: Arc<str> = reason.into();
    let (started_tx, started_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(until);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut until => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { debug!(error = %e, "accept while starting"); continue; }
            },
        };
        let (acceptor, reason, mut started) = (acceptor.clone(), reason.clone(), started_rx.clone());
        tokio::spawn(async move {
            let handshake = tokio::select! {
                r = acceptor.accept(tcp) => r,
                _ = server_started(&mut started) => return,
            };
            let Ok(tls) = handshake else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (code, kind, body) = answer(req.uri().path(), &reason);
                let mut resp = Response::builder()
                    .status(code)
                    .header(header::CONTENT_TYPE, kind)
                    .header(header::RETRY_AFTER, "1");
                if req.version() < http::Version::HTTP_2 {
                    resp = resp.header(header::CONNECTION, "close");
                }
                let resp = resp
                    .body(Full::new(bytes::Bytes::from(body)))
                    .expect("static response");
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = server_started(&mut started) => {
                    // HTTP/2 clients get GOAWAY, idle HTTP/1.1 connections are closed.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = started_tx.send(true);
}

/// Resolves once the real server has taken the listener over.
async fn server_started(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
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

    /// A TLS connection to `addr` that trusts the cluster CA of `creds`.
    async fn connect(
        addr: std::net::SocketAddr,
        creds: &crate::pki::Credentials,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut creds.ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// A client keeps its connection and retries a 503 on it: connections made while starting must not
    /// outlive the start, or they would answer 503 for ever.
    #[tokio::test]
    async fn connections_made_while_starting_end_when_the_server_starts() {
        let dir = tempfile::tempdir().unwrap();
        let creds = crate::pki::load_or_create(dir.path(), &["127.0.0.1".parse().unwrap()]).unwrap();
        let tls = crate::pki::server_config(&creds).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
        let answering = tokio::spawn(async move {
            serve_while(&listener, tls, "waiting for etcd".into(), async {
                let _ = start_rx.await;
            })
            .await;
            listener
        });

        // HTTP/1.1: the answer says the connection closes.
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(connect(addr, &creds).await))
            .await
            .unwrap();
        let h1_conn = tokio::spawn(conn);
        let req = http::Request::get("/api/v1/namespaces")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = h1.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        drop(resp);
        tokio::time::timeout(std::time::Duration::from_secs(5), h1_conn)
            .await
            .expect("the HTTP/1.1 connection closes after its answer")
            .unwrap()
            .unwrap();

        // HTTP/2 cannot say so per answer: the connection is shut down when the server starts.
        let (mut h2, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            TokioIo::new(connect(addr, &creds).await),
        )
        .await
        .unwrap();
        let h2_conn = tokio::spawn(conn);
        let req = http::Request::get("/readyz")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        drop(resp);
        start_tx.send(()).unwrap();
        let _listener = answering.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), h2_conn)
            .await
            .expect("the HTTP/2 connection ends once the server starts")
            .unwrap()
            .unwrap();
    }
}
