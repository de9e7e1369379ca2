//! Service defaulting: scheme defaults (`SetDefaults_Service`), the REST storage's pre-validation fix-ups
//! (`patchAllocatedValues`, `normalizeClusterIPs`, IP-family defaulting from `alloc.go`) and the strategy's
//! `PrepareForCreate`/`PrepareForUpdate` (status handling, `dropTypeDependentFields`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::validate_cluster_ips_related_fields;
use super::{
    CLUSTER_IP_NONE, DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS, IpFamily, ServiceConfig,
    ServiceDefaultsConfig, externally_accessible, list, s, spec_of, svc_type,
};
use crate::field::{BadValue, FieldError, Path};
use crate::validation::{go_string_list, parse_ip_sloppy};

/// kube's scheme defaulting for a decoded Service (`SetDefaults_Service` in `pkg/apis/core/v1/defaults.go`):
/// `type: ClusterIP`, `sessionAffinity: None` (and no `sessionAffinityConfig` with it), a 10800 s ClientIP
/// timeout, `protocol: TCP` and `targetPort` = `port` per port, `externalTrafficPolicy: Cluster` for
/// externally-accessible Services, `internalTrafficPolicy: Cluster` for all but ExternalName,
/// `allocateLoadBalancerNodePorts: true` for LoadBalancers, and `ipMode: VIP` on load-balancer ingress IPs.
pub fn set_object_defaults(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    if s(&spec.session_affinity).is_empty() {
        spec.session_affinity = Some("None".to_string());
    }
    match s(&spec.session_affinity) {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    if svc_type(spec).is_empty() {
        spec.type_ = Some("ClusterIP".to_string());
    }
    for port in spec.ports.iter_mut().flatten() {
        default_port(port);
    }
    if externally_accessible(spec) && s(&spec.external_traffic_policy).is_empty() {
        spec.external_traffic_policy = Some("Cluster".to_string());
    }
    let service_type = svc_type(spec).to_string();
    if spec.internal_traffic_policy.is_none()
        && matches!(service_type.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if service_type == "LoadBalancer" {
        if spec.allocate_load_balancer_node_ports.is_none() {
            spec.allocate_load_balancer_node_ports = Some(true);
        }
        let ingress = svc
            .status
            .as_mut()
            .and_then(|st| st.load_balancer.as_mut())
            .and_then(|lb| lb.ingress.as_mut());
        for ing in ingress.into_iter().flatten() {
            if !s(&ing.ip).is_empty() && ing.ip_mode.is_none() {
                ing.ip_mode = Some("VIP".to_string());
            }
        }
    }
}

fn default_port(port: &mut ServicePort) {
    if s(&port.protocol).is_empty() {
        port.protocol = Some("TCP".to_string());
    }
    let unset = match &port.target_port {
        None => true,
        Some(IntOrString::Int(0)) => true,
        Some(IntOrString::String(v)) => v.is_empty(),
        Some(IntOrString::Int(_)) => false,
    };
    if unset {
        port.target_port = Some(IntOrString::Int(port.port));
    }
}

/// The status a freshly created Service has (`status: {loadBalancer: {}}`).
fn empty_status() -> ServiceStatus {
    ServiceStatus {
        conditions: None,
        load_balancer: Some(LoadBalancerStatus::default()),
    }
}

/// Everything kube-apiserver does to a Service on create before validating it, except allocating cluster
/// IPs and node ports: scheme defaults ([`set_object_defaults`]), `clusterIPs` initialised from a lone
/// `clusterIP`, IP-family defaulting (`ipFamilyPolicy` SingleStack — RequireDualStack for headless
/// selector-less Services — and `ipFamilies` inferred from the cluster IPs or the cluster's families), and
/// a reset status.
///
/// IP-family defaulting is skipped when it would fail (e.g. `RequireDualStack` on a single-stack cluster);
/// [`validate_create`](super::validate_create) reports those errors.
pub fn set_defaults(svc: &mut Service, cfg: &ServiceDefaultsConfig) {
    set_object_defaults(svc);
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    normalize_cluster_ips(spec, None);
    let mut candidate = spec.clone();
    if init_ip_family_fields(&mut candidate, None, cfg).is_empty() {
        *spec = candidate;
    }
    svc.status = Some(empty_status());
}

/// Everything kube-apiserver does to an updated Service before validating it (`new` is the request body,
/// `old` the stored object): scheme defaults, re-filling allocated values the client omitted (cluster IPs,
/// node ports, health-check node port), `clusterIP`/`clusterIPs` syncing, IP-family defaulting (keeping
/// the old policy when none is given, trimming to single-stack when asked), the stored status, and
/// dropping fields the new type does not use when the client left them unchanged (e.g. NodePort→ClusterIP
/// clears node ports; →ExternalName clears cluster IPs, families and policy; leaving LoadBalancer clears
/// `allocateLoadBalancerNodePorts`, `loadBalancerClass` and the load-balancer status).
pub fn set_defaults_update(new: &mut Service, old: &Service, cfg: &ServiceDefaultsConfig) {
    set_object_defaults(new);
    let old_spec = spec_of(old);
    let spec = new.spec.get_or_insert_with(ServiceSpec::default);
    patch_allocated_values(spec, &old_spec);
    normalize_cluster_ips(spec, Some(&old_spec));
    let mut candidate = spec.clone();
    if init_ip_family_fields(&mut candidate, Some(&old_spec), cfg).is_empty() {
        *spec = candidate;
    }
    new.status = old.status.clone();
    drop_type_dependent_fields(new, old);
}

/// What kube does to a `/status` update before validating it: the spec cannot change through the status
/// subresource, so it is taken from the stored object.
pub fn set_status_update_defaults(new: &mut Service, old: &Service) {
    // The stored spec is what the status is validated against, so default the status with it too.
    new.spec = old.spec.clone();
    set_object_defaults(new);
}

/// `normalizeClusterIPs`: keep `clusterIP` and `clusterIPs` in step for clients that only know the
/// singular field.
pub(super) fn normalize_cluster_ips(spec: &mut ServiceSpec, old: Option<&ServiceSpec>) {
    let Some(old) = old else {
        // Create: a lone clusterIP initialises clusterIPs; the reverse is not done because clients that know
        // clusterIPs must send both.
        if !s(&spec.cluster_ip).is_empty() && list(&spec.cluster_ips).is_empty() {
            spec.cluster_ips = Some(vec![s(&spec.cluster_ip).to_string()]);
        }
        return;
    };
    // An old client that does not know clusterIPs sent none: keep the stored ones if clusterIP is unchanged.
    if !list(&old.cluster_ips).is_empty()
        && list(&spec.cluster_ips).is_empty()
        && s(&old.cluster_ip) == s(&spec.cluster_ip)
    {
        spec.cluster_ips = old.cluster_ips.clone();
    }
    if s(&old.cluster_ip) != s(&spec.cluster_ip) {
        if !s(&old.cluster_ip).is_empty() && s(&spec.cluster_ip).is_empty() {
            // Clearing clusterIP (e.g. moving to ExternalName) clears the untouched plural too.
            if same_cluster_ips(old, spec) {
                spec.cluster_ips = None;
            }
        } else if same_cluster_ips(old, spec) {
            // Only the singular changed: make the plural follow it (validation rejects the change later).
            spec.cluster_ips = Some(vec![s(&spec.cluster_ip).to_string()]);
        }
    }
}

/// `patchAllocatedValues`: a client re-sending its original YAML (without the allocated cluster IPs and
/// node ports) should not be treated as asking to change them.
fn patch_allocated_values(spec: &mut ServiceSpec, old: &ServiceSpec) {
    if needs_cluster_ip(old) && needs_cluster_ip(spec) {
        if s(&spec.cluster_ip).is_empty() {
            spec.cluster_ip = old.cluster_ip.clone();
        }
        if list(&spec.cluster_ips).is_empty() && !list(&old.cluster_ips).is_empty() {
            spec.cluster_ips = old.cluster_ips.clone();
        }
    }
    if needs_node_port(old) && needs_node_port(spec) {
        let used_in = |sp: &ServiceSpec| -> BTreeSet<i32> {
            sp.ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port.filter(|np| *np != 0))
                .collect()
        };
        // Values both objects use can not be patched into another port.
        let used: BTreeSet<i32> = used_in(old).intersection(&used_in(spec)).copied().collect();
        // Node ports of the old object by port name; a later duplicate name wins, as with Go's map.
        let mut by_name: std::collections::HashMap<String, i32> = std::collections::HashMap::new();
        for p in old.ports.iter().flatten() {
            by_name.insert(s(&p.name).to_string(), p.node_port.unwrap_or(0));
        }
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0 {
                let old_val = by_name.get(s(&p.name)).copied().unwrap_or(0);
                if old_val != 0 && !used.contains(&old_val) {
                    p.node_port = Some(old_val);
                }
            }
        }
    }
    if needs_hc_node_port(old) && needs_hc_node_port(spec) && spec.health_check_node_port.unwrap_or(0) == 0 {
        spec.health_check_node_port = old.health_check_node_port;
    }
}

fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    svc_type(spec) != "ExternalName"
}

fn needs_node_port(spec: &ServiceSpec) -> bool {
    matches!(svc_type(spec), "NodePort" | "LoadBalancer")
}

fn needs_hc_node_port(spec: &ServiceSpec) -> bool {
    svc_type(spec) == "LoadBalancer" && s(&spec.external_traffic_policy) == "Local"
}

/// `sameClusterIPs`: singular and plural both unchanged (an absent list equals an empty one).
pub(super) fn same_cluster_ips(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    s(&old.cluster_ip) == s(&new.cluster_ip) && list(&old.cluster_ips) == list(&new.cluster_ips)
}

/// `sameIPFamilies` compares with `reflect.DeepEqual`, so an absent list differs from an empty one.
fn same_ip_families(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    old.ip_families == new.ip_families
}

fn same_ip_family_policy(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    s(&old.ip_family_policy) == s(&new.ip_family_policy)
}

fn node_port_set(spec: &ServiceSpec) -> BTreeSet<i32> {
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port.filter(|np| *np != 0))
        .collect()
}

fn same_load_balancer_class(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    old.load_balancer_class == new.load_balancer_class
}

/// `dropTypeDependentFields` plus the load-balancer status reset of `PrepareForUpdate`: fields that only
/// make sense for the old type are wiped, but only when the client did not also change them (then
/// validation reports the conflict instead).
fn drop_type_dependent_fields(new: &mut Service, old: &Service) {
    let old_spec = spec_of(old);
    let spec = new.spec.get_or_insert_with(ServiceSpec::default);
    if needs_cluster_ip(&old_spec) && !needs_cluster_ip(spec) {
        if same_cluster_ips(&old_spec, spec) {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
        }
        if same_ip_families(&old_spec, spec) {
            spec.ip_families = None;
        }
        if same_ip_family_policy(&old_spec, spec) {
            spec.ip_family_policy = None;
        }
    }
    // Users may add, remove or change ports as long as no net-new node port appears.
    if needs_node_port(&old_spec)
        && !needs_node_port(spec)
        && node_port_set(&old_spec).is_superset(&node_port_set(spec))
    {
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if needs_hc_node_port(&old_spec)
        && !needs_hc_node_port(spec)
        && old_spec.health_check_node_port.unwrap_or(0) == spec.health_check_node_port.unwrap_or(0)
    {
        spec.health_check_node_port = None;
    }
    if svc_type(&old_spec) == "LoadBalancer"
        && svc_type(spec) != "LoadBalancer"
        && let (Some(o), Some(n)) = (
            old_spec.allocate_load_balancer_node_ports,
            spec.allocate_load_balancer_node_ports,
        )
        && o == n
    {
        spec.allocate_load_balancer_node_ports = None;
    }
    if svc_type(&old_spec) == "LoadBalancer"
        && svc_type(spec) != "LoadBalancer"
        && same_load_balancer_class(&old_spec, spec)
    {
        spec.load_balancer_class = None;
    }
    if externally_accessible(&old_spec)
        && !externally_accessible(spec)
        && s(&old_spec.external_traffic_policy) == s(&spec.external_traffic_policy)
    {
        spec.external_traffic_policy = None;
    }
    if svc_type(spec) != "LoadBalancer" {
        let status = new.status.get_or_insert_with(ServiceStatus::default);
        status.load_balancer = Some(LoadBalancerStatus::default());
    }
}

fn family_of_ip(ip: &str) -> Option<IpFamily> {
    parse_ip_sloppy(ip).map(IpFamily::of)
}

/// `isMatchingPreferDualStackClusterIPFields`: an update of a PreferDualStack Service that touches none of
/// the IP fields keeps them as they are, even if the cluster's dual-stackness changed since.
fn is_matching_prefer_dual_stack(spec: &ServiceSpec, old: Option<&ServiceSpec>) -> bool {
    let Some(old) = old else { return false };
    let Some(policy) = spec.ip_family_policy.as_deref() else {
        return false;
    };
    if svc_type(old) != svc_type(spec) {
        return false;
    }
    if !matches!(svc_type(spec), "ClusterIP" | "NodePort" | "LoadBalancer") {
        return false;
    }
    if policy != "PreferDualStack" {
        return false;
    }
    if old
        .ip_family_policy
        .as_deref()
        .is_some_and(|p| p != "PreferDualStack")
    {
        return false;
    }
    same_cluster_ips(old, spec) && same_ip_families(old, spec)
}

fn reduced_cluster_ips(spec: &ServiceSpec, old: &ServiceSpec) -> bool {
    let new_len = list(&spec.cluster_ips).len();
    new_len != 0 && new_len < list(&old.cluster_ips).len()
}

fn reduced_ip_families(spec: &ServiceSpec, old: &ServiceSpec) -> bool {
    let new_len = list(&spec.ip_families).len();
    new_len != 0 && new_len < list(&old.ip_families).len()
}

fn policy_value(spec: &ServiceSpec) -> BadValue {
    match &spec.ip_family_policy {
        Some(p) => BadValue::Str(p.clone()),
        None => BadValue::Null,
    }
}

/// `initIPFamilyFields` from kube's Service allocator: defaults `ipFamilyPolicy` and `ipFamilies` against
/// the cluster's configured families, returning the errors kube reports at that stage (before general
/// validation). `spec` is modified even when errors are returned; callers that need kube's all-or-nothing
/// behaviour work on a copy.
pub(super) fn init_ip_family_fields(
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    cfg: &ServiceConfig,
) -> Vec<FieldError> {
    if svc_type(spec) == "ExternalName" {
        return Vec::new();
    }
    if is_matching_prefer_dual_stack(spec, old) {
        return Vec::new();
    }
    let selectorless = spec.selector.as_ref().is_none_or(|sel| sel.is_empty());
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = match old.and_then(|o| o.ip_family_policy.clone()) {
            Some(p) => Some(p),
            None if s(&spec.cluster_ip) == CLUSTER_IP_NONE && selectorless => {
                Some("RequireDualStack".to_string())
            }
            None => Some("SingleStack".to_string()),
        };
    }
    // Loose pre-validation so the rest does not have to consider malformed input.
    let errs = validate_cluster_ips_related_fields(spec);
    if !errs.is_empty() {
        return errs;
    }
    let policy = s(&spec.ip_family_policy).to_string();
    let policy_path = Path::new("spec").child("ipFamilyPolicy");
    let mut errs = Vec::new();

    if let Some(old) = old {
        if policy == "SingleStack" {
            // Asking for single-stack without touching the IP fields is clear intent to downgrade.
            if same_cluster_ips(old, spec)
                && let Some(ips) = spec.cluster_ips.as_mut()
            {
                ips.truncate(1);
            }
            if same_ip_families(old, spec)
                && let Some(fams) = spec.ip_families.as_mut()
            {
                fams.truncate(1);
            }
        } else {
            if reduced_cluster_ips(spec, old) {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy_value(spec),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if reduced_ip_families(spec, old) {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy_value(spec),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }

    if policy == "SingleStack" {
        if list(&spec.cluster_ips).len() == 2 {
            errs.push(FieldError::invalid(
                &policy_path,
                policy_value(spec),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if list(&spec.ip_families).len() == 2 {
            errs.push(FieldError::invalid(
                &policy_path,
                policy_value(spec),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }

    // Infer missing families from the given cluster IPs.
    let ips: Vec<String> = list(&spec.cluster_ips).to_vec();
    for (i, ip) in ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        let Some(fam) = family_of_ip(ip) else { continue };
        if i >= list(&spec.ip_families).len() {
            if cfg.is_configured(fam) {
                spec.ip_families
                    .get_or_insert_with(Vec::new)
                    .push(fam.as_str().to_string());
            } else {
                errs.push(FieldError::invalid(
                    Path::new("spec").child("clusterIPs").index(i),
                    go_string_list(spec.cluster_ips.as_deref()),
                    format!("{} is not configured on this cluster", fam.as_str()),
                ));
            }
        }
    }
    if !errs.is_empty() {
        return errs;
    }

    // Headless without selector: allowed to carry both families even on a single-stack cluster.
    if s(&spec.cluster_ip) == CLUSTER_IP_NONE && selectorless {
        let fams = spec.ip_families.get_or_insert_with(Vec::new);
        if fams.is_empty() {
            fams.push(cfg.primary_family.as_str().to_string());
        }
        if fams.len() < 2 && policy != "SingleStack" {
            let other = if fams[0] == "IPv4" { "IPv6" } else { "IPv4" };
            fams.push(other.to_string());
        }
        return Vec::new();
    }

    if policy == "RequireDualStack" && !cfg.is_dual_stack() {
        errs.push(FieldError::invalid(
            &policy_path,
            policy_value(spec),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, fam) in list(&spec.ip_families).iter().enumerate() {
        if !IpFamily::parse(fam).is_some_and(|f| cfg.is_configured(f)) {
            errs.push(FieldError::invalid(
                Path::new("spec").child("ipFamilies").index(i),
                fam.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return errs;
    }

    let fams = spec.ip_families.get_or_insert_with(Vec::new);
    if fams.is_empty() {
        fams.push(cfg.primary_family.as_str().to_string());
    }
    if policy != "SingleStack" && fams.len() == 1 && cfg.is_dual_stack() {
        match fams[0].as_str() {
            "IPv4" => fams.push("IPv6".to_string()),
            "IPv6" => fams.push("IPv4".to_string()),
            _ => {}
        }
    }
    Vec::new()
}
