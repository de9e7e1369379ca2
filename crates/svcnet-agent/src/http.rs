//! The node's small status servers (kube-proxy's health and metrics ports): an HTTP server whose answer
//! depends on the request path alone.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves `answer(path)` to every request on `listener` until the task is dropped.
pub async fn serve_paths<F>(listener: TcpListener, answer: F)
where
    F: Fn(&str) -> hyper::Response<Full<Bytes>> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
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
