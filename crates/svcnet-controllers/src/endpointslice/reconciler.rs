//! The pure half of the EndpointSlice controller: from a Service, the pods it selects and the nodes'
//! zones, the endpoints it should have; and from those and the existing slices, the smallest set of
//! slice creates, updates and deletes, packed as kube's `k8s.io/endpointslice` reconciler packs them.
//!
//! Nothing here does I/O, so every rule is unit tested. The order of operations follows kube's
//! `reconcileByAddressType` / `reconcileByPortMapping` / `finalize` step by step, because the packing
//! (which slice an endpoint lands in, which slice is recycled) is observable and clients such as
//! kube-proxy count on its churn properties.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::topology::{HINTS_DISABLED, HintEvent, REASON_DISABLED, SliceInfo, ZoneRatios, hints_enabled};

/// `kubernetes.io/service-name`: the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`: the controller that owns an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// `service.kubernetes.io/headless`: set (empty) on slices and Endpoints of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The managed-by value of this controller's slices (kube's own name, so tools recognise them).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `endpoints.kubernetes.io/last-change-trigger-time`: when the change that led to a write happened.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The node label whose value becomes `endpoints[].zone`.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// The zone label of every node the informer knows; a node missing from the map does not exist.
pub type NodeZones = HashMap<String, Option<String>>;

/// The writes one reconcile needs. Empty when the slices already match.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New slices (with `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Changed slices, each carrying the resourceVersion it was computed from.
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
    /// Endpoints added across all slices (for the per-sync metric).
    pub added: usize,
    /// Endpoints removed across all slices.
    pub removed: usize,
    /// Pods left out because their node does not exist (the sync is retried later, as kube does).
    pub missing_nodes: Vec<String>,
    /// Whether the Service's endpoints now carry `topology-mode: Auto` hints.
    pub auto_hints: bool,
    /// Events about the hints to record on the Service.
    pub events: Vec<HintEvent>,
}

impl Plan {
    /// Whether nothing has to be written.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When the pod's readiness last changed: kube's "trigger time" of a pod.
pub fn pod_trigger_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let t = ready_condition(pod)?.last_transition_time.as_ref()?;
    Some(t.0)
}

/// kube's `ShouldPodBeInEndpoints`: not terminal (Succeeded/Failed), has an IP, and is not
/// terminating unless `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPs: `status.podIPs`, else `status.podIP`.
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let list: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !list.is_empty() {
        return list;
    }
    status
        .pod_ip
        .iter()
        .filter(|ip| !ip.is_empty())
        .cloned()
        .collect()
}

/// kube's `ShouldSetHostname`: the pod names a hostname and its subdomain is this Service.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("");
    !hostname.is_empty()
        && Some(subdomain) == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace
}

fn protocol_or_tcp(p: Option<&str>) -> &str {
    match p {
        Some(p) if !p.is_empty() => p,
        _ => "TCP",
    }
}

/// kube's `FindPort`: a numeric `targetPort` as is; a named one looked up (name and protocol) in the
/// pod's containers, then in its restartable init (sidecar) containers. `None`: the pod lacks it.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
    match target {
        IntOrString::Int(n) => Some(n),
        IntOrString::String(name) => {
            let proto = protocol_or_tcp(port.protocol.as_deref());
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && protocol_or_tcp(p.protocol.as_deref()) == proto
                })
                .map(|p| p.container_port)
        }
    }
}

fn cluster_ip(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("")
}

/// Whether the Service has a cluster IP (not headless, not ExternalName).
pub fn service_ip_set(svc: &Service) -> bool {
    let ip = cluster_ip(svc);
    !ip.is_empty() && ip != "None"
}

