//! Topology Aware Routing (`service.kubernetes.io/topology-mode: Auto`): the hints kube's EndpointSlice
//! controller gives endpoints in proportion to each zone's share of allocatable CPU, with its safeguards.
//!
//! Kube keeps this in its `topologycache` package; the rules are followed step for step, because the
//! hints are observable (`kubectl get endpointslice -o yaml`) and so are the Events that say why hints
//! were withheld:
//! - zone shares come from Ready nodes that are not control-plane nodes; one node without a zone or
//!   without allocatable CPU, or fewer than two zones, withholds hints for every Service;
//! - a Service needs at least one ready endpoint per zone, and each zone must get its minimum share
//!   (its CPU share less a 20 % overload allowance) without exceeding the total;
//! - every ready endpoint first gets its own zone, then endpoints move from zones that have more than
//!   their share to zones that have less;
//! - hints of slices that are not being written anyway are kept while they stay within each zone's
//!   maximum, so a small change in CPU shares does not rewrite every slice.
//!
//! Unlike kube, the zones are walked in name order (Go iterates maps at random), so the same inputs
//! always give the same hints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, EndpointSlice, ForZone};

use super::reconciler::LABEL_ZONE;

/// The most load any one endpoint should take above its fair share (kube's `overloadThreshold`).
const OVERLOAD_THRESHOLD: f64 = 0.2;

/// The annotation that turns the hints on (`Auto`).
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
/// Its deprecated name, read only when the new one is absent.
pub const ANNOTATION_TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";

/// Event reason when hints are given to a Service's endpoints for the first time.
pub const REASON_ENABLED: &str = "TopologyAwareHintsEnabled";
/// Event reason when hints are withheld or removed.
pub const REASON_DISABLED: &str = "TopologyAwareHintsDisabled";

// kube's Event messages, verbatim.
const NO_ZONE_SPECIFIED: &str = "One or more endpoints do not have a zone specified";
const NO_ALLOCATED_HINTS_FOR_ZONES: &str = "No hints allocated for zones";
const HINTS_ENABLED: &str = "Topology Aware Hints has been enabled";
/// The message when the annotation is removed from a Service that had hints.
pub const HINTS_DISABLED: &str = "Topology Aware Hints has been disabled";
const INSUFFICIENT_NODE_INFO: &str =
    "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes";
const INSUFFICIENT_ENDPOINTS: &str = "Insufficient number of endpoints";
const MIN_ALLOCATION_EXCEEDS: &str =
    "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold";

/// Each zone's share of the allocatable CPU of the nodes that count, or `None` when the nodes do not
/// say enough (kube's `SetNodes`).
pub type ZoneRatios = BTreeMap<String, f64>;

/// An Event the controller should record about the Service.
#[derive(Debug, Clone, PartialEq)]
pub struct HintEvent {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// [`REASON_ENABLED`] or [`REASON_DISABLED`].
    pub reason: &'static str,
    /// kube's message, with the address type appended as kube does.
    pub message: String,
}

/// Whether the Service asks for topology-aware hints (kube's `hintsEnabled`): the `topology-mode`
/// annotation decides when present, else the deprecated `topology-aware-hints` one.
pub fn hints_enabled(annotations: Option<&BTreeMap<String, String>>) -> bool {
    let Some(a) = annotations else {
        return false;
    };
    let v = a
        .get(ANNOTATION_TOPOLOGY_MODE)
        .or_else(|| a.get(ANNOTATION_TOPOLOGY_HINTS));
    matches!(v.map(String::as_str), Some("Auto" | "auto"))
}

/// The node facts the zone shares are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    /// Labelled as a control-plane (or master) node: left out, as kube leaves it out.
    pub excluded: bool,
    /// Its Ready condition is True.
    pub ready: bool,
    /// `topology.kubernetes.io/zone`, if set and non-empty.
    pub zone: Option<String>,
    /// `status.allocatable.cpu` in millicores (0 when missing or unreadable).
    pub milli_cpu: u64,
}

