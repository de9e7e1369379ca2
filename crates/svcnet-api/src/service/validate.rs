//! Service validation: `ValidateService`, `ValidateServiceCreate`, `ValidateServiceUpdate` and
//! `ValidateServiceStatusUpdate` from `pkg/apis/core/validation/validation.go`, plus the IP-family errors
//! kube's allocator reports before validation runs.
//!
//! Field paths and messages are kube's, including its quirks (`spec.LoadBalancerSourceRanges` with a capital
//! L, `allocateLoadBalancerNodePorts` without `spec.`, `ipFamilies[0]` errors that print `clusterIPs`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::defaults::init_ip_family_fields;
use super::{
    CLUSTER_IP_NONE, MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS, ServiceValidationConfig, externally_accessible,
    is_headless, list, needs_health_check, s, spec_of, svc_type,
};
use crate::field::{BadValue, FieldError, Path, go_quote};
use crate::validation::{
    go_string_list, is_dns1123_subdomain, is_ipv6_string, is_valid_cidr, is_valid_ip, is_valid_port_name,
    is_valid_port_num, name_is_dns1035_label, parse_ip_sloppy, validate_dns1123_label, validate_labels,
    validate_non_special_ip, validate_object_meta, validate_object_meta_update, validate_qualified_name,
};

const SUPPORTED_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SUPPORTED_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SUPPORTED_AFFINITY: &[&str] = &["ClientIP", "None"];
const SUPPORTED_TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const SUPPORTED_IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const SUPPORTED_IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const SUPPORTED_TRAFFIC_DISTRIBUTION: &[&str] = &["PreferClose"];
const SUPPORTED_LB_IP_MODES: &[&str] = &["Proxy", "VIP"];

const ANNOTATION_TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
const ANNOTATION_LB_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

fn spec_path() -> Path {
    Path::new("spec")
}

/// Renders `[]core.IPFamily` as Go's `%#v` does.
fn go_family_list(v: &Option<Vec<String>>) -> BadValue {
    match v {
        None => BadValue::Raw("[]core.IPFamily(nil)".to_string()),
        Some(items) => {
            let quoted: Vec<String> = items.iter().map(|f| go_quote(f)).collect();
            BadValue::Raw(format!("[]core.IPFamily{{{}}}", quoted.join(", ")))
        }
    }
}

fn opt_str_value(v: &Option<String>) -> BadValue {
    match v {
        Some(v) => BadValue::Str(v.clone()),
        None => BadValue::Null,
    }
}

/// Validates a Service on create, as kube-apiserver does after defaulting and allocation: first the
/// IP-family checks of kube's allocator (when any fail, only those are returned, because kube rejects the
/// request before general validation), then `ValidateServiceCreate`.
pub fn validate_create(svc: &Service, cfg: &ServiceValidationConfig) -> Vec<FieldError> {
    let errs = ip_family_errors(svc, None, cfg);
    if !errs.is_empty() {
        return errs;
    }
    validate_service(svc)
}

