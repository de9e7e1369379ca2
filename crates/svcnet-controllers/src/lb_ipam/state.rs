//! The pure core of the LoadBalancer IPAM controller: which Service holds which pool addresses.
//!
//! [`IpamState`] is fed what the watch sees (a full list after every (re)list, then single changes and
//! deletions) and answers with [`Action`]s for the I/O shell: status writes and Events. It never does I/O
//! itself, so every allocation decision is unit-tested here without an API server.
//!
//! Sharing: Services with the same [`super::SHARED_IP_ANNOTATION`] value hold one address together
//! when their ports do not clash (and, under policy Local, they select the same pods; see
//! [`super::service::Share`]). A Service with a sharing key that asks for any address joins an address
//! its key already has (lowest first) rather than taking a new one, so that the key names one address
//! per family; if every such address clashes, it is refused with an Event and waits, as a request for
//! a taken address does. An address goes back to the pool when its last holder leaves it.
//!
//! Invariants:
//! * the pool's allocated set is exactly the union of `assigned`;
//! * a Service is in `pending` only if it is ours and lacks an address that freeing capacity could give
//!   it (exhaustion, or a requested address held by another Service);
//! * while running, memory is the truth and a Service's status mirrors it; at (re)list time the statuses
//!   are the truth (that is how assignments survive restarts).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use svcnet_alloc::{IpFamily, LbPool, PoolEntry, PoolError};

use super::service::{Request, SvcInfo, SvcKey, Want};

/// Reason of the Warning emitted when a Service cannot get (all of) its addresses.
pub(crate) const REASON_ALLOCATION_FAILED: &str = "AllocationFailed";
/// Reason of the Normal event emitted when a Service's addresses change.
pub(crate) const REASON_ALLOCATED: &str = "IPAllocated";
/// Reason of the Warning emitted at (re)list time when a Service loses an address it showed.
pub(crate) const REASON_CONFLICT: &str = "AddressConflict";

/// Event types, as core/v1 spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Something the shell must do against the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Set `status.loadBalancer.ingress` to exactly these addresses (empty clears it), conditional on
    /// the Service still being this version.
    WriteStatus {
        key: SvcKey,
        uid: String,
        resource_version: String,
        ingress: Vec<IpAddr>,
    },
    /// Record a core/v1 Event about the Service.
    Event {
        key: SvcKey,
        uid: String,
        resource_version: String,
        type_: EventType,
        reason: &'static str,
        message: String,
    },
}

/// One address a Service should hold.
#[derive(Debug, Clone, Copy)]
enum Target {
    Exact(IpAddr),
    Next(IpFamily),
}

impl Target {
    fn fits(self, ip: IpAddr) -> bool {
        match self {
            Target::Exact(want) => want == ip,
            Target::Next(family) => IpFamily::of(ip) == family,
        }
    }
}

/// Actions collected while handling one input, plus whether capacity was freed.
#[derive(Default)]
struct Out {
    actions: Vec<Action>,
    freed: bool,
}

/// The controller's memory: the pool, every Service seen, who holds what, who waits.
#[derive(Debug)]
pub(crate) struct IpamState {
    entries: Vec<PoolEntry>,
    pool: LbPool,
    services: BTreeMap<SvcKey, SvcInfo>,
    assigned: BTreeMap<SvcKey, Vec<IpAddr>>,
    pending: BTreeSet<SvcKey>,
    /// The last failure reported per Service, so that re-checks that fail the same way do not repeat
    /// the same Event on every watch event.
    reported: HashMap<SvcKey, String>,
}

impl IpamState {
    /// An empty state over the pool's entries.
    pub fn new(entries: Vec<PoolEntry>) -> Result<Self, PoolError> {
        Ok(Self {
            pool: LbPool::new(entries.clone())?,
            entries,
            services: BTreeMap::new(),
            assigned: BTreeMap::new(),
            pending: BTreeSet::new(),
            reported: HashMap::new(),
        })
    }

