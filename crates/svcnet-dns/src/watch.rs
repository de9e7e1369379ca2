//! Feeding the zone from the API: informers ([`svcnet_informer`]) on Services, EndpointSlices,
//! Namespaces (and Pods for verified pod records). Every event changes only the objects it names; bursts
//! are applied together and published once. The zone is marked synced when every informer has sent its
//! first `Listed`; a relist after a broken watch drops what vanished meanwhile (the informer sends those
//! deletions).

use std::net::IpAddr;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use svcnet_informer::{Event, Informer};
use tracing::info;

use crate::zone::{EndpointSpec, PortSpec, ServiceKind, ServiceSpec, SliceSpec, ZoneWriter};

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

enum Ev {
    Svc(Event<Service>),
    Slice(Event<EndpointSlice>),
    Ns(Event<Namespace>),
    Pod(Event<Pod>),
}

/// One watched kind as the zone takes it: how its objects are applied and deleted.
trait Kind {
    fn apply(&self, w: &mut ZoneWriter);
    fn delete(&self, w: &mut ZoneWriter);
}

fn ns_name(m: &kube::api::ObjectMeta) -> Option<(&str, &str)> {
    Some((m.namespace.as_deref()?, m.name.as_deref()?))
}

impl Kind for Service {
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
}

impl Kind for EndpointSlice {
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
}

impl Kind for Namespace {
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
}

impl Kind for Pod {
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
}

/// Applies one informer event to the zone; true for the end of a (re)list.
fn handle<K: Kind>(w: &mut ZoneWriter, e: Event<K>) -> bool {
    match e {
        Event::Apply { obj, .. } => obj.apply(w),
        Event::Delete(obj) => obj.delete(w),
        Event::Listed => return true,
    }
    false
}

/// Applies one event of any kind to the writer, and remembers which kinds have listed.
#[derive(Default)]
struct Feeder {
    /// Listed once: services, slices, namespaces, pods.
    listed: [bool; 4],
    pods_wanted: bool,
}

impl Feeder {
    fn all_synced(&self) -> bool {
        let [svc, slice, ns, pod] = self.listed;
        svc && slice && ns && (!self.pods_wanted || pod)
    }

    fn handle(&mut self, w: &mut ZoneWriter, ev: Ev) {
        let (i, listed) = match ev {
            Ev::Svc(e) => (0, handle(w, e)),
            Ev::Slice(e) => (1, handle(w, e)),
            Ev::Ns(e) => (2, handle(w, e)),
            Ev::Pod(e) => (3, handle(w, e)),
        };
        self.listed[i] |= listed;
    }
}

/// Drops the metadata the zone never reads, as an object arrives (the informers cache every object of
/// their kind).
fn trim_meta(m: &mut kube::api::ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
}

/// A pod as the zone reads it: namespace, name and IPs.
fn trim_pod(p: &mut Pod) {
    let status = p.status.take().map(|s| k8s_openapi::api::core::v1::PodStatus {
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..Default::default()
    });
    *p = Pod {
        metadata: kube::api::ObjectMeta {
            namespace: p.metadata.namespace.take(),
            name: p.metadata.name.take(),
            ..Default::default()
        },
        spec: None,
        status,
    };
}

/// Watches the API and keeps `writer`'s zone current; returns only if every watch ends.
pub async fn run_watchers(client: kube::Client, mut writer: ZoneWriter, watch_pods: bool) {
    let svcs = Informer::<Service>::new(|s| trim_meta(&mut s.metadata));
    let slices = Informer::<EndpointSlice>::new(|s| trim_meta(&mut s.metadata));
    let nss = Informer::<Namespace>::new(|n| {
        trim_meta(&mut n.metadata);
        n.spec = None;
        n.status = None;
    });
    let pods = Informer::<Pod>::new(trim_pod);
    let mut streams = vec![
        svcs.subscribe().map(Ev::Svc).boxed(),
        slices.subscribe().map(Ev::Slice).boxed(),
        nss.subscribe().map(Ev::Ns).boxed(),
    ];
    svcs.spawn(Api::all(client.clone()));
    slices.spawn(Api::all(client.clone()));
    nss.spawn(Api::all(client.clone()));
    if watch_pods {
        streams.push(pods.subscribe().map(Ev::Pod).boxed());
        pods.spawn(Api::all(client));
    }
    let mut merged = futures::stream::select_all(streams);
    let mut feeder = Feeder {
        pods_wanted: watch_pods,
        ..Feeder::default()
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
    use kube::runtime::watcher::Event as W;

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
        let mut w = ZoneWriter::new();
        let inf = Informer::<Service>::new(|s| trim_meta(&mut s.metadata));
        let mut sub = inf.subscribe();
        let mut feeder = Feeder::default();
        let mut feed = |w: &mut ZoneWriter, evs: Vec<W<Service>>| {
            for e in evs {
                inf.handle(e);
            }
            while let Some(e) = sub.try_recv() {
                feeder.handle(w, Ev::Svc(e));
            }
            feeder.listed[0]
        };
        let listed = feed(
            &mut w,
            vec![
                W::Init,
                W::InitApply(svc("a")),
                W::InitApply(svc("b")),
                W::InitDone,
            ],
        );
        assert!(listed);
        let mut ids = w.service_ids();
        ids.sort();
        assert_eq!(ids, ["default/a", "default/b"]);
        feed(&mut w, vec![W::Init, W::InitApply(svc("b")), W::InitDone]);
        assert_eq!(w.service_ids(), ["default/b"]);
        feed(&mut w, vec![W::Delete(svc("b"))]);
        assert!(w.service_ids().is_empty());
    }
}
