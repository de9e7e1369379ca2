//! kube-proxy's shared part, as one component every svcnet data-plane backend plugs into.
//!
//! kube-proxy is a loop (watch Services, EndpointSlices and this Node, track what changed, batch it) in front
//! of a backend that renders rules (iptables, nftables, IPVS). svcnet splits it the same way: this crate is
//! the loop and everything around it that does not depend on how traffic is forwarded, and a backend
//! (`svcnet-proxy`'s userspace proxy, `svcnet-nft`'s nftables) only implements
//! [`svcnet_dataplane::Backend`]:
//!
//! * [`watch`]: the watches, the [`svcnet_dataplane::Model`] they feed, and change batching.
//! * [`runner`]: the thread that hands batches to the backend, and retries a failed sync with back-off as
//!   a full sync (kube-proxy's bounded-frequency runner with `RetryAfter`).
//! * [`service_health`]: `healthCheckNodePort` servers, for every backend.
//! * [`health`]: the proxy health server (`/healthz`, `/livez` on port 10256).
//! * [`metrics`]: the sync metrics, under kube-proxy's names.
//! * [`http`]: the small path-only HTTP server the health and metrics ports use.

pub mod health;
pub mod http;
pub mod metrics;
pub mod runner;
pub mod service_health;
pub mod watch;

pub use health::{DEFAULT_HEALTH_TIMEOUT, ProxyHealth};
pub use metrics::ProxierMetrics;
pub use runner::RetryPolicy;
pub use service_health::health_body;
pub use watch::{MAX_BATCH_DELAY, ProxierConfig, run};
