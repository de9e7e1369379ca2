//! Which node should announce a Service: rendezvous (highest-random-weight) hashing of the Service over
//! the eligible nodes. Every node computes the same order from the same inputs, so without talking to
//! each other the nodes agree who goes first for each Service, and different Services land on different
//! nodes (each node is first for about 1/N of them). When a node leaves, only its Services move.
//!
//! The hash is FNV-1a, written out here: the order must be the same on every node and in every build,
//! which `std`'s `DefaultHasher` does not promise.

/// FNV-1a over the parts, with a 0xff byte (never in a name) between them so that ("ab", "c") and ("a", "bc") differ.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // FNV's low bits mix poorly for short inputs that differ in their last byte (node1, node2, …):
    // finish with a 64-bit mixer (splitmix64's) so every bit of the score depends on every input byte.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `nodes` ordered by preference for the Service `namespace/name`: the first should announce it.
pub fn order<'a>(namespace: &str, name: &str, nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = nodes
        .into_iter()
        .map(|n| (fnv1a(&[namespace, name, n]), n))
        .collect();
    // Ties (practically never) broken by name, so the order is total.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// How many of `nodes` come before `me` in [`order`], leaving out `skip` (the holder whose Lease
/// expired: it is gone, and the next in line should not wait for it). `None` if `me` is not among them.
pub fn rank(namespace: &str, name: &str, nodes: &[&str], me: &str, skip: Option<&str>) -> Option<usize> {
    order(
        namespace,
        name,
        nodes.iter().copied().filter(|n| Some(*n) != skip),
    )
    .iter()
    .position(|n| *n == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_order_whatever_the_input_order() {
        let a = order("default", "web", ["node1", "node2", "node3"]);
        let b = order("default", "web", ["node3", "node1", "node2"]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn services_spread_over_the_nodes() {
        let nodes = ["node1", "node2", "node3"];
        let mut first = std::collections::BTreeMap::<&str, usize>::new();
        for i in 0..300 {
            let name = format!("svc-{i}");
            *first.entry(order("default", &name, nodes)[0]).or_default() += 1;
        }
        // 100 each on average; rendezvous hashing keeps every node well within a third of that.
        for n in nodes {
            let c = first.get(n).copied().unwrap_or(0);
            assert!((67..=133).contains(&c), "{n} is first for {c} of 300: {first:?}");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_services() {
        let all = ["node1", "node2", "node3"];
        let rest = ["node1", "node3"];
        for i in 0..100 {
            let name = format!("svc-{i}");
            let before = order("ns", &name, all)[0];
            let after = order("ns", &name, rest)[0];
            if before != "node2" {
                assert_eq!(before, after, "{name} moved though its node stayed");
            }
        }
    }

    #[test]
    fn rank_skips_the_expired_holder() {
        let nodes = ["node1", "node2", "node3"];
        let o = order("ns", "svc", nodes);
        assert_eq!(rank("ns", "svc", &nodes, o[0], None), Some(0));
        assert_eq!(rank("ns", "svc", &nodes, o[1], None), Some(1));
        assert_eq!(rank("ns", "svc", &nodes, o[1], Some(o[0])), Some(0));
        assert_eq!(rank("ns", "svc", &nodes, "node9", None), None);
    }
}
