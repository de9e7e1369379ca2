//! The audit log, as kube-apiserver's (`--audit-log-path`, `--audit-policy-file`): every request is
//! matched against the [`policy`]; at a level above None it produces `audit.k8s.io/v1` `Event`s, one
//! per stage (`RequestReceived`; `ResponseStarted` for long-running requests such as watches;
//! `ResponseComplete`; `Panic`), written as JSON lines by the [`sink`].
//!
//! The request path holds a [`Record`] per audited request: it starts once the user is known (so the
//! policy can match users and groups), learns the impersonated user and the authorization decision,
//! takes the request body from [`crate::read_body`] through a [`RequestBody`] in the request's
//! extensions, and finishes with the response. Every response carries the request's `Audit-Id`
//! header, audited or not, as kube-apiserver's do.

pub mod policy;
pub mod sink;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Body;
use crate::authn::UserInfo;
use crate::authz::rbac::Attributes;
pub use policy::{Decision, Level, Policy, Stage};
pub use sink::Sink;

/// The response header naming a request's audit ID (Go writes `Audit-ID` as `Audit-Id`).
pub const HEADER: &str = "audit-id";
/// The annotation with the authorizer's decision: `allow` or `forbid`.
pub const DECISION: &str = "authorization.k8s.io/decision";
/// The annotation with the authorizer's reason.
pub const REASON: &str = "authorization.k8s.io/reason";

/// The peer address of a request's connection, put in its extensions by [`crate::ApiServer::serve`].
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Where [`crate::read_body`] leaves the request body for the audit event (only when one is audited).
#[derive(Debug, Clone, Default)]
pub struct RequestBody(Arc<Mutex<Option<Bytes>>>);

impl RequestBody {
    /// Keeps the body read.
    pub fn set(&self, body: Bytes) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    }

    fn take(&self) -> Option<Bytes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A request's audit ID: the client's `Audit-ID` header if it sent one (kube keeps it, so a client can
/// find its requests), else a new UUID.
pub fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Sets the `Audit-Id` response header.
pub fn set_header(resp: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
}

/// The user as an audit event shows it (`authentication.k8s.io/v1` UserInfo, empty fields left out:
/// a request that failed authentication has `{}`).
#[derive(Debug, Clone, Default, Serialize)]
struct EventUser {
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
}

impl From<&UserInfo> for EventUser {
    fn from(u: &UserInfo) -> Self {
        EventUser {
            username: u.name.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: u.extra.clone(),
        }
    }
}

/// kube's `audit.ObjectReference`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(skip_serializing_if = "String::is_empty")]
    resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    subresource: String,
}

/// An `audit.k8s.io/v1` `Event`, its fields in kube's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    kind: &'static str,
    api_version: &'static str,
    level: Level,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: Stage,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: EventUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<EventUser>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<Value>,
    request_received_timestamp: String,
    stage_timestamp: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// metav1.MicroTime: RFC 3339 in UTC with microseconds.
fn micro_time(t: jiff::Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_microsecond()
    )
}

/// The request's source addresses as kube's `utilnet.SourceIPs` lists them: `X-Forwarded-For`, then
/// `X-Real-Ip` unless already listed, then the connection's peer unless it is the last one listed.
fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ips: Vec<IpAddr> = header("x-forwarded-for")
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    if let Ok(ip) = header("x-real-ip").trim().parse::<IpAddr>()
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    if let Some(ip) = peer
        && ips.last() != Some(&ip)
    {
        ips.push(ip);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: String,
}

/// The audit policy and the log it writes to.
pub struct Auditor {
    policy: Policy,
    sink: Sink,
    /// `apiserver_audit_level_total{level}`: the policy's level for each request.
    levels: Family<LevelLabels, Counter>,
}

impl Auditor {
    /// An auditor writing the events `policy` asks for to `sink`.
    pub fn new(policy: Policy, sink: Sink) -> Arc<Self> {
        Arc::new(Auditor {
            policy,
            sink,
            levels: Family::default(),
        })
    }

