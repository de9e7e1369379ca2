//! Zone disruption, as kube-controller-manager's node lifecycle controller judges it before tainting
//! nodes `NoExecute` (which evicts their pods): each zone's state comes from how many of its nodes are
//! Ready, and new `NoExecute` taints in a zone are rate limited by that state, so a zone that loses
//! most of its nodes at once (a network or power fault more likely than dead machines) does not have
//! all its pods evicted at once.
//!
//! - **Normal**: `--node-eviction-rate` nodes a second (0.1: one node every ten seconds, burst 1).
//! - **PartialDisruption** (more than two nodes not Ready, and at least `--unhealthy-zone-threshold`
//!   (55 %) of the zone): `--secondary-node-eviction-rate` (0.01) when the zone has more than
//!   `--large-cluster-size-threshold` (50) nodes, otherwise none at all.
//! - **FullDisruption** (no node Ready): back to the normal rate; but when every zone is fully disrupted
//!   nothing is evicted and existing `NoExecute` taints are lifted (kube's "master disruption" mode: the
//!   control plane's own view is then the likelier fault).
//!
//! Pure state and arithmetic; [`crate::node_lifecycle`] applies it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

/// The node labels that make up a zone (kube's `GetZoneKey`: region and zone).
const LABEL_REGION: &str = "topology.kubernetes.io/region";
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// The eviction rate settings (kube-controller-manager's flags and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionRates {
    /// `--node-eviction-rate`: nodes a second whose pods may be evicted in a healthy zone.
    pub rate: f64,
    /// `--secondary-node-eviction-rate`: the same in an unhealthy zone of a large cluster.
    pub secondary_rate: f64,
    /// `--unhealthy-zone-threshold`: the share of not-Ready nodes that makes a zone unhealthy.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`: above this many nodes a zone is large.
    pub large_cluster_size_threshold: usize,
}

impl Default for EvictionRates {
    fn default() -> Self {
        EvictionRates {
            rate: 0.1,
            secondary_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// A zone's health, as kube names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    /// Enough nodes Ready.
    Normal,
    /// Many nodes not Ready (see the module docs).
    PartialDisruption,
    /// No node Ready.
    FullDisruption,
}

impl std::fmt::Display for ZoneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ZoneState::Normal => "Normal",
            ZoneState::PartialDisruption => "PartialDisruption",
            ZoneState::FullDisruption => "FullDisruption",
        })
    }
}

/// A node's zone key: `region:\0:zone` as kube writes it, empty without either label.
pub fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str).unwrap_or("");
    let (region, zone) = (get(LABEL_REGION), get(LABEL_ZONE));
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

/// kube's `ComputeZoneState` from a zone's Ready and not-Ready node counts.
pub fn zone_state(ready: usize, not_ready: usize, rates: &EvictionRates) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= rates.unhealthy_zone_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The rate at which a zone's nodes may be tainted `NoExecute` (kube's `setLimiterInZone`).
pub fn zone_rate(state: ZoneState, zone_size: usize, rates: &EvictionRates) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => rates.rate,
        ZoneState::PartialDisruption if zone_size > rates.large_cluster_size_threshold => {
            rates.secondary_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// A token bucket of burst 1 (client-go's `TokenBucketRateLimiter` as the controller uses it); a rate
/// of 0 admits nothing.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    /// Changes the rate (kube's `SwapLimiter`); a bucket whose rate changes starts full again, as a new
    /// limiter does.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        if rate != self.rate {
            *self = Bucket::new(rate, now);
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(1.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token comes (`None`: never, at rate 0).
    pub fn next_token(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0)))
    }
}

/// Every zone's state and bucket, kept across monitor passes.
#[derive(Debug, Default)]
pub struct Zones {
    states: BTreeMap<String, ZoneState>,
    buckets: BTreeMap<String, Bucket>,
    /// Every zone fully disrupted at the last pass.
    all_down: bool,
}

/// What a monitor pass learns from the zones.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Every zone is fully disrupted: no `NoExecute` taints at all.
    pub all_down: bool,
    /// Zones whose state changed, with the new state (for the log).
    pub changed: Vec<(String, ZoneState)>,
}

