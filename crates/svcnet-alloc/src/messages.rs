//! The texts kube-apiserver's Service REST layer and repair controllers build
//! around allocator errors, so svcnet's API server can reproduce them
//! verbatim.
//!
//! Where kube puts each text (from `pkg/registry/core/service/storage/alloc.go`):
//!
//! * A user-chosen ClusterIP that cannot be allocated: a `422 Invalid` with a
//!   field error of type `FieldValueInvalid` at [`CLUSTER_IPS_FIELD`]
//!   (`spec.clusterIPs`), whose bad value is the whole `spec.clusterIPs`
//!   list and whose detail is [`cluster_ip_static_failure`].
//! * No free ClusterIP: a `500 InternalError` with
//!   [`cluster_ip_dynamic_failure`] as the error text (kube's status message
//!   is then `Internal error occurred: failed to allocate a serviceIP: range is full`).
//! * A user-chosen NodePort that cannot be allocated: `422 Invalid`, field
//!   error `FieldValueInvalid` at [`node_port_field`]`(i)`
//!   (`spec.ports[i].nodePort`), bad value the port, detail the
//!   [`crate::NodePortError`] text itself (no prefix).
//! * No free NodePort: `500 InternalError` with [`node_port_dynamic_failure`].
//! * Health-check NodePort: `500 InternalError` with
//!   [`health_check_node_port_static_failure`] or
//!   [`health_check_node_port_dynamic_failure`].

use std::fmt::Display;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::node_port::PortRange;

/// Field path of the field error for a user-chosen ClusterIP.
pub const CLUSTER_IPS_FIELD: &str = "spec.clusterIPs";

/// Prefix kube-apiserver puts before the text of a `500 InternalError`.
pub const INTERNAL_ERROR_PREFIX: &str = "Internal error occurred: ";

/// Field-error detail for a user-chosen ClusterIP: `failed to allocate IP
/// <ip>: <err>`, where `ip` is the string the user sent and `err` a
/// [`crate::ClusterIpError`] (e.g. `provided IP is already allocated`).
pub fn cluster_ip_static_failure(requested_ip: &str, err: &impl Display) -> String {
    format!("failed to allocate IP {requested_ip}: {err}")
}

/// Internal-error text when no ClusterIP can be allocated:
/// `failed to allocate a serviceIP: range is full`.
pub fn cluster_ip_dynamic_failure(err: &impl Display) -> String {
    format!("failed to allocate a serviceIP: {err}")
}

/// Internal-error text for a stored ClusterIP string that does not parse.
pub fn cluster_ip_parse_failure(ip: &str) -> String {
    format!("failed to parse service IP {ip:?}")
}

/// Field path of the field error for a user-chosen NodePort of port `index`:
/// `spec.ports[<index>].nodePort`.
pub fn node_port_field(index: usize) -> String {
    format!("spec.ports[{index}].nodePort")
}

/// Internal-error text when no NodePort can be allocated:
/// `failed to allocate a nodePort: range is full`.
pub fn node_port_dynamic_failure(err: &impl Display) -> String {
    format!("failed to allocate a nodePort: {err}")
}

/// Internal-error text when a user-chosen `healthCheckNodePort` cannot be
/// allocated.
pub fn health_check_node_port_static_failure(port: i32, err: &impl Display) -> String {
    format!("failed to allocate requested HealthCheck NodePort {port}: {err}")
}

/// Internal-error text when no health-check NodePort can be allocated. kube
/// prints the (zero) port its failed `AllocateNext` returned, so the text is
/// always `failed to allocate a HealthCheck NodePort 0: <err>`.
pub fn health_check_node_port_dynamic_failure(err: &impl Display) -> String {
    format!("failed to allocate a HealthCheck NodePort 0: {err}")
}

// Repair-pass log texts (`ipallocator/controller/repair.go`,
// `portallocator/controller/repair.go`). kube formats the Service as
// `name/namespace` (sic); these helpers take namespace and name separately and
// keep kube's order so logs match.

/// Repair log: a stored ClusterIP that is not an IP address.
pub fn repair_cluster_ip_invalid(ip: &str, namespace: &str, name: &str) -> String {
    format!("the cluster IP {ip} for service {name}/{namespace} is not a valid IP; please recreate")
}