/// Validates an update of `old` to `new` (both after [`set_defaults_update`](super::set_defaults_update)):
/// the allocator's IP-family checks first, then `ValidateServiceUpdate` (metadata update rules, cluster IP and
/// IP family immutability with the dual-stack upgrade/downgrade exceptions, `loadBalancerClass`, health-check
/// node port immutability, and everything `ValidateService` checks).
pub fn validate_update(new: &Service, old: &Service, cfg: &ServiceValidationConfig) -> Vec<FieldError> {
    let old_spec = spec_of(old);
    let errs = ip_family_errors(new, Some(&old_spec), cfg);
    if !errs.is_empty() {
        return errs;
    }
    let new_spec = spec_of(new);
    let meta_path = Path::new("metadata");
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata, &meta_path);
    errs.extend(validate_upgrade_downgrade_cluster_ips(&old_spec, &new_spec));
    errs.extend(validate_upgrade_downgrade_ip_families(&old_spec, &new_spec));
    errs.extend(validate_load_balancer_class(Some(&old_spec), &new_spec));
    if needs_health_check(&old_spec)
        && needs_health_check(&new_spec)
        && old_spec.health_check_node_port.unwrap_or(0) != new_spec.health_check_node_port.unwrap_or(0)
    {
        errs.push(FieldError::forbidden(
            spec_path().child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    errs.extend(validate_service(new));
    errs
}

/// `ValidateServiceStatusUpdate`: metadata update rules and the load-balancer status (ingress only for
/// `type: LoadBalancer`, valid IPs with an `ipMode`, hostnames that are DNS names and not IPs).
pub fn validate_status_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let spec = spec_of(new);
    let empty = LoadBalancerStatus::default();
    let lb = new
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .unwrap_or(&empty);
    errs.extend(validate_load_balancer_status(
        lb,
        &Path::new("status").child("loadBalancer"),
        &spec,
    ));
    errs
}

fn validate_load_balancer_status(
    status: &LoadBalancerStatus,
    path: &Path,
    spec: &ServiceSpec,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ingress_path = path.child("ingress");
    let ingress = status.ingress.as_deref().unwrap_or(&[]);
    if svc_type(spec) != "LoadBalancer" && !ingress.is_empty() {
        errs.push(FieldError::forbidden(
            &ingress_path,
            "may only be used when `spec.type` is 'LoadBalancer'",
        ));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let idx = ingress_path.index(i);
        let ip = s(&ing.ip);
        if !ip.is_empty() {
            errs.extend(is_valid_ip(&idx.child("ip"), ip));
        }
        match ing.ip_mode.as_deref() {
            None if !ip.is_empty() => errs.push(FieldError::required(
                idx.child("ipMode"),
                "must be specified when `ip` is set",
            )),
            None => {}
            Some(_) if ip.is_empty() => errs.push(FieldError::forbidden(
                idx.child("ipMode"),
                "may not be specified when `ip` is not set",
            )),
            Some(mode) if !SUPPORTED_LB_IP_MODES.contains(&mode) => errs.push(FieldError::not_supported(
                idx.child("ipMode"),
                mode,
                SUPPORTED_LB_IP_MODES,
            )),
            Some(_) => {}
        }
        let hostname = s(&ing.hostname);
        if !hostname.is_empty() {
            for msg in is_dns1123_subdomain(hostname) {
                errs.push(FieldError::invalid(idx.child("hostname"), hostname, msg));
            }
            if parse_ip_sloppy(hostname).is_some() {
                errs.push(FieldError::invalid(
                    idx.child("hostname"),
                    hostname,
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
    errs
}

/// The errors kube's allocator raises while defaulting IP families (run on a copy so nothing changes).
pub(super) fn ip_family_errors(
    svc: &Service,
    old: Option<&ServiceSpec>,
    cfg: &ServiceValidationConfig,
) -> Vec<FieldError> {
    let mut spec = spec_of(svc).into_owned();
    init_ip_family_fields(&mut spec, old, cfg)
}

/// `ValidateService`: everything about one Service that does not depend on a previous version.
pub(super) fn validate_service(svc: &Service) -> Vec<FieldError> {
    let spec = spec_of(svc);
    let spec = spec.as_ref();
    let meta_path = Path::new("metadata");
    let sp = spec_path();
    let mut errs = validate_object_meta(&svc.metadata, true, name_is_dns1035_label, &meta_path);

    if let Some(annotations) = &svc.metadata.annotations
        && let (Some(hints), Some(mode)) = (
            annotations.get(ANNOTATION_TOPOLOGY_AWARE_HINTS),
            annotations.get(ANNOTATION_TOPOLOGY_MODE),
        )
        && hints != mode
    {
        errs.push(FieldError::invalid(
            meta_path.child("annotations").key(ANNOTATION_TOPOLOGY_MODE),
            mode.as_str(),
            format!("must match annotations[{ANNOTATION_TOPOLOGY_AWARE_HINTS}] when both are specified"),
        ));
    }

    let service_type = svc_type(spec);
    let headless = is_headless(spec);
    let ports: &[ServicePort] = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.push(FieldError::required(sp.child("ports"), ""));
    }

    match service_type {
        "LoadBalancer" if headless => errs.push(FieldError::invalid(
            sp.child("clusterIPs").index(0),
            CLUSTER_IP_NONE,
            "may not be set to 'None' for LoadBalancer services",
        )),
        "NodePort" if headless => errs.push(FieldError::invalid(
            sp.child("clusterIPs").index(0),
            CLUSTER_IP_NONE,
            "may not be set to 'None' for NodePort services",
        )),
        "ExternalName" => {
            if !list(&spec.cluster_ips).is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !list(&spec.ip_families).is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            // A CNAME may carry a trailing dot to mark it fully qualified.
            let external_name = s(&spec.external_name);
            let cname = external_name.strip_suffix('.').unwrap_or(external_name);
            if cname.is_empty() {
                errs.push(FieldError::required(sp.child("externalName"), ""));
            } else {
                for msg in is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(sp.child("externalName"), cname, msg));
                }
            }
        }
        _ => {}
    }

    let ports_path = sp.child("ports");
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut port_names,
            &ports_path.index(i),
        ));
    }

    if let Some(selector) = &spec.selector {
        errs.extend(validate_labels(selector, &sp.child("selector")));
    }

    let affinity = s(&spec.session_affinity);
    if affinity.is_empty() {
        errs.push(FieldError::required(sp.child("sessionAffinity"), ""));
    } else if !SUPPORTED_AFFINITY.contains(&affinity) {
        errs.push(FieldError::not_supported(
            sp.child("sessionAffinity"),
            affinity,
            SUPPORTED_AFFINITY,
        ));
    }
    let affinity_config_path = sp.child("sessionAffinityConfig");
    if affinity == "ClientIP" {
        let when = "when session affinity type is ClientIP";
        match &spec.session_affinity_config {
            None => errs.push(FieldError::required(&affinity_config_path, when)),
            Some(cfg) => match &cfg.client_ip {
                None => errs.push(FieldError::required(affinity_config_path.child("clientIP"), when)),
                Some(client_ip) => {
                    let timeout_path = affinity_config_path.child("clientIP").child("timeoutSeconds");
                    match client_ip.timeout_seconds {
                        None => errs.push(FieldError::required(&timeout_path, when)),
                        Some(t) if t <= 0 || t > MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS => {
                            errs.push(FieldError::invalid(
                                &timeout_path,
                                t,
                                format!(
                                    "must be greater than 0 and less than {MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS}"
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                }
            },
        }
    } else if affinity == "None" && spec.session_affinity_config.is_some() {
        errs.push(FieldError::forbidden(
            &affinity_config_path,
            "must not be set when session affinity is None",
        ));
    }

    errs.extend(validate_cluster_ips_related_fields(spec));

    let ext_ips_path = sp.child("externalIPs");
    for (i, ip) in list(&spec.external_ips).iter().enumerate() {
        let p = ext_ips_path.index(i);
        let ip_errs = is_valid_ip(&p, ip);
        if ip_errs.is_empty() {
            errs.extend(validate_non_special_ip(ip, &p));
        } else {
            errs.extend(ip_errs);
        }
    }

    if service_type.is_empty() {
        errs.push(FieldError::required(sp.child("type"), ""));
    } else if !SUPPORTED_TYPES.contains(&service_type) {
        errs.push(FieldError::not_supported(
            sp.child("type"),
            service_type,
            SUPPORTED_TYPES,
        ));
    }

    if service_type == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if port.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    ports_path.index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    // Node ports must be unique per protocol.
    let mut node_ports: BTreeSet<(&str, i32)> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let np = port.node_port.unwrap_or(0);
        if np == 0 {
            continue;
        }
        if !node_ports.insert((s(&port.protocol), np)) {
            errs.push(FieldError::duplicate(ports_path.index(i).child("nodePort"), np));
        }
    }

    // Ports must be unique per protocol; kube prints the internal ServicePort key it deduplicates on.
    let mut seen_ports: BTreeSet<(&str, i32)> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        if !seen_ports.insert((s(&port.protocol), port.port)) {
            errs.push(FieldError::duplicate(
                ports_path.index(i),
                BadValue::Raw(format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(s(&port.protocol)),
                    port.port
                )),
            ));
        }
    }

    let source_ranges = list(&spec.load_balancer_source_ranges);
    if !source_ranges.is_empty() {
        let p = sp.child("LoadBalancerSourceRanges");
        if service_type != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, value) in source_ranges.iter().enumerate() {
            // Space padding is tolerated for historical reasons (values migrated from the annotation).
            errs.extend(is_valid_cidr(&p.index(i), value.trim()));
        }
    } else if let Some(value) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_LB_SOURCE_RANGES))
    {
        let p = meta_path.child("annotations").key(ANNOTATION_LB_SOURCE_RANGES);
        if service_type != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        let value = value.trim();
        if !value.is_empty() {
            for cidr in value.split(',') {
                errs.extend(is_valid_cidr(&p, cidr.trim()));
            }
        }
    }

    if spec.allocate_load_balancer_node_ports.is_some() && service_type != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if service_type == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        // kube reports this one without the `spec.` prefix.
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    errs.extend(validate_load_balancer_class(None, spec));
    errs.extend(validate_external_traffic_policy(spec));

    let itp_path = sp.child("internalTrafficPolicy");
    match spec.internal_traffic_policy.as_deref() {
        // Not required for ExternalName (or unknown types) because older objects were stored without it.
        None if matches!(service_type, "NodePort" | "LoadBalancer" | "ClusterIP") => {
            errs.push(FieldError::required(&itp_path, ""))
        }
        Some(v) if !SUPPORTED_TRAFFIC_POLICIES.contains(&v) => errs.push(FieldError::not_supported(
            &itp_path,
            v,
            SUPPORTED_TRAFFIC_POLICIES,
        )),
        _ => {}
    }

    if let Some(td) = spec.traffic_distribution.as_deref()
        && !SUPPORTED_TRAFFIC_DISTRIBUTION.contains(&td)
    {
        errs.push(FieldError::not_supported(
            sp.child("trafficDistribution"),
            td,
            SUPPORTED_TRAFFIC_DISTRIBUTION,
        ));
    }
    errs
}