/// kube's `getAddressTypesForService`: one address type per `spec.ipFamilies`; without families the
/// family of the cluster IP; a headless Service without families gets both.
pub fn address_types(svc: &Service) -> Vec<&'static str> {
    let mut out = Vec::new();
    for fam in svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
    {
        let t = match fam.as_str() {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if !out.is_empty() {
        return out;
    }
    if service_ip_set(svc) {
        return vec![if is_ipv6(cluster_ip(svc)) { "IPv6" } else { "IPv4" }];
    }
    vec!["IPv4", "IPv6"]
}

/// Whether `ip` parses as an IPv6 address.
pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The slice ports of one pod: one per Service port whose target the pod has (kube's
/// `getEndpointPorts`). A headless Service without ports yields none.
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let n = find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(protocol_or_tcp(sp.protocol.as_deref()).to_owned()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pod's addresses of one family, re-formatted canonically (kube's `getEndpointAddresses`).
fn endpoint_addresses(pod: &Pod, address_type: &str) -> Vec<String> {
    pod_ips(pod)
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| ip.is_ipv6() == (address_type == "IPv6"))
        .map(|ip| ip.to_string())
        .collect()
}

/// kube's `podToEndpoint`. `serving` is readiness alone; `ready` additionally needs the pod not to be
/// terminating, unless `publishNotReadyAddresses` makes every endpoint ready.
pub fn pod_to_endpoint(pod: &Pod, zone: Option<&str>, svc: &Service, address_type: &str) -> Endpoint {
    let publish = publish_not_ready(svc);
    let serving = pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish || (serving && !terminating);
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    Endpoint {
        addresses: endpoint_addresses(pod, address_type),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: should_set_hostname(pod, svc)
            .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
            .flatten(),
        node_name: node,
        hints: zone_hints(svc, zone),
        zone: zone.filter(|z| !z.is_empty()).map(str::to_owned),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

/// The hints kube's EndpointSlice controller gives an endpoint in `zone`: with `spec.trafficDistribution:
/// PreferClose`, one for its own zone (kube's `preferCloseHeuristic`; an endpoint without a zone gets
/// none); otherwise none. Under the `topology-mode: Auto` annotation, which takes precedence, the hints
/// are handed out by each zone's share of CPU once the slices are packed ([`super::topology`]).
pub fn zone_hints(svc: &Service, zone: Option<&str>) -> Option<EndpointHints> {
    let auto = hints_enabled(svc.metadata.annotations.as_ref());
    let prefer_close =
        svc.spec.as_ref().and_then(|s| s.traffic_distribution.as_deref()) == Some("PreferClose");
    let zone = zone.filter(|z| !z.is_empty())?;
    (prefer_close && !auto).then(|| EndpointHints {
        for_zones: Some(vec![ForZone {
            name: zone.to_owned(),
        }]),
        ..EndpointHints::default()
    })
}

/// `spec.publishNotReadyAddresses`.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Identity of an endpoint across syncs (kube's endpoint hash): sorted addresses, hostname and the
/// target's namespace/name. Everything else about it is state that may change in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

/// The [`EndpointKey`] of an endpoint.
pub fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let tr = ep.target_ref.as_ref();
    EndpointKey {
        addresses,
        hostname: ep.hostname.clone().unwrap_or_default(),
        namespace: tr.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        name: tr.and_then(|t| t.name.clone()).unwrap_or_default(),
    }
}

/// kube's `EndpointsEqualBeyondHash`: the parts of two endpoints with the same key that may differ.
pub fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let cond = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| e.target_ref.as_ref().map(|t| (t.kind.clone(), t.uid.clone()));
    let mut aa = a.addresses.clone();
    let mut ba = b.addresses.clone();
    aa.sort();
    ba.sort();
    aa == ba
        && cond(a) == cond(b)
        && a.node_name == b.node_name
        && a.zone == b.zone
        && a.hints == b.hints
        && target(a) == target(b)
}

/// A slice's port set in canonical form, the key slices are grouped on (kube's `PortMapKey`): an
/// empty name and a missing name are the same, as are a missing protocol and TCP.
pub type PortKey = Vec<(String, i32, String, Option<String>)>;

/// The [`PortKey`] of a port list.
pub fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut k: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                protocol_or_tcp(p.protocol.as_deref()).to_owned(),
                p.app_protocol.clone(),
            )
        })
        .collect();
    k.sort();
    k
}

