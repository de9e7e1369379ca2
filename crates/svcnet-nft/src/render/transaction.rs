//! Transaction planning: what the backend has programmed ([`Programmed`]), and the smallest change that
//! takes the tables from there to a batch of changes later ([`render_changes_deferred`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use svcnet_dataplane::{Change, ServicePort, ServicePortName};

use super::elements::Elem;
use super::names::{CLUSTER_IPS, HAIRPIN, POD_CIDRS};
use super::ruleset::{Decl, cluster_ips_of, families, hairpin_ips, port_objects};
use crate::NftConfig;
use crate::family::Family;
use crate::netlink;

/// What the backend has programmed: the ports, and how many ports use each ClusterIP and each endpoint
/// address (the `cluster-ips` and `hairpin` sets are shared, so an address leaves them only with its last
/// user).
///
/// Each port also has a place in the endpoint maps (its id: which group map, and where in its slot
/// space). A port keeps its id while it exists; ids of ports that went away are handed out again,
/// lowest first, so the maps stay few and dense.
#[derive(Debug, Default, Clone)]
pub struct Programmed {
    ports: BTreeMap<ServicePortName, Arc<ServicePort>>,
    cluster_ip_refs: HashMap<IpAddr, usize>,
    hairpin_refs: HashMap<IpAddr, usize>,
    ids: HashMap<ServicePortName, u32>,
    /// Ids below `next_id` no port has.
    free_ids: BTreeSet<u32>,
    next_id: u32,
}

impl Programmed {
    /// Nothing programmed.
    pub fn new() -> Programmed {
        Programmed::default()
    }

    /// Whether exactly `ports` are programmed, as they are.
    pub fn same_ports(&self, ports: &[Arc<ServicePort>]) -> bool {
        self.ports.len() == ports.len()
            && ports.iter().all(|p| {
                self.ports
                    .get(&p.name)
                    .is_some_and(|q| Arc::ptr_eq(p, q) || p == q)
            })
    }

    /// The state after a full sync of `ports`: ids in name order.
    pub fn from_ports(ports: &[Arc<ServicePort>]) -> Programmed {
        let mut p = Programmed::new();
        for sp in ports {
            p.insert(sp.clone());
        }
        let names: Vec<ServicePortName> = p.ports.keys().cloned().collect();
        for (i, name) in names.into_iter().enumerate() {
            p.ids.insert(name, i as u32);
        }
        p.next_id = p.ids.len() as u32;
        p
    }

    /// The state of tables that already hold `ports`, each at the id `found` says (a takeover): ports
    /// without one, or whose id another port already has, get free ids.
    pub fn from_ports_with_ids(
        ports: &[Arc<ServicePort>],
        found: &HashMap<ServicePortName, u32>,
    ) -> Programmed {
        let mut p = Programmed::new();
        for sp in ports {
            p.insert(sp.clone());
        }
        let mut taken = BTreeSet::new();
        let mut missing = Vec::new();
        for name in p.ports.keys() {
            match found.get(name) {
                Some(&id) if taken.insert(id) => {
                    p.ids.insert(name.clone(), id);
                }
                _ => missing.push(name.clone()),
            }
        }
        p.next_id = taken.last().map_or(0, |l| l + 1);
        p.free_ids = (0..p.next_id).filter(|i| !taken.contains(i)).collect();
        for name in missing {
            let id = p.take_id();
            p.ids.insert(name, id);
        }
        p
    }

    fn take_id(&mut self) -> u32 {
        match self.free_ids.pop_first() {
            Some(id) => id,
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        }
    }