    /// The addresses `key` holds.
    pub fn assigned(&self, key: &SvcKey) -> &[IpAddr] {
        self.assigned.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Services waiting for capacity, oldest first.
    #[cfg(test)]
    pub fn pending(&self) -> Vec<SvcKey> {
        self.pending_by_age()
    }

    /// Replaces everything with a complete list of Services (start-up and every re-list).
    ///
    /// Addresses the Services show in their status are claimed first, oldest Service first, so that
    /// existing assignments stay put and a duplicate goes to the oldest; only then are new addresses
    /// handed out, so none can collide with one a later Service of the list already shows.
    pub fn resync(&mut self, infos: Vec<SvcInfo>) -> Vec<Action> {
        let mut out = Out::default();
        // The entries were valid when the state was built, so this cannot fail.
        if let Ok(pool) = LbPool::new(self.entries.clone()) {
            self.pool = pool;
        }
        self.assigned.clear();
        self.pending.clear();
        self.services = infos.into_iter().map(|i| (i.key.clone(), i)).collect();
        self.reported.retain(|k, _| self.services.contains_key(k));

        let mut ours: Vec<&SvcInfo> = self
            .services
            .values()
            .filter(|i| matches!(i.want, Want::Ours(_)))
            .collect();
        ours.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        let mut owner: HashMap<IpAddr, &SvcKey> = HashMap::new();
        for info in &ours {
            for ip in info.ingress.iter().flatten() {
                match self.pool.allocate(*ip) {
                    Ok(()) => {
                        owner.insert(*ip, &info.key);
                        self.assigned.entry(info.key.clone()).or_default().push(*ip);
                    }
                    Err(PoolError::InUse { .. }) => {
                        // Shared with the older holders, if the rules allow it.
                        if self.conflict_at(info, *ip).is_none() {
                            self.assigned.entry(info.key.clone()).or_default().push(*ip);
                            continue;
                        }
                        let older = owner.get(ip).map(|k| k.to_string()).unwrap_or_default();
                        out.actions.push(event(
                            info,
                            EventType::Warning,
                            REASON_CONFLICT,
                            format!(
                                "address {ip} is also assigned to the older Service {older}; \
                                 assigning another address"
                            ),
                        ));
                    }
                    // Out of the pool (the pool was changed): the reconcile below re-assigns.
                    Err(_) => {}
                }
            }
        }
        let order: Vec<SvcKey> = ours.iter().map(|i| i.key.clone()).collect();
        for key in &order {
            self.reconcile_into(key, &mut out);
        }
        self.finish(out)
    }

    /// A Service was added or changed.
    pub fn apply(&mut self, info: SvcInfo) -> Vec<Action> {
        let mut out = Out::default();
        let key = info.key.clone();
        if let Some(old) = self.services.get(&key)
            && old.uid != info.uid
        {
            // Deleted and re-created under the same name while we did not look: a new Service.
            self.forget(&key, &mut out);
        }
        if self.services.get(&key).is_some_and(|old| old.share != info.share) {
            // Its ports or sharing key changed: a Service waiting to share its address may fit now.
            out.freed = true;
        }
        self.services.insert(key.clone(), info);
        self.reconcile_into(&key, &mut out);
        self.finish(out)
    }

    /// A Service was deleted.
    pub fn delete(&mut self, key: &SvcKey) -> Vec<Action> {
        let mut out = Out::default();
        self.services.remove(key);
        self.forget(key, &mut out);
        self.finish(out)
    }

    /// Re-evaluates one Service (after a failed write, for instance).
    pub fn reconcile(&mut self, key: &SvcKey) -> Vec<Action> {
        let mut out = Out::default();
        self.reconcile_into(key, &mut out);
        self.finish(out)
    }

    /// Records what a successful status write returned, without re-evaluating: the write came from
    /// this state, and the next write must carry the new resourceVersion.
    pub fn observe(&mut self, info: SvcInfo) {
        if let Some(cur) = self.services.get_mut(&info.key)
            && cur.uid == info.uid
        {
            *cur = info;
        }
    }

    /// Drops everything about `key` (its addresses go back to the pool).
    fn forget(&mut self, key: &SvcKey, out: &mut Out) {
        if let Some(ips) = self.assigned.remove(key) {
            self.release(&ips, out);
        }
        self.pending.remove(key);
        self.reported.remove(key);
    }

    /// Gives up `ips` for a Service already removed from `assigned`: each goes back to the pool unless
    /// another Service still shares it. Either way a waiting Service may now fit (an address, or a port
    /// on a shared one, is free).
    fn release(&mut self, ips: &[IpAddr], out: &mut Out) {
        for ip in ips {
            out.freed = true;
            if self.holders_of(*ip).is_empty() {
                self.pool.release(*ip);
            }
        }
    }

    /// When capacity came back, gives the waiting Services (oldest first) another chance; only they
    /// are re-evaluated, never the whole cluster.
    fn finish(&mut self, mut out: Out) -> Vec<Action> {
        // A re-check can itself free addresses (a waiting Service dropping one that no longer fits),
        // so repeat; each pass settles at least one Service, the bound is only a safety net.
        let mut passes = 0;
        while out.freed && passes <= self.pending.len() {
            out.freed = false;
            passes += 1;
            for key in self.pending_by_age() {
                self.reconcile_into(&key, &mut out);
            }
        }
        // A Service evaluated twice (it freed an address and then waited) may have two writes
        // planned; only the last one is what it should show.
        let mut seen = std::collections::HashSet::new();
        let mut actions: Vec<Action> = out
            .actions
            .into_iter()
            .rev()
            .filter(|a| match a {
                Action::WriteStatus { key, .. } => seen.insert(key.clone()),
                Action::Event { .. } => true,
            })
            .collect();
        actions.reverse();
        actions
    }

    fn pending_by_age(&self) -> Vec<SvcKey> {
        let mut keys: Vec<&SvcInfo> = self.pending.iter().filter_map(|k| self.services.get(k)).collect();
        keys.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        keys.into_iter().map(|i| i.key.clone()).collect()
    }

    fn holders_of(&self, ip: IpAddr) -> Vec<&SvcKey> {
        self.assigned
            .iter()
            .filter(|(_, ips)| ips.contains(&ip))
            .map(|(k, _)| k)
            .collect()
    }

    /// Why `info` may not hold `ip` beside the Services that hold it now (`None`: it may).
    fn conflict_at(&self, info: &SvcInfo, ip: IpAddr) -> Option<String> {
        self.holders_of(ip)
            .into_iter()
            .filter(|k| **k != info.key)
            .find_map(|k| {
                let share = self.services.get(k).map(|i| &i.share);
                info.share.conflict(share.unwrap_or(&Default::default()), k)
            })
    }

    /// The addresses of `family` that Services with `key` hold, lowest first.
    fn key_addresses(&self, key: &str, family: IpFamily, me: &SvcKey) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .assigned
            .iter()
            .filter(|(k, _)| *k != me)
            .filter(|(k, _)| {
                self.services
                    .get(*k)
                    .is_some_and(|i| i.share.key.as_deref() == Some(key))
            })
            .flat_map(|(_, ips)| ips.iter().copied())
            .filter(|ip| IpFamily::of(*ip) == family)
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Brings one Service's addresses (and status) in line with what it asks for.
    fn reconcile_into(&mut self, key: &SvcKey, out: &mut Out) {
        let held = self.assigned.remove(key).unwrap_or_default();
        let Some(info) = self.services.get(key).cloned() else {
            self.release(&held, out);
            self.pending.remove(key);
            self.reported.remove(key);
            return;
        };
        let request = match &info.want {
            Want::OtherClass => {
                // Somebody else's: give back what we held (if the class changed under us), write nothing.
                self.release(&held, out);
                self.pending.remove(key);
                self.reported.remove(key);
                return;
            }
            Want::NotLoadBalancer => {
                self.release(&held, out);
                self.pending.remove(key);
                self.reported.remove(key);
                // Left LoadBalancer: the ingress must go (the API server clears it on the type change,
                // but a server that does not, or a status we wrote late, still shows it).
                let ours = info.ingress.iter().flatten().any(|ip| self.pool.in_pool(*ip));
                if (!held.is_empty() || ours) && !info.ingress.is_empty() {
                    out.actions.push(write(&info, Vec::new()));
                }
                return;
            }
            Want::Ours(request) => request.clone(),
        };

        let targets: Vec<Target> = match request {
            Request::Invalid(message) => {
                self.release(&held, out);
                self.pending.remove(key);
                self.fail(&info, message, out);
                self.sync_status(&info, out);
                return;
            }
            Request::Specific(ips) => ips.into_iter().map(Target::Exact).collect(),
            Request::Dynamic(families) => {
                let served: Vec<Target> = families
                    .iter()
                    .filter(|f| self.pool.capacity(**f) > 0)
                    .map(|f| Target::Next(*f))
                    .collect();
                if served.is_empty() {
                    self.release(&held, out);
                    self.pending.remove(key);
                    let list: Vec<String> = families.iter().map(|f| f.to_string()).collect();
                    self.fail(
                        &info,
                        format!("the pool has no {} addresses", list.join(" or ")),
                        out,
                    );
                    self.sync_status(&info, out);
                    return;
                }
                served
            }
        };

        // Keep every held address that still fits a target (and, if shared, may still be); give back
        // the rest.
        let mut slots: Vec<Option<IpAddr>> = vec![None; targets.len()];
        for ip in &held {
            if self.conflict_at(&info, *ip).is_some() {
                self.release(&[*ip], out);
                continue;
            }
            match targets
                .iter()
                .zip(slots.iter_mut())
                .find(|(t, slot)| slot.is_none() && t.fits(*ip))
            {
                Some((_, slot)) => *slot = Some(*ip),
                None => self.release(&[*ip], out),
            }
        }
        // Taken from the pool now, and joined (shared with their holders) now.
        let mut fresh = Vec::new();
        let mut joined = Vec::new();
        let mut failures = Vec::new();
        let mut retryable = true;
        for (target, slot) in targets.iter().zip(slots.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match *target {
                Target::Exact(ip) => match self.pool.allocate(ip) {
                    Ok(()) => {
                        *slot = Some(ip);
                        fresh.push(ip);
                    }
                    Err(PoolError::InUse { .. }) => match self.conflict_at(&info, ip) {
                        None => {
                            *slot = Some(ip);
                            joined.push(ip);
                        }
                        Some(why) => {
                            failures.push(format!("requested address {ip} is already in use by {why}"))
                        }
                    },
                    Err(_) => {
                        retryable = false;
                        failures.push(format!("requested address {ip} is not in the pool"));
                    }
                },
                Target::Next(family) => {
                    // A sharing key names one address per family: join it rather than take another.
                    let shared = match &info.share.key {
                        Some(k) => self.key_addresses(k, family, key),
                        None => Vec::new(),
                    };
                    if let Some(ip) = shared.iter().find(|ip| self.conflict_at(&info, **ip).is_none()) {
                        *slot = Some(*ip);
                        joined.push(*ip);
                        continue;
                    }
                    if let (Some(first), Some(k)) = (shared.first(), &info.share.key) {
                        let why = self.conflict_at(&info, *first).unwrap_or_default();
                        failures.push(format!("cannot share {first} (sharing key {k:?}) with {why}"));
                        continue;
                    }
                    match self.pool.allocate_next(family) {
                        Ok(ip) => {
                            *slot = Some(ip);
                            fresh.push(ip);
                        }
                        Err(_) => failures.push(format!("no available {family} address in pool")),
                    }
                }
            }
        }

        if failures.is_empty() {
            let now: Vec<IpAddr> = slots.into_iter().flatten().collect();
            self.pending.remove(key);
            self.reported.remove(key);
            if now != held {
                let quoted: Vec<String> = now.iter().map(|ip| format!("{:?}", ip.to_string())).collect();
                out.actions.push(event(
                    &info,
                    EventType::Normal,
                    REASON_ALLOCATED,
                    format!("Assigned IP [{}]", quoted.join(", ")),
                ));
            }
            self.assigned.insert(key.clone(), now);
        } else {
            // All or nothing for new addresses: do not hoard one family while waiting for the other.
            // Addresses the Service already held and that still fit stay (no needless disruption).
            for ip in &fresh {
                self.pool.release(*ip);
            }
            let kept: Vec<IpAddr> = slots
                .into_iter()
                .flatten()
                .filter(|ip| !fresh.contains(ip) && !joined.contains(ip))
                .collect();
            if !kept.is_empty() {
                self.assigned.insert(key.clone(), kept);
            }
            if retryable {
                self.pending.insert(key.clone());
            } else {
                self.pending.remove(key);
            }
            self.fail(&info, failures.join("; "), out);
        }
        self.sync_status(&info, out);
    }

    /// Reports a failure once per distinct message.
    fn fail(&mut self, info: &SvcInfo, message: String, out: &mut Out) {
        if self.reported.get(&info.key) != Some(&message) {
            out.actions.push(event(
                info,
                EventType::Warning,
                REASON_ALLOCATION_FAILED,
                message.clone(),
            ));
            self.reported.insert(info.key.clone(), message);
        }
    }

    /// Writes the status if it does not show exactly what the Service holds.
    fn sync_status(&self, info: &SvcInfo, out: &mut Out) {
        let want = self.assigned(&info.key);
        let shown = info.ingress.iter().copied();
        if !shown.eq(want.iter().map(|ip| Some(*ip))) {
            out.actions.push(write(info, want.to_vec()));
        }
    }
}

fn write(info: &SvcInfo, ingress: Vec<IpAddr>) -> Action {
    Action::WriteStatus {
        key: info.key.clone(),
        uid: info.uid.clone(),
        resource_version: info.resource_version.clone(),
        ingress,
    }
}

fn event(info: &SvcInfo, type_: EventType, reason: &'static str, message: String) -> Action {
    Action::Event {
        key: info.key.clone(),
        uid: info.uid.clone(),
        resource_version: info.resource_version.clone(),
        type_,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::Share;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn state(entries: &[&str]) -> IpamState {
        IpamState::new(entries.iter().map(|e| PoolEntry::parse(e).unwrap()).collect()).unwrap()
    }

    /// A Service created at second `age`.
    fn svc(name: &str, age: i64, want: Want, ingress: &[&str]) -> SvcInfo {
        SvcInfo {
            key: SvcKey::new("default", name),
            uid: format!("uid-{name}"),
            resource_version: "1".into(),
            created: Some(jiff::Timestamp::from_second(1_700_000_000 + age).unwrap()),
            want,
            ingress: ingress.iter().map(|s| Some(ip(s))).collect(),
            share: Share::default(),
        }
    }

    /// [`svc`] with sharing key `key` (if any) and `ports` (`"53/UDP"`).
    fn shared(
        name: &str,
        age: i64,
        want: Want,
        ingress: &[&str],
        key: Option<&str>,
        ports: &[&str],
    ) -> SvcInfo {
        let mut info = svc(name, age, want, ingress);
        info.share = Share {
            key: key.map(str::to_string),
            backend: String::new(),
            ports: ports
                .iter()
                .map(|p| {
                    let (port, proto) = p.split_once('/').unwrap();
                    (port.parse().unwrap(), proto.to_string())
                })
                .collect(),
        };
        info
    }

    #[test]
    fn a_sharing_key_names_one_address() {
        let mut st = state(&["127.240.0.10-127.240.0.12"]);
        st.resync(vec![]);
        st.apply(svc("other", 0, dynamic(), &[]));
        let tcp = st.apply(shared("dns-tcp", 1, dynamic(), &[], Some("dns"), &["53/TCP"]));
        assert_eq!(writes(&tcp), [("dns-tcp".into(), vec![ip("127.240.0.11")])]);
        // The UDP twin joins it; another key does not.
        let udp = st.apply(shared("dns-udp", 2, dynamic(), &[], Some("dns"), &["53/UDP"]));
        assert_eq!(writes(&udp), [("dns-udp".into(), vec![ip("127.240.0.11")])]);
        let web = st.apply(shared("web", 3, dynamic(), &[], Some("web"), &["80/TCP"]));
        assert_eq!(writes(&web), [("web".into(), vec![ip("127.240.0.12")])]);
        check(&st);
        // A clash on 53/TCP: refused with an Event naming the holder and the port, and it waits.
        let clash = st.apply(shared(
            "dns-tcp2",
            4,
            dynamic(),
            &[],
            Some("dns"),
            &["53/TCP", "853/TCP"],
        ));
        assert!(writes(&clash).is_empty());
        assert_eq!(
            events(&clash),
            [(
                "dns-tcp2".into(),
                REASON_ALLOCATION_FAILED,
                "cannot share 127.240.0.11 (sharing key \"dns\") with Service default/dns-tcp, which uses port 53/TCP too"
                    .into()
            )]
        );
        assert_eq!(st.pending(), [key("dns-tcp2")]);
        // A request for the shared address honours the same rules.
        let want = |s: &str| Want::Ours(Request::Specific(vec![ip(s)]));
        let asked = st.apply(shared(
            "dot",
            5,
            want("127.240.0.11"),
            &[],
            Some("dns"),
            &["853/TCP"],
        ));
        assert_eq!(writes(&asked), [("dot".into(), vec![ip("127.240.0.11")])]);
        let asked = st.apply(shared("nokey", 6, want("127.240.0.11"), &[], None, &["9/TCP"]));
        assert_eq!(
            events(&asked)[0].2,
            "requested address 127.240.0.11 is already in use by Service default/dns-tcp (this Service has no svcnet.io/allow-shared-ip annotation)"
        );
        // The address stays while any holder does; dns-tcp2 still clashes with dot (853/TCP) ...
        let gone = st.delete(&key("dns-tcp"));
        assert!(writes(&gone).is_empty(), "{gone:?}");
        check(&st);
        // ... and joins once dot is gone too.
        let gone = st.delete(&key("dot"));
        assert_eq!(writes(&gone), [("dns-tcp2".into(), vec![ip("127.240.0.11")])]);
        assert_eq!(
            st.pending(),
            [key("nokey")],
            "nokey still waits for an address it may not share"
        );
        let udp_changed = st.apply(shared(
            "dns-udp",
            2,
            dynamic(),
            &["127.240.0.11"],
            Some("dns"),
            &["53/UDP"],
        ));
        assert!(writes(&udp_changed).is_empty(), "{udp_changed:?}");
        check(&st);
        st.delete(&key("dns-udp"));
        st.delete(&key("dns-tcp2"));
        st.delete(&key("nokey"));
        // Every holder gone: the address is back in the pool.
        assert_eq!(
            st.pool.iter().collect::<Vec<_>>(),
            [ip("127.240.0.10"), ip("127.240.0.12")]
        );
        check(&st);
    }

    #[test]
    fn a_port_change_that_clashes_gives_up_the_shared_address() {
        let mut st = state(&["127.240.0.10-127.240.0.12"]);
        st.resync(vec![]);
        st.apply(shared("a", 0, dynamic(), &[], Some("k"), &["53/TCP"]));
        st.apply(shared("b", 1, dynamic(), &[], Some("k"), &["53/UDP"]));
        assert_eq!(st.assigned(&key("b")), [ip("127.240.0.10")]);
        let changed = st.apply(shared(
            "b",
            1,
            dynamic(),
            &["127.240.0.10"],
            Some("k"),
            &["53/TCP"],
        ));
        assert_eq!(writes(&changed), [("b".into(), vec![])]);
        assert_eq!(st.pending(), [key("b")]);
        // The shell records the write.
        st.observe(shared("b", 1, dynamic(), &[], Some("k"), &["53/TCP"]));
        // a stops using 53/TCP: b gets the address back.
        let a = st.apply(shared(
            "a",
            0,
            dynamic(),
            &["127.240.0.10"],
            Some("k"),
            &["80/TCP"],
        ));
        assert_eq!(writes(&a), [("b".into(), vec![ip("127.240.0.10")])]);
        check(&st);
    }

    #[test]
    fn resync_keeps_shared_addresses() {
        let mut st = state(&["127.240.0.10-127.240.0.12"]);
        let actions = st.resync(vec![
            shared("a", 0, dynamic(), &["127.240.0.10"], Some("k"), &["53/TCP"]),
            shared("b", 1, dynamic(), &["127.240.0.10"], Some("k"), &["53/UDP"]),
            shared("c", 2, dynamic(), &["127.240.0.10"], Some("j"), &["80/TCP"]),
        ]);
        assert_eq!(st.assigned(&key("b")), [ip("127.240.0.10")]);
        assert_eq!(st.assigned(&key("c")), [ip("127.240.0.11")]);
        assert_eq!(writes(&actions), [("c".into(), vec![ip("127.240.0.11")])]);
        assert_eq!(events(&actions)[0].1, REASON_CONFLICT);
        check(&st);
    }

    fn dynamic() -> Want {
        Want::Ours(Request::Dynamic(vec![IpFamily::Ipv4]))
    }

    fn key(name: &str) -> SvcKey {
        SvcKey::new("default", name)
    }

    fn writes(actions: &[Action]) -> Vec<(String, Vec<IpAddr>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::WriteStatus { key, ingress, .. } => Some((key.name.clone(), ingress.clone())),
                _ => None,
            })
            .collect()
    }

