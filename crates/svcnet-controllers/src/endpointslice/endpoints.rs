//! The pure half of the legacy core/v1 Endpoints controller (kube's `endpoints_controller.go`): one
//! Endpoints object per selector Service, named like it, with `subsets` repacked as kube's
//! `RepackSubsets` does, truncated to [`MAX_CAPACITY`] addresses (annotated
//! `endpoints.kubernetes.io/over-capacity: truncated`), labelled `endpoints.kubernetes.io/managed-by:
//! endpoint-controller`, and written only when it would change.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::reconciler::{
    ANNOTATION_TRIGGER_TIME, LABEL_HEADLESS, find_port, format_time, is_ipv6, pod_ips, pod_ready,
    publish_not_ready, service_ip_set, should_pod_be_in_endpoints, should_set_hostname,
};

/// The most addresses an Endpoints object holds (kube's `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;
/// `endpoints.kubernetes.io/over-capacity`, set to `truncated` when addresses were dropped.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// `endpoints.kubernetes.io/managed-by`: set to [`CONTROLLER_NAME`] on every Endpoints this controller
/// writes (kube 1.33+), so readers can tell them from user-managed ones.
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// kube's endpoints controller name, the value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpoint-controller";
/// Endpoints carrying this annotation are leader-election locks, never touched.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";

/// kube's `podToEndpointAddressForService`: the pod's address of the Service's primary family.
fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = svc.spec.as_ref();
    let v6 = match spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        Some(f) => f == "IPv6",
        None if service_ip_set(svc) => is_ipv6(spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("")),
        // Headless without families: the family of the pod's primary IP.
        None => pod_ips(pod).first().is_some_and(|ip| is_ipv6(ip)),
    };
    let ip = pod_ips(pod).into_iter().find(|ip| is_ipv6(ip) == v6)?;
    Some(EndpointAddress {
        ip,
        node_name: Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        hostname: None,
    })
}

/// The subsets for a Service's selected pods, before truncation (kube's `syncService` loop).
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish = publish_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let headless = !service_ip_set(svc);
    let mut subsets = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(mut addr) = pod_address(svc, pod) else {
            continue;
        };
        if should_set_hostname(pod, svc) {
            addr.hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        }
        let ready = publish || pod_ready(pod);
        let mut add = |port: Option<EndpointPort>| {
            let (a, n) = if ready {
                (Some(vec![addr.clone()]), None)
            } else {
                (None, Some(vec![addr.clone()]))
            };
            subsets.push(EndpointSubset {
                addresses: a,
                not_ready_addresses: n,
                ports: port.map(|p| vec![p]),
            });
        };
        if ports.is_empty() {
            // A headless Service may have no ports: its Endpoints still list the addresses.
            if headless {
                add(None);
            }
            continue;
        }
        for sp in &ports {
            let Some(n) = find_port(pod, sp) else {
                continue;
            };
            add(Some(EndpointPort {
                name: sp.name.clone().filter(|s| !s.is_empty()),
                port: n,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            }));
        }
    }
    repack(&subsets)
}

type AddrKey = (String, String);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|t| t.uid.clone())
            .unwrap_or_default(),
    )
}

type PortId = (String, i32, String, Option<String>);

/// Addresses by (IP, pod UID).
type AddrSet = BTreeMap<AddrKey, EndpointAddress>;

/// The ports of one address group, with its ready and not-ready addresses.
type GroupValue = (Vec<EndpointPort>, Vec<EndpointAddress>, Vec<EndpointAddress>);