    /// The ids a batch gives to ports that have none yet: in name order, the lowest free first (ids
    /// that the batch frees are free only after it, so no two ports of one transaction share one).
    pub(super) fn plan_ids<'a>(&self, changes: &'a [Change]) -> BTreeMap<&'a ServicePortName, u32> {
        let mut last: BTreeMap<&ServicePortName, bool> = BTreeMap::new();
        for c in changes {
            last.insert(c.name(), matches!(c, Change::Upsert { .. }));
        }
        let mut free = self.free_ids.iter().copied();
        let mut next = self.next_id;
        let mut out = BTreeMap::new();
        for (name, upsert) in last {
            if upsert && !self.ids.contains_key(name) {
                let id = free.next().unwrap_or_else(|| {
                    next += 1;
                    next - 1
                });
                out.insert(name, id);
            }
        }
        out
    }

    /// The id of a programmed port.
    pub fn id(&self, name: &ServicePortName) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The programmed ports, by name.
    pub fn ports(&self) -> impl Iterator<Item = &Arc<ServicePort>> {
        self.ports.values()
    }

    /// The programmed ports with their ids, by name.
    pub(super) fn ports_with_ids(&self) -> impl Iterator<Item = (&Arc<ServicePort>, u32)> {
        self.ports.iter().map(|(n, p)| (p, self.ids[n]))
    }

    /// The programmed port of that name.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePort>> {
        self.ports.get(name)
    }

    /// How many ports are programmed.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether nothing is programmed.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    fn insert(&mut self, sp: Arc<ServicePort>) {
        if let Some(old) = self.ports.insert(sp.name.clone(), sp.clone()) {
            self.unref(&old);
        }
        for ip in &sp.cluster_ips {
            *self.cluster_ip_refs.entry(*ip).or_default() += 1;
        }
        for ip in hairpin_ips(&sp) {
            *self.hairpin_refs.entry(ip).or_default() += 1;
        }
    }

    fn remove(&mut self, name: &ServicePortName) {
        if let Some(old) = self.ports.remove(name) {
            self.unref(&old);
        }
    }

    fn unref(&mut self, old: &ServicePort) {
        fn dec(refs: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
            if let Some(n) = refs.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    refs.remove(ip);
                }
            }
        }
        for ip in &old.cluster_ips {
            dec(&mut self.cluster_ip_refs, ip);
        }
        for ip in hairpin_ips(old) {
            dec(&mut self.hairpin_refs, &ip);
        }
    }

    /// Records a batch of changes (after its transaction succeeded), with the ids its rendering gave.
    pub fn commit(&mut self, changes: &[Change]) {
        let planned: Vec<(ServicePortName, u32)> = self
            .plan_ids(changes)
            .into_iter()
            .map(|(n, id)| (n.clone(), id))
            .collect();
        for c in changes {
            match c {
                Change::Upsert { new, .. } => self.insert(new.clone()),
                Change::Remove(old) => self.remove(&old.name),
            }
        }
        for (name, id) in planned {
            self.free_ids.remove(&id);
            self.next_id = self.next_id.max(id + 1);
            self.ids.insert(name, id);
        }
        for c in changes {
            let name = c.name();
            if !self.ports.contains_key(name)
                && let Some(id) = self.ids.remove(name)
            {
                self.free_ids.insert(id);
            }
        }
    }
}

/// Per port in a batch: what is programmed now and what should be (first `old`, last `new`, so repeated
/// changes of one port in one batch collapse into one replacement).
fn coalesce<'a>(
    prev: &'a Programmed,
    changes: &'a [Change],
) -> BTreeMap<&'a ServicePortName, (Option<&'a ServicePort>, Option<&'a ServicePort>)> {
    let mut out: BTreeMap<&ServicePortName, (Option<&ServicePort>, Option<&ServicePort>)> = BTreeMap::new();
    for c in changes {
        let name = c.name();
        // What the backend has programmed is the truth, whatever `old` the change carries: after a failed
        // transaction the two can differ.
        let entry = out
            .entry(name)
            .or_insert_with(|| (prev.get(name).map(|p| &**p), None));
        entry.1 = match c {
            Change::Upsert { new, .. } => Some(&**new),
            Change::Remove(_) => None,
        };
    }
    out
}

/// One element added to or deleted from a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementOp {
    /// The family whose table holds the set.
    pub family: Family,
    /// The set or map.
    pub set: String,
    /// Add (true) or delete (false).
    pub add: bool,
    /// The element.
    pub elem: Elem,
}

/// An incremental change of the tables, in three steps: `script` (an `nft -f` transaction declaring
/// sets and writing chains), `elements` (one netlink batch, deletions first), `after` (an `nft -f`
/// transaction flushing the chains the elements no longer lead to). An endpoint change of a Service
/// without affinity is elements only. Deleting objects is left to the caller ([`Transaction::stale`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Declarations and chain bodies, before the elements that lead to them; empty when none.
    pub script: String,
    /// Element deletions, then additions.
    pub elements: Vec<ElementOp>,
    /// `flush chain` of chains nothing leads to any more, after the elements; empty when none.
    pub after: String,
    /// Objects nothing uses any more, as `chain|set|map FAMILY TABLE NAME` (`delete {id}` removes one).
    pub stale: Vec<String>,
    /// Objects (re)created by `script`: no longer stale if they were.
    pub revived: Vec<String>,
    /// Whether `script` makes nft 1.0.x read the whole ruleset anyway (`delete set`), so deleting stale
    /// objects in the same transaction costs little extra.
    pub loads_cache: bool,
}

