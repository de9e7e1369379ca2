//! What the IPAM controller needs to know about one Service, read out of the full object once.
//!
//! Keeping this summary separate from `k8s_openapi`'s `Service` lets the allocation logic in
//! [`super::state`] be tested with plain values, and makes explicit which fields the controller
//! depends on (type, class, IP families, requested addresses, the current ingress).

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use svcnet_alloc::IpFamily;

use super::{LB_IPS_ANNOTATION, SHARED_IP_ANNOTATION};

/// A Service's identity inside the cluster: namespace and name (ordered for determinism).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SvcKey {
    pub namespace: String,
    pub name: String,
}

impl SvcKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Service object (`None` if it has no name, which a stored object always has).
    pub fn of(svc: &Service) -> Option<Self> {
        let name = svc.metadata.name.clone()?;
        Some(Self::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            name,
        ))
    }
}

impl fmt::Display for SvcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a Service asks of this controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// Not `type: LoadBalancer`: holds no address (and must not show one).
    NotLoadBalancer,
    /// A LoadBalancer of another `loadBalancerClass`: somebody else's, never touched.
    OtherClass,
    /// A LoadBalancer of our class (or of no class).
    Ours(Request),
}

/// Which addresses a Service of ours should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Any free address, one per family, in the Service's `ipFamilies` order.
    Dynamic(Vec<IpFamily>),
    /// Exactly these addresses (at most one per family, each of a family the Service has), primary
    /// family first.
    Specific(Vec<IpAddr>),
    /// A request that can never be satisfied as written; the text says why.
    Invalid(String),
}

/// What decides whether a Service may share an address with others (MetalLB's rules): the same
/// sharing key, the same backends, no port used twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Share {
    /// The value of [`SHARED_IP_ANNOTATION`] (`None`: shares with nobody).
    pub key: Option<String>,
    /// Under `externalTrafficPolicy: Local`, `Local:` and the selector: Services sharing an address
    /// are announced from one node, which must have local endpoints of all of them, so they must
    /// select the same pods. Empty under `Cluster`, where any node serves every endpoint.
    pub backend: String,
    /// `(port, protocol)` of every port: two Services on one address must not both use one.
    pub ports: Vec<(i32, String)>,
}

impl Share {
    /// Why `self` cannot join an address that `other` (Service `holder`) holds, if it cannot.
    pub fn conflict(&self, other: &Share, holder: &SvcKey) -> Option<String> {
        let (mine, theirs) = match (&self.key, &other.key) {
            (None, None) => return Some(format!("Service {holder}")),
            (Some(_), None) => return Some(format!("Service {holder}, which does not allow sharing")),
            (None, Some(_)) => {
                return Some(format!(
                    "Service {holder} (this Service has no {SHARED_IP_ANNOTATION} annotation)"
                ));
            }
            (Some(a), Some(b)) => (a, b),
        };
        if mine != theirs {
            return Some(format!(
                "Service {holder}, whose sharing key {theirs:?} is not {mine:?}"
            ));
        }
        if self.backend != other.backend {
            return Some(format!(
                "Service {holder}, which does not select the same endpoints under the same \
                 externalTrafficPolicy (Services sharing an address under policy Local must select the same pods)"
            ));
        }
        let clash: Vec<String> = self
            .ports
            .iter()
            .filter(|p| other.ports.contains(p))
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect();
        if !clash.is_empty() {
            return Some(format!(
                "Service {holder}, which uses port {} too",
                clash.join(", ")
            ));
        }
        None
    }
}

/// The controller's summary of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SvcInfo {
    pub key: SvcKey,
    pub uid: String,
    pub resource_version: String,
    /// `metadata.creationTimestamp`: the older Service wins a conflict.
    pub created: Option<jiff::Timestamp>,
    pub want: Want,
    /// `status.loadBalancer.ingress[*].ip`, parsed; `None` for hostname-only or unparsable entries.
    pub ingress: Vec<Option<IpAddr>>,
    /// Whether and with whom it may share an address.
    pub share: Share,
}