fn port_id(p: &EndpointPort) -> PortId {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

/// kube's `RepackSubsets`: every port maps to the addresses offering it, and ports offered by the same
/// addresses share a subset. Output is sorted (addresses by IP then UID, ports and subsets by value),
/// so equal inputs give equal outputs.
pub fn repack(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    // port -> (ready addresses, not-ready addresses); a ready entry wins over a not-ready one.
    let mut by_port: BTreeMap<PortId, (EndpointPort, AddrSet, AddrSet)> = BTreeMap::new();
    let mut portless: (AddrSet, AddrSet) = Default::default();
    for ss in subsets {
        let ports = ss.ports.clone().unwrap_or_default();
        let put = |ready: &mut BTreeMap<_, _>, not: &mut BTreeMap<_, _>| {
            for a in ss.addresses.iter().flatten() {
                not.remove(&addr_key(a));
                ready.insert(addr_key(a), a.clone());
            }
            for a in ss.not_ready_addresses.iter().flatten() {
                if !ready.contains_key(&addr_key(a)) {
                    not.insert(addr_key(a), a.clone());
                }
            }
        };
        if ports.is_empty() {
            let (r, n) = &mut portless;
            put(r, n);
        }
        for p in ports {
            let e = by_port
                .entry(port_id(&p))
                .or_insert_with(|| (p.clone(), BTreeMap::new(), BTreeMap::new()));
            put(&mut e.1, &mut e.2);
        }
    }
    // (ready keys, not-ready keys) -> ports
    type Group = (BTreeSet<AddrKey>, BTreeSet<AddrKey>);
    let mut groups: BTreeMap<Group, GroupValue> = BTreeMap::new();
    let mut add_group = |port: Option<EndpointPort>,
                         ready: BTreeMap<AddrKey, EndpointAddress>,
                         not: BTreeMap<AddrKey, EndpointAddress>| {
        if ready.is_empty() && not.is_empty() {
            return;
        }
        let key = (ready.keys().cloned().collect(), not.keys().cloned().collect());
        let g = groups.entry(key).or_insert_with(|| {
            (
                Vec::new(),
                ready.into_values().collect(),
                not.into_values().collect(),
            )
        });
        g.0.extend(port);
    };
    for (_, (p, r, n)) in by_port {
        add_group(Some(p), r, n);
    }
    let (r, n) = portless;
    add_group(None, r, n);
    let mut out: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(mut ports, ready, not)| {
            ports.sort_by_key(port_id);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not.is_empty()).then_some(not),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    out.sort_by_key(|s| {
        (
            s.addresses.iter().flatten().map(addr_key).collect::<Vec<_>>(),
            s.not_ready_addresses
                .iter()
                .flatten()
                .map(addr_key)
                .collect::<Vec<_>>(),
            s.ports.iter().flatten().map(port_id).collect::<Vec<_>>(),
        )
    });
    out
}

/// kube's `truncateEndpoints`: at most [`MAX_CAPACITY`] addresses, ready ones first, each subset
/// keeping its proportional share (rounded up). Returns whether anything was dropped.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let total_ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let total_not: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if total_ready + total_not <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, num_total) = if truncate_ready {
        (MAX_CAPACITY, total_ready)
    } else {
        (MAX_CAPACITY - total_ready, total_not)
    };
    let mut can_be_added = max;
    for ss in subsets.iter_mut() {
        let in_subset = if truncate_ready {
            count(&ss.addresses)
        } else {
            count(&ss.not_ready_addresses)
        };
        let share = ((in_subset as f64 / num_total as f64) * max as f64).ceil() as usize;
        let keep = share.min(can_be_added);
        if truncate_ready {
            if let Some(a) = ss.addresses.as_mut() {
                a.truncate(keep);
                can_be_added -= a.len();
            }
            ss.not_ready_addresses = None;
        } else if let Some(a) = ss.not_ready_addresses.as_mut() {
            a.truncate(keep);
            can_be_added -= a.len();
        }
        if ss.addresses.as_ref().is_some_and(Vec::is_empty) {
            ss.addresses = None;
        }
        if ss.not_ready_addresses.as_ref().is_some_and(Vec::is_empty) {
            ss.not_ready_addresses = None;
        }
    }
    true
}

fn norm_subsets(s: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    // Absent and empty lists are the same thing on the wire.
    let norm = |v: &Option<Vec<EndpointAddress>>| v.clone().filter(|v| !v.is_empty());
    s.into_iter()
        .flatten()
        .map(|ss| EndpointSubset {
            addresses: norm(&ss.addresses),
            not_ready_addresses: norm(&ss.not_ready_addresses),
            ports: ss.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

/// The Endpoints object to write for `svc`, or `None` when `current` already says the same (kube
/// compares subsets, labels and the over-capacity annotation; the trigger time alone never causes a
/// write). Unlike kube, the comparison is made after truncation, so a Service with more than
/// [`MAX_CAPACITY`] addresses is not rewritten on every sync.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[&Pod],
    current: Option<&Endpoints>,
    trigger_time: Option<jiff::Timestamp>,
) -> Option<Endpoints> {
    let mut subsets = desired_subsets(svc, pods);
    let truncated = truncate(&mut subsets);
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    if service_ip_set(svc) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if let Some(cur) = current {
        let cur_ann = cur.metadata.annotations.clone().unwrap_or_default();
        if norm_subsets(cur.subsets.as_ref()) == norm_subsets(Some(&subsets))
            && cur.metadata.labels.clone().unwrap_or_default() == labels
            && cur_ann.contains_key(ANNOTATION_OVER_CAPACITY) == truncated
        {
            return None;
        }
    }
    let mut meta = match current {
        Some(cur) => cur.metadata.clone(),
        None => ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
    };
    let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
    match trigger_time {
        Some(t) => {
            ann.insert(ANNOTATION_TRIGGER_TIME.into(), format_time(t));
        }
        None => {
            ann.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    if truncated {
        ann.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        ann.remove(ANNOTATION_OVER_CAPACITY);
    }
    if ann.is_empty() {
        meta.annotations = None;
    }
    meta.labels = Some(labels);
    Some(Endpoints {
        metadata: meta,
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}