impl Transaction {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.script.is_empty() && self.elements.is_empty() && self.after.is_empty()
    }

    /// The elements as `nft` commands (for review, tests, and when netlink is unavailable).
    pub fn element_script(&self, table: &str) -> String {
        let mut out = String::new();
        for op in &self.elements {
            let verb = if op.add { "add" } else { "delete" };
            let text = if op.add {
                op.elem.text()
            } else {
                op.elem.key_text()
            };
            let _ = writeln!(
                out,
                "{verb} element {} {table} {} {{ {text} }}",
                op.family.nft(),
                op.set
            );
        }
        out
    }

    /// The elements as one netlink batch: deletions, then additions, one message per set for each (the
    /// kernel finds a message's set by walking the table's list of sets, so with 10,000 Services every
    /// message costs tens of microseconds).
    pub fn batch(&self, table: &str) -> netlink::Batch {
        let mut b = netlink::Batch::new();
        for add in [false, true] {
            let mut groups: BTreeMap<(Family, &str), Vec<netlink::Element>> = BTreeMap::new();
            for op in self.elements.iter().filter(|op| op.add == add) {
                groups
                    .entry((op.family, op.set.as_str()))
                    .or_default()
                    .push(op.elem.netlink());
            }
            for ((family, set), els) in groups {
                if add {
                    b.add(family, table, set, els);
                } else {
                    b.delete(family, table, set, els);
                }
            }
        }
        b
    }
}

/// The whole incremental change as one `nft -f` script: [`render_changes_deferred`]'s steps with the
/// elements as nft commands and the stale objects deleted at the end.
pub fn render_changes(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> String {
    let t = render_changes_deferred(prev, changes, cfg);
    let mut out = t.script.clone();
    out.push_str(&t.element_script(&cfg.table));
    out.push_str(&t.after);
    out.push_str(&delete_script(&t.stale));
    out
}

/// `delete` commands for stale objects: chains first (their rules may name the sets).
pub fn delete_script<'a>(ids: impl IntoIterator<Item = &'a String>) -> String {
    let mut ids: Vec<&String> = ids.into_iter().collect();
    ids.sort_by_key(|id| (!id.starts_with("chain "), id.as_str()));
    ids.iter().map(|id| format!("delete {id}\n")).collect()
}