impl SvcInfo {
    /// Summarises `svc` for a controller that owns `class`.
    pub fn from_service(svc: &Service, class: &str) -> Option<Self> {
        let key = SvcKey::of(svc)?;
        let meta = &svc.metadata;
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|list| {
                list.iter()
                    .map(|i| {
                        i.ip.as_deref()
                            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
                            .map(|ip| ip.to_canonical())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            key,
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            want: want(svc, class),
            ingress,
            share: share(svc),
        })
    }

    /// The order in which Services get addresses when they compete: oldest first, then by name.
    pub fn age_key(&self) -> (Option<jiff::Timestamp>, &SvcKey) {
        (self.created, &self.key)
    }
}

fn want(svc: &Service, class: &str) -> Want {
    let Some(spec) = svc.spec.as_ref() else {
        return Want::NotLoadBalancer;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Want::NotLoadBalancer;
    }
    match spec.load_balancer_class.as_deref() {
        None | Some("") => {}
        Some(c) if c == class => {}
        Some(_) => return Want::OtherClass,
    }
    let families = families(
        spec.ip_families.as_deref().unwrap_or_default(),
        spec.cluster_ip.as_deref(),
    );
    let annotation = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_IPS_ANNOTATION))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let request = match (annotation, spec.load_balancer_ip.as_deref().map(str::trim)) {
        (Some(list), _) => specific(
            list.split(',').map(str::trim).filter(|s| !s.is_empty()),
            &families,
            &format!("annotation {LB_IPS_ANNOTATION}"),
        ),
        (None, Some(ip)) if !ip.is_empty() => specific(std::iter::once(ip), &families, "spec.loadBalancerIP"),
        _ => Request::Dynamic(families),
    };
    Want::Ours(request)
}

fn share(svc: &Service) -> Share {
    let key = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SHARED_IP_ANNOTATION))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let spec = svc.spec.as_ref();
    let backend = match spec {
        Some(s) if s.external_traffic_policy.as_deref() == Some("Local") => {
            let selector: Vec<String> = s
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("Local:{}", selector.join(","))
        }
        _ => String::new(),
    };
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        .collect();
    Share { key, backend, ports }
}

/// The Service's families from `spec.ipFamilies`; the API server always fills that in, but a Service
/// read from elsewhere may lack it, so fall back to the ClusterIP's family, then IPv4.
fn families(ip_families: &[String], cluster_ip: Option<&str>) -> Vec<IpFamily> {
    let mut out = Vec::new();
    for f in ip_families {
        let family = match f.as_str() {
            "IPv4" => IpFamily::Ipv4,
            "IPv6" => IpFamily::Ipv6,
            _ => continue,
        };
        if !out.contains(&family) {
            out.push(family);
        }
    }
    if out.is_empty() {
        let from_cluster_ip = cluster_ip
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| IpFamily::of(ip.to_canonical()));
        out.push(from_cluster_ip.unwrap_or(IpFamily::Ipv4));
    }
    out
}

