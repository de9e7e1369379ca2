//! The pure half of the EndpointSlice mirroring controller (kube's
//! `pkg/controller/endpointslicemirroring`): the user-written core/v1 Endpoints of a Service without
//! a selector become EndpointSlices managed by [`MIRROR_CONTROLLER_NAME`], one slice per repacked
//! subset and address family, at most `max_per_subset` addresses each, owned by the Endpoints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::endpoints::{ANNOTATION_LEADER, repack};
use super::reconciler::{
    ANNOTATION_TRIGGER_TIME, EndpointKey, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, Plan, PortKey,
    controller_ref, endpoint_key, endpoints_equal_beyond_key, port_key, slice_prefix,
};

/// The managed-by value of mirrored slices.
pub const MIRROR_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` are not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// kubectl's last-applied annotation, which is not copied to the slices.
const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// kube's `shouldMirror`: not labelled skip-mirror and not a leader-election lock.
pub fn should_mirror(ep: &Endpoints) -> bool {
    let skip = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    let leader = ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_LEADER));
    !skip && !leader
}

fn address_type(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some("IPv4"),
        std::net::IpAddr::V6(_) => Some("IPv6"),
    }
}

fn address_to_endpoint(a: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![a.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        target_ref: a.target_ref.clone(),
        node_name: a.node_name.clone(),
        hostname: a.hostname.clone().filter(|h| !h.is_empty()),
        ..Endpoint::default()
    }
}

/// The slice annotations: the Endpoints' own minus the trigger time and kubectl's last-applied.
fn mirrored_annotations(ep: &Endpoints) -> BTreeMap<String, String> {
    ep.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != ANNOTATION_TRIGGER_TIME && k.as_str() != ANNOTATION_LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn new_slice(ep: &Endpoints, ports: &[EndpointPort], addr_type: &str, name: Option<String>) -> EndpointSlice {
    let mut labels: BTreeMap<String, String> = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        ep.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MIRROR_CONTROLLER_NAME.into());
    let ann = mirrored_annotations(ep);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name
                .is_none()
                .then(|| slice_prefix(ep.metadata.name.as_deref().unwrap_or(""))),
            name,
            namespace: ep.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!ann.is_empty()).then_some(ann),
            owner_references: Some(vec![controller_ref("v1", "Endpoints", &ep.metadata)]),
            ..ObjectMeta::default()
        },
        address_type: addr_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

type Desired = BTreeMap<(String, PortKey), (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)>;

/// The slice writes that mirror `ep` (kube's mirroring `reconciler.reconcile`). Also returns how many
/// addresses were skipped: invalid IPs, and those beyond `max_per_subset` in one subset.
pub fn reconcile(ep: &Endpoints, existing: &[EndpointSlice], max_per_subset: usize) -> (Plan, usize, usize) {
    let mut desired: Desired = BTreeMap::new();
    let mut invalid = 0;
    let mut skipped = 0;
    for ss in repack(ep.subsets.as_deref().unwrap_or(&[])) {
        let ports: Vec<EndpointPort> = ss
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let pk = port_key(&ports);
        let total =
            ss.addresses.as_ref().map_or(0, Vec::len) + ss.not_ready_addresses.as_ref().map_or(0, Vec::len);
        let mut added = 0;
        let all = ss
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(ss.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in all {
            if added >= max_per_subset {
                break;
            }
            let Some(t) = address_type(&a.ip) else {
                invalid += 1;
                continue;
            };
            let e = address_to_endpoint(a, ready);
            desired
                .entry((t.to_owned(), pk.clone()))
                .or_insert_with(|| (ports.clone(), BTreeMap::new()))
                .1
                .insert(endpoint_key(&e), e);
            added += 1;
        }
        skipped += total - added;
    }

    let mut existing_by_key: BTreeMap<(String, PortKey), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        existing_by_key
            .entry((
                s.address_type.clone(),
                port_key(s.ports.as_deref().unwrap_or(&[])),
            ))
            .or_default()
            .push(s);
    }

    let mut plan = Plan::default();
    for (key, (ports, set)) in &desired {
        let slices = existing_by_key.get(key).cloned().unwrap_or_default();
        by_port_mapping(ep, &slices, set, ports, &key.0, max_per_subset, &mut plan);
    }
    for (key, slices) in &existing_by_key {
        if !desired.contains_key(key) {
            plan.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    // Reuse slices about to be deleted for the creates of the same address type.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let pos = plan
            .create
            .iter()
            .position(|c| c.address_type == plan.delete[i].address_type);
        match pos {
            Some(p) => {
                let victim = plan.delete.remove(i);
                let mut s = plan.create.remove(p);
                s.metadata.name = victim.metadata.name;
                s.metadata.generate_name = None;
                s.metadata.resource_version = victim.metadata.resource_version;
                plan.update.push(s);
            }
            None => i += 1,
        }
    }
    (plan, invalid, skipped.saturating_sub(invalid))
}

fn by_port_mapping(
    ep: &Endpoints,
    existing: &[&EndpointSlice],
    desired: &BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    addr_type: &str,
    max: usize,
    plan: &mut Plan,
) {
    if let Some(first) = existing.first() {
        plan.delete.extend(existing[1..].iter().map(|s| (*s).clone()));
        let mut compare_labels = first.metadata.labels.clone().unwrap_or_default();
        compare_labels.remove(LABEL_MANAGED_BY);
        compare_labels.remove(LABEL_SERVICE_NAME);
        let (mut added, mut updated, mut removed) = (0, 0, 0);
        let mut seen = 0;
        for e in &first.endpoints {
            match desired.get(&endpoint_key(e)) {
                Some(want) => {
                    seen += 1;
                    if !endpoints_equal_beyond_key(want, e) {
                        updated += 1;
                    }
                }
                None => removed += 1,
            }
        }
        added += desired.len() - seen;
        plan.added += added;
        plan.removed += removed;
        if added == 0
            && updated == 0
            && removed == 0
            && ep.metadata.labels.clone().unwrap_or_default() == compare_labels
            && mirrored_annotations(ep) == first.metadata.annotations.clone().unwrap_or_default()
        {
            return;
        }
    } else {
        plan.added += desired.len();
    }
    let name = existing.first().and_then(|s| s.metadata.name.clone());
    let mut slice = new_slice(ep, ports, addr_type, name);
    slice.endpoints = desired.values().take(max.max(1)).cloned().collect();
    match existing.first() {
        Some(first) => {
            slice.metadata.resource_version = first.metadata.resource_version.clone();
            plan.update.push(slice);
        }
        None => plan.create.push(slice),
    }
}