    /// Adds kube-apiserver's audit metrics to the server's `/metrics`.
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        metrics.register(
            "apiserver_audit_event",
            "Counter of audit events generated and sent to the audit backend.",
            self.sink.metrics().events.clone(),
        );
        metrics.register(
            "apiserver_audit_error",
            "Counter of audit events that failed to be audited properly. Plugin identifies the plugin affected by the error.",
            PluginCounter(self.sink.metrics().errors.clone()),
        );
        metrics.register(
            "apiserver_audit_level",
            "Counter of policy levels for audit events (1 per request).",
            self.levels.clone(),
        );
    }

    /// Starts the record of a request whose user is `user` (`None`: authentication failed) and whose
    /// authorization attributes are `attrs`; `api_version` is the version the path names. `None`
    /// when the policy gives the request level None.
    pub fn begin<B>(
        self: &Arc<Self>,
        req: &Request<B>,
        audit_id: &str,
        user: Option<&UserInfo>,
        attrs: &Attributes,
        api_version: &str,
    ) -> Option<Record> {
        let decision = self.policy.evaluate(user, attrs);
        self.levels
            .get_or_create(&LevelLabels {
                level: decision.level.as_str().to_string(),
            })
            .inc();
        if decision.level == Level::None {
            return None;
        }
        let now = micro_time(jiff::Timestamp::now());
        let headers = req.headers();
        let object_ref = attrs.resource_request.then(|| ObjectRef {
            resource: attrs.resource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            api_group: attrs.api_group.clone(),
            api_version: api_version.to_string(),
            subresource: attrs.subresource.clone(),
            ..Default::default()
        });
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: decision.level,
            audit_id: audit_id.to_string(),
            stage: Stage::RequestReceived,
            request_uri: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().path().to_string()),
            verb: attrs.verb.clone(),
            user: user.map(EventUser::from).unwrap_or_default(),
            impersonated_user: None,
            source_ips: source_ips(headers, req.extensions().get::<Peer>().map(|p| p.0.ip())),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            object_ref,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: now.clone(),
            stage_timestamp: now,
            annotations: BTreeMap::new(),
        };
        Some(Record {
            auditor: self.clone(),
            decision,
            event,
            body: None,
            content_type: headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            done: false,
        })
    }
}

/// `apiserver_audit_error_total{plugin="log"}`: one counter under kube's label.
#[derive(Debug, Clone)]
struct PluginCounter(Counter);

impl prometheus_client::encoding::EncodeMetric for PluginCounter {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let labels = [("plugin", "log")];
        self.0.encode(encoder.encode_family(&labels)?)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// The audit record of one request at a level above None.
pub struct Record {
    auditor: Arc<Auditor>,
    decision: Decision,
    event: Event,
    body: Option<RequestBody>,
    content_type: Option<String>,
    /// The final event was sent.
    done: bool,
}

impl Record {
    fn line(&mut self, stage: Stage) -> Option<Vec<u8>> {
        if self.decision.omit_stages.contains(stage) {
            return None;
        }
        self.event.stage = stage;
        self.event.stage_timestamp = micro_time(jiff::Timestamp::now());
        let mut line = serde_json::to_vec(&self.event).ok()?;
        line.push(b'\n');
        Some(line)
    }

    async fn emit(&mut self, stage: Stage) {
        if let Some(line) = self.line(stage) {
            self.auditor.sink.emit(line).await;
        }
    }

    /// The `RequestReceived` stage: the request is authenticated and about to be handled.
    pub async fn received(&mut self) {
        self.emit(Stage::RequestReceived).await;
    }

    /// Records whom the request acts as (impersonation).
    pub fn impersonated(&mut self, user: &UserInfo) {
        self.event.impersonated_user = Some(user.into());
    }

    /// Records the authorizer's decision and reason.
    pub fn authorized(&mut self, allowed: bool, reason: &str) {
        let decision = if allowed { "allow" } else { "forbid" };
        self.event
            .annotations
            .insert(DECISION.to_string(), decision.to_string());
        self.event
            .annotations
            .insert(REASON.to_string(), reason.to_string());
    }

    /// Asks [`crate::read_body`] for the request body (requests that carry one).
    pub fn capture_body<B>(&mut self, req: &mut Request<B>) {
        if matches!(
            *req.method(),
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        ) {
            let slot = RequestBody::default();
            req.extensions_mut().insert(slot.clone());
            self.body = Some(slot);
        }
    }

