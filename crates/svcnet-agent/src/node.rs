//! The node's presence in the API, as the kubelet keeps it: the Node object (addresses, capacity,
//! node info, the Ready condition) and its heartbeat Lease in `kube-node-lease`.
//!
//! The Lease is renewed every [`NodeConfig::heartbeat`]; the control plane's node lifecycle controller
//! marks the node NotReady when the Lease expires. The Node's status is written at registration and
//! whenever the agent's readiness changes, not on every heartbeat (that is what the Lease is for).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{info, warn};

/// The field manager the agent writes with.
pub const MANAGER: &str = "svcnet-agent";

/// How this node presents itself.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub name: String,
    /// The node's InternalIP.
    pub internal_ip: IpAddr,
    /// Extra labels (e.g. `topology.kubernetes.io/zone`).
    pub labels: BTreeMap<String, String>,
    /// How often the Lease is renewed (the kubelet's default is 10 s).
    pub heartbeat: Duration,
    /// The Lease's duration (the kubelet's default is 40 s).
    pub lease_duration: Duration,
    /// The port the agent serves its own endpoint (logs) on, published as the kubelet endpoint.
    pub agent_port: u16,
}

/// Errors talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The Node object this agent registers, with its status.
pub fn node_object(cfg: &NodeConfig, ready: bool) -> serde_json::Value {
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    let now = now_rfc3339();
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "svcnet agent is posting ready status")
    } else {
        ("False", "KubeletNotReady", "svcnet agent is starting")
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": cfg.internal_ip.to_string()},
                {"type": "Hostname", "address": cfg.name},
            ],
            "capacity": {"cpu": cpus.to_string(), "memory": memory(), "pods": "110"},
            "allocatable": {"cpu": cpus.to_string(), "memory": memory(), "pods": "110"},
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.agent_port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": kernel_version(),
                "osImage": os_image(),
                "containerRuntimeVersion": concat!("svcnet://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": "v1.33.0-svcnet",
                "kubeProxyVersion": "",
                "operatingSystem": std::env::consts::OS,
                "architecture": go_arch(),
            },
        },
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().replace(" kB", "Ki")))
        })
        .unwrap_or_else(|| "0".into())
}

/// Creates the Node if missing and writes its status (addresses, capacity, Ready).
pub async fn register(client: &kube::Client, cfg: &NodeConfig, ready: bool) -> Result<Node, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj = node_object(cfg, ready);
    if nodes.get_opt(&cfg.name).await?.is_none() {
        let node: Node = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => info!(node = %cfg.name, "registered node"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Status goes through the status subresource, labels through the main resource, as the kubelet does.
    let labels = json!({"metadata": {"labels": obj["metadata"]["labels"]}});
    nodes
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&labels))
        .await?;
    let status = json!({"status": obj["status"]});
    Ok(nodes
        .patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?)
}

/// Renews the node's Lease forever; returns only if the future is dropped. If the control plane marked
/// the node not Ready while heartbeats were missing, the next successful heartbeat reports Ready again.
pub async fn heartbeat(client: kube::Client, cfg: NodeConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(cfg.heartbeat);
    loop {
        tick.tick().await;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": cfg.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": cfg.name,
                "leaseDurationSeconds": cfg.lease_duration.as_secs(),
                "renewTime": now_micro(),
            },
        });
        let params = PatchParams::apply(MANAGER).force();
        if let Err(e) = leases.patch(&cfg.name, &params, &Patch::Apply(&lease)).await {
            warn!(node = %cfg.name, error = %e, "lease renewal failed; retrying");
            continue;
        }
        let ready = nodes.get_opt(&cfg.name).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if !ready {
            info!(node = %cfg.name, "node was not Ready; reporting Ready again");
            if let Err(e) = register(&client, &cfg, true).await {
                warn!(node = %cfg.name, error = %e, "re-registering the node failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_is_kubernetes_shaped() {
        let cfg = NodeConfig {
            name: "n1".into(),
            internal_ip: "127.0.0.1".parse().unwrap(),
            labels: BTreeMap::new(),
            heartbeat: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            agent_port: 10250,
        };
        let n = node_object(&cfg, true);
        assert_eq!(n["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(n["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(n["status"]["conditions"][0]["status"], "True");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        let typed: Node = serde_json::from_value(n).unwrap();
        assert_eq!(typed.metadata.name.as_deref(), Some("n1"));
    }
}
