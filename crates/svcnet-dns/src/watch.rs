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

/// Per-resource listing state.
#[derive(Default)]
struct Listing {
    seen: Option<HashSet<String>>,
    seen_pods: Option<HashSet<u64>>,
    synced: bool,
}

/// Applies one event of any kind to the writer.
struct Feeder {
    svc: Listing,
    slice: Listing,
    ns: Listing,
    pod: Listing,
    pods_wanted: bool,
}

impl Feeder {
    fn all_synced(&self) -> bool {
        self.svc.synced && self.slice.synced && self.ns.synced && (!self.pods_wanted || self.pod.synced)
    }

    fn handle(&mut self, w: &mut ZoneWriter, ev: Ev) {
        use watcher::Event as E;
        match ev {
            Ev::Svc(Ok(e)) => match e {
                E::Init => self.svc.seen = Some(HashSet::new()),
                E::InitApply(s) | E::Apply(s) => {
                    if let Some(seen) = self.svc.seen.as_mut() {
                        seen.insert(id_of(&s.metadata));
                    }
                    if let Some(spec) = service_spec(&s) {
                        w.apply_service(&spec);
                    }
                }
                E::Delete(s) => {
                    if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                        w.delete_service(ns, n);
                    }
                }
                E::InitDone => {
                    let seen = self.svc.seen.take().unwrap_or_default();
                    for id in w.service_ids() {
                        if !seen.contains(&id)
                            && let Some((ns, n)) = id.split_once('/')
                        {
                            w.delete_service(ns, n);
                        }
                    }
                    self.svc.synced = true;
                }
            },
            Ev::Slice(Ok(e)) => match e {
                E::Init => self.slice.seen = Some(HashSet::new()),
                E::InitApply(s) | E::Apply(s) => {
                    if let Some(seen) = self.slice.seen.as_mut() {
                        seen.insert(id_of(&s.metadata));
                    }
                    match slice_spec(&s) {
                        Some(spec) => w.apply_slice(&spec),
                        None => {
                            if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                                w.delete_slice(ns, n);
                            }
                        }
                    }
                }
                E::Delete(s) => {
                    if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                        w.delete_slice(ns, n);
                    }
                }
                E::InitDone => {
                    let seen = self.slice.seen.take().unwrap_or_default();
                    for id in w.slice_ids() {
                        if !seen.contains(&id)
                            && let Some((ns, n)) = id.split_once('/')
                        {
                            w.delete_slice(ns, n);
                        }
                    }
                    self.slice.synced = true;
                }
            },
            Ev::Ns(Ok(e)) => match e {
                E::Init => self.ns.seen = Some(HashSet::new()),
                E::InitApply(n) | E::Apply(n) => {
                    if let Some(name) = &n.metadata.name {
                        if let Some(seen) = self.ns.seen.as_mut() {
                            seen.insert(name.clone());
                        }
                        w.apply_namespace(name);
                    }
                }
                E::Delete(n) => {
                    if let Some(name) = &n.metadata.name {
                        w.delete_namespace(name);
                    }
                }
                E::InitDone => {
                    let seen = self.ns.seen.take().unwrap_or_default();
                    for name in w.namespace_ids() {
                        if !seen.contains(&name) {
                            w.delete_namespace(&name);
                        }
                    }
                    self.ns.synced = true;
                }
            },
            Ev::Pod(Ok(e)) => match e {
                E::Init => self.pod.seen_pods = Some(HashSet::new()),
                E::InitApply(p) | E::Apply(p) => {
                    if let (Some(ns), Some(n)) = (&p.metadata.namespace, &p.metadata.name) {
                        if let Some(seen) = self.pod.seen_pods.as_mut() {
                            seen.insert(pod_id(ns, n));
                        }
                        w.apply_pod(ns, n, &pod_ips(&p));
                    }
                }
                E::Delete(p) => {
                    if let (Some(ns), Some(n)) = (&p.metadata.namespace, &p.metadata.name) {
                        w.delete_pod(ns, n);
                    }
                }
                E::InitDone => {
                    let seen = self.pod.seen_pods.take().unwrap_or_default();
                    for id in w.pod_ids() {
                        if !seen.contains(&id) {
                            w.delete_pod_id(id);
                        }
                    }
                    self.pod.synced = true;
                }
            },
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
