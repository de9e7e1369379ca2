//! What the runner reads from the API for a container's environment: ConfigMaps and Secrets. The runner
//! has no API client; the agent gives it an [`ObjectSource`] backed by its per-object watches
//! (`crate::agent::objects`, the kubelet's watch-based ConfigMap and Secret managers), and a container
//! whose object is missing waits for that source's next change instead of polling.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

/// The kinds a pod takes its environment and volumes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl ObjectKind {
    /// The word the kubelet's messages use (`configmap "x" not found`, `secret "x" not found`).
    pub fn word(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
        }
    }
}

/// The part of a ConfigMap or Secret a pod can consume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectData {
    /// A ConfigMap's `data` (the only part environment variables read from a ConfigMap).
    pub text: BTreeMap<String, String>,
    /// A ConfigMap's `binaryData`, or a Secret's `data`.
    pub binary: BTreeMap<String, Vec<u8>>,
}

impl ObjectData {
    /// The keys and bytes a volume shows: every key of either part.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = self.binary.clone();
        out.extend(self.text.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
        out
    }

    /// The keys and values environment variables take: a ConfigMap's `data`, a Secret's `data` as text.
    pub fn env(&self, kind: ObjectKind) -> BTreeMap<String, String> {
        match kind {
            ObjectKind::ConfigMap => self.text.clone(),
            ObjectKind::Secret => self
                .binary
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        }
    }
}

/// What the source knows of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not known yet (its watch has not listed it): wait for a change.
    Pending,
    /// It does not exist.
    Missing,
    /// It exists with this content.
    Found(Arc<ObjectData>),
    /// It could not be read (the watch fails with this error); retried by the watch.
    Failed(String),
}

/// Where the runner reads ConfigMaps and Secrets, and tells the pod's warnings.
pub trait ObjectSource: Send + Sync {
    /// The object `name` of `kind` in `namespace` as last seen.
    fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Lookup;
    /// Changes whenever any object's content (or existence) changes.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Records a Warning Event on the pod (the kubelet's recorder), e.g. `InvalidEnvironmentVariableNames`.
    fn warn(&self, pod: &Pod, reason: &str, message: String);
}

/// The source of a runner without an API: every object is missing (required references fail the
/// container, optional ones are skipped).
pub struct NoObjects(watch::Sender<u64>);

impl Default for NoObjects {
    fn default() -> Self {
        NoObjects(watch::Sender::new(0))
    }
}

impl ObjectSource for NoObjects {
    fn get(&self, _: ObjectKind, _: &str, _: &str) -> Lookup {
        Lookup::Missing
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
    fn warn(&self, pod: &Pod, reason: &str, message: String) {
        tracing::warn!(pod = ?pod.metadata.name, reason, %message, "pod warning");
    }
}