fn validate_service_port<'a>(
    port: &'a ServicePort,
    require_name: bool,
    names: &mut BTreeSet<&'a str>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(&port.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(validate_dns1123_label(name, &path.child("name")));
        if !names.insert(name) {
            errs.push(FieldError::duplicate(path.child("name"), name));
        }
    }
    for msg in is_valid_port_num(port.port.into()) {
        errs.push(FieldError::invalid(path.child("port"), port.port, msg));
    }
    let protocol = s(&port.protocol);
    if protocol.is_empty() {
        errs.push(FieldError::required(path.child("protocol"), ""));
    } else if !SUPPORTED_PROTOCOLS.contains(&protocol) {
        errs.push(FieldError::not_supported(
            path.child("protocol"),
            protocol,
            SUPPORTED_PROTOCOLS,
        ));
    }
    let target_path = path.child("targetPort");
    match &port.target_port {
        // An absent targetPort is Go's zero IntOrString: the number 0.
        None => {
            for msg in is_valid_port_num(0) {
                errs.push(FieldError::invalid(&target_path, 0, msg));
            }
        }
        Some(IntOrString::Int(n)) => {
            for msg in is_valid_port_num((*n).into()) {
                errs.push(FieldError::invalid(&target_path, *n, msg));
            }
        }
        Some(IntOrString::String(name)) => {
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid(&target_path, name.as_str(), msg));
            }
        }
    }
    if let Some(app_protocol) = &port.app_protocol {
        errs.extend(validate_qualified_name(app_protocol, &path.child("appProtocol")));
    }
    errs
}