/// Validates requested addresses: IPs, at most one per family, only families the Service has.
fn specific<'a>(requested: impl Iterator<Item = &'a str>, families: &[IpFamily], source: &str) -> Request {
    let mut ips: Vec<IpAddr> = Vec::new();
    for text in requested {
        let Ok(ip) = text.parse::<IpAddr>() else {
            return Request::Invalid(format!("{source}: {text:?} is not an IP address"));
        };
        let ip = ip.to_canonical();
        let family = IpFamily::of(ip);
        if ips.iter().any(|other| IpFamily::of(*other) == family) {
            return Request::Invalid(format!("{source}: more than one {family} address requested"));
        }
        if !families.contains(&family) {
            let list: Vec<String> = families.iter().map(|f| f.to_string()).collect();
            return Request::Invalid(format!(
                "{source}: requested address {ip} is {family}, but the Service's ipFamilies are [{}]",
                list.join(", ")
            ));
        }
        ips.push(ip);
    }
    // Primary family first, like the ClusterIPs.
    ips.sort_by_key(|ip| families.iter().position(|f| *f == IpFamily::of(*ip)));
    Request::Specific(ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn want_of(spec: serde_json::Value, annotations: serde_json::Value) -> Want {
        let s = svc(json!({
            "metadata": {"name": "a", "namespace": "ns", "annotations": annotations},
            "spec": spec,
        }));
        SvcInfo::from_service(&s, "svcnet.io/lb").unwrap().want
    }

    #[test]
    fn type_and_class() {
        assert_eq!(
            want_of(json!({"type": "ClusterIP"}), json!({})),
            Want::NotLoadBalancer
        );
        assert_eq!(
            want_of(
                json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/other"}),
                json!({})
            ),
            Want::OtherClass
        );
        assert_eq!(
            want_of(
                json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb"}),
                json!({})
            ),
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv4]))
        );
        assert_eq!(
            want_of(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"]}),
                json!({})
            ),
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv6, IpFamily::Ipv4]))
        );
        assert_eq!(
            want_of(
                json!({"type": "LoadBalancer", "clusterIP": "2001:db8::1"}),
                json!({})
            ),
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv6]))
        );
    }

    #[test]
    fn requested_addresses() {
        let dual =
            json!({"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"], "loadBalancerIP": "127.0.0.9"});
        assert_eq!(
            want_of(dual.clone(), json!({})),
            Want::Ours(Request::Specific(vec![ip("127.0.0.9")]))
        );
        // The annotation wins over the deprecated field, and is ordered by family.
        assert_eq!(
            want_of(dual.clone(), json!({LB_IPS_ANNOTATION: " fd00::5 , 127.0.0.7 "})),
            Want::Ours(Request::Specific(vec![ip("127.0.0.7"), ip("fd00::5")]))
        );
        assert_eq!(
            want_of(dual.clone(), json!({LB_IPS_ANNOTATION: "127.0.0.7,127.0.0.8"})),
            Want::Ours(Request::Invalid(
                "annotation svcnet.io/load-balancer-ips: more than one IPv4 address requested".into()
            ))
        );
        assert_eq!(
            want_of(dual, json!({LB_IPS_ANNOTATION: "nope"})),
            Want::Ours(Request::Invalid(
                "annotation svcnet.io/load-balancer-ips: \"nope\" is not an IP address".into()
            ))
        );
        assert_eq!(
            want_of(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv4"], "loadBalancerIP": "fd00::1"}),
                json!({})
            ),
            Want::Ours(Request::Invalid(
                "spec.loadBalancerIP: requested address fd00::1 is IPv6, but the Service's ipFamilies are [IPv4]"
                    .into()
            ))
        );
        // An empty annotation is no request.
        assert_eq!(
            want_of(json!({"type": "LoadBalancer"}), json!({LB_IPS_ANNOTATION: " "})),
            Want::Ours(Request::Dynamic(vec![IpFamily::Ipv4]))
        );
    }

    #[test]
    fn reads_identity_and_ingress() {
        let s = svc(json!({
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2024-01-02T03:04:05Z"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.5"}, {"hostname": "x.example"}]}},
        }));
        let info = SvcInfo::from_service(&s, "svcnet.io/lb").unwrap();
        assert_eq!(info.key.to_string(), "ns/a");
        assert_eq!(info.uid, "u1");
        assert_eq!(info.resource_version, "7");
        assert_eq!(info.created, Some("2024-01-02T03:04:05Z".parse().unwrap()));
        assert_eq!(info.ingress, vec![Some(ip("127.0.0.5")), None]);
        assert_eq!(info.share, Share::default());
    }

    #[test]
    fn sharing_rules() {
        let share = |key: Option<&str>,
                     policy: &str,
                     selector: serde_json::Value,
                     ports: serde_json::Value| {
            let mut annotations = serde_json::Map::new();
            if let Some(k) = key {
                annotations.insert(SHARED_IP_ANNOTATION.into(), json!(k));
            }
            let s = svc(json!({
                "metadata": {"name": "a", "namespace": "ns", "annotations": annotations},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "selector": selector, "ports": ports},
            }));
            SvcInfo::from_service(&s, "svcnet.io/lb").unwrap().share
        };
        let holder = SvcKey::new("ns", "dns-tcp");
        let tcp = share(
            Some("dns"),
            "Cluster",
            json!({"app": "dns"}),
            json!([{"port": 53}]),
        );
        assert_eq!(tcp.ports, [(53, "TCP".to_string())]);
        let udp = share(
            Some("dns"),
            "Cluster",
            json!({"app": "x"}),
            json!([{"port": 53, "protocol": "UDP"}]),
        );
        assert_eq!(udp.conflict(&tcp, &holder), None);
        let tcp2 = share(
            Some("dns"),
            "Cluster",
            json!({}),
            json!([{"port": 80}, {"port": 53}]),
        );
        assert_eq!(
            tcp2.conflict(&tcp, &holder).unwrap(),
            "Service ns/dns-tcp, which uses port 53/TCP too"
        );
        let other_key = share(Some("web"), "Cluster", json!({}), json!([{"port": 80}]));
        assert_eq!(
            other_key.conflict(&tcp, &holder).unwrap(),
            "Service ns/dns-tcp, whose sharing key \"dns\" is not \"web\""
        );
        let none = share(None, "Cluster", json!({}), json!([{"port": 80}]));
        assert!(
            none.conflict(&tcp, &holder)
                .unwrap()
                .contains("has no svcnet.io/allow-shared-ip")
        );
        assert!(
            tcp.conflict(&none, &holder)
                .unwrap()
                .contains("does not allow sharing")
        );
        // Policy Local: the same pods, or no sharing.
        let local_a = share(
            Some("dns"),
            "Local",
            json!({"app": "dns"}),
            json!([{"port": 53, "protocol": "UDP"}]),
        );
        let local_b = share(Some("dns"), "Local", json!({"app": "dns"}), json!([{"port": 53}]));
        let local_c = share(
            Some("dns"),
            "Local",
            json!({"app": "other"}),
            json!([{"port": 53}]),
        );
        assert_eq!(local_a.conflict(&local_b, &holder), None);
        assert!(local_a.conflict(&local_c, &holder).is_some());
        assert!(local_a.conflict(&tcp, &holder).is_some(), "Local beside Cluster");
    }
}
