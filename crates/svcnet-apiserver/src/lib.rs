//! svcnet's Kubernetes-compatible API server.
//!
//! It serves the Kubernetes REST API for the kinds in `svcnet_api::resources` over HTTPS with bearer
//! token authentication, backed by any [`svcnet_store::Store`]. Real kubectl and client libraries talk to
//! it unmodified: discovery (legacy and aggregated), OpenAPI v3, server-side tables, watch, all patch
//! types and server-side apply behave as kube-apiserver's do.
//!
//! Layout: [`request`] parses paths and parameters, [`handlers`] implements the verbs over the [`cache`],
//! [`watch`] streams changes, [`strategy`] and [`hooks`] hold per-kind rules, and this module wires HTTP.

pub mod apiserver_leases;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod bootstrap_token;
pub mod cache;
pub mod decode;
pub mod discovery;
pub mod errors;
pub mod gc;
pub mod handlers;
pub mod hooks;
pub mod impersonation;
pub mod ipam;
pub mod logs;
pub mod managed;
pub mod metrics;
pub mod openapi;
pub mod pki;
pub mod proto;
pub mod repair;
pub mod request;
pub mod reviews;
pub mod satoken;
pub mod starting;
pub mod strategy;
pub mod streaming;
pub mod subresources;
pub mod tables;
pub mod typed;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use svcnet_store::Store;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::errors::ApiError;
use crate::handlers::{Reply, WriteCtx};
use crate::hooks::KindHooks;
use crate::request::{Params, Route};

/// kube-apiserver's limit on request bodies (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// The most a request's line and headers may take over HTTP/1.1 (Go's `http.DefaultMaxHeaderBytes`).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// The largest HTTP/2 header list accepted (RFC 9113 sizes: name + value + 32 per field). The `http`
/// crate cannot hold a path over 65,534 bytes; 64 KiB keeps every admitted list's `:path` under that,
/// so longer URLs get h2's 431 instead of a stream reset.
pub const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

/// How long a consistent read waits for the watch cache to reach storage's revision (kube-apiserver
/// waits 3 s too before it gives up on its cache).
const CONSISTENT_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Settings of the API server.
#[derive(Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The admin bearer token (a member of `system:masters`).
    pub token: String,
    /// The static token file's records (`--token-auth-file`), by token.
    pub token_file: std::collections::HashMap<String, authn::UserInfo>,
    /// The ServiceAccount token signer; `None` serves no TokenRequests and accepts no such tokens.
    pub sa_signer: Option<Arc<satoken::Signer>>,
    /// Checks client certificates ([`pki::client_verifier`]); `None` ignores them.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Per-kind behaviour (Service allocation and friends).
    pub hooks: KindHooks,
}

/// The API server's shared state.
pub struct ApiServer {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// The watch cache every read is served from.
    pub cache: Arc<Cache>,
    tokens: authn::StaticTokens,
    sa_signer: Option<Arc<satoken::Signer>>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    listen: SocketAddr,
    /// Per-kind behaviour on writes.
    pub kind_hooks: KindHooks,
    ready: AtomicBool,
    /// Health checks marked failed ([`ApiServer::fail_check`]): (name, reason).
    failed_checks: Mutex<Vec<(String, String)>>,
    /// Request metrics.
    pub metrics: metrics::Metrics,
    /// The HTTP CONNECT proxy (a Unix socket) node agents are reached through, if set
    /// ([`ApiServer::set_kubelet_egress`]).
    kubelet_egress: std::sync::OnceLock<std::path::PathBuf>,
    /// The audit policy and log, if auditing is on ([`ApiServer::set_audit`]).
    audit: std::sync::OnceLock<Arc<audit::Auditor>>,
    /// RBAC objects decoded once per revision, for authorization.
    rbac_decoded: authz::DecodedRbac,
}