fn validate_external_traffic_policy(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = spec_path();
    let etp = s(&spec.external_traffic_policy);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(sp.child("externalTrafficPolicy"), ""));
    } else if !SUPPORTED_TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported(
            sp.child("externalTrafficPolicy"),
            etp,
            SUPPORTED_TRAFFIC_POLICIES,
        ));
    }
    let hc = spec.health_check_node_port.unwrap_or(0);
    let hc_path = sp.child("healthCheckNodePort");
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                &hc_path,
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required(&hc_path, ""));
    } else {
        for msg in is_valid_port_num(hc.into()) {
            errs.push(FieldError::invalid(&hc_path, hc, msg));
        }
    }
    errs
}

/// `validateLoadBalancerClassField`: immutable while the Service stays a LoadBalancer, a qualified name,
/// and only allowed on LoadBalancers.
fn validate_load_balancer_class(old: Option<&ServiceSpec>, spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = spec_path().child("loadBalancerClass");
    let is_lb = svc_type(spec) == "LoadBalancer";
    if let Some(old) = old
        && svc_type(old) == "LoadBalancer"
        && is_lb
        && old.load_balancer_class != spec.load_balancer_class
    {
        errs.push(FieldError::invalid(
            &path,
            opt_str_value(&spec.load_balancer_class),
            "may not change once set",
        ));
    }
    match &spec.load_balancer_class {
        Some(class) if is_lb => errs.extend(validate_qualified_name(class, &path)),
        Some(_) => errs.push(FieldError::forbidden(
            &path,
            "may only be used when `type` is 'LoadBalancer'",
        )),
        None => {}
    }
    errs
}

