//! The ConfigMaps and Secrets this node's pods use, as the kubelet's watch-based managers keep them
//! (`pkg/kubelet/util/manager/watch_based_manager.go`): one watch per referenced object, by
//! `metadata.name`, started when the first pod on the node refers to it and stopped when the last one
//! leaves. The node never lists all Secrets: the Node authorizer lets it read exactly the objects its
//! pods reference, one by one.
//!
//! What it knows feeds the runner (containers' `env`/`envFrom`, through [`crate::runner::ObjectSource`])
//! and the pods' volumes (`super::volumes`). A change of content or existence bumps a generation that
//! waiting containers follow, and names the object to the pod loop, which rewrites the volumes of the pods
//! that use it and starts those that waited for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::runner::{Lookup, ObjectData, ObjectKind, ObjectSource};

/// One object: its kind, namespace and name.
pub(super) type Key = (ObjectKind, String, String);

struct Item {
    value: Lookup,
    /// The pods (uids) that refer to it.
    pods: HashSet<String>,
    watch: tokio::task::AbortHandle,
}

#[derive(Default)]
struct State {
    items: HashMap<Key, Item>,
    /// Each pod's references, to drop what it no longer uses.
    by_pod: HashMap<String, Vec<Key>>,
}

/// The node's view of the ConfigMaps and Secrets its pods use. Cheap to clone.
#[derive(Clone)]
pub(super) struct Objects {
    client: Client,
    state: Arc<Mutex<State>>,
    generation: watch::Sender<u64>,
    changed: mpsc::UnboundedSender<Key>,
}

/// The ConfigMaps and Secrets `pod` refers to: its containers' `env` and `envFrom`, its `configMap`,
/// `secret` and `projected` volumes (the `kube-api-access-*` volume's CA comes from the agent's
/// kubeconfig, not from the `kube-root-ca.crt` ConfigMap).
pub(super) fn references(pod: &Pod) -> Vec<Key> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    let mut push = |kind, name: &str| {
        let key = (kind, ns.clone(), name.to_string());
        if !name.is_empty() && !out.contains(&key) {
            out.push(key);
        }
    };
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                push(ObjectKind::ConfigMap, &cm.name);
            }
            if let Some(s) = &from.secret_ref {
                push(ObjectKind::Secret, &s.name);
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            if let Some(cm) = &from.config_map_key_ref {
                push(ObjectKind::ConfigMap, &cm.name);
            }
            if let Some(s) = &from.secret_key_ref {
                push(ObjectKind::Secret, &s.name);
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if v.name.starts_with(super::volumes::TOKEN_VOLUME_PREFIX) {
            continue;
        }
        if let Some(cm) = &v.config_map {
            push(ObjectKind::ConfigMap, &cm.name);
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            push(ObjectKind::Secret, name);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                push(ObjectKind::ConfigMap, &cm.name);
            }
            if let Some(s) = &src.secret {
                push(ObjectKind::Secret, &s.name);
            }
        }
    }
    out
}

fn config_map_data(cm: ConfigMap) -> ObjectData {
    ObjectData {
        text: cm.data.unwrap_or_default(),
        binary: cm
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }
}

fn secret_data(s: Secret) -> ObjectData {
    let mut binary: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // The API server folds `stringData` into `data`; an API server that did not still means it.
    for (k, v) in s.string_data.unwrap_or_default() {
        binary.insert(k, v.into_bytes());
    }
    ObjectData {
        text: BTreeMap::new(),
        binary,
    }
}

