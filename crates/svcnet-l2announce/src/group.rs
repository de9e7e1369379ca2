//! Which Services are announced together: those that share an ingress address (LB IPAM gives Services
//! with the same `svcnet.io/allow-shared-ip` one address) must be answered for by one node, so the
//! election is per group of Services linked by a shared address, not per Service. A Service that
//! shares nothing is a group of its own, whose Lease is the one it always had. Pure.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// A Service's namespace and name.
pub type Key = (String, String);

/// Services announced together, and their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The first Service (by namespace, then name): its Lease is the group's, so a group of one is
    /// elected exactly as before sharing existed.
    pub key: Key,
    /// Every Service of the group, ordered.
    pub services: Vec<Key>,
    /// Every address of those Services.
    pub ips: BTreeSet<IpAddr>,
}

/// Groups Services (each with its ingress addresses) into the connected sets that share addresses,
/// ordered by their first Service.
pub fn groups(services: impl IntoIterator<Item = (Key, BTreeSet<IpAddr>)>) -> Vec<Group> {
    let mut list: Vec<(Key, BTreeSet<IpAddr>)> = services.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    // Union-find over the list's positions; a set's root is its lowest position, its first Service.
    let mut parent: Vec<usize> = (0..list.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with: HashMap<IpAddr, usize> = HashMap::new();
    for (i, (_, ips)) in list.iter().enumerate() {
        for ip in ips {
            match first_with.get(ip) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_with.insert(*ip, i);
                }
            }
        }
    }
    let mut out: Vec<Group> = Vec::new();
    let mut at: HashMap<usize, usize> = HashMap::new();
    for (i, (key, ips)) in list.iter().enumerate() {
        let r = root(&mut parent, i);
        match at.get(&r) {
            Some(&g) => {
                out[g].services.push(key.clone());
                out[g].ips.extend(ips.iter().copied());
            }
            None => {
                at.insert(r, out.len());
                out.push(Group {
                    key: key.clone(),
                    services: vec![key.clone()],
                    ips: ips.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ips: &[&str]) -> (Key, BTreeSet<IpAddr>) {
        (
            ("default".into(), name.into()),
            ips.iter().map(|i| i.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn services_sharing_an_address_are_one_group() {
        let got = groups([
            svc("web", &["172.18.0.225"]),
            svc("dns-udp", &["172.18.0.224"]),
            svc("dns-tcp", &["172.18.0.224", "fd00::e0"]),
            // Linked to dns-tcp through its IPv6 address only.
            svc("dot", &["fd00::e0"]),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key.1, "dns-tcp", "the first by name owns the Lease");
        assert_eq!(
            got[0].services.iter().map(|k| k.1.as_str()).collect::<Vec<_>>(),
            ["dns-tcp", "dns-udp", "dot"]
        );
        assert_eq!(got[0].ips.len(), 2);
        assert_eq!(got[1].services, [("default".to_string(), "web".to_string())]);
    }

    #[test]
    fn chains_merge_whatever_the_order() {
        // c links a and b only through addresses each shares with it.
        let got = groups([
            svc("a", &["10.0.0.1"]),
            svc("b", &["10.0.0.2"]),
            svc("c", &["10.0.0.2", "10.0.0.1"]),
            svc("d", &[]),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].services.len(), 3);
        assert_eq!(got[1].key.1, "d");
    }
}