/// `ValidateServiceClusterIPsRelatedFields`: `clusterIP`/`clusterIPs` agreement, IP family and policy
/// values, well-formed cluster IPs (at most one per family), and each IP matching its family.
pub(super) fn validate_cluster_ips_related_fields(spec: &ServiceSpec) -> Vec<FieldError> {
    // All of these must be unset for ExternalName, which ValidateService checks separately.
    if svc_type(spec) == "ExternalName" {
        return Vec::new();
    }
    let mut errs = Vec::new();
    let sp = spec_path();
    let ips_path = sp.child("clusterIPs");
    let fam_path = sp.child("ipFamilies");
    let cluster_ip = s(&spec.cluster_ip);
    let cluster_ips = list(&spec.cluster_ips);
    let ips_value = || go_string_list(spec.cluster_ips.as_deref());

    if !cluster_ip.is_empty() {
        if cluster_ips.is_empty() {
            errs.push(FieldError::required(&ips_path, ""));
        } else if cluster_ips[0] != cluster_ip {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value(),
                "first value must match `clusterIP`",
            ));
        }
    } else if !cluster_ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value(),
            "must be empty when `clusterIP` is not specified",
        ));
    }

    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, fam) in list(&spec.ip_families).iter().enumerate() {
        if !SUPPORTED_IP_FAMILIES.contains(&fam.as_str()) {
            errs.push(FieldError::not_supported(
                fam_path.index(i),
                fam.as_str(),
                SUPPORTED_IP_FAMILIES,
            ));
        }
        if !seen.insert(fam.as_str()) {
            errs.push(FieldError::duplicate(fam_path.index(i), fam.as_str()));
        }
    }

    if let Some(policy) = spec.ip_family_policy.as_deref()
        && !SUPPORTED_IP_FAMILY_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            sp.child("ipFamilyPolicy"),
            policy,
            SUPPORTED_IP_FAMILY_POLICIES,
        ));
    }

    let mut has_invalid_ips = false;
    for (i, ip) in cluster_ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if cluster_ips.len() > 1 {
                has_invalid_ips = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = is_valid_ip(&ips_path.index(i), ip);
        has_invalid_ips |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }
    if cluster_ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value(),
            "may only hold up to 2 values",
        ));
    }
    // Further checks would only repeat the problem in confusing ways.
    if has_invalid_ips {
        return errs;
    }

    if cluster_ips.len() > 1 {
        let has_v6 = cluster_ips.iter().any(|ip| is_ipv6_string(ip));
        let has_v4 = cluster_ips.iter().any(|ip| !is_ipv6_string(ip));
        if !(has_v4 && has_v6) {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }

    let families = list(&spec.ip_families);
    if !is_headless(spec) && !cluster_ips.is_empty() && !families.is_empty() {
        for (i, ip) in cluster_ips.iter().enumerate().take(families.len()) {
            if families[i] == "IPv4" && is_ipv6_string(ip) {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if families[i] == "IPv6" && !is_ipv6_string(ip) {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// `validateUpgradeDowngradeClusterIPs`: the primary cluster IP never changes; the secondary may be added,
/// or removed together with `ipFamilyPolicy: SingleStack`.
fn validate_upgrade_downgrade_cluster_ips(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName" {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let (old_ips, new_ips) = (list(&old.cluster_ips), list(&new.cluster_ips));
    let ips_path = spec_path().child("clusterIPs");
    let value = || go_string_list(new.cluster_ips.as_deref());
    if old_ips.len() == new_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if *ip != new_ips[i] {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    value(),
                    "may not change once set",
                ));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.push(FieldError::invalid(
                ips_path.index(0),
                value(),
                "primary clusterIP can not be unset",
            ));
        }
        if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(FieldError::invalid(
                ips_path.index(0),
                value(),
                "may not change once set",
            ));
        }
        if new_ips.len() == 1 && new.ip_family_policy.as_deref() != Some("SingleStack") {
            errs.push(FieldError::invalid(
                spec_path().child("ipFamilyPolicy"),
                opt_str_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(FieldError::invalid(
            ips_path.index(0),
            value(),
            "may not change once set",
        ));
    }
    errs
}

/// `validateUpgradeDowngradeIPFamilies`: the primary family never changes (headless Services excepted);
/// the secondary may be added, or removed together with `ipFamilyPolicy: SingleStack`.
fn validate_upgrade_downgrade_ip_families(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName" {
        return errs;
    }
    if is_headless(old) || is_headless(new) {
        return errs;
    }
    let (old_f, new_f) = (list(&old.ip_families), list(&new.ip_families));
    let fam0 = spec_path().child("ipFamilies").index(0);
    // kube prints the families for the first check but the cluster IPs for the others.
    let ips_value = || go_string_list(new.cluster_ips.as_deref());
    if old_f.len() == new_f.len() {
        for (i, f) in old_f.iter().enumerate() {
            if *f != new_f[i] {
                errs.push(FieldError::invalid(
                    &fam0,
                    go_family_list(&new.ip_families),
                    "may not change once set",
                ));
            }
        }
    } else if old_f.len() > new_f.len() {
        if list(&new.cluster_ips).is_empty() {
            errs.push(FieldError::invalid(
                &fam0,
                go_family_list(&new.ip_families),
                "primary ipFamily can not be unset",
            ));
        }
        if !new_f.is_empty() && new_f[0] != old_f[0] {
            errs.push(FieldError::invalid(&fam0, ips_value(), "may not change once set"));
        }
        if new_f.len() == 1 && new.ip_family_policy.as_deref() != Some("SingleStack") {
            errs.push(FieldError::invalid(
                spec_path().child("ipFamilyPolicy"),
                opt_str_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if !old_f.is_empty() && !new_f.is_empty() && new_f[0] != old_f[0] {
        errs.push(FieldError::invalid(&fam0, ips_value(), "may not change once set"));
    }
    errs
}
