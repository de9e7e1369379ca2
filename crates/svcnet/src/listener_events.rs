//! Warning Events on Services the userspace proxy cannot listen for (out of file descriptors, an address
//! taken by another process), so that `kubectl describe svc` shows why a Service does not answer.
//!
//! The proxy publishes which service ports lack a listener ([`svcnet_proxy::UserspaceBackend::unbound`]);
//! this task records one Event per Service when it starts failing, and again only if it recovers and fails
//! anew (the proxy keeps retrying, so a Service that stays unbound would otherwise get an Event per retry).
//! Events are written one at a time: with thousands of Services failing at once they trickle in at the API
//! server's pace instead of competing with everything else for it.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use svcnet_controllers::events::{Involved, Recorder};
use svcnet_proxy::Unbound;
use tokio::sync::watch;
use tracing::debug;

/// The `reason` of the Events.
pub const REASON: &str = "FailedToListen";
/// The wait before trying again an Event that could not be written.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Records Events for `unbound` until the proxy is gone.
pub async fn run(client: kube::Client, mut unbound: watch::Receiver<Arc<Unbound>>) {
    let mut recorder = Recorder::new(client.clone(), "svcnet-proxy");
    // Services (namespace, name) an Event was recorded for, while they stay unbound.
    let mut told: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let now = unbound.borrow_and_update().clone();
        // The first error of each Service (its ports in order).
        let mut failing: Vec<((String, String), String)> = Vec::new();
        for (port, error) in now.iter() {
            let key = (port.namespace.to_string(), port.name.to_string());
            if failing.last().is_none_or(|(k, _)| *k != key) {
                failing.push((key, error.clone()));
            }
        }
        let still: BTreeSet<&(String, String)> = failing.iter().map(|(k, _)| k).collect();
        told.retain(|k| still.contains(k));
        let mut missed = false;
        for (key, error) in &failing {
            if told.contains(key) {
                continue;
            }
            // Changes that arrive meanwhile are taken up by the next round.
            if record(&client, &mut recorder, key, error).await {
                told.insert(key.clone());
            } else {
                missed = true;
            }
        }
        // An Event that could not be written (the API server busy) is tried again a little later.
        let retry = async {
            if missed {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = unbound.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

/// Records the Event; false if the Service could not be read (tried again later).
async fn record(
    client: &kube::Client,
    recorder: &mut Recorder,
    (ns, name): &(String, String),
    error: &str,
) -> bool {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    // The uid ties the Event to this Service (kubectl describe selects on it); a Service deleted since has
    // nothing to describe.
    let svc = match api.get_opt(name).await {
        Ok(Some(svc)) => svc,
        Ok(None) => return true,
        Err(e) => {
            debug!(service = %format!("{ns}/{name}"), error = %e, "cannot read the Service for its Event");
            return false;
        }
    };
    let message = format!(
        "the userspace proxy cannot serve this Service: {error}; retrying until it can (see \
         svcnet_proxy_unbound_listeners)"
    );
    recorder
        .record(
            &Involved::of("v1", "Service", &svc.metadata),
            "Warning",
            REASON,
            &message,
        )
        .await;
    true
}