/// Endpoints wanted for one port set, by key (ordered, so packing is deterministic).
type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

/// Whether the slice has an ownerReference to this Service (by UID), kube's `ownedBy`.
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or("");
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// The labels a slice of `svc` carries: the Service's own (minus the reserved keys), the headless
/// marker, service-name and managed-by; and whether the non-reserved ones differ from `current`.
pub fn slice_labels(
    current: Option<&BTreeMap<String, String>>,
    svc: &Service,
    managed_by: &str,
) -> (BTreeMap<String, String>, bool) {
    let reserved = |k: &str| k == LABEL_SERVICE_NAME || k == LABEL_MANAGED_BY || k == LABEL_HEADLESS;
    let ep: BTreeMap<String, String> = current
        .into_iter()
        .flatten()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = ep != labels;
    if !service_ip_set(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), managed_by.into());
    (labels, changed)
}

/// `<name>-`, or the bare name when the dash would make it too long for a generated name.
pub fn slice_prefix(name: &str) -> String {
    if name.len() < 253 {
        format!("{name}-")
    } else {
        name.to_owned()
    }
}

/// The controller ownerReference to `svc` (kube's `NewControllerRef`).
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// kube's `newEndpointSlice`: an empty slice of `svc` for one port set and address type.
pub fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let (labels, _) = slice_labels(None, svc, CONTROLLER_NAME);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(slice_prefix(svc.metadata.name.as_deref().unwrap_or(""))),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref("v1", "Service", &svc.metadata)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// Everything [`reconcile`] needs besides the Service.
pub struct Inputs<'a> {
    /// Pods the Service's selector matches (in its namespace).
    pub pods: &'a [&'a Pod],
    /// Zones of the known nodes.
    pub nodes: &'a NodeZones,
    /// This controller's slices of the Service (label service-name, managed-by us).
    pub existing: &'a [EndpointSlice],
    /// `--max-endpoints-per-slice`.
    pub max_endpoints: usize,
    /// The change that triggered this sync, for the trigger-time annotation.
    pub trigger_time: Option<jiff::Timestamp>,
    /// Each zone's share of the nodes' CPU (`None`: not enough node information), for
    /// `topology-mode: Auto`.
    pub zone_ratios: Option<&'a ZoneRatios>,
    /// Whether the last sync left `topology-mode: Auto` hints on the Service's endpoints.
    pub had_auto_hints: bool,
}

/// The slice writes that make `existing` represent the Service's pods (kube's `Reconciler.Reconcile`).
pub fn reconcile(svc: &Service, inp: &Inputs<'_>) -> Plan {
    let types = address_types(svc);
    let mut plan = Plan::default();
    let mut by_type: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for s in inp.existing {
        if types.contains(&s.address_type.as_str()) {
            by_type.entry(s.address_type.as_str()).or_default().push(s);
        } else {
            unsupported.push(s.clone());
        }
    }
    for t in &types {
        let existing = by_type.remove(t).unwrap_or_default();
        reconcile_by_address_type(svc, inp, &existing, t, &mut plan);
    }
    plan.delete.extend(unsupported);
    plan.missing_nodes.sort();
    plan.missing_nodes.dedup();
    plan
}