impl NodeCapacity {
    /// Reads the facts off a Node.
    pub fn of(node: &Node) -> Self {
        let labels = node.metadata.labels.as_ref();
        let has = |k: &str| labels.is_some_and(|l| l.contains_key(k));
        let status = node.status.as_ref();
        NodeCapacity {
            excluded: has("node-role.kubernetes.io/control-plane") || has("node-role.kubernetes.io/master"),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True"),
            zone: labels
                .and_then(|l| l.get(LABEL_ZONE))
                .filter(|z| !z.is_empty())
                .cloned(),
            milli_cpu: status
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("cpu"))
                .and_then(|q| milli_value(&q.0))
                .unwrap_or(0),
        }
    }
}

/// Each zone's share of CPU over the nodes that count (kube's `SetNodes`): `None` when a counted node
/// lacks a zone or CPU, or when fewer than two zones remain.
pub fn zone_ratios<'a>(nodes: impl IntoIterator<Item = &'a NodeCapacity>) -> Option<ZoneRatios> {
    let mut by_zone: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for n in nodes {
        if n.excluded || !n.ready {
            continue;
        }
        let zone = n.zone.as_ref().filter(|_| n.milli_cpu > 0)?;
        *by_zone.entry(zone.clone()).or_default() += n.milli_cpu;
        total += n.milli_cpu;
    }
    if total == 0 || by_zone.len() < 2 {
        return None;
    }
    Some(
        by_zone
            .into_iter()
            .map(|(z, cpu)| (z, cpu as f64 / total as f64))
            .collect(),
    )
}

/// A resource quantity (`2`, `1500m`, `0.5`, `1k`, `2Ki`, `1e3`) in thousandths, rounded up as
/// apimachinery's `MilliValue` does; `None` when it is not a quantity.
pub fn milli_value(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let num: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s => {
            let exp = s.strip_prefix(['e', 'E'])?;
            10f64.powi(exp.parse().ok()?)
        }
    };
    let milli = (num * scale * 1000.0).ceil();
    (milli.is_finite() && milli >= 0.0).then_some(milli as u64)
}

#[derive(Debug, Clone, Copy)]
struct Allocation {
    minimum: usize,
    maximum: usize,
    desired: f64,
}

/// Each zone's minimum, maximum and desired number of endpoints out of `n` ready ones (kube's
/// `getAllocations`), or the message saying why there can be no hints.
fn allocations(ratios: Option<&ZoneRatios>, n: usize) -> Result<BTreeMap<String, Allocation>, String> {
    let ratios = ratios.ok_or_else(|| INSUFFICIENT_NODE_INFO.to_owned())?;
    if ratios.len() > n {
        return Err(format!(
            "{INSUFFICIENT_ENDPOINTS} ({n} endpoints, {} zones)",
            ratios.len()
        ));
    }
    let mut remaining = n as i64;
    let mut min_total = 0;
    let mut out = BTreeMap::new();
    for (zone, ratio) in ratios {
        let desired = ratio * n as f64;
        let minimum = (desired * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil() as usize;
        out.insert(
            zone.clone(),
            Allocation {
                minimum,
                maximum: 0,
                desired: desired.max(minimum as f64),
            },
        );
        min_total += minimum;
        remaining -= minimum as i64;
        if remaining < 0 {
            return Err(format!(
                "{MIN_ALLOCATION_EXCEEDS} ({n} endpoints, {} zones)",
                ratios.len()
            ));
        }
    }
    for a in out.values_mut() {
        a.maximum = a.minimum + n - min_total;
    }
    Ok(out)
}

fn ready(ep: &Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready) == Some(true)
}

fn hint_for(zone: &str) -> Option<EndpointHints> {
    Some(EndpointHints {
        for_zones: Some(vec![ForZone {
            name: zone.to_owned(),
        }]),
        ..EndpointHints::default()
    })
}

