//! Raw API requests through a kube-rs client, for tests that look at what the server answers (status
//! and body) rather than at what a typed client makes of it: conflicts, resourceVersions, a server that
//! dies mid-request.

use std::time::Duration;

use serde_json::Value;

/// One request with a JSON body; `Err` when no answer came (connection refused or reset, or 10 s
/// without one). The body is `null` when the answer is not JSON.
pub async fn try_send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
}

/// [`try_send`] to a server that must answer.
pub async fn send(client: &kube::Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    match try_send(client, method, path, body).await {
        Ok(answer) => answer,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// An object's `metadata.resourceVersion` as a number.
pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}