impl ApiServer {
    /// Builds the server over a store: loads the cache.
    pub async fn new(store: Arc<dyn Store>, config: Config) -> Result<Arc<Self>, svcnet_store::StoreError> {
        let cache = Cache::start(store.clone(), "/").await?;
        let metrics = metrics::Metrics::default();
        config
            .hooks
            .attach(store.clone(), cache.clone(), metrics.register_allocation());
        if let Some(ipam) = config.hooks.ipam() {
            metrics.add_extra(Box::new(move || ipam.gauges()));
        }
        Ok(Arc::new(ApiServer {
            store,
            cache,
            tokens: authn::StaticTokens::new(config.token, config.token_file),
            sa_signer: config.sa_signer,
            client_verifier: config.client_verifier,
            listen: config.listen,
            kind_hooks: config.hooks,
            ready: AtomicBool::new(false),
            failed_checks: Mutex::new(Vec::new()),
            metrics,
            kubelet_egress: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
            rbac_decoded: authz::DecodedRbac::default(),
        }))
    }

    /// Reaches node agents (`pods/log`) through the HTTP CONNECT proxy listening on the Unix socket
    /// `path`, as kube-apiserver's egress selector does for its `cluster` traffic (`HTTPConnect` over
    /// `UDS`): for nodes whose addresses this server's network cannot route to. Set once, before serving.
    pub fn set_kubelet_egress(&self, path: std::path::PathBuf) {
        let _ = self.kubelet_egress.set(path);
    }

    /// Audits requests ([`audit`]) with `auditor` from now on, and adds its metrics to `/metrics`. Set
    /// once, before serving.
    pub fn set_audit(&self, auditor: Arc<audit::Auditor>) {
        auditor.register_metrics(&self.metrics);
        let _ = self.audit.set(auditor);
    }