    /// A request whose credential was not accepted: kube logs it at `ResponseStarted` only, with the
    /// methods it tried (`getAuthMethods`) as the status message. (A client certificate the CA did not
    /// sign is not seen here: rustls has set it aside, so `x509` is never listed.)
    pub async fn unauthenticated(mut self, headers: &HeaderMap) {
        let mut methods = Vec::new();
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        if auth.len() > 6 && auth[..6].eq_ignore_ascii_case("basic ") {
            methods.push("basic");
        }
        let mut parts = auth.split(' ');
        if parts.next().is_some_and(|s| s.eq_ignore_ascii_case("bearer")) && parts.next().is_some() {
            methods.push("bearer");
        }
        let message = if methods.is_empty() {
            "Authentication failed, no credentials provided".to_string()
        } else {
            format!("Authentication failed, attempted: {}", methods.join(", "))
        };
        self.event.response_status = Some(json!({"metadata": {}, "message": message, "code": 401}));
        self.done = true;
        self.emit(Stage::ResponseStarted).await;
    }

    /// Handling the request panicked (kube's `Panic` stage).
    pub async fn panicked(mut self, what: &str) {
        self.event.response_status = Some(json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("APIServer panic'd: {what}"),
            "reason": "InternalError",
            "code": 500,
        }));
        self.done = true;
        self.emit(Stage::Panic).await;
    }

    /// Fills in what the request body tells (kube's `LogRequestObject`/`LogRequestPatch`): the object
    /// reference's missing name, namespace, uid and resourceVersion from a created or updated object,
    /// and at level Request and above the body itself.
    fn take_request_object(&mut self) {
        let Some(bytes) = self.body.take().and_then(|b| b.take()) else {
            return;
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Some(mut obj) = parse_body(self.content_type.as_deref(), &bytes) else {
            return;
        };
        if matches!(self.event.verb.as_str(), "create" | "update")
            && let Some(r) = self.event.object_ref.as_mut()
            && let Some(meta) = obj.get("metadata")
        {
            let field = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            for (slot, key) in [
                (&mut r.namespace, "namespace"),
                (&mut r.name, "name"),
                (&mut r.uid, "uid"),
                (&mut r.resource_version, "resourceVersion"),
            ] {
                if slot.is_empty() {
                    *slot = field(key);
                }
            }
        }
        if self.decision.level >= Level::Request {
            if self.decision.omit_managed_fields {
                strip_managed_fields(&mut obj);
            }
            self.event.request_object = Some(obj);
        }
    }

    /// The response is ready: logs `ResponseComplete` (with the response's status, and at level
    /// RequestResponse its body), or for a streamed response `ResponseStarted` now and
    /// `ResponseComplete` when the stream ends.
    pub async fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        self.take_request_object();
        let code = resp.status().as_u16();
        let status = json!({"metadata": {}, "code": code});
        if resp.body().size_hint().exact().is_none() {
            // A watch, a followed log: long-running.
            self.event.response_status = Some(status);
            self.emit(Stage::ResponseStarted).await;
            let (parts, body) = resp.into_parts();
            return Response::from_parts(
                parts,
                BodyExt::boxed(AuditedBody {
                    inner: body,
                    record: Some(self),
                }),
            );
        }
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        };
        let json_body = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        let wants_body = self.decision.level >= Level::RequestResponse;
        let mut status = status;
        // A Status (every error, some deletes) gives the event its fields; small bodies are cheap to
        // look at, big ones are lists and objects.
        if json_body
            && (wants_body || code >= 300 || bytes.len() <= 4096)
            && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
        {
            if v.get("kind").and_then(Value::as_str) == Some("Status") {
                for key in ["status", "message", "reason", "details"] {
                    if let Some(x) = v.get(key) {
                        status[key] = x.clone();
                    }
                }
            }
            if wants_body {
                if self.decision.omit_managed_fields {
                    strip_managed_fields(&mut v);
                }
                self.event.response_object = Some(v);
            }
        }
        self.event.response_status = Some(status);
        self.done = true;
        self.emit(Stage::ResponseComplete).await;
        Response::from_parts(parts, crate::full(bytes))
    }

    /// The end of a streamed response (from a body's poll or drop, which cannot wait).
    fn complete_now(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(line) = self.line(Stage::ResponseComplete) {
            self.auditor.sink.emit_now(line);
        }
    }
}

