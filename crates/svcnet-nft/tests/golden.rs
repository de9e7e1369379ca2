//! Golden tests: the exact ruleset text for representative Services (pure, no root needed). Each
//! `tests/golden/NAME.yaml` renders to `tests/golden/NAME.nft`; `UPDATE_GOLDEN=1` rewrites them.

mod common;

use std::sync::Arc;

use svcnet_dataplane::Change;
use svcnet_nft::{Programmed, render_changes, render_full};

use common::{check_golden, golden_config, golden_path, ports_from_yaml};

fn golden(name: &str) {
    let yaml = std::fs::read_to_string(golden_path(&format!("{name}.yaml"))).unwrap();
    let ports = ports_from_yaml(&yaml);
    check_golden(&format!("{name}.nft"), &render_full(&ports, &golden_config()));
}

#[test]
fn clusterip_named_ports_headless() {
    golden("clusterip");
}

#[test]
fn nodeport_external_ip() {
    golden("nodeport");
}

#[test]
fn loadbalancer_source_ranges_local_policy() {
    golden("loadbalancer-local");
}

#[test]
fn session_affinity() {
    golden("affinity");
}

#[test]
fn no_endpoints() {
    golden("no-endpoints");
}

#[test]
fn dual_stack() {
    golden("dual-stack");
}

#[test]
fn masquerade_all_and_no_detector() {
    let yaml = std::fs::read_to_string(golden_path("nodeport.yaml")).unwrap();
    let ports = ports_from_yaml(&yaml);
    let mut cfg = golden_config();
    cfg.masquerade_all = true;
    let all = render_full(&ports, &cfg);
    assert!(
        all.contains("ip daddr 10.96.0.30 tcp dport 80 jump mark-for-masquerade"),
        "{all}"
    );
    cfg.masquerade_all = false;
    cfg.pod_cidrs.clear();
    let none = render_full(&ports, &cfg);
    assert!(!none.contains("ip daddr 10.96.0.30 tcp dport 80"), "{none}");
}

#[test]
fn nodeport_addresses_replace_every_local_address() {
    let yaml = std::fs::read_to_string(golden_path("nodeport.yaml")).unwrap();
    let ports = ports_from_yaml(&yaml);
    let mut cfg = golden_config();
    cfg.nodeport_addresses = vec!["192.0.2.7".parse().unwrap(), "127.0.0.1".parse().unwrap()];
    let text = render_full(&ports, &cfg);
    assert!(!text.contains("fib daddr type local"), "{text}");
    assert!(
        text.contains("ip daddr 192.0.2.7 meta l4proto . th dport vmap @service-nodeports"),
        "{text}"
    );
    assert!(
        text.contains("ip daddr 192.0.2.7 meta l4proto . th dport @no-endpoint-nodeports goto reject-chain"),
        "{text}"
    );
    // Loopback is the localhost proxy's, and no IPv6 address was listed: no NodePorts there.
    assert!(!text.contains("127.0.0.1 meta"), "{text}");
    let ip6 = &text[text.find("table ip6").expect("an ip6 table")..];
    assert!(!ip6.contains("@service-nodeports"), "{ip6}");
    assert!(text[..text.find("table ip6").unwrap()].contains("@service-nodeports"));
    // Several addresses: one anonymous set.
    cfg.nodeport_addresses = vec!["192.0.2.7".parse().unwrap(), "198.51.100.1".parse().unwrap()];
    let text = render_full(&ports, &cfg);
    assert!(
        text.contains("ip daddr { 192.0.2.7, 198.51.100.1 } meta l4proto . th dport vmap"),
        "{text}"
    );
}

/// One endpoint of one Service replaced among 50 Services: the transaction names only that Service.
#[test]
fn incremental_endpoint_change_touches_only_its_service() {
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let before = ports_from_yaml(&yaml);
    let after = ports_from_yaml(&yaml.replace("10.244.1.12", "10.244.1.13"));
    let cfg = golden_config();
    let prev = Programmed::from_ports(&before);
    let changes: Vec<Change> = after
        .iter()
        .filter(|p| !before.contains(p))
        .map(|p| Change::Upsert {
            old: before.iter().find(|b| b.name == p.name).cloned(),
            new: Arc::clone(p),
        })
        .collect();
    assert_eq!(changes.len(), 1);
    let text = render_changes(&prev, &changes, &cfg);
    check_golden("incremental-endpoint.nft", &text);
    // The endpoint map is shared by a group of ports; web's ranges are its own block of slots.
    let id = prev.id(&changes[0].name().clone()).unwrap();
    let block = u64::from(id) * 65536..u64::from(id + 1) * 65536;
    let in_block = |line: &str| {
        let Some(range) = line.split(" . ").nth(1) else {
            return false;
        };
        let range = range.split([' ', '}']).next().unwrap();
        range
            .split('-')
            .all(|n| n.parse::<u64>().is_ok_and(|n| block.contains(&n)))
    };
    for line in text.lines() {
        assert!(
            line.contains("default/web/tcp/")
                || line.contains("hairpin {")
                || (line.contains("endpoints-tcp-0 {") && in_block(line)),
            "line touches another service: {line}"
        );
    }
    // Only elements: the endpoint map's range of the old endpoint now leads to the new one, and the new
    // address joins the hairpin set. No chain, no rule, no declaration.
    assert!(!text.contains("chain") && !text.contains("add map"), "{text}");
    assert!(
        text.contains("delete element ip svcnet endpoints-") && text.contains(": 10.244.1.13 . 8080"),
        "{text}"
    );
    assert!(
        text.contains("add element ip svcnet hairpin { 10.244.1.13 . 10.244.1.13 }"),
        "{text}"
    );
    assert!(
        text.contains("delete element ip svcnet hairpin { 10.244.1.12 . 10.244.1.12 }"),
        "{text}"
    );
}

#[test]
fn unchanged_port_renders_nothing() {
    let yaml = std::fs::read_to_string(golden_path("affinity.yaml")).unwrap();
    let ports = ports_from_yaml(&yaml);
    let prev = Programmed::from_ports(&ports);
    let changes = vec![Change::Upsert {
        old: Some(ports[0].clone()),
        new: ports[0].clone(),
    }];
    assert_eq!(render_changes(&prev, &changes, &golden_config()), "");
}

/// The `cluster-ips` set is shared by a Service's ports: removing one port keeps the address.
#[test]
fn removing_one_port_keeps_shared_cluster_ip() {
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let ports = ports_from_yaml(&yaml);
    let prev = Programmed::from_ports(&ports);
    let dns = ports.iter().find(|p| &*p.name.port == "dns").unwrap().clone();
    let text = render_changes(&prev, &[Change::Remove(dns)], &golden_config());
    assert!(!text.contains("cluster-ips"), "{text}");
    assert!(
        text.contains("delete element ip svcnet service-ips { 10.96.0.20 . udp . 53 }"),
        "{text}"
    );
    let web = ports.iter().find(|p| &*p.name.name == "web").unwrap().clone();
    let text = render_changes(&prev, &[Change::Remove(web)], &golden_config());
    assert!(
        text.contains("delete element ip svcnet cluster-ips { 10.96.0.10 }"),
        "{text}"
    );
}
