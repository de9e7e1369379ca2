//! Feeding the zone from the API: kube-rs watchers on Services, EndpointSlices, Namespaces (and Pods
//! for verified pod records). Every event changes only the objects it names; bursts are applied
//! together and published once. The zone is marked synced when every watch has listed once; a
//! re-list after a broken watch drops what vanished meanwhile.

use std::collections::HashSet;
use std::net::IpAddr;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use crate::zone::{EndpointSpec, PortSpec, ServiceKind, ServiceSpec, SliceSpec, ZoneWriter, pod_id};

/// Most events applied before a publish (keeps answers fresh during a flood).
const BATCH: usize = 1024;

/// A Service as the zone sees it.
pub fn service_spec(s: &Service) -> Option<ServiceSpec> {
    let namespace = s.metadata.namespace.clone()?;
    let name = s.metadata.name.clone()?;
    let spec = s.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
        {
            ips.push(ip);
        }
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| PortSpec {
            name: p.name.clone().unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.port,
        })
        .collect();
    Some(ServiceSpec {
        namespace,
        name,
        kind,
        ports,
    })
}

/// An EndpointSlice as the zone sees it: ready endpoints of an IP slice that names its Service.
pub fn slice_spec(s: &EndpointSlice) -> Option<SliceSpec> {
    let namespace = s.metadata.namespace.clone()?;
    let name = s.metadata.name.clone()?;
    let service = s
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?
        .clone();
    if s.address_type == "FQDN" {
        return None;
    }
    let ports = s
        .ports
        .iter()
        .flatten()
        .map(|p| PortSpec {
            name: p.name.clone().unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.port.unwrap_or(-1),
        })
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        // Unknown readiness counts as ready (the API's advice, and CoreDNS's reading).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| {
            e.addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .map(|ip| EndpointSpec {
                    ip,
                    hostname: e.hostname.clone(),
                })
        })
        .collect();
    Some(SliceSpec {
        namespace,
        name,
        service,
        ports,
        endpoints,
    })
}

fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let Some(status) = p.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