    fn events(actions: &[Action]) -> Vec<(String, &'static str, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    key, reason, message, ..
                } => Some((key.name.clone(), *reason, message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Checks the invariant that the pool holds exactly the assigned addresses.
    fn check(st: &IpamState) {
        let mut all: Vec<IpAddr> = st.assigned.values().flatten().copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all, st.pool.iter().collect::<Vec<_>>());
    }

    #[test]
    fn assigns_lowest_free_and_writes_status_once() {
        let mut st = state(&["127.240.0.10-127.240.0.12"]);
        assert!(st.resync(vec![]).is_empty());
        let a = st.apply(svc("a", 0, dynamic(), &[]));
        assert_eq!(writes(&a), [("a".into(), vec![ip("127.240.0.10")])]);
        assert_eq!(
            events(&a),
            [(
                "a".into(),
                REASON_ALLOCATED,
                "Assigned IP [\"127.240.0.10\"]".into()
            )]
        );
        // Our own write coming back through the watch changes nothing.
        assert!(st.apply(svc("a", 0, dynamic(), &["127.240.0.10"])).is_empty());
        check(&st);
    }

    #[test]
    fn exhaustion_waits_and_gets_freed_address() {
        let mut st = state(&["127.240.0.10-127.240.0.11"]);
        st.resync(vec![]);
        st.apply(svc("a", 0, dynamic(), &[]));
        st.apply(svc("b", 1, dynamic(), &[]));
        let c = st.apply(svc("c", 2, dynamic(), &[]));
        assert!(writes(&c).is_empty(), "nothing to write for a pending Service");
        assert_eq!(
            events(&c),
            [(
                "c".into(),
                REASON_ALLOCATION_FAILED,
                "no available IPv4 address in pool".into()
            )]
        );
        let d = st.apply(svc("d", 3, dynamic(), &[]));
        assert_eq!(events(&d).len(), 1);
        assert_eq!(st.pending(), [key("c"), key("d")]);
        // An unrelated change to a pending Service does not repeat the Event.
        assert!(st.apply(svc("d", 3, dynamic(), &[])).is_empty());
        // Deleting one frees its address for the oldest waiting Service.
        let del = st.delete(&key("a"));
        assert_eq!(writes(&del), [("c".into(), vec![ip("127.240.0.10")])]);
        assert_eq!(st.pending(), [key("d")]);
        // A type change away frees too, and clears that Service's ingress.
        let away = st.apply(svc("b", 1, Want::NotLoadBalancer, &["127.240.0.11"]));
        assert_eq!(
            writes(&away),
            [("b".into(), vec![]), ("d".into(), vec![ip("127.240.0.11")])]
        );
        assert!(st.pending().is_empty());
        check(&st);
    }

    #[test]
    fn other_classes_are_never_touched() {
        let mut st = state(&["127.240.0.10-127.240.0.11"]);
        let actions = st.resync(vec![
            svc("x", 0, Want::OtherClass, &["127.240.0.10"]),
            svc("y", 1, Want::OtherClass, &[]),
        ]);
        assert!(actions.is_empty());
        assert!(st.apply(svc("y", 1, Want::OtherClass, &["1.2.3.4"])).is_empty());
        assert!(st.delete(&key("x")).is_empty());
        check(&st);
    }

    #[test]
    fn requested_addresses() {
        let mut st = state(&["127.240.0.10-127.240.0.12"]);
        st.resync(vec![]);
        let want = |ips: &[&str]| Want::Ours(Request::Specific(ips.iter().map(|s| ip(s)).collect()));
        let a = st.apply(svc("a", 0, want(&["127.240.0.12"]), &[]));
        assert_eq!(writes(&a), [("a".into(), vec![ip("127.240.0.12")])]);
        // Taken: no ingress, an Event naming the holder, and a wait.
        let b = st.apply(svc("b", 1, want(&["127.240.0.12"]), &[]));
        assert!(writes(&b).is_empty());
        assert_eq!(
            events(&b)[0].2,
            "requested address 127.240.0.12 is already in use by Service default/a"
        );
        // Not in the pool: no ingress, no wait.
        let c = st.apply(svc("c", 2, want(&["127.241.0.1"]), &[]));
        assert_eq!(
            events(&c)[0].2,
            "requested address 127.241.0.1 is not in the pool"
        );
        assert_eq!(st.pending(), [key("b")]);
        // Dynamic allocation skips requested-and-held addresses.
        let d = st.apply(svc("d", 3, dynamic(), &[]));
        assert_eq!(writes(&d), [("d".into(), vec![ip("127.240.0.10")])]);
        // a moves to another address: b gets the one it asked for.
        let moved = st.apply(svc("a", 0, want(&["127.240.0.11"]), &["127.240.0.12"]));
        assert_eq!(
            writes(&moved),
            [
                ("a".into(), vec![ip("127.240.0.11")]),
                ("b".into(), vec![ip("127.240.0.12")])
            ]
        );
        // A request for an unavailable address drops the old one: no ingress.
        let e = st.apply(svc("d", 3, want(&["127.240.0.12"]), &["127.240.0.10"]));
        assert_eq!(writes(&e), [("d".into(), vec![])]);
        // Invalid requests clear the ingress too.
        let inv = st.apply(svc(
            "b",
            1,
            Want::Ours(Request::Invalid("bad".into())),
            &["127.240.0.12"],
        ));
        assert_eq!(writes(&inv)[0], ("b".into(), vec![]));
        // ... and d, which waited for .12, gets it.
        assert_eq!(writes(&inv)[1], ("d".into(), vec![ip("127.240.0.12")]));
        check(&st);
    }

    #[test]
    fn dual_stack() {
        let mut st = state(&["127.240.0.10", "fd00:240::/126"]);
        st.resync(vec![]);
        let both = |fams: &[IpFamily]| Want::Ours(Request::Dynamic(fams.to_vec()));
        let a = st.apply(svc("a", 0, both(&[IpFamily::Ipv6, IpFamily::Ipv4]), &[]));
        assert_eq!(
            writes(&a),
            [("a".into(), vec![ip("fd00:240::1"), ip("127.240.0.10")])]
        );
        // IPv4 is gone: a new dual-stack Service gets nothing (its IPv6 is not hoarded).
        let b = st.apply(svc("b", 1, both(&[IpFamily::Ipv4, IpFamily::Ipv6]), &[]));
        assert!(writes(&b).is_empty());
        assert_eq!(st.pool.used_in(IpFamily::Ipv6), 1);
        // An IPv6-only Service is unaffected.
        let c = st.apply(svc("c", 2, both(&[IpFamily::Ipv6]), &[]));
        assert_eq!(writes(&c), [("c".into(), vec![ip("fd00:240::2")])]);
        st.delete(&key("a"));
        assert_eq!(st.assigned(&key("b")), [ip("127.240.0.10"), ip("fd00:240::1")]);
        check(&st);
    }

    #[test]
    fn families_the_pool_lacks() {
        let mut st = state(&["127.240.0.10"]);
        st.resync(vec![]);
        // Dual-stack against an IPv4-only pool: just IPv4.
        let a = st.apply(svc(
            "a",
            0,
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv6, IpFamily::Ipv4])),
            &[],
        ));
        assert_eq!(writes(&a), [("a".into(), vec![ip("127.240.0.10")])]);
        let b = st.apply(svc(
            "b",
            1,
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv6])),
            &[],
        ));
        assert_eq!(events(&b)[0].2, "the pool has no IPv6 addresses");
        assert!(st.pending().is_empty(), "freeing IPv4 cannot help");
    }

    #[test]
    fn resync_keeps_assignments_and_oldest_wins() {
        let mut st = state(&["127.240.0.10-127.240.0.13"]);
        let actions = st.resync(vec![
            svc("young", 5, dynamic(), &["127.240.0.10"]),
            svc("old", 1, dynamic(), &["127.240.0.10"]),
            svc("kept", 3, dynamic(), &["127.240.0.12"]),
            svc("new", 4, dynamic(), &[]),
            svc("moved", 6, dynamic(), &["127.250.0.1"]),
        ]);
        assert_eq!(st.assigned(&key("old")), [ip("127.240.0.10")]);
        assert_eq!(st.assigned(&key("kept")), [ip("127.240.0.12")]);
        // New addresses are handed out oldest first, after every shown address was claimed.
        assert_eq!(st.assigned(&key("new")), [ip("127.240.0.11")]);
        assert_eq!(st.assigned(&key("young")), [ip("127.240.0.13")]);
        assert!(st.assigned(&key("moved")).is_empty());
        assert_eq!(st.pending(), [key("moved")]);
        let ev = events(&actions);
        assert_eq!(
            ev[0],
            (
                "young".into(),
                REASON_CONFLICT,
                "address 127.240.0.10 is also assigned to the older Service default/old; assigning another address".into()
            )
        );
        assert_eq!(
            writes(&actions),
            [
                ("new".into(), vec![ip("127.240.0.11")]),
                ("young".into(), vec![ip("127.240.0.13")]),
                ("moved".into(), vec![]),
            ]
        );
        // A re-list of the same world is a no-op.
        let again = vec![
            svc("young", 5, dynamic(), &["127.240.0.13"]),
            svc("old", 1, dynamic(), &["127.240.0.10"]),
            svc("kept", 3, dynamic(), &["127.240.0.12"]),
            svc("new", 4, dynamic(), &["127.240.0.11"]),
            svc("moved", 6, dynamic(), &[]),
        ];
        let actions = st.resync(again);
        assert!(writes(&actions).is_empty(), "{actions:?}");
        assert!(events(&actions).is_empty(), "the failure was already reported");
        check(&st);
    }

    #[test]
    fn recreated_under_the_same_name() {
        let mut st = state(&["127.240.0.10"]);
        st.resync(vec![]);
        st.apply(svc("a", 0, dynamic(), &[]));
        let mut again = svc("a", 9, Want::NotLoadBalancer, &[]);
        again.uid = "other".into();
        assert!(writes(&st.apply(again)).is_empty());
        assert!(st.pool.iter().next().is_none());
        check(&st);
    }

    /// Random histories keep the invariants: the pool holds exactly the assigned addresses, nobody
    /// shares one, and every Service of ours is either fully served or waiting/failed with a reason.
    #[test]
    fn random_histories_keep_invariants() {
        use svcnet_alloc::{RandomSource, SplitMix64};
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let mut pick = |n: u64| (rng.next_u64() % n) as usize;
            let mut st = state(&["127.240.0.10-127.240.0.13", "fd00:240::/126"]);
            st.resync(vec![]);
            let names = ["a", "b", "c", "d", "e", "f", "g"];
            let mut alive: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            for step in 0..60 {
                let name = names[pick(names.len() as u64)];
                let want = match pick(7) {
                    0 => Want::NotLoadBalancer,
                    1 => Want::OtherClass,
                    2 => Want::Ours(Request::Specific(vec![ip([
                        "127.240.0.10",
                        "127.240.0.12",
                        "127.241.0.1",
                    ][pick(3)])])),
                    3 => Want::Ours(Request::Dynamic(vec![IpFamily::Ipv4, IpFamily::Ipv6])),
                    4 => Want::Ours(Request::Dynamic(vec![IpFamily::Ipv6])),
                    _ => dynamic(),
                };
                let actions = if pick(5) == 0 {
                    alive.remove(name);
                    st.delete(&key(name))
                } else {
                    let shown = alive.get(name).cloned().unwrap_or_default();
                    let mut info = svc(name, pick(10) as i64, want, &[]);
                    // Some share (two keys, two ports, two protocols), so addresses are shared and
                    // clash.
                    if pick(2) == 0 {
                        info.share = Share {
                            key: Some(["k", "j"][pick(2)].to_string()),
                            backend: String::new(),
                            ports: vec![([53, 80][pick(2)], ["TCP", "UDP"][pick(2)].to_string())],
                        };
                    }
                    // A Service keeps its creation time until it is deleted.
                    if let Some(old) = st.services.get(&key(name)) {
                        info.created = old.created;
                    }
                    info.ingress = shown.into_iter().map(Some).collect();
                    st.apply(info)
                };
                // What the statuses show after the writes.
                for a in actions {
                    if let Action::WriteStatus { key, ingress, .. } = a {
                        // The shell records what a successful write returned.
                        let mut written = st.services[&key].clone();
                        written.ingress = ingress.iter().copied().map(Some).collect();
                        st.observe(written);
                        alive.insert(key.name, ingress);
                    }
                }
                check(&st);
                // Services holding one address may share it.
                for (a, ips) in &st.assigned {
                    for (b, other) in &st.assigned {
                        if a < b && ips.iter().any(|ip| other.contains(ip)) {
                            let (sa, sb) = (&st.services[a].share, &st.services[b].share);
                            assert_eq!(sa.conflict(sb, b), None, "seed {seed} step {step}: {a} and {b}");
                        }
                    }
                }
                for (k, info) in &st.services {
                    let held = st.assigned(k);
                    if let Want::Ours(Request::Dynamic(f)) = &info.want
                        && !st.pending.contains(k)
                    {
                        assert_eq!(held.len(), f.len(), "seed {seed} step {step}: {k} {held:?}");
                    }
                    if !matches!(info.want, Want::Ours(_)) {
                        assert!(held.is_empty());
                    }
                }
                // A re-list of what the statuses show changes nothing.
                let mut replay = IpamState::new(st.entries.clone()).unwrap();
                let infos: Vec<SvcInfo> = st
                    .services
                    .values()
                    .map(|i| {
                        let mut i = i.clone();
                        i.ingress = alive
                            .get(&i.key.name)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(Some)
                            .collect();
                        i
                    })
                    .collect();
                let again = replay.resync(infos);
                assert!(
                    writes(&again).is_empty(),
                    "seed {seed} step {step}: {again:?}\n{:#?}\n{:?}",
                    st.services
                        .values()
                        .map(|i| (&i.key.name, &i.want, i.created))
                        .collect::<Vec<_>>(),
                    (&st.assigned, &st.pending, &alive)
                );
                assert_eq!(replay.assigned, st.assigned, "seed {seed} step {step}");
            }
        }
    }
}
