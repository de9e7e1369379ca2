//! The controllers' sync functions: one Service's EndpointSlices, Endpoints or mirrored slices made
//! what the cache says they should be, written through the API.

use super::cache::pod_node;
use super::*;
use crate::events::{Involved, Recorder};

/// The component kube's EndpointSlice controller signs its Events with.
const EVENT_COMPONENT: &str = "endpoint-slice-controller";

pub(super) struct Controllers {
    /// The EndpointSlice controller's client ([`crate::identity::ENDPOINTSLICE`]).
    pub(super) client: Client,
    /// The Endpoints controller's ([`crate::identity::ENDPOINT`]).
    pub(super) endpoints_client: Client,
    /// The mirroring controller's ([`crate::identity::ENDPOINTSLICE_MIRRORING`]).
    pub(super) mirroring_client: Client,
    pub(super) cfg: EndpointSliceConfig,
    pub(super) shared: Arc<Shared>,
}

pub(super) fn is_api(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Controllers {
    pub(super) async fn sync_slices(&self, key: &Key) -> Result<(), Error> {
        let started = Instant::now();
        let res = self.sync_slices_inner(key).await;
        let m = &self.cfg.metrics;
        m.sync_duration.observe(started.elapsed().as_secs_f64());
        m.sync(match &res {
            Ok(()) => "success",
            Err(Error::Stale) => "stale",
            Err(_) => "error",
        });
        res
    }

    pub(super) async fn sync_slices_inner(&self, key: &Key) -> Result<(), Error> {
        let owner: Owner = (CONTROLLER_NAME.to_owned(), key.clone());
        let (svc, pods, existing, nodes, trigger, zone_ratios, had_auto_hints) = {
            let mut c = self.shared.lock();
            let Some(svc) = c.services.get(key).cloned() else {
                // The garbage collector deletes the slices through their ownerReferences.
                c.slice_triggers.seen.remove(key);
                c.auto_hints.remove(key);
                return Ok(());
            };
            let external = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
            if external || selector(&svc).is_none() {
                // Selector-less Services get user-managed (or mirrored) slices.
                return Ok(());
            }
            if c.stale(&owner) {
                return Err(Error::Stale);
            }
            let pods = c.selected_pods(&svc);
            let existing = c.owned_slices(&owner);
            let nodes: NodeZones = pods
                .iter()
                .map(|p| pod_node(p))
                .filter_map(|n| c.nodes.get(&n).map(|z| (n, z.clone())))
                .collect();
            let trigger = c.slice_triggers.compute(&svc, key, &pods);
            let had_auto_hints = c.auto_hints.contains(key);
            (
                svc,
                pods,
                existing,
                nodes,
                trigger,
                c.zone_ratios.clone(),
                had_auto_hints,
            )
        };
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let plan = reconciler::reconcile(
            &svc,
            &reconciler::Inputs {
                pods: &pod_refs,
                nodes: &nodes,
                existing: &existing,
                max_endpoints: self.cfg.max_endpoints_per_slice,
                trigger_time: trigger,
                zone_ratios: zone_ratios.as_ref(),
                had_auto_hints,
            },
        );
        let m = &self.cfg.metrics;
        m.added_per_sync.observe(plan.added as f64);
        m.removed_per_sync.observe(plan.removed as f64);
        let wrote = !plan.is_empty();
        let terminating = svc.metadata.deletion_timestamp.is_some();
        let missing = plan.missing_nodes.clone();
        let (auto_hints, events) = (plan.auto_hints, plan.events.clone());
        self.execute(&owner, plan, terminating, &m.changes).await?;
        {
            let mut c = self.shared.lock();
            if auto_hints {
                c.auto_hints.insert(key.clone());
            } else {
                c.auto_hints.remove(key);
            }
        }
        if !events.is_empty() {
            let mut recorder = Recorder::new(self.client.clone(), EVENT_COMPONENT);
            let about = Involved::of("v1", "Service", &svc.metadata);
            for e in &events {
                recorder.record(&about, e.type_, e.reason, &e.message).await;
            }
        }
        if wrote && let Some(t) = trigger {
            let lag = jiff::Timestamp::now().duration_since(t);
            m.ready_to_slice.observe(lag.as_secs_f64().max(0.0));
        }
        if !missing.is_empty() {
            return Err(Error::MissingNodes(missing));
        }
        Ok(())
    }

    /// Carries out a plan, recording what the cache must show before the next sync of `owner`.
    pub(super) async fn execute(
        &self,
        owner: &Owner,
        plan: Plan,
        owner_terminating: bool,
        changes: &prometheus_client::metrics::family::Family<
            OperationLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Result<(), Error> {
        // Each controller writes its own slices as itself.
        let client = if owner.0 == mirroring::MIRROR_CONTROLLER_NAME {
            &self.mirroring_client
        } else {
            &self.client
        };
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &owner.1.namespace);
        let pp = PostParams::default();
        let expect = |name: Option<String>, e: Expect| {
            if let Some(name) = name {
                self.shared
                    .lock()
                    .expectations
                    .entry(owner.clone())
                    .or_default()
                    .insert(name, e);
            }
        };
        for s in plan.update {
            let name = s.metadata.name.clone().unwrap_or_default();
            let done = api.replace(&name, &pp, &s).await?;
            debug!(service = %owner.1, slice = %name, endpoints = done.endpoints.len(), "EndpointSlice updated");
            expect(
                done.metadata.name.clone(),
                Expect::Version(version(&done.metadata)),
            );
            EndpointSliceMetrics::change(changes, "update");
        }
        // Creating while the owner is being deleted would race the garbage collector.
        if !owner_terminating {
            for s in plan.create {
                match api.create(&pp, &s).await {
                    Ok(done) => {
                        debug!(service = %owner.1, slice = ?done.metadata.name, endpoints = done.endpoints.len(), "EndpointSlice created");
                        expect(
                            done.metadata.name.clone(),
                            Expect::Version(version(&done.metadata)),
                        );
                        EndpointSliceMetrics::change(changes, "create");
                    }
                    // A terminating namespace refuses creates until it is gone; nothing to do.
                    Err(e) if is_api(&e, 403) => {
                        debug!(service = %owner.1, error = %e, "EndpointSlice create refused");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for s in plan.delete {
            let name = s.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    expect(Some(name), Expect::Deleted);
                    EndpointSliceMetrics::change(changes, "delete");
                }
                Err(e) if is_api(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub(super) async fn sync_endpoints(&self, key: &Key) -> Result<(), Error> {
        let api: Api<Endpoints> = Api::namespaced(self.endpoints_client.clone(), &key.namespace);
        let changes = &self.cfg.metrics.endpoints_changes;
        let snapshot = {
            let mut c = self.shared.lock();
            if c.endpoints_stale(key) {
                return Err(Error::Stale);
            }
            let current = c.endpoints.get(key).cloned();
            let orphan_check = c.endpoints_orphan_check.remove(key);
            match c.services.get(key).cloned() {
                // No Service and no reason to look: user-managed Endpoints, left alone.
                None if !orphan_check => return Ok(()),
                None => {
                    c.endpoints_triggers.seen.remove(key);
                    Err(current)
                }
                Some(svc) if selector(&svc).is_none() => return Ok(()),
                Some(svc) => {
                    let pods = c.selected_pods(&svc);
                    let trigger = c.endpoints_triggers.compute(&svc, key, &pods);
                    Ok((svc, pods, current, trigger))
                }
            }
        };
        let (svc, pods, current, trigger) = match snapshot {
            Ok(s) => s,
            Err(current) => {
                // The Service was deleted (or is gone at start-up): so are its Endpoints, whoever
                // wrote them, except leader-election locks. Deleted by name even when the cache has
                // not shown them yet, as kube does.
                if current.as_deref().is_some_and(is_leader_lock) {
                    return Ok(());
                }
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {
                        EndpointSliceMetrics::change(changes, "delete");
                        if current.is_some() {
                            self.expect_endpoints(key, Expect::Deleted);
                        }
                    }
                    Err(e) if is_api(&e, 404) => {}
                    Err(e) => {
                        // Tried again with the queue's back-off: the reason to look must survive.
                        self.shared.lock().endpoints_orphan_check.insert(key.clone());
                        return Err(e.into());
                    }
                }
                return Ok(());
            }
        };
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let Some(want) = endpoints::desired_endpoints(&svc, &pod_refs, current.as_deref(), trigger) else {
            return Ok(());
        };
        let pp = PostParams::default();
        let written = if current.is_some() {
            let done = api.replace(&key.name, &pp, &want).await?;
            EndpointSliceMetrics::change(changes, "update");
            done
        } else {
            let done = api.create(&pp, &want).await?;
            EndpointSliceMetrics::change(changes, "create");
            done
        };
        self.expect_endpoints(key, Expect::Version(version(&written.metadata)));
        debug!(service = %key, "Endpoints written");
        Ok(())
    }

    pub(super) fn expect_endpoints(&self, key: &Key, e: Expect) {
        self.shared.lock().endpoints_expected.insert(key.clone(), e);
    }

    pub(super) async fn sync_mirroring(&self, key: &Key) -> Result<(), Error> {
        let owner: Owner = (mirroring::MIRROR_CONTROLLER_NAME.to_owned(), key.clone());
        let changes = &self.cfg.metrics.mirroring_changes;
        let (ep, existing) = {
            let mut c = self.shared.lock();
            let existing = c.owned_slices(&owner);
            let svc = c.services.get(key);
            let ep = c.endpoints.get(key).cloned();
            let mirror = svc.is_some_and(|s| selector(s).is_none())
                && ep.as_deref().is_some_and(mirroring::should_mirror);
            if mirror && c.stale(&owner) {
                return Err(Error::Stale);
            }
            (ep.filter(|_| mirror), existing)
        };
        let Some(ep) = ep else {
            // Not (or no longer) mirrored: the Service got a selector, or the Endpoints went away or
            // were marked skip-mirror.
            let plan = Plan {
                delete: existing,
                ..Plan::default()
            };
            return self.execute(&owner, plan, false, changes).await;
        };
        let (plan, invalid, too_many) =
            mirroring::reconcile(&ep, &existing, self.cfg.mirroring_max_endpoints_per_subset);
        if plan.is_empty() {
            return Ok(());
        }
        let terminating = ep.metadata.deletion_timestamp.is_some();
        self.execute(&owner, plan, terminating, changes).await?;
        if invalid > 0 || too_many > 0 {
            self.warn_mirroring(&ep, invalid, too_many).await;
        }
        Ok(())
    }

    /// kube's mirroring Events about addresses it could not mirror.
    pub(super) async fn warn_mirroring(&self, ep: &Endpoints, invalid: usize, too_many: usize) {
        let mut rec = crate::events::Recorder::new(
            self.mirroring_client.clone(),
            "endpointslice-mirroring-controller",
        );
        let about = crate::events::Involved::of("v1", "Endpoints", &ep.metadata);
        if invalid > 0 {
            let msg = format!("Skipped {invalid} invalid IP addresses when mirroring to EndpointSlices");
            rec.record(&about, "Warning", "InvalidIPAddress", &msg).await;
        }
        if too_many > 0 {
            let msg = format!(
                "A max of {} addresses can be mirrored to EndpointSlices per Endpoints subset. {too_many} addresses were skipped",
                self.cfg.mirroring_max_endpoints_per_subset
            );
            rec.record(&about, "Warning", "TooManyAddressesToMirror", &msg)
                .await;
        }
    }
}