fn hinted_zones(ep: &Endpoint) -> &[ForZone] {
    ep.hints
        .as_ref()
        .and_then(|h| h.for_zones.as_deref())
        .unwrap_or(&[])
}

/// The hints an unchanged slice already carries, per zone, if they can stay (kube's `getHintsByZone`):
/// every ready endpoint hinted, only for zones that get allocations, and no zone over its maximum.
fn kept_hints(
    slice: &EndpointSlice,
    so_far: &BTreeMap<String, usize>,
    alloc: &BTreeMap<String, Allocation>,
) -> Option<BTreeMap<String, usize>> {
    let mut by_zone: BTreeMap<String, usize> = BTreeMap::new();
    for ep in slice.endpoints.iter().filter(|e| ready(e)) {
        let zones = hinted_zones(ep);
        if zones.is_empty() {
            return None;
        }
        for z in zones {
            alloc.get(&z.name)?;
            *by_zone.entry(z.name.clone()).or_default() += 1;
        }
    }
    for (zone, n) in &by_zone {
        if n + so_far.get(zone).copied().unwrap_or(0) > alloc[zone].maximum {
            return None;
        }
    }
    Some(by_zone)
}

/// The slices of one address type, sorted as kube's `SliceInfo`.
pub struct SliceInfo<'a> {
    /// The address type (for the Event messages).
    pub address_type: &'a str,
    /// Slices to create.
    pub create: &'a mut Vec<EndpointSlice>,
    /// Slices to update.
    pub update: &'a mut Vec<EndpointSlice>,
    /// Slices left as they are; those whose hints must change move to `update`.
    pub unchanged: Vec<EndpointSlice>,
}

impl SliceInfo<'_> {
    fn ready_total(&self) -> usize {
        self.create
            .iter()
            .chain(self.update.iter())
            .chain(self.unchanged.iter())
            .map(|s| s.endpoints.iter().filter(|e| ready(e)).count())
            .sum()
    }

    fn with_type(&self, message: &str) -> String {
        format!("{message}, addressType: {}", self.address_type)
    }

    /// Takes every hint off (kube's `RemoveHintsFromSlices`): unchanged slices that had any move to
    /// `update`.
    pub fn remove_hints(&mut self) {
        for s in self.create.iter_mut().chain(self.update.iter_mut()) {
            for ep in &mut s.endpoints {
                ep.hints = None;
            }
        }
        for mut s in std::mem::take(&mut self.unchanged) {
            if s.endpoints.iter().any(|e| e.hints.is_some()) {
                for ep in &mut s.endpoints {
                    ep.hints = None;
                }
                self.update.push(s);
            }
        }
    }

    /// Gives the endpoints their hints (kube's `AddHints`). Returns whether the Service now has hints
    /// for this address type, and the Events to record; `had_hints` says whether it had them before (an
    /// "enabled" Event is recorded only on the change).
    pub fn add_hints(&mut self, ratios: Option<&ZoneRatios>, had_hints: bool) -> (bool, Vec<HintEvent>) {
        let disabled = |this: &mut Self, message: &str| {
            let event = HintEvent {
                type_: "Warning",
                reason: REASON_DISABLED,
                message: this.with_type(message),
            };
            this.remove_hints();
            (false, vec![event])
        };
        let alloc = match allocations(ratios, self.ready_total()) {
            Ok(a) => a,
            Err(message) => return disabled(self, &message),
        };

        // Unchanged slices keep their hints while those still fit.
        let mut allocated: BTreeMap<String, usize> = BTreeMap::new();
        for s in std::mem::take(&mut self.unchanged) {
            match kept_hints(&s, &allocated, &alloc) {
                Some(by_zone) => {
                    for (z, n) in by_zone {
                        *allocated.entry(z).or_default() += n;
                    }
                    self.unchanged.push(s);
                }
                None => self.update.push(s),
            }
        }

        // 1. Every ready endpoint of the slices being written: its own zone.
        for s in self.create.iter_mut().chain(self.update.iter_mut()) {
            for ep in &mut s.endpoints {
                if !ready(ep) {
                    ep.hints = None;
                    continue;
                }
                let Some(zone) = ep.zone.clone().filter(|z| !z.is_empty()) else {
                    return disabled(self, NO_ZONE_SPECIFIED);
                };
                *allocated.entry(zone.clone()).or_default() += 1;
                ep.hints = hint_for(&zone);
            }
        }

        // 2. Which zones have more than their share, and which less.
        let (mut giving, mut receiving) = giving_and_receiving(&alloc, &allocated);

        // 3. Move endpoints from the former to the latter.
        'slices: for s in self.create.iter_mut().chain(self.update.iter_mut()) {
            for ep in s.endpoints.iter_mut().filter(|e| ready(e)) {
                if giving.is_empty() || receiving.is_empty() {
                    break 'slices;
                }
                let Some(from) = ep.zone.clone() else {
                    continue;
                };
                let Some(n) = giving.get_mut(&from) else {
                    continue;
                };
                let Some((to, m)) = receiving.iter_mut().find(|(_, m)| **m > 0) else {
                    continue;
                };
                let to = to.clone();
                ep.hints = hint_for(&to);
                *n -= 1;
                *m -= 1;
                if *n == 0 {
                    giving.remove(&from);
                }
                if receiving[&to] == 0 {
                    receiving.remove(&to);
                }
                *allocated.entry(to).or_default() += 1;
                if let Some(a) = allocated.get_mut(&from) {
                    *a = a.saturating_sub(1);
                }
            }
        }

        if allocated.is_empty() {
            return disabled(self, NO_ALLOCATED_HINTS_FOR_ZONES);
        }
        let events = if had_hints {
            Vec::new()
        } else {
            vec![HintEvent {
                type_: "Normal",
                reason: REASON_ENABLED,
                message: self.with_type(HINTS_ENABLED),
            }]
        };
        (true, events)
    }
}