impl Zones {
    /// Recomputes every zone's state from `nodes` (name, zone key, Ready) and sets its rate.
    pub fn judge<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = (&'a str, bool)>,
        rates: &EvictionRates,
        now: Instant,
    ) -> Judgement {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (zone, ready) in nodes {
            let c = counts.entry(zone.to_string()).or_default();
            if ready {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        let mut changed = Vec::new();
        let mut states = BTreeMap::new();
        for (zone, (ready, not_ready)) in &counts {
            let state = zone_state(*ready, *not_ready, rates);
            if self.states.get(zone) != Some(&state) {
                changed.push((zone.clone(), state));
            }
            let rate = zone_rate(state, ready + not_ready, rates);
            self.buckets
                .entry(zone.clone())
                .and_modify(|b| b.set_rate(rate, now))
                .or_insert_with(|| Bucket::new(rate, now));
            states.insert(zone.clone(), state);
        }
        self.buckets.retain(|z, _| counts.contains_key(z));
        self.all_down = !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        self.states = states;
        Judgement {
            all_down: self.all_down,
            changed,
        }
    }

    /// Whether a node of `zone` may be tainted `NoExecute` now (takes the zone's token).
    pub fn admit(&mut self, zone: &str, now: Instant) -> bool {
        !self.all_down && self.buckets.get_mut(zone).is_some_and(|b| b.try_take(now))
    }

    /// How long until some zone admits a node again (the monitor should look again then).
    pub fn next_admission(&self) -> Option<Duration> {
        self.buckets.values().filter_map(Bucket::next_token).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_states_follow_kubes_counts() {
        let r = EvictionRates::default();
        assert_eq!(zone_state(0, 1, &r), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, &r), ZoneState::Normal);
        // Two down is never partial, however small the zone.
        assert_eq!(zone_state(1, 2, &r), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, &r), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, &r), ZoneState::Normal, "50 % is under 55 %");
        assert_eq!(zone_rate(ZoneState::Normal, 10, &r), 0.1);
        assert_eq!(zone_rate(ZoneState::FullDisruption, 10, &r), 0.1);
        assert_eq!(zone_rate(ZoneState::PartialDisruption, 50, &r), 0.0);
        assert_eq!(zone_rate(ZoneState::PartialDisruption, 51, &r), 0.01);
    }

    #[test]
    fn buckets_admit_one_node_per_period_and_none_at_rate_zero() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0.5, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(1)));
        assert_eq!(b.next_token(), Some(Duration::from_secs(1)));
        assert!(b.try_take(t0 + Duration::from_secs(2)));
        // Idle time does not pile up more than one token.
        assert!(b.try_take(t0 + Duration::from_secs(60)));
        assert!(!b.try_take(t0 + Duration::from_secs(60)));
        let mut stop = Bucket::new(0.0, t0);
        assert!(!stop.try_take(t0 + Duration::from_secs(3600)));
        assert_eq!(stop.next_token(), None);
    }

    #[test]
    fn zones_gate_no_execute_taints_by_their_state() {
        let r = EvictionRates::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        // Zone a: one of three down (Normal); zone b: all down (Full); zone c: 3 of 4 down (Partial).
        let nodes = [
            ("a", true),
            ("a", true),
            ("a", false),
            ("b", false),
            ("c", false),
            ("c", false),
            ("c", false),
            ("c", true),
        ];
        let j = z.judge(nodes, &r, t0);
        assert!(!j.all_down);
        assert_eq!(
            j.changed,
            [
                ("a".to_string(), ZoneState::Normal),
                ("b".to_string(), ZoneState::FullDisruption),
                ("c".to_string(), ZoneState::PartialDisruption)
            ]
        );
        assert!(z.admit("a", t0));
        assert!(!z.admit("a", t0), "one node per ten seconds");
        assert!(z.admit("a", t0 + Duration::from_secs(10)));
        assert!(z.admit("b", t0));
        assert!(
            !z.admit("c", t0),
            "a small partially disrupted zone evicts nothing"
        );
        // The same picture again: nothing changed.
        assert!(z.judge(nodes, &r, t0).changed.is_empty());
        // Every zone down: nothing at all.
        let j = z.judge([("a", false), ("b", false)], &r, t0 + Duration::from_secs(30));
        assert!(j.all_down);
        assert!(!z.admit("a", t0 + Duration::from_secs(60)));
    }

    #[test]
    fn zone_keys_are_region_and_zone() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": labels}})).unwrap()
        };
        assert_eq!(zone_key(&node(serde_json::json!({}))), "");
        assert_eq!(
            zone_key(&node(serde_json::json!({LABEL_ZONE: "zone-a"}))),
            ":\u{0}:zone-a"
        );
        assert_eq!(
            zone_key(&node(serde_json::json!({LABEL_REGION: "r", LABEL_ZONE: "z"}))),
            "r:\u{0}:z"
        );
    }
}
