//! Service defaulting and validation, as kube-apiserver (1.33) does them.
//!
//! Kubernetes spreads this over several layers, and the order matters for which errors a user sees:
//!
//! 1. scheme defaulting when the request body is decoded (`SetDefaults_Service`) — [`set_object_defaults`];
//! 2. the Service REST storage's "begin" hooks, which run *before* validation: patching allocated values
//!    back into an update, syncing `clusterIP`/`clusterIPs`, and IP-family defaulting against the cluster's
//!    configured families (`alloc.go`), whose errors end the request early;
//! 3. the strategy's `PrepareForCreate`/`PrepareForUpdate` (status reset, dropping fields that a type change
//!    made meaningless);
//! 4. `ValidateServiceCreate`/`ValidateServiceUpdate`.
//!
//! [`set_defaults`] and [`set_defaults_update`] run 1–3 (everything except actually allocating IPs and node
//! ports, which the allocator does between defaulting and validation). [`validate_create`] and
//! [`validate_update`] first re-derive the IP-family errors of step 2 — returning only those when there are
//! any, as kube does — and otherwise run step 4. Validation expects allocation to have happened (for example
//! a `LoadBalancer` with `externalTrafficPolicy: Local` needs its `healthCheckNodePort`).
//!
//! The functions work on the typed `k8s_openapi` `Service`. Go's zero values and absent fields are the same
//! thing here: `None` and `Some("")` are both treated as an empty string, `None` and `Some(vec![])` as an
//! empty list, except where kube distinguishes a nil pointer (e.g. `ipFamilyPolicy`, `internalTrafficPolicy`).

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};

mod defaults;
mod validate;

#[cfg(test)]
mod tests;

pub use defaults::{set_defaults, set_defaults_update, set_object_defaults, set_status_update_defaults};
pub use validate::{validate_create, validate_status_update, validate_update};

/// An IP family a cluster can serve Services in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// `IPv4`.
    IPv4,
    /// `IPv6`.
    IPv6,
}

impl IpFamily {
    /// The API spelling (`IPv4` / `IPv6`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    /// The other family.
    pub fn other(self) -> IpFamily {
        match self {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        }
    }

    /// Parses the API spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<IpFamily> {
        match s {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }

    /// The family of an address, treating IPv4-mapped IPv6 addresses as IPv4 as Go does.
    pub fn of(ip: IpAddr) -> IpFamily {
        match crate::validation::canonical_family_ip(ip) {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }
}

/// The cluster facts Service defaulting and validation depend on: which IP families the configured service
/// CIDRs provide, primary first (the family of `--service-cluster-ip-range`'s first CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The cluster's default Service IP family.
    pub primary_family: IpFamily,
    /// The second family of a dual-stack cluster.
    pub secondary_family: Option<IpFamily>,
}

/// The configuration [`set_defaults`] needs.
pub type ServiceDefaultsConfig = ServiceConfig;
/// The configuration [`validate_create`] and [`validate_update`] need.
pub type ServiceValidationConfig = ServiceConfig;

impl Default for ServiceConfig {
    /// A single-stack IPv4 cluster, kube's most common setup.
    fn default() -> Self {
        ServiceConfig::single_stack(IpFamily::IPv4)
    }
}

impl ServiceConfig {
    /// A cluster with service CIDRs of one family.
    pub fn single_stack(family: IpFamily) -> Self {
        ServiceConfig {
            primary_family: family,
            secondary_family: None,
        }
    }

    /// A dual-stack cluster whose primary family is `primary`.
    pub fn dual_stack(primary: IpFamily) -> Self {
        ServiceConfig {
            primary_family: primary,
            secondary_family: Some(primary.other()),
        }
    }

    /// Derives the configuration from the service CIDRs in their configured order; `None` when the list is
    /// empty. Only the first CIDR of each family counts, as in kube.
    pub fn from_service_cidrs(cidrs: &[IpNet]) -> Option<Self> {
        let fam = |c: &IpNet| match c {
            IpNet::V4(_) => IpFamily::IPv4,
            IpNet::V6(_) => IpFamily::IPv6,
        };
        let primary = fam(cidrs.first()?);
        let secondary = cidrs.iter().map(fam).find(|f| *f != primary);
        Some(ServiceConfig {
            primary_family: primary,
            secondary_family: secondary,
        })
    }

    /// Whether Services can get addresses of `family`.
    pub fn is_configured(&self, family: IpFamily) -> bool {
        self.primary_family == family || self.secondary_family == Some(family)
    }

    /// Whether both families are configured.
    pub fn is_dual_stack(&self) -> bool {
        self.secondary_family.is_some()
    }
}

/// The `clusterIP` value that makes a Service headless.
pub const CLUSTER_IP_NONE: &str = "None";
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS: i32 = 10800;
/// The largest allowed `sessionAffinityConfig.clientIP.timeoutSeconds` (1 day).
pub const MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS: i32 = 86400;

/// An empty string for absent optional strings, mirroring Go's zero value.
fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// The list, or an empty slice when absent.
fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn svc_type(spec: &ServiceSpec) -> &str {
    s(&spec.type_)
}

/// `isHeadlessService`: exactly one cluster IP, and it is `None`.
fn is_headless(spec: &ServiceSpec) -> bool {
    matches!(list(&spec.cluster_ips), [only] if only == CLUSTER_IP_NONE)
}

/// `ExternallyAccessible`: reachable from outside the cluster through node ports, a load balancer or
/// external IPs.
fn externally_accessible(spec: &ServiceSpec) -> bool {
    match svc_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !list(&spec.external_ips).is_empty(),
        _ => false,
    }
}

/// `NeedsHealthCheck`: a `LoadBalancer` with `externalTrafficPolicy: Local`.
fn needs_health_check(spec: &ServiceSpec) -> bool {
    svc_type(spec) == "LoadBalancer" && s(&spec.external_traffic_policy) == "Local"
}

fn spec_of(svc: &Service) -> std::borrow::Cow<'_, ServiceSpec> {
    match &svc.spec {
        Some(spec) => std::borrow::Cow::Borrowed(spec),
        None => std::borrow::Cow::Owned(ServiceSpec::default()),
    }
}