/// The zone with the largest positive value (kube's `getMost`; ties go to the first name).
fn most<'a>(m: &BTreeMap<&'a str, f64>) -> Option<(&'a str, f64)> {
    m.iter()
        .filter(|(_, v)| **v > 0.0)
        .fold(None, |best: Option<(&'a str, f64)>, (z, v)| match best {
            Some((_, b)) if b >= *v => best,
            _ => Some((*z, *v)),
        })
}

/// How many endpoints each zone should give away and take in (kube's `getGivingAndReceivingZones`):
/// the precise surplus and deficit, turned into whole endpoints largest first while at least half an
/// endpoint is left on both sides.
fn giving_and_receiving(
    alloc: &BTreeMap<String, Allocation>,
    allocated: &BTreeMap<String, usize>,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut give_want: BTreeMap<&str, f64> = BTreeMap::new();
    let mut take_want: BTreeMap<&str, f64> = BTreeMap::new();
    for (zone, a) in alloc {
        let have = allocated.get(zone).copied().unwrap_or(0) as f64;
        if have > a.desired {
            give_want.insert(zone, have - a.desired);
        } else if have < a.desired {
            take_want.insert(zone, a.desired - have);
        }
    }
    let mut giving = BTreeMap::new();
    let mut receiving = BTreeMap::new();
    while let (Some((g, gn)), Some((r, rn))) = (most(&give_want), most(&take_want)) {
        if (gn < 1.0 && rn < 1.0) || gn < 0.5 || rn < 0.5 {
            break;
        }
        *giving.entry(g.to_owned()).or_default() += 1;
        *receiving.entry(r.to_owned()).or_default() += 1;
        *give_want.get_mut(g).expect("present") -= 1.0;
        *take_want.get_mut(r).expect("present") -= 1.0;
    }
    (giving, receiving)
}