fn reconcile_by_address_type(
    svc: &Service,
    inp: &Inputs<'_>,
    existing: &[&EndpointSlice],
    address_type: &str,
    plan: &mut Plan,
) {
    let mut to_create = Vec::new();
    let mut to_update = Vec::new();
    let mut to_delete: Vec<EndpointSlice> = Vec::new();

    let mut unchanged = Vec::new();
    let auto = hints_enabled(svc.metadata.annotations.as_ref());
    let mut existing_by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if owned_by(s, svc) {
            existing_by_ports
                .entry(port_key(s.ports.as_deref().unwrap_or(&[])))
                .or_default()
                .push(s);
        } else {
            // A slice of an older Service with the same name, waiting for the garbage collector.
            to_delete.push((*s).clone());
        }
    }

    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    let publish = publish_not_ready(svc);
    for pod in inp.pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(svc, pod);
        let key = port_key(&ports);
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        let zone = match inp.nodes.get(node_name) {
            Some(z) => z.as_deref(),
            None => {
                // kube leaves such a pod out (and retries) unless the user asked for every address.
                if !publish {
                    plan.missing_nodes.push(node_name.to_owned());
                    continue;
                }
                None
            }
        };
        let entry = desired.entry(key).or_insert_with(|| (ports, EndpointSet::new()));
        let ep = pod_to_endpoint(pod, zone, svc, address_type);
        if !ep.addresses.is_empty() {
            entry.1.insert(endpoint_key(&ep), ep);
        }
    }

    for (key, (ports, set)) in desired.iter() {
        let slices = existing_by_ports.get(key).cloned().unwrap_or_default();
        let r = reconcile_by_port_mapping(
            svc,
            &slices,
            set.clone(),
            ports,
            address_type,
            inp.max_endpoints,
            auto,
        );
        let (c, u, d, same, added, removed) = r;
        to_create.extend(c);
        to_update.extend(u);
        to_delete.extend(d);
        unchanged.extend(same);
        plan.added += added;
        plan.removed += removed;
    }
    for (key, slices) in &existing_by_ports {
        if !desired.contains_key(key) {
            for s in slices {
                plan.removed += s.endpoints.len();
                to_delete.push((*s).clone());
            }
        }
    }

    // A Service without endpoints still gets one empty slice per family, so clients can tell
    // "no endpoints" from "not processed yet".
    if existing.len() == to_delete.len() && to_create.is_empty() {
        let placeholder = new_slice(svc, Vec::new(), address_type);
        if to_delete.len() == 1 && is_same_placeholder(&to_delete[0], &placeholder) {
            to_delete.clear();
        } else {
            to_create.push(placeholder);
        }
    }

    // `topology-mode: Auto` hints need the whole picture, so they are given once the slices are packed.
    let mut info = SliceInfo {
        address_type,
        create: &mut to_create,
        update: &mut to_update,
        unchanged,
    };
    if auto {
        let (populated, events) = info.add_hints(inp.zone_ratios, inp.had_auto_hints);
        plan.auto_hints |= populated;
        plan.events.extend(events);
    } else if inp.had_auto_hints {
        // The endpoints' own hints (none, or PreferClose's) already replace the old ones.
        plan.events.push(HintEvent {
            type_: "Warning",
            reason: REASON_DISABLED,
            message: format!("{HINTS_DISABLED}, addressType: {address_type}"),
        });
    }

    // Recycle slices about to be deleted for the creates (fewer objects churned), newest create first.
    let mut i = 0;
    while i < to_delete.len() && !to_create.is_empty() {
        let victim = &to_delete[i];
        if victim.address_type == address_type && owned_by(victim, svc) {
            let mut slice = to_create.pop().expect("non-empty");
            slice.metadata.name = victim.metadata.name.clone();
            slice.metadata.generate_name = None;
            slice.metadata.resource_version = victim.metadata.resource_version.clone();
            slice.metadata.annotations = victim.metadata.annotations.clone();
            to_update.push(slice);
            to_delete.remove(i);
        } else {
            i += 1;
        }
    }

    for s in to_create.iter_mut().chain(to_update.iter_mut()) {
        set_trigger_time(s, inp.trigger_time);
    }
    plan.create.extend(to_create);
    plan.update.extend(to_update);
    plan.delete.extend(to_delete);
}

/// kube's `placeholderSliceCompare`: same namespace, labels and ownerReferences, no endpoints.
fn is_same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    existing.endpoints.is_empty()
        && existing.ports.as_deref().unwrap_or(&[]).is_empty()
        && existing.metadata.namespace == placeholder.metadata.namespace
        && existing.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && existing.metadata.owner_references == placeholder.metadata.owner_references
}

