//! What a pod's environment learns from the Services: Kubernetes' service environment variables, and
//! the cluster DNS server its resolv.conf names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

/// Kubernetes' service environment variables for a pod in `namespace` (`getServiceEnvVarMap`): every
/// Service of the namespace (when `enable_links`) and `default/kubernetes` (always), with a ClusterIP.
pub fn service_env(services: &[Arc<Service>], namespace: &str, enable_links: bool) -> Vec<(String, String)> {
    let mut out = BTreeMap::new();
    for svc in services {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let is_master = ns == "default" && name == "kubernetes";
        if !(is_master || (enable_links && ns == namespace)) {
            continue;
        }
        let Some(spec) = svc.spec.as_ref() else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let Some(ports) = spec.ports.as_ref().filter(|p| !p.is_empty()) else {
            continue;
        };
        let prefix = name.to_uppercase().replace('-', "_");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
        out.insert(format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string());
        let first_proto = ports[0].protocol.as_deref().unwrap_or("TCP").to_lowercase();
        out.insert(
            format!("{prefix}_PORT"),
            format!("{first_proto}://{host}:{}", ports[0].port),
        );
        for p in ports {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(
                    format!("{prefix}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                );
            }
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(
                base.clone(),
                format!("{}://{host}:{}", proto.to_lowercase(), p.port),
            );
            out.insert(format!("{base}_PROTO"), proto.to_lowercase());
            out.insert(format!("{base}_PORT"), p.port.to_string());
            out.insert(format!("{base}_ADDR"), ip.to_string());
        }
    }
    out.into_iter().collect()
}

/// The ClusterIP of `kube-system/kube-dns`, the pods' nameserver.
pub(super) fn cluster_dns(services: &[Arc<Service>]) -> Option<IpAddr> {
    services
        .iter()
        .find(|s| s.namespace().as_deref() == Some("kube-system") && s.name_any() == "kube-dns")
        .and_then(|s| s.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}}))
            .unwrap(),
        )
    }

    #[test]
    fn service_environment_like_the_kubelet() {
        let services = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "app",
                "red-svc",
                "10.96.0.20",
                json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
            ),
            svc("app", "headless", "None", json!([{"port": 80}])),
            svc("other", "blue", "10.96.0.30", json!([{"port": 80}])),
        ];
        let env: BTreeMap<String, String> = service_env(&services, "app", true).into_iter().collect();
        assert_eq!(env["RED_SVC_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["RED_SVC_SERVICE_PORT"], "80");
        assert_eq!(env["RED_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["RED_SVC_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["RED_SVC_PORT_80_TCP_ADDR"], "10.96.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert!(
            !env.keys()
                .any(|k| k.starts_with("BLUE_") || k.starts_with("HEADLESS_"))
        );
        let env: BTreeMap<String, String> = service_env(&services, "app", false).into_iter().collect();
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST") && !env.contains_key("RED_SVC_SERVICE_HOST"));
    }
}