    /// Makes a read without a `resourceVersion` see every write acknowledged before it, whichever API
    /// server took the write (kube-apiserver's consistent read from cache): waits until the cache reached
    /// the store's current revision. A store that cannot be reached is no reason to refuse reads: they
    /// are served from the cache as it is, while `/readyz` says what is wrong.
    async fn consistent_read(&self, params: &request::Params) -> Result<(), ApiError> {
        if params.get("resourceVersion").is_some_and(|rv| !rv.is_empty()) || params.get("continue").is_some()
        {
            return Ok(());
        }
        let revision = match self.store.current_revision().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "serving a read from the cache without a consistency check");
                return Ok(());
            }
        };
        tokio::time::timeout(CONSISTENT_READ_WAIT, self.cache.wait_for(revision))
            .await
            .map_err(|_| {
                svcnet_store::StoreError::Timeout(format!(
                    "the watch cache is at revision {} and did not reach storage's revision {revision} \
                     within {}s",
                    self.cache.revision(),
                    CONSISTENT_READ_WAIT.as_secs()
                ))
            })?;
        Ok(())
    }

    /// Marks the server ready: `/readyz` answers `ok` from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the health check `name` failed for good: `/livez`, `/readyz` and `/healthz` answer 500 with
    /// a `[-]name failed: reason` line from now on, as kube-apiserver answers a failed check. The process
    /// that embeds the server calls it when a part it cannot run without (a controller loop, say) stops.
    pub fn fail_check(&self, name: &str, reason: &str) {
        // One line per check: the answer is line-oriented.
        let reason = reason.replace('\n', " ");
        let mut failed = self.failed_checks.lock().unwrap_or_else(|e| e.into_inner());
        failed.push((name.to_string(), reason));
    }

    /// The answer to `/livez`, `/readyz` or `/healthz` (`endpoint`, also their `/…/<check>` forms):
    /// `ok`, or 500 with a line per failed check and `<endpoint> check failed`.
    fn health(&self, endpoint: &str) -> (StatusCode, String) {
        let mut body = String::new();
        if endpoint == "readyz" && !self.ready.load(Ordering::SeqCst) {
            body.push_str("[-]svcnet-ready failed: not ready yet\n");
        }
        // kube-apiserver names its storage check `etcd`. Reads go on from the cache while writes fail,
        // so a degraded store makes the server unready (stop sending writes here), not dead; a store
        // that needs a restart makes it unhealthy too.
        match self.store.health() {
            svcnet_store::Health::Ok => {}
            svcnet_store::Health::Degraded(reason) if endpoint != "livez" => {
                body.push_str(&format!("[-]etcd failed: {}\n", reason.replace('\n', " ")));
            }
            svcnet_store::Health::Degraded(_) => {}
            svcnet_store::Health::Failed(reason) => {
                body.push_str(&format!("[-]etcd failed: {}\n", reason.replace('\n', " ")));
            }
        }
        for (name, reason) in self
            .failed_checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            body.push_str(&format!("[-]{name} failed: {reason}\n"));
        }
        if body.is_empty() {
            return (StatusCode::OK, "ok".into());
        }
        body.push_str(&format!("{endpoint} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    }

    /// Serves HTTPS on `listener` until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        // Backs off (and logs once per interval) when descriptors run out, instead of spinning.
        let mut listener = svcnet_accept::Acceptor::new(listener, "API server");
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { warn!(error = %e, "API server listener closed"); break; }
                },
            };
            let acceptor = acceptor.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                // The user a client certificate names holds for every request on the connection while
                // the certificate is valid (a connection may outlive it).
                let peer_certs = tls.get_ref().1.peer_certificates();
                let cert_user = server.cert_user(peer_certs);
                let not_after = peer_certs
                    .and_then(|c| c.first())
                    .and_then(|leaf| authn::cert_not_after(leaf.as_ref()));
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let server = server.clone();
                    let now = jiff::Timestamp::now().as_second();
                    let cert_user = cert_user.clone().filter(|_| not_after.is_none_or(|t| now <= t));
                    // The audit log's sourceIPs end with the connection's peer.
                    req.extensions_mut().insert(audit::Peer(peer));
                    async move { Ok::<_, Infallible>(server.handle_from(req, cert_user).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Long URLs (a label selector of many values) are answered, never dropped. HTTP/1.1
                // reads up to Go's header limit (1 MiB, kube-apiserver's), and hyper answers a URI
                // past the `http` crate's limit with 414. Over HTTP/2 a path past that limit would
                // only reset the stream (clients retry it forever), so the header list is capped
                // just below it: h2 answers a larger one with 431.
                builder.http1().max_buf_size(MAX_HEADER_BYTES);
                builder.http2().max_header_list_size(MAX_H2_HEADER_LIST);
                // Upgrades carry kubectl's exec and port-forward sessions (`streaming`).
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await
                {
                    debug!(%peer, error = %e, "connection ended with error");
                }
            });
        }
        info!("API server stopped accepting connections");
    }

    /// The user of a connection's client certificate chain, if the cluster CA signed it for client
    /// authentication and it is valid now.
    fn cert_user(
        &self,
        chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Option<Arc<authn::UserInfo>> {
        let (leaf, intermediates) = chain?.split_first()?;
        let verifier = self.client_verifier.as_ref()?;
        if let Err(e) = verifier.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now()) {
            debug!(error = %e, "client certificate rejected");
            return None;
        }
        authn::user_from_cert(leaf.as_ref()).map(Arc::new)
    }

    /// Who the request comes from (see [`authn`]): the connection's client certificate, else its
    /// bearer token. `None`: anonymous, or a credential nobody issued.
    fn authenticate(
        &self,
        req: &Request<Incoming>,
        cert_user: Option<&Arc<authn::UserInfo>>,
    ) -> Option<authn::UserInfo> {
        if let Some(u) = cert_user {
            return Some(u.as_ref().clone().authenticated());
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(authn::bearer_token)?;
        self.authenticate_token(token)
    }

    /// The user a bearer token stands for: a static token (the admin's, the token file's, the API
    /// server's own credential toward node agents), a ServiceAccount token or a bootstrap token.
    pub(crate) fn authenticate_token(&self, token: &str) -> Option<authn::UserInfo> {
        self.tokens
            .lookup(token)
            .or_else(|| self.kubelet_client_credential(token))
            .or_else(|| self.authenticate_service_account(token))
            .or_else(|| self.authenticate_bootstrap_token(token))
            .map(authn::UserInfo::authenticated)
    }

    /// The user of the credential this server shows node agents (`pods/log`, exec): kube's
    /// `kube-apiserver-kubelet-client`, with no RBAC rights of its own.
    pub(crate) fn kubelet_client_credential(&self, token: &str) -> Option<authn::UserInfo> {
        authn::constant_time_eq(token, &logs::log_credential(self.tokens.admin()))
            .then(|| authn::UserInfo::new(authn::KUBELET_CLIENT_USER, &[]))
    }

    /// Handles one HTTP request from a connection without a client certificate.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.handle_from(req, None).await
    }

    /// Handles one HTTP request from a connection whose client certificate named `cert_user`.
    pub async fn handle_from(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        cert_user: Option<Arc<authn::UserInfo>>,
    ) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let audit_id = audit::audit_id(req.headers());
        // Anonymous requests get kube's anonymous user on the few paths RBAC opens to it (the signed
        // cluster-info a joining node reads), and 401 elsewhere.
        let user = self.authenticate(&req, cert_user.as_ref()).or_else(|| {
            (req.method() == Method::GET && authn::ANONYMOUS_PATHS.contains(&path.as_str()))
                .then(authn::UserInfo::anonymous)
        });
        let route = request::parse_path(&path);
        let attrs = match &route {
            Ok(route) => authz::attributes(route, req.method(), &path, &Params::parse(req.uri().query())),
            Err(_) => authz::rbac::Attributes {
                verb: method.as_str().to_ascii_lowercase(),
                path: path.clone(),
                ..Default::default()
            },
        };
        // kube-apiserver's public paths; everything else needs a user.
        let public = matches!(route, Ok(Route::Health | Route::Version));
        // The audit policy sees the authenticated user (kube's anonymous one on public paths).
        let mut record = self.audit.get().and_then(|a| {
            let anonymous =
                public.then(|| authn::UserInfo::new("system:anonymous", &["system:unauthenticated"]));
            let version = match &route {
                Ok(Route::Resource(r)) => r.rt.version,
                Ok(Route::Review(_)) => "v1",
                _ => "",
            };
            a.begin(
                &req,
                &audit_id,
                user.as_ref().or(anonymous.as_ref()),
                &attrs,
                version,
            )
        });
        let (resp, resource) = match (route, user) {
            (Err(e), _) => {
                if let Some(r) = record.as_mut() {
                    r.received().await;
                }
                (error_response(&e), String::new())
            }
            (Ok(_), None) if !public => {
                if let Some(r) = record.take() {
                    r.unauthenticated(req.headers()).await;
                }
                (error_response(&ApiError::unauthorized()), String::new())
            }
            (Ok(route), user) => {
                if let Some(r) = record.as_mut() {
                    r.received().await;
                }
                let allowed = match user {
                    Some(u) if !public => self.authorize(u, req.headers(), &attrs, record.as_mut()),
                    u => Ok(u.unwrap_or_default()),
                };
                match allowed {
                    Err(e) => (error_response(&e), String::new()),
                    Ok(user) => {
                        req.extensions_mut().insert(Arc::new(user));
                        if let Some(r) = record.as_mut() {
                            r.capture_body(&mut req);
                        }
                        let resource = match &route {
                            Route::Resource(r) => r.rt.plural.to_string(),
                            _ => String::new(),
                        };
                        // A handler that panics answers 500 (and is audited at the Panic stage)
                        // instead of taking the connection down.
                        let handled = std::panic::AssertUnwindSafe(self.clone().route(route, req));
                        match futures::FutureExt::catch_unwind(handled).await {
                            Ok(resp) => (resp, resource),
                            Err(panic) => {
                                let what = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                tracing::error!(%method, %path, panic = %what, "request handler panicked");
                                if let Some(r) = record.take() {
                                    r.panicked(&what).await;
                                }
                                let msg =
                                    "This request caused apiserver to panic. Look in the logs for details.";
                                (text(StatusCode::INTERNAL_SERVER_ERROR, msg), resource)
                            }
                        }
                    }
                }
            }
        };
        let mut resp = match record {
            Some(r) => r.finish(resp).await,
            None => resp,
        };
        audit::set_header(&mut resp, &audit_id);
        let code = resp.status().as_u16();
        self.metrics
            .observe(method.as_str(), &resource, code, start.elapsed());
        debug!(%method, %path, code, elapsed_ms = start.elapsed().as_millis() as u64, "request");
        resp
    }

    /// Impersonation, then authorization of the request as the user it acts as (kube's filter
    /// order): that user, or the error to answer. The audit record learns both.
    fn authorize(
        &self,
        user: authn::UserInfo,
        headers: &http::HeaderMap,
        attrs: &authz::rbac::Attributes,
        mut record: Option<&mut audit::Record>,
    ) -> Result<authn::UserInfo, ApiError> {
        let user = match self.impersonate(&user, headers)? {
            Some(as_user) => {
                if let Some(r) = record.as_mut() {
                    r.impersonated(&as_user);
                }
                as_user
            }
            None => user,
        };
        let decision = self.decide(&user, attrs);
        if let Some(r) = record.as_mut() {
            match &decision {
                Ok(reason) => r.authorized(true, reason),
                Err(reason) => r.authorized(false, reason),
            }
        }
        match decision {
            Ok(_) => Ok(user),
            Err(reason) => Err(authz::forbidden(&user, attrs, &reason)),
        }
    }

    async fn route(self: Arc<Self>, route: Route, req: Request<Incoming>) -> Response<Body> {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_get = req.method() == Method::GET;
        match route {
            Route::Health => {
                let endpoint = req.uri().path().trim_start_matches('/');
                let endpoint = endpoint.split('/').next().unwrap_or_default();
                let (code, body) = self.health(endpoint);
                text(code, &body)
            }
            Route::Version => json_response(200, &version_info(), &[]),
            Route::Metrics => text(StatusCode::OK, &self.metrics.encode()),
            Route::Review(review) => self.review(review, req).await,
            Route::Resource(r) => self.resource(r, req, accept).await,
            _ if !is_get => error_response(&ApiError::method_not_supported(
                svcnet_api::resources::all()
                    .next()
                    .expect("at least one kind is served"),
                req.method().as_str(),
            )),
            // ServiceAccountIssuerDiscovery, served only where tokens are signed, cacheable for an
            // hour as kube-apiserver serves it.
            Route::OpenIdConfiguration | Route::Jwks => match &self.sa_signer {
                None => error_response(&ApiError::no_route()),
                Some(signer) => {
                    let (ct, doc) = if matches!(route, Route::Jwks) {
                        ("application/jwk-set+json", signer.jwks())
                    } else {
                        let host = if self.listen.ip().is_unspecified() {
                            req.headers()
                                .get(header::HOST)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                                .unwrap_or_else(|| self.listen.to_string())
                        } else {
                            self.listen.to_string()
                        };
                        ("application/json", satoken::openid_configuration(&host))
                    };
                    let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
                    let mut r = bytes_response(200, ct, body);
                    r.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=3600"),
                    );
                    r
                }
            },
            Route::LegacyRoot => match discovery::aggregated_version(accept.as_deref()) {
                Some(v) => aggregated_response(&discovery::aggregated(true, v), v),
                None => json_response(200, &discovery::legacy_versions(&self.listen.to_string()), &[]),
            },
            Route::GroupsRoot => match discovery::aggregated_version(accept.as_deref()) {
                Some(v) => aggregated_response(&discovery::aggregated(false, v), v),
                None => json_response(200, &discovery::group_list(), &[]),
            },
            Route::Group(g) => match discovery::group(&g) {
                Some(doc) => json_response(200, &doc, &[]),
                None => error_response(&ApiError::no_route()),
            },
            Route::GroupVersion(g, v) => match discovery::resource_list(&g, &v) {
                Some(doc) => json_response(200, &doc, &[]),
                None => error_response(&ApiError::no_route()),
            },
            Route::OpenApiV2 => bytes_response(
                200,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                openapi::v2_protobuf(),
            ),
            Route::OpenApiV3Root => bytes_response(200, "application/json", openapi::v3_root()),
            Route::OpenApiV3(p) => match openapi::v3_doc(&p) {
                Some(b) => bytes_response(200, "application/json", b),
                None => error_response(&ApiError::no_route()),
            },
        }
    }

    async fn resource(
        self: Arc<Self>,
        route: request::ResourceRoute,
        req: Request<Incoming>,
        accept: Option<String>,
    ) -> Response<Body> {
        let params = Params::parse(req.uri().query());
        let repr = match request::negotiate(accept.as_deref()) {
            Ok(r) => r,
            Err(e) => return error_response(&e),
        };
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        // A node's writes pass NodeRestriction admission, everyone's RBAC writes escalation prevention.
        let user = req.extensions().get::<Arc<authn::UserInfo>>().cloned();
        let node = user
            .as_deref()
            .and_then(|u| authz::node::node_identity(u).map(str::to_string));
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Some(sub) = route.subresource.as_deref()
            && streaming::STREAMING.contains(&sub)
        {
            return self.stream_subresource(&route, req).await;
        }
        let is_watch = route.watch_path || params.flag("watch");
        if method == Method::GET && is_watch {
            return match self.watch(&route, &params, repr) {
                Ok(rx) => stream_response(rx),
                Err(e) => error_response(&e),
            };
        }
        if route.subresource.as_deref() == Some("log") && method == Method::GET {
            let src = match self.log_source(&route, &params) {
                Ok(s) => s,
                Err(e) => return error_response(&e),
            };
            return match logs::fetch(src, self.kubelet_egress.get().map(|p| p.as_path())).await {
                Ok(rx) => {
                    let mut r = stream_response(rx);
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                Err(e) => error_response(&e),
            };
        }
        if route.subresource.as_deref() == Some("scale") && method == Method::GET {
            return reply_response(self.get_scale(&route));
        }
        if method == Method::GET {
            if let Err(e) = self.consistent_read(&params).await {
                return error_response(&e);
            }
            let r = if route.name.is_some() {
                self.get(&route, repr, &params)
            } else {
                self.list(&route, repr, &params)
            };
            return reply_response(r);
        }
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        let dry_run = match params.dry_run() {
            Ok(d) => d,
            Err(e) => return error_response(&e),
        };
        let manager = params
            .get("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| user_agent.split('/').next().unwrap_or("").to_string());
        if manager.chars().count() > 128 {
            return error_response(&ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
        let ctx = WriteCtx {
            route: &route,
            params: &params,
            manager: Some(manager),
            dry_run,
            node,
            user,
        };
        let has_name = route.name.is_some();
        let sub = route.subresource.clone();
        let r = match (method, has_name) {
            (Method::PUT, true) if sub.as_deref() == Some("scale") => {
                match decode::parse_body(Some(&content_type), &body) {
                    Ok(v) => self.write_scale(&ctx, None, Some(v)).await,
                    Err(e) => Err(e),
                }
            }
            (Method::PATCH, true) if sub.as_deref() == Some("scale") => {
                self.write_scale(&ctx, Some((&content_type, &body)), None).await
            }
            (Method::POST, true) if sub.as_deref() == Some("token") => {
                match decode::parse_body(Some(&content_type), &body) {
                    Ok(v) => match &ctx.node {
                        Some(node) => self
                            .admit_node_write(
                                &ctx,
                                node,
                                authz::noderestriction::Operation::Create,
                                Some(&v),
                                None,
                            )
                            .and_then(|()| self.token_request(&route, v)),
                        None => self.token_request(&route, v),
                    },
                    Err(e) => Err(e),
                }
            }
            (Method::POST, true) if sub.as_deref() == Some("binding") => {
                match decode::parse_body(Some(&content_type), &body) {
                    Ok(v) => self.bind(&ctx, v).await,
                    Err(e) => Err(e),
                }
            }
            (Method::POST, false) => match decode::parse_body(Some(&content_type), &body) {
                Ok(v) => self.create(&ctx, v).await,
                Err(e) => Err(e),
            },
            (Method::PUT, true) => match decode::parse_body(Some(&content_type), &body) {
                Ok(v) => self.update(&ctx, v).await,
                Err(e) => Err(e),
            },
            (Method::PATCH, true) => self.patch(&ctx, &content_type, &body).await,
            (Method::DELETE, true) => match delete_options(&content_type, &body, &params) {
                Ok(o) => self.delete(&ctx, o).await,
                Err(e) => Err(e),
            },
            (Method::DELETE, false) => match delete_options(&content_type, &body, &params) {
                Ok(o) => self.delete_collection(&ctx, o).await,
                Err(e) => Err(e),
            },
            (m, _) => Err(ApiError::method_not_supported(route.rt, m.as_str())),
        };
        reply_response(r)
    }
}

/// The request's DeleteOptions: its body, or without one its query (`?gracePeriodSeconds=0`, as client
/// libraries send them), as kube-apiserver reads them.
fn delete_options(content_type: &str, body: &[u8], params: &Params) -> Result<Option<Value>, ApiError> {
    let v = if body.iter().all(u8::is_ascii_whitespace) {
        let mut o = serde_json::Map::new();
        if let Some(g) = params.get("gracePeriodSeconds") {
            let g: i64 = g
                .parse()
                .map_err(|_| ApiError::bad_request("gracePeriodSeconds must be an integer"))?;
            o.insert("gracePeriodSeconds".into(), json!(g));
        }
        if let Some(p) = params.get("propagationPolicy") {
            o.insert("propagationPolicy".into(), json!(p));
        }
        if let Some(b) = params.get("orphanDependents") {
            o.insert("orphanDependents".into(), json!(b == "true"));
        }
        if o.is_empty() {
            return Ok(None);
        }
        Value::Object(o)
    } else {
        decode::parse_body(Some(content_type), body)?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
    }
    if let Some(g) = v.get("gracePeriodSeconds")
        && !g.is_null()
        && !g.is_i64()
    {
        return Err(ApiError::bad_request("gracePeriodSeconds must be an integer"));
    }
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str)
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            &[svcnet_api::field::FieldError::not_supported(
                "propagationPolicy",
                p,
                &["Foreground", "Background", "Orphan", "nil"],
            )],
        ));
    }
    Ok(Some(v))
}

pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    // After the limit we keep reading (and discarding) up to this much more, so that a client still
    // sending gets our 413 instead of a reset connection; past it we stop reading altogether.
    const DRAIN: usize = 64 * 1024 * 1024;
    // The audit log may want the body (`audit::Record::capture_body`).
    let capture = req.extensions().get::<audit::RequestBody>().cloned();
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("error reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > MAX_BODY + DRAIN {
                break;
            }
        }
    }
    if total > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let body = buf.freeze();
    if let Some(c) = capture {
        c.set(body.clone());
    }
    Ok(body)
}

/// The `/version` document.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-svcnet.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "n/a (svcnet is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn text(code: StatusCode, s: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::copy_from_slice(s.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn bytes_response(code: u16, ct: &'static str, b: Bytes) -> Response<Body> {
    let mut r = Response::new(full(b));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

pub(crate) fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = bytes_response(code, "application/json", Bytes::from(body));
    for w in warnings {
        // kube's warning header format: 299 - "<text>"
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(h) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

fn aggregated_response(v: &Value, version: &str) -> Response<Body> {
    let mut r = json_response(200, v, &[]);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(h) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, h);
    }
    r
}

/// Turns an error into its `Status` response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status(), &[])
}

fn reply_response(r: Result<Reply, ApiError>) -> Response<Body> {
    match r {
        Ok(Reply {
            code,
            raw: Some(bytes),
            ..
        }) => bytes_response(code, "application/json", bytes),
        Ok(reply) => json_response(reply.code, &reply.body, &reply.warnings),
        Err(e) => error_response(&e),
    }
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

pub use svcnet_api::resources::{ResourceType, lookup as lookup_resource};
