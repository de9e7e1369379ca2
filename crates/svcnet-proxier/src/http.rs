//! The node's small status servers (kube-proxy's health and metrics ports): an HTTP server whose answer
//! depends on the request path alone.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A response with `status`, a `Content-Type` and `body`.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

/// Go's `http.NotFound`, as kube-proxy answers an unknown path.
pub fn not_found() -> hyper::Response<Full<Bytes>> {
    response(404, "text/plain; charset=utf-8", &b"404 page not found\n"[..])
}

/// Serves `answer(path)` to every request on `listener` until the task is dropped.
pub async fn serve_paths<F>(listener: TcpListener, answer: F)
where
    F: Fn(&str) -> hyper::Response<Full<Bytes>> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let mut acceptor = svcnet_accept::Acceptor::new(listener, "status server");
    loop {
        let Ok((tcp, _)) = acceptor.accept().await else {
            return;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let resp = answer(req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            // One request per connection: scrapers and health checkers open a connection per check,
            // and a client that reads to the end of the stream gets its answer at once.
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(false);
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}