fn id_of(m: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

// Events are moved once from the stream to the handler; boxing them would only add allocations.
#[allow(clippy::large_enum_variant)]
enum Ev {
    Svc(watcher::Result<watcher::Event<Service>>),
    Slice(watcher::Result<watcher::Event<EndpointSlice>>),
    Ns(watcher::Result<watcher::Event<Namespace>>),
    Pod(watcher::Result<watcher::Event<Pod>>),
}

/// One watched kind as the zone takes it: how its objects are keyed, applied and deleted.
trait Kind: Sized {
    /// What a re-list remembers of an object.
    type Id: Eq + std::hash::Hash;
    fn id(&self) -> Option<Self::Id>;
    fn apply(&self, w: &mut ZoneWriter);
    fn delete(&self, w: &mut ZoneWriter);
    /// Every object of this kind the zone holds.
    fn ids(w: &ZoneWriter) -> Vec<Self::Id>;
    fn delete_id(w: &mut ZoneWriter, id: &Self::Id);
}

fn ns_name(m: &kube::api::ObjectMeta) -> Option<(&str, &str)> {
    Some((m.namespace.as_deref()?, m.name.as_deref()?))
}

impl Kind for Service {
    type Id = String;
    fn id(&self) -> Option<String> {
        Some(id_of(&self.metadata))
    }
    fn apply(&self, w: &mut ZoneWriter) {
        if let Some(spec) = service_spec(self) {
            w.apply_service(&spec);
        }
    }
    fn delete(&self, w: &mut ZoneWriter) {
        if let Some((ns, n)) = ns_name(&self.metadata) {
            w.delete_service(ns, n);
        }
    }
    fn ids(w: &ZoneWriter) -> Vec<String> {
        w.service_ids()
    }
    fn delete_id(w: &mut ZoneWriter, id: &String) {
        if let Some((ns, n)) = id.split_once('/') {
            w.delete_service(ns, n);
        }
    }
}

impl Kind for EndpointSlice {
    type Id = String;
    fn id(&self) -> Option<String> {
        Some(id_of(&self.metadata))
    }
    fn apply(&self, w: &mut ZoneWriter) {
        match slice_spec(self) {
            Some(spec) => w.apply_slice(&spec),
            None => self.delete(w),
        }
    }
    fn delete(&self, w: &mut ZoneWriter) {
        if let Some((ns, n)) = ns_name(&self.metadata) {
            w.delete_slice(ns, n);
        }
    }
    fn ids(w: &ZoneWriter) -> Vec<String> {
        w.slice_ids()
    }
    fn delete_id(w: &mut ZoneWriter, id: &String) {
        if let Some((ns, n)) = id.split_once('/') {
            w.delete_slice(ns, n);
        }
    }
}

impl Kind for Namespace {
    type Id = String;
    fn id(&self) -> Option<String> {
        self.metadata.name.clone()
    }
    fn apply(&self, w: &mut ZoneWriter) {
        if let Some(name) = &self.metadata.name {
            w.apply_namespace(name);
        }
    }
    fn delete(&self, w: &mut ZoneWriter) {
        if let Some(name) = &self.metadata.name {
            w.delete_namespace(name);
        }
    }
    fn ids(w: &ZoneWriter) -> Vec<String> {
        w.namespace_ids()
    }
    fn delete_id(w: &mut ZoneWriter, id: &String) {
        w.delete_namespace(id);
    }
}

impl Kind for Pod {
    type Id = u64;
    fn id(&self) -> Option<u64> {
        ns_name(&self.metadata).map(|(ns, n)| pod_id(ns, n))
    }
    fn apply(&self, w: &mut ZoneWriter) {
        if let Some((ns, n)) = ns_name(&self.metadata) {
            w.apply_pod(ns, n, &pod_ips(self));
        }
    }
    fn delete(&self, w: &mut ZoneWriter) {
        if let Some((ns, n)) = ns_name(&self.metadata) {
            w.delete_pod(ns, n);
        }
    }
    fn ids(w: &ZoneWriter) -> Vec<u64> {
        w.pod_ids()
    }
    fn delete_id(w: &mut ZoneWriter, id: &u64) {
        w.delete_pod_id(*id);
    }
}

/// One kind's listing state: what the running (re-)list has seen, and whether a list has completed.
struct Listing<I> {
    seen: Option<HashSet<I>>,
    synced: bool,
}

impl<I> Default for Listing<I> {
    fn default() -> Self {
        Listing {
            seen: None,
            synced: false,
        }
    }
}

impl<I: Eq + std::hash::Hash> Listing<I> {
    /// Applies one event; at the end of a (re-)list, drops whatever the list no longer had.
    fn handle<K: Kind<Id = I>>(&mut self, w: &mut ZoneWriter, e: watcher::Event<K>) {
        use watcher::Event as E;
        match e {
            E::Init => self.seen = Some(HashSet::new()),
            E::InitApply(o) | E::Apply(o) => {
                if let (Some(seen), Some(id)) = (self.seen.as_mut(), o.id()) {
                    seen.insert(id);
                }
                o.apply(w);
            }
            E::Delete(o) => o.delete(w),
            E::InitDone => {
                let seen = self.seen.take().unwrap_or_default();
                for id in K::ids(w) {
                    if !seen.contains(&id) {
                        K::delete_id(w, &id);
                    }
                }
                self.synced = true;
            }
        }
    }
}

/// Applies one event of any kind to the writer.
struct Feeder {
    svc: Listing<String>,
    slice: Listing<String>,
    ns: Listing<String>,
    pod: Listing<u64>,
    pods_wanted: bool,
}

impl Feeder {
    fn all_synced(&self) -> bool {
        self.svc.synced && self.slice.synced && self.ns.synced && (!self.pods_wanted || self.pod.synced)
    }

    fn handle(&mut self, w: &mut ZoneWriter, ev: Ev) {
        match ev {
            Ev::Svc(Ok(e)) => self.svc.handle(w, e),
            Ev::Slice(Ok(e)) => self.slice.handle(w, e),
            Ev::Ns(Ok(e)) => self.ns.handle(w, e),
            Ev::Pod(Ok(e)) => self.pod.handle(w, e),
            Ev::Svc(Err(e)) | Ev::Slice(Err(e)) | Ev::Ns(Err(e)) | Ev::Pod(Err(e)) => {
                warn!(error = %e, "cluster DNS watch failed; retrying");
            }
        }
    }
}

/// Watches the API and keeps `writer`'s zone current; returns only if every watch ends.
pub async fn run_watchers(client: kube::Client, mut writer: ZoneWriter, watch_pods: bool) {
    let cfg = watcher::Config::default();
    let svcs = watcher(Api::<Service>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(Ev::Svc)
        .boxed();
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(Ev::Slice)
        .boxed();
    let nss = watcher(Api::<Namespace>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(Ev::Ns)
        .boxed();
    let mut streams = vec![svcs, slices, nss];
    if watch_pods {
        streams.push(
            watcher(Api::<Pod>::all(client), cfg)
                .default_backoff()
                .map(Ev::Pod)
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    let mut feeder = Feeder {
        svc: Listing::default(),
        slice: Listing::default(),
        ns: Listing::default(),
        pod: Listing::default(),
        pods_wanted: watch_pods,
    };
    while let Some(ev) = merged.next().await {
        feeder.handle(&mut writer, ev);
        for _ in 0..BATCH {
            match merged.next().now_or_never() {
                Some(Some(ev)) => feeder.handle(&mut writer, ev),
                _ => break,
            }
        }
        if !writer.is_synced() && feeder.all_synced() {
            writer.mark_synced();
            let (s, e, p) = writer.counts();
            info!(
                services = s,
                slices = e,
                pods = p,
                "cluster DNS synced with the API"
            );
        }
        // Until synced nothing is served from the data, so publishing early would only cost copies.
        if writer.is_synced() {
            writer.publish();
        }
    }
}

#[cfg(test)]
mod relist_tests {
    use super::*;

    fn svc(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    /// A re-list drops what it no longer lists and keeps the rest; a watch delete removes at once.
    #[test]
    fn relist_drops_what_vanished() {
        use watcher::Event as E;
        let mut w = ZoneWriter::new();
        let mut l = Listing::<String>::default();
        for e in [
            E::Init,
            E::InitApply(svc("a")),
            E::InitApply(svc("b")),
            E::InitDone,
        ] {
            l.handle(&mut w, e);
        }
        assert!(l.synced);
        let mut ids = w.service_ids();
        ids.sort();
        assert_eq!(ids, ["default/a", "default/b"]);
        for e in [E::Init, E::InitApply(svc("b")), E::InitDone] {
            l.handle(&mut w, e);
        }
        assert_eq!(w.service_ids(), ["default/b"]);
        l.handle(&mut w, E::Delete(svc("b")));
        assert!(w.service_ids().is_empty());
    }
}