/// Repair log: a ClusterIP held by more than one Service.
pub fn repair_cluster_ip_duplicate(ip: IpAddr, namespace: &str, name: &str) -> String {
    format!(
        "the cluster IP {ip} for service {name}/{namespace} was assigned to multiple services; please recreate"
    )
}

/// Repair log: a ClusterIP outside the service CIDR.
pub fn repair_cluster_ip_out_of_range(ip: IpAddr, namespace: &str, name: &str, cidr: &IpNet) -> String {
    format!(
        "the cluster IP {ip} for service {name}/{namespace} is not within the service CIDR {cidr}; please recreate"
    )
}

/// Repair log: a NodePort held by more than one Service.
pub fn repair_node_port_duplicate(port: i32, namespace: &str, name: &str) -> String {
    format!(
        "the node port {port} for service {name}/{namespace} was assigned to multiple services; please recreate"
    )
}

/// Repair log: a NodePort outside the port range.
pub fn repair_node_port_out_of_range(port: i32, namespace: &str, name: &str, range: &PortRange) -> String {
    format!(
        "the port {port} for service {name}/{namespace} is not within the port range {range}; please recreate"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterIpAllocator, ClusterIpError, NodePortAllocator, NodePortError, PortRange};

    #[test]
    fn rest_texts() {
        let mut a = ClusterIpAllocator::new("10.0.0.0/24".parse().unwrap()).unwrap();
        a.allocate("10.0.0.10".parse().unwrap()).unwrap();
        let err = a.allocate("10.0.0.10".parse().unwrap()).unwrap_err();
        assert_eq!(
            cluster_ip_static_failure("10.0.0.10", &err),
            "failed to allocate IP 10.0.0.10: provided IP is already allocated"
        );
        let err = a.allocate("10.1.0.10".parse().unwrap()).unwrap_err();
        assert_eq!(
            cluster_ip_static_failure("10.1.0.10", &err),
            "failed to allocate IP 10.1.0.10: the provided IP (10.1.0.10) is not in the valid range. \
             The range of valid IPs is 10.0.0.0/24"
        );
        assert_eq!(
            format!(
                "{INTERNAL_ERROR_PREFIX}{}",
                cluster_ip_dynamic_failure(&ClusterIpError::Full)
            ),
            "Internal error occurred: failed to allocate a serviceIP: range is full"
        );
        assert_eq!(node_port_field(2), "spec.ports[2].nodePort");
        assert_eq!(
            node_port_dynamic_failure(&NodePortError::Full),
            "failed to allocate a nodePort: range is full"
        );
        let mut p = NodePortAllocator::new(PortRange::default());
        let err = p.allocate(80).unwrap_err();
        assert_eq!(
            health_check_node_port_static_failure(80, &err),
            "failed to allocate requested HealthCheck NodePort 80: provided port is not in the valid range. \
             The range of valid ports is 30000-32767"
        );
        assert_eq!(
            health_check_node_port_dynamic_failure(&NodePortError::Full),
            "failed to allocate a HealthCheck NodePort 0: range is full"
        );
        assert_eq!(
            cluster_ip_parse_failure("10.0.0.x"),
            "failed to parse service IP \"10.0.0.x\""
        );
    }

    #[test]
    fn repair_texts() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            repair_cluster_ip_duplicate(ip, "default", "web"),
            "the cluster IP 10.0.0.5 for service web/default was assigned to multiple services; please recreate"
        );
        assert_eq!(
            repair_cluster_ip_out_of_range(ip, "default", "web", &"10.96.0.0/12".parse().unwrap()),
            "the cluster IP 10.0.0.5 for service web/default is not within the service CIDR 10.96.0.0/12; please recreate"
        );
        assert_eq!(
            repair_cluster_ip_invalid("bogus", "default", "web"),
            "the cluster IP bogus for service web/default is not a valid IP; please recreate"
        );
        assert_eq!(
            repair_node_port_duplicate(30001, "default", "web"),
            "the node port 30001 for service web/default was assigned to multiple services; please recreate"
        );
        assert_eq!(
            repair_node_port_out_of_range(80, "default", "web", &PortRange::default()),
            "the port 80 for service web/default is not within the port range 30000-32767; please recreate"
        );
    }
}