/// The change that takes the tables from `prev` to `prev` + `changes`, touching only the changed ports'
/// elements, chains and sets (see [`Transaction`]). The scripts use only commands nft 1.0.x runs without
/// reading the ruleset back first (`add chain NAME { rules }`, `add set`/`add map` declarations, `flush
/// chain`): `add rule`, `delete chain` and `delete element` make it load every object of every table
/// (seconds with 100,000 endpoints). Every set a rewritten rule names is declared again (a no-op in the
/// kernel) so that nft knows it.
pub fn render_changes_deferred(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> Transaction {
    let batch = coalesce(prev, changes);
    let planned = prev.plan_ids(changes);
    let id_of = |name: &ServicePortName| {
        prev.id(name)
            .or_else(|| planned.get(name).copied())
            .unwrap_or_default()
    };
    let mut tx = Transaction::default();
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for fam in families(cfg) {
        let t = format!("{} {}", fam.nft(), cfg.table);
        let mut flush = Vec::new();
        let mut del_sets = Vec::new();
        let mut add_sets: BTreeMap<String, Decl> = BTreeMap::new();
        let mut add_chains = Vec::new();
        let mut bodies = Vec::new();
        let mut gone = Vec::new();
        let mut ip_delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
        let mut hairpin_delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
        let mut rewrites = false;
        let op = |set: &str, add: bool, elem: Elem| ElementOp {
            family: fam,
            set: set.to_string(),
            add,
            elem,
        };
        for (name, (old, new)) in &batch {
            let id = id_of(name);
            let o = old.map(|p| port_objects(p, id, fam, cfg)).unwrap_or_default();
            let n = new.map(|p| port_objects(p, id, fam, cfg)).unwrap_or_default();
            for ip in old.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() += 1;
            }
            for ip in old.iter().flat_map(|p| hairpin_ips(p)) {
                *hairpin_delta.entry(ip).or_default() -= 1;
            }
            for ip in new.iter().flat_map(|p| hairpin_ips(p)) {
                *hairpin_delta.entry(ip).or_default() += 1;
            }
            let empty = BTreeSet::new();
            for (set, els) in &o.elements {
                let keep = n.elements.get(set).unwrap_or(&empty);
                deletes.extend(els.difference(keep).map(|e| op(set, false, e.clone())));
            }
            for (set, els) in &n.elements {
                let had = o.elements.get(set).unwrap_or(&empty);
                adds.extend(els.difference(had).map(|e| op(set, true, e.clone())));
            }
            // A set whose declaration changed (affinity timeout) is recreated; every chain of the port is
            // then rewritten, since rules that use a set hold on to it.
            let sets_changed = o
                .sets
                .iter()
                .any(|(s, decl)| n.sets.get(s).is_some_and(|d| d != decl));
            for (name, old_rules) in &o.chains {
                match n.chains.get(name) {
                    Some(r) if r == old_rules && !sets_changed => {}
                    Some(_) => flush.push(format!("flush chain {t} {name}")),
                    None => {
                        gone.push(format!("flush chain {t} {name}"));
                        tx.stale.push(format!("chain {t} {name}"));
                    }
                }
            }
            for (name, decl) in &o.sets {
                let kind = if decl.0 { "map" } else { "set" };
                match n.sets.get(name) {
                    Some(d) if d == decl => {}
                    Some(_) => del_sets.push(format!("delete {kind} {t} {name}")),
                    // Its elements are deleted above, so a port that comes back finds it empty.
                    None => tx.stale.push(format!("{kind} {t} {name}")),
                }
            }
            let mut port_rewrites = false;
            for (name, new_rules) in &n.chains {
                let same = o.chains.get(name) == Some(new_rules) && !sets_changed;
                if same {
                    continue;
                }
                port_rewrites = true;
                if !o.chains.contains_key(name) {
                    add_chains.push(format!("add chain {t} {name}"));
                    tx.revived.push(format!("chain {t} {name}"));
                }
                if !new_rules.is_empty() {
                    debug_assert!(new_rules.iter().all(|r| !r.contains(';')), "{new_rules:?}");
                    bodies.push(format!("add chain {t} {name} {{ {}; }}", new_rules.join("; ")));
                }
            }
            // The group's endpoint maps, when a rule names them for the first time or again.
            for (name, decl) in &n.shared_maps {
                if port_rewrites || !o.shared_maps.contains_key(name) {
                    add_sets.insert(name.clone(), decl.clone());
                }
            }
            // New sets, and the unchanged ones the rewritten rules name (nft must know them).
            for (name, decl) in &n.sets {
                if port_rewrites || o.sets.get(name) != Some(decl) {
                    add_sets.insert(name.clone(), decl.clone());
                    if o.sets.get(name) != Some(decl) {
                        tx.revived
                            .push(format!("{} {t} {name}", if decl.0 { "map" } else { "set" }));
                    }
                }
            }
            rewrites |= port_rewrites;
        }
        let pod_cidrs = cfg.pod_cidrs.iter().filter(|n| fam.net_has(n)).count();
        if rewrites && pod_cidrs > 1 {
            add_sets.insert(
                POD_CIDRS.to_string(),
                (false, format!("type {}; flags interval;", fam.addr_type())),
            );
        }
        for (set, delta, refs, elem) in [
            (
                CLUSTER_IPS,
                ip_delta,
                &prev.cluster_ip_refs,
                Elem::Addr as fn(IpAddr) -> Elem,
            ),
            (HAIRPIN, hairpin_delta, &prev.hairpin_refs, Elem::Pair),
        ] {
            for (ip, delta) in delta {
                if !fam.has(&ip) {
                    continue;
                }
                let before = refs.get(&ip).copied().unwrap_or(0) as i64;
                let after = before + delta;
                if before > 0 && after <= 0 {
                    deletes.push(op(set, false, elem(ip)));
                } else if before <= 0 && after > 0 {
                    adds.push(op(set, true, elem(ip)));
                }
            }
        }
        tx.loads_cache |= !del_sets.is_empty();
        let add_sets = add_sets.iter().map(|(name, (map, body))| {
            format!("add {} {t} {name} {{ {body} }}", if *map { "map" } else { "set" })
        });
        let script: Vec<String> = flush
            .into_iter()
            .chain(del_sets)
            .chain(add_sets)
            .chain(add_chains)
            .chain(bodies)
            .collect();
        for line in script {
            tx.script.push_str(&line);
            tx.script.push('\n');
        }
        for line in gone {
            tx.after.push_str(&line);
            tx.after.push('\n');
        }
    }
    tx.elements = deletes;
    tx.elements.extend(adds);
    tx
}