impl Objects {
    /// The manager, and the receiver of the objects that change (for the pod loop).
    pub(super) fn new(client: Client) -> (Objects, mpsc::UnboundedReceiver<Key>) {
        let (changed, rx) = mpsc::unbounded_channel();
        let objects = Objects {
            client,
            state: Default::default(),
            generation: watch::Sender::new(0),
            changed,
        };
        (objects, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the objects `pod` refers to followed (a watch each, shared between pods), and stops
    /// following what it no longer refers to. Must be called within a Tokio runtime.
    pub(super) fn register(&self, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        let keys = references(pod);
        let mut st = self.lock();
        let old = st.by_pod.insert(uid.clone(), keys.clone()).unwrap_or_default();
        for key in &keys {
            if let Some(item) = st.items.get_mut(key) {
                item.pods.insert(uid.clone());
                continue;
            }
            let task = tokio::spawn(self.clone().follow(key.clone()));
            st.items.insert(
                key.clone(),
                Item {
                    value: Lookup::Pending,
                    pods: HashSet::from([uid.clone()]),
                    watch: task.abort_handle(),
                },
            );
        }
        for key in old.iter().filter(|k| !keys.contains(k)) {
            Self::release(&mut st, key, &uid);
        }
    }

    /// Forgets the pod `uid`: the objects only it used are no longer watched.
    pub(super) fn forget(&self, uid: &str) {
        let mut st = self.lock();
        for key in st.by_pod.remove(uid).unwrap_or_default() {
            Self::release(&mut st, &key, uid);
        }
    }

    /// Forgets every pod not in `live` (uids of a complete list): a pod deleted outright, never started.
    pub(super) fn retain(&self, live: &HashSet<String>) {
        let gone: Vec<String> = self
            .lock()
            .by_pod
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.forget(&uid);
        }
    }

    fn release(st: &mut State, key: &Key, uid: &str) {
        if let Some(item) = st.items.get_mut(key) {
            item.pods.remove(uid);
            if item.pods.is_empty() {
                item.watch.abort();
                st.items.remove(key);
            }
        }
    }

    /// The pods (uids) that use `key`.
    pub(super) fn pods_of(&self, key: &Key) -> Vec<String> {
        self.lock()
            .items
            .get(key)
            .map(|i| i.pods.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records what the watch of `key` shows; tells the runner and the pod loop when it differs.
    fn set(&self, key: &Key, value: Lookup) {
        {
            let mut st = self.lock();
            let Some(item) = st.items.get_mut(key) else { return };
            if item.value == value {
                return;
            }
            // A failing watch of an object already known keeps what it knew (the kubelet's cache too).
            if matches!(value, Lookup::Failed(_))
                && !matches!(item.value, Lookup::Pending | Lookup::Failed(_))
            {
                return;
            }
            item.value = value;
        }
        self.generation.send_modify(|g| *g += 1);
        let _ = self.changed.send(key.clone());
    }

    /// Follows one object by name until aborted (its last pod left).
    async fn follow(self, key: Key) {
        let (kind, ns, name) = key.clone();
        let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
        match kind {
            ObjectKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                self.follow_stream(&key, watcher(api, wc), config_map_data).await
            }
            ObjectKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                self.follow_stream(&key, watcher(api, wc), secret_data).await
            }
        }
    }

    async fn follow_stream<K>(
        &self,
        key: &Key,
        stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send,
        data: fn(K) -> ObjectData,
    ) {
        let stream = stream.default_backoff();
        futures::pin_mut!(stream);
        // What a (re)list has shown so far: it is only the truth once the list is done.
        let mut listing: Option<ObjectData> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => listing = None,
                Ok(Event::InitApply(obj)) => listing = Some(data(obj)),
                Ok(Event::InitDone) => self.set(
                    key,
                    listing
                        .take()
                        .map_or(Lookup::Missing, |d| Lookup::Found(Arc::new(d))),
                ),
                Ok(Event::Apply(obj)) => self.set(key, Lookup::Found(Arc::new(data(obj)))),
                Ok(Event::Delete(_)) => self.set(key, Lookup::Missing),
                Err(e) => {
                    warn!(kind = key.0.word(), namespace = %key.1, name = %key.2, error = %e, "cannot watch an object a pod uses; retrying");
                    self.set(key, Lookup::Failed(e.to_string()));
                }
            }
        }
        debug!(kind = key.0.word(), name = %key.2, "object watch ended");
    }
}

impl ObjectSource for Objects {
    fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Lookup {
        let key = (kind, namespace.to_string(), name.to_string());
        self.lock()
            .items
            .get(&key)
            .map_or(Lookup::Pending, |i| i.value.clone())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn warn(&self, pod: &Pod, reason: &str, message: String) {
        let (client, pod, reason) = (self.client.clone(), pod.clone(), reason.to_string());
        tokio::spawn(async move { super::events::warn(&client, &pod, &reason, &message).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_cover_env_env_from_and_volumes_but_not_the_token_volume() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "app", "uid": "u"},
            "spec": {
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s1"}}]}],
                "containers": [{"name": "c",
                    "envFrom": [{"configMapRef": {"name": "cm1"}, "prefix": "X_"}],
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm2", "key": "k"}}},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm3"}},
                    {"name": "v2", "secret": {"secretName": "s2"}},
                    {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm4"}}, {"secret": {"name": "s3"}}]}},
                    {"name": "kube-api-access-abcde", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}
                ]}
        }))
        .unwrap();
        let names: Vec<(ObjectKind, String)> = references(&pod)
            .into_iter()
            .map(|(k, ns, n)| {
                assert_eq!(ns, "app");
                (k, n)
            })
            .collect();
        use ObjectKind::{ConfigMap as C, Secret as S};
        assert_eq!(
            names,
            [
                (S, "s1".into()),
                (C, "cm1".into()),
                (C, "cm2".into()),
                (C, "cm3".into()),
                (S, "s2".into()),
                (C, "cm4".into()),
                (S, "s3".into())
            ]
        );
    }
}
