//! kube-controller-manager's root-ca-cert-publisher: every active namespace has a ConfigMap
//! `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so a pod (or any client in the namespace) can
//! verify the API server at its internal addresses. The ConfigMap is created with the namespace, made
//! again when it is deleted, and put back when its data or its description annotation is changed, as
//! kube's controller does; other keys, labels and annotations a user adds are left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use svcnet_informer::queue::{Key, WorkQueue};
use svcnet_informer::{Event, Informer, Store};
use tracing::{debug, warn};

/// The ConfigMap's name (kube's `RootCACertConfigMapName`).
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key that holds the CA bundle.
pub const KEY: &str = "ca.crt";
/// The annotation that says what the ConfigMap is for (kube's `DescriptionAnnotation`).
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Its text, kube's word for word.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across \
distributions of Kubernetes clusters.";

/// How long a failed sync waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the controller should write for a namespace whose cached ConfigMap is `current` (`None`: there is
/// none): a ConfigMap to create, one to update, or nothing when it already says what it should.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Create this ConfigMap.
    Create(ConfigMap),
    /// Replace the ConfigMap with this one (resourceVersion kept, so a concurrent change conflicts).
    Update(ConfigMap),
}

/// What `namespace`'s `kube-root-ca.crt` should become, given the one in the cache.
pub fn desired(namespace: &str, ca_pem: &str, current: Option<&ConfigMap>) -> Option<Action> {
    let data = BTreeMap::from([(KEY.to_string(), ca_pem.to_string())]);
    let Some(current) = current else {
        return Some(Action::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP.into()),
                namespace: Some(namespace.into()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        }));
    };
    let described = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    if current.data.as_ref() == Some(&data) && described {
        return None;
    }
    let mut cm = current.clone();
    cm.data = Some(data);
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(Action::Update(cm))
}

/// Runs the controller until the watches end: namespaces (every event) and the `kube-root-ca.crt`
/// ConfigMaps (changes and deletions) queue their namespace, and each queued namespace that is active
/// gets [`desired`]'s write through `client` (kube's `system:controller:root-ca-cert-publisher`, which
/// may only create and update ConfigMaps). Namespaces come from the shared informers, the ConfigMaps
/// are watched through their client (the controller manager's view); `ca_pem` is the bundle to publish
/// (kube-controller-manager's `--root-ca-file`).
pub async fn run_root_ca_cert_publisher(client: Client, informers: crate::SharedInformers, ca_pem: String) {
    let namespaces = &informers.namespaces;
    let maps: Informer<ConfigMap> = Informer::new(crate::trim_managed_fields);
    maps.spawn_with(
        Api::all(informers.watcher_or(&client)),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
    );
    let (ns_store, cm_store) = (namespaces.store(), maps.store());
    let (mut ns_events, mut cm_events) = (namespaces.subscribe(), maps.subscribe());
    let queue = WorkQueue::default();
    // Acting before the ConfigMap cache is complete would create what merely is not listed yet.
    cm_store.wait_until_synced().await;
    loop {
        let key = tokio::select! {
            ev = ns_events.recv() => match ev {
                Some(Event::Apply { obj, .. }) => obj.metadata.name.clone(),
                Some(_) => continue,
                None => return,
            },
            ev = cm_events.recv() => match ev {
                Some(Event::Apply { obj, .. } | Event::Delete(obj)) => obj.metadata.namespace.clone(),
                Some(Event::Listed) => continue,
                None => return,
            },
            key = queue.next() => Some(key.namespace),
        };
        let Some(ns) = key else { continue };
        if let Err(e) = sync(&client, &ns_store, &cm_store, &ns, &ca_pem).await {
            warn!(namespace = %ns, error = %e, "publishing the root CA, retrying");
            queue.add_after(Key::new(ns, CONFIG_MAP), RETRY);
        }
    }
}

async fn sync(
    client: &Client,
    ns_store: &Store<Namespace>,
    cm_store: &Store<ConfigMap>,
    ns: &str,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    // A namespace that is gone or terminating gets nothing (kube's create would be refused anyway).
    let active = ns_store
        .get_named("", ns)
        .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
    if !active {
        return Ok(());
    }
    let current = cm_store.get_named(ns, CONFIG_MAP);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let result = match desired(ns, ca_pem, current.as_deref()) {
        None => return Ok(()),
        Some(Action::Create(cm)) => api.create(&PostParams::default(), &cm).await,
        Some(Action::Update(cm)) => api.replace(CONFIG_MAP, &PostParams::default(), &cm).await,
    };
    match result {
        Ok(_) => {
            debug!(namespace = %ns, "published the root CA");
            Ok(())
        }
        // The namespace went or began terminating meanwhile (404, 403 with kube's NamespaceTerminating
        // cause): nothing to do. A 409 is a cache behind the store: its event queues the namespace again.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn created_when_missing_left_alone_when_right_and_repaired_when_changed() {
        let Some(Action::Create(made)) = desired("team-a", CA, None) else {
            panic!("a missing ConfigMap is created")
        };
        assert_eq!(made.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(made.data.as_ref().unwrap()[KEY], CA);
        assert_eq!(
            made.metadata.annotations.as_ref().unwrap()[DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        assert_eq!(desired("team-a", CA, Some(&made)), None);

        // Changed data is put back; a label the user added stays.
        let mut changed = made.clone();
        changed.data = Some(BTreeMap::from([
            (KEY.into(), "forged".into()),
            ("extra".into(), "x".into()),
        ]));
        changed.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        let Some(Action::Update(fixed)) = desired("team-a", CA, Some(&changed)) else {
            panic!("changed data is repaired")
        };
        assert_eq!(fixed.data, made.data);
        assert_eq!(fixed.metadata.labels, changed.metadata.labels);

        // So is a missing description.
        let mut bare = made.clone();
        bare.metadata.annotations = None;
        assert!(matches!(
            desired("team-a", CA, Some(&bare)),
            Some(Action::Update(_))
        ));
    }
}