fn set_trigger_time(slice: &mut EndpointSlice, t: Option<jiff::Timestamp>) {
    let ann = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match t {
        Some(t) => {
            ann.insert(ANNOTATION_TRIGGER_TIME.into(), format_time(t));
        }
        None => {
            ann.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    if ann.is_empty() {
        slice.metadata.annotations = None;
    }
}

/// RFC 3339 with nanoseconds in UTC, as Go's `time.RFC3339Nano`.
pub fn format_time(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// Slices to create, update and delete, the slices left unchanged, and the endpoints added and removed.
type PortMappingResult = (
    Vec<EndpointSlice>,
    Vec<EndpointSlice>,
    Vec<EndpointSlice>,
    Vec<EndpointSlice>,
    usize,
    usize,
);

/// kube's `reconcileByPortMapping`: keeps endpoints where they are, updates slices whose endpoints
/// changed, fills the slices that are being updated anyway, then puts the rest into the unchanged
/// slice that ends closest to full, or into new slices. Under `auto` hints an endpoint keeps the hints it
/// has: they are given afterwards, over all slices.
fn reconcile_by_port_mapping(
    svc: &Service,
    existing: &[&EndpointSlice],
    mut desired: EndpointSet,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
    auto: bool,
) -> PortMappingResult {
    let max = max.max(1);
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut added = 0;
    let mut removed = 0;

    // 1. Existing slices: drop endpoints no longer desired, refresh the ones that changed.
    for s in existing {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut updated = false;
        for ep in &s.endpoints {
            if let Some(mut want) = desired.remove(&endpoint_key(ep)) {
                if auto {
                    want.hints = ep.hints.clone();
                }
                if !endpoints_equal_beyond_key(&want, ep) {
                    updated = true;
                }
                kept.push(want);
            }
        }
        removed += s.endpoints.len() - kept.len();
        let (labels, labels_changed) = slice_labels(s.metadata.labels.as_ref(), svc, CONTROLLER_NAME);
        if updated || kept.len() != s.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, (*s).clone());
            } else {
                let mut copy = (*s).clone();
                copy.endpoints = kept;
                copy.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, copy);
            }
        } else if labels_changed {
            let mut copy = (*s).clone();
            copy.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, copy);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, (*s).clone());
        }
    }
    added += desired.len();

    // 2. Fill the slices that are written anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut names: Vec<String> = to_update.iter().cloned().collect();
        names.sort_by_key(|n| std::cmp::Reverse(by_name[n].endpoints.len()));
        for n in names {
            let s = by_name.get_mut(&n).expect("known slice");
            while s.endpoints.len() < max {
                let Some((_, ep)) = desired.pop_first() else {
                    break;
                };
                s.endpoints.push(ep);
            }
        }
    }

    // 3. The rest: into the unchanged slice that ends closest to full, else into new slices.
    let mut to_create = Vec::new();
    while !desired.is_empty() {
        let mut target: Option<String> = None;
        if desired.len() < max && !unchanged.is_empty() {
            let mut closest = max;
            for n in &unchanged {
                let room = max as i64 - (desired.len() + by_name[n].endpoints.len()) as i64;
                if room >= 0 && (room as usize) < closest {
                    closest = room as usize;
                    target = Some(n.clone());
                    if closest == 0 {
                        break;
                    }
                }
            }
        }
        let mut slice = match &target {
            Some(n) => by_name.remove(n).expect("known slice"),
            None => new_slice(svc, ports.to_vec(), address_type),
        };
        while slice.endpoints.len() < max {
            let Some((_, ep)) = desired.pop_first() else {
                break;
            };
            slice.endpoints.push(ep);
        }
        match target {
            Some(n) => {
                unchanged.remove(&n);
                to_update.insert(n.clone());
                by_name.insert(n, slice);
            }
            None => to_create.push(slice),
        }
    }

    let updates = to_update.iter().map(|n| by_name[n].clone()).collect();
    let deletes = to_delete.iter().map(|n| by_name[n].clone()).collect();
    let same = unchanged.iter().map(|n| by_name[n].clone()).collect();
    (to_create, updates, deletes, same, added, removed)
}
