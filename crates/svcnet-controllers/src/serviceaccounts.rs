//! kube-controller-manager's service-account controller: every active namespace has a ServiceAccount
//! named `default`, created with the namespace and again if it is deleted. (svcnet issues no tokens for
//! it yet; pods name it in `spec.serviceAccountName`, which the API server defaults to `default`.)

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use svcnet_informer::{Event, Informer};
use tracing::{debug, warn};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Runs the controller until the watches end: on every namespace event, and on the deletion of a
/// `default` ServiceAccount, creates the namespace's `default` ServiceAccount if the namespace is active
/// and its cache has none.
///
/// It creates through `client` (kube's `system:controller:service-account-controller` may only create
/// ServiceAccounts), reads namespaces from the shared informers and watches ServiceAccounts through
/// their client (kube's controller reads both kinds from the shared informer factory, as
/// kube-controller-manager itself).
pub async fn run_service_account_controller(client: Client, informers: crate::SharedInformers) {
    let namespaces = &informers.namespaces;
    let accounts: Informer<ServiceAccount> = Informer::new(crate::trim_managed_fields);
    accounts.spawn_with(
        Api::all(informers.watcher_or(&client)),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
    );
    let mut ns_events = namespaces.subscribe();
    let mut sa_events = accounts.subscribe();
    let (ns_store, sa_store) = (namespaces.store(), accounts.store());
    // Acting before the cache is complete would create what merely is not listed yet (a 409).
    sa_store.wait_until_synced().await;
    loop {
        let ns_name = tokio::select! {
            ev = ns_events.recv() => match ev {
                Some(Event::Apply { obj, .. }) => obj.metadata.name.clone(),
                Some(_) => continue,
                None => return,
            },
            ev = sa_events.recv() => match ev {
                Some(Event::Delete(sa)) => sa.metadata.namespace.clone(),
                Some(_) => continue,
                None => return,
            },
        };
        let Some(ns_name) = ns_name else { continue };
        let active = ns_store
            .get_named("", &ns_name)
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none());
        if !active || sa_store.get_named(&ns_name, DEFAULT_SERVICE_ACCOUNT).is_some() {
            continue;
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                namespace: Some(ns_name.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match Api::<ServiceAccount>::namespaced(client.clone(), &ns_name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => debug!(namespace = %ns_name, "created the default ServiceAccount"),
            // Created meanwhile, or the namespace began terminating: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
            Err(e) => warn!(namespace = %ns_name, error = %e, "creating the default ServiceAccount"),
        }
    }
}
