//! What exists in every cluster from the start, and the control-plane loops that live with the API
//! server: the four system namespaces, the default ServiceCIDR `kubernetes` (from the flags), the `default/kubernetes` Service with its endpoints pointing at
//! this API server, the `kube-system/kube-dns` Service, and namespace finalization (a deleted namespace
//! is emptied, then removed).
//!
//! Bootstrap objects are created through the same request path as any client's, so they are defaulted,
//! validated and allocated exactly like user objects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use svcnet_api::resources::{self, ResourceType};
use tracing::{info, warn};

use crate::ApiServer;
use crate::errors::ApiError;
use crate::handlers::WriteCtx;
use crate::request::{Params, ResourceRoute};

const MANAGER: &str = "svcnet-apiserver";

pub(crate) fn rt(plural: &str, group: &str) -> &'static ResourceType {
    resources::lookup(group, "v1", plural).expect("bootstrap kinds are always served")
}

impl ApiServer {
    fn route_for(rt: &'static ResourceType, ns: Option<&str>, name: Option<&str>) -> ResourceRoute {
        ResourceRoute::object(rt, ns.map(str::to_string), name.map(str::to_string))
    }

    /// Creates `obj` unless an object of that name exists.
    pub(crate) async fn ensure(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<(), ApiError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if self.cached(rt, ns, &name).is_some() {
            return Ok(());
        }
        let route = Self::route_for(rt, ns, None);
        let params = Params::default();
        let ctx = WriteCtx::internal(&route, &params, MANAGER);
        match self.create(&ctx, obj).await {
            Ok(_) => {
                info!(kind = rt.kind, namespace = ns.unwrap_or(""), %name, "created bootstrap object");
                Ok(())
            }
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the system namespaces and built-in Services. `api_addr` is where this server listens.
    pub async fn bootstrap(&self, api_addr: SocketAddr) -> Result<(), ApiError> {
        let namespaces = rt("namespaces", "");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.ensure(
                namespaces,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}),
            )
            .await?;
        }
        let cidrs = self.kind_hooks.service_cidrs();
        // The default ServiceCIDR, from the flags, before the first Service takes an address from it.
        if !cidrs.is_empty() {
            let ranges: Vec<String> = cidrs.iter().map(|c| c.trunc().to_string()).collect();
            self.ensure(
                crate::ipam::service_cidr_rt(),
                None,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                    "metadata": {"name": svcnet_kinds::kinds::servicecidr::DEFAULT_NAME},
                    "spec": {"cidrs": ranges}}),
            )
            .await?;
        }
        let services = rt("services", "");
        if let Some(cidr) = cidrs.first() {
            let nth = |n| svcnet_alloc::nth_address(cidr, n).map(|ip| ip.to_string());
            if let Some(ip) = nth(1) {
                self.ensure(
                    services,
                    Some("default"),
                    json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
                        "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None",
                            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_addr.port()}]}}),
                )
                .await?;
            }
            if let Some(ip) = nth(10) {
                self.ensure(
                    services,
                    Some("kube-system"),
                    json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
                        "spec": {"type": "ClusterIP", "clusterIP": ip, "selector": {"k8s-app": "kube-dns"},
                            "ports": [
                                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
                )
                .await?;
            }
        }
        // This server and every other one whose Lease is live (see `apiserver_leases`).
        let leases = self.cached_list(rt("leases", "coordination.k8s.io"), Some("kube-system"));
        let mut addrs = crate::apiserver_leases::live_addresses(&leases, jiff::Timestamp::now());
        if !addrs.contains(&api_addr) {
            addrs.push(api_addr);
            addrs.sort();
        }
        self.publish_apiserver_endpoints(&addrs).await?;
        self.bootstrap_rbac().await
    }

    /// The `kubernetes` Service has no selector: its Endpoints and EndpointSlice name the API servers
    /// at `addrs` (see [`crate::apiserver_leases::endpoints_for`]).
    pub(crate) async fn publish_apiserver_endpoints(&self, addrs: &[SocketAddr]) -> Result<(), ApiError> {
        let (subsets, endpoints, port) = crate::apiserver_leases::endpoints_for(addrs);
        let family = if addrs.first().is_none_or(SocketAddr::is_ipv4) {
            "IPv4"
        } else {
            "IPv6"
        };
        let want_ep = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": subsets});
        let want_slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "svcnet-apiserver"}},
            "addressType": family,
            "endpoints": endpoints,
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
        for (plural, group, obj, path) in [
            ("endpoints", "", want_ep, "/subsets"),
            ("endpointslices", "discovery.k8s.io", want_slice, "/endpoints"),
        ] {
            let rt = rt(plural, group);
            match self.cached(rt, Some("default"), "kubernetes") {
                None => self.ensure(rt, Some("default"), obj).await?,
                // Another server set, or a restart on another address, re-points the endpoints.
                Some(cur)
                    if cur.pointer(path) != obj.pointer(path)
                        || cur.pointer("/ports") != obj.pointer("/ports") =>
                {
                    self.put_internal(rt, Some("default"), "kubernetes", obj).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Creates or replaces `obj` (named `name`) as the API server itself.
    pub(crate) async fn put_internal(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: Value,
    ) -> Result<(), ApiError> {
        if self.cached(rt, ns, name).is_none() {
            let route = Self::route_for(rt, ns, None);
            let params = Params::default();
            match self
                .create(&WriteCtx::internal(&route, &params, MANAGER), obj.clone())
                .await
            {
                Err(e) if e.code == 409 => {}
                other => return other.map(|_| ()),
            }
        }
        let route = Self::route_for(rt, ns, Some(name));
        let params = Params::default();
        self.update(&WriteCtx::internal(&route, &params, MANAGER), obj)
            .await
            .map(|_| ())
    }

    /// Finishes namespace deletions: deletes everything in a terminating namespace, then the namespace.
    pub fn spawn_namespace_finalizer(self: &Arc<Self>) {
        let server = self.clone();
        tokio::spawn(async move {
            let namespaces = rt("namespaces", "");
            // Event-driven. While a namespace is terminating, every change wakes the loop (its objects
            // going away is what it waits for); otherwise only a change to a namespace does, so that an
            // ordinary write costs this loop nothing.
            const PREFIX: &str = "/core/namespaces/";
            let (_, _, mut changes) = server.cache.watch_from_now(PREFIX);
            loop {
                let mut terminating = false;
                for ns in server.cached_list(namespaces, None) {
                    if ns.pointer("/metadata/deletionTimestamp").is_some()
                        && let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str)
                    {
                        terminating = true;
                        if let Err(e) = server.finalize_namespace(name).await {
                            warn!(namespace = name, error = %e, "namespace finalization failed; will retry");
                        }
                    }
                }
                let wake = async {
                    loop {
                        match changes.recv().await {
                            Ok(ev) if !terminating && !ev.key.starts_with(PREFIX) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                            // A namespace change, anything while one terminates, or missed events.
                            _ => return true,
                        }
                    }
                };
                tokio::select! {
                    open = wake => if !open { return },
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        });
    }

    async fn finalize_namespace(&self, name: &str) -> Result<(), ApiError> {
        let params = Params::default();
        let mut remaining = 0;
        for rt in resources::all().filter(|r| r.namespaced) {
            for obj in self.cached_list(rt, Some(name)) {
                remaining += 1;
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
                    continue;
                };
                let route = Self::route_for(rt, Some(name), Some(n));
                let ctx = WriteCtx::internal(&route, &params, MANAGER);
                match self.delete(&ctx, None).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let namespaces = rt("namespaces", "");
        let still_there = resources::all()
            .filter(|r| r.namespaced)
            .any(|rt| !self.cached_list(rt, Some(name)).is_empty());
        if remaining > 0 && still_there {
            return Ok(());
        }
        // Empty: drop the `kubernetes` finalizer and the namespace goes.
        let Some(ns) = self.cached(namespaces, None, name) else {
            return Ok(());
        };
        let mut obj = (*ns).clone();
        if let Some(f) = obj.pointer_mut("/spec/finalizers").and_then(Value::as_array_mut) {
            f.retain(|x| x != "kubernetes");
        }
        let route = Self::route_for(namespaces, None, Some(name));
        let ctx = WriteCtx::internal(&route, &params, MANAGER);
        self.update(&ctx, obj).await?;
        Ok(())
    }
}