/// The body of a long-running response: logs `ResponseComplete` when it ends or is dropped (the
/// client went away).
struct AuditedBody {
    inner: Body,
    record: Option<Record>,
}

impl hyper::body::Body for AuditedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r
            && let Some(mut rec) = self.record.take()
        {
            rec.complete_now();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.complete_now();
        }
    }
}

/// A request body as JSON, by its media type (patches are JSON or YAML too).
fn parse_body(content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if media == crate::proto::MEDIA_TYPE {
        crate::proto::decode(body).ok()
    } else if media.contains("yaml") {
        crate::decode::yaml_to_json(body).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
}

/// Removes `metadata.managedFields` from an object, or from each item of a list (`omitManagedFields`).
fn strip_managed_fields(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(meta) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_as_kube_lists_them() {
        let mut h = HeaderMap::new();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(source_ips(&h, Some(peer)), ["127.0.0.1"]);
        h.insert("x-forwarded-for", "10.0.0.1, bogus, 127.0.0.1".parse().unwrap());
        h.insert("x-real-ip", "10.0.0.2".parse().unwrap());
        assert_eq!(
            source_ips(&h, Some(peer)),
            ["10.0.0.1", "127.0.0.1", "10.0.0.2", "127.0.0.1"]
        );
        h.remove("x-real-ip");
        assert_eq!(source_ips(&h, Some(peer)), ["10.0.0.1", "127.0.0.1"]);
    }

    #[test]
    fn micro_times() {
        let t: jiff::Timestamp = "2024-05-01T10:11:12.345678901Z".parse().unwrap();
        assert_eq!(micro_time(t), "2024-05-01T10:11:12.345678Z");
    }

    /// The events a policy writes for one request that `run` drives, read back from the file.
    async fn events_of(policy: &str, run: impl AsyncFnOnce(Record)) -> Vec<Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let target = sink::Target::File {
            path: path.clone(),
            max_size_mb: 0,
            max_backups: 0,
            max_age_days: 0,
        };
        let auditor = Auditor::new(
            Policy::parse(policy, "p").unwrap(),
            Sink::start(target, sink::Mode::Blocking).unwrap(),
        );
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/namespaces/a/configmaps?dryRun=All")
            .body(())
            .unwrap();
        let attrs = Attributes {
            verb: "create".into(),
            resource_request: true,
            namespace: "a".into(),
            resource: "configmaps".into(),
            ..Default::default()
        };
        let user = UserInfo::new("jane", &["dev"]);
        let rec = auditor.begin(&req, "id-1", Some(&user), &attrs, "v1").unwrap();
        run(rec).await;
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_panic_is_its_own_stage() {
        let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n";
        let ev = events_of(policy, async |mut r| {
            r.received().await;
            r.authorized(true, "");
            r.panicked("index out of bounds").await;
        })
        .await;
        let stages: Vec<&str> = ev.iter().map(|e| e["stage"].as_str().unwrap()).collect();
        assert_eq!(stages, ["RequestReceived", "Panic"]);
        assert_eq!(
            ev[1]["responseStatus"],
            json!({"metadata": {}, "status": "Failure", "message": "APIServer panic'd: index out of bounds", "reason": "InternalError", "code": 500})
        );
        assert_eq!(ev[1]["auditID"], "id-1");
        assert_eq!(ev[1]["requestURI"], "/api/v1/namespaces/a/configmaps?dryRun=All");
        assert_eq!(ev[1]["annotations"]["authorization.k8s.io/decision"], "allow");
    }

    #[test]
    fn managed_fields_go_from_objects_and_lists() {
        let mut v = json!({"metadata": {"name": "a", "managedFields": []}, "items": [{"metadata": {"managedFields": [1]}}]});
        strip_managed_fields(&mut v);
        assert_eq!(v, json!({"metadata": {"name": "a"}, "items": [{"metadata": {}}]}));
    }
}
