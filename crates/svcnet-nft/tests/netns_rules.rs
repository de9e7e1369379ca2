//! Rules in a real kernel, inside a network namespace of the test's own (root; skipped otherwise): the
//! golden rulesets load, a sequence of incremental transactions leaves exactly what a full sync of the
//! final state leaves, a full sync removes stale chains, and the health check server answers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use svcnet_dataplane::manifests::Manifests;
use svcnet_dataplane::{Backend, Change, Model, ModelConfig, Protocol, ServicePort};
use svcnet_nft::{Family, NftBackend, NftConfig, render_full, render_programmed};

use common::netns::{NftNetns, can_run};
use common::{NODE, ep, golden_config, golden_path, svc_port};
use svcnet_testsupport::netns::Netns;

/// A table listing reduced to what must match: objects by kind and name, without handles, with element
/// lists sorted and the contents of dynamic (affinity) sets left out.
fn normalise(v: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut rules: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let mut body = body.clone();
        let obj = body.as_object_mut().unwrap();
        obj.remove("handle");
        obj.remove("table");
        match kind.as_str() {
            "rule" => {
                let chain = obj["chain"].as_str().unwrap().to_string();
                rules.entry(chain).or_default().push(obj["expr"].clone());
            }
            "set" | "map" => {
                let name = obj["name"].as_str().unwrap().to_string();
                // Kernel bookkeeping that depends on how the set was made, not on what it does.
                obj.remove("size");
                if let Some(flags) = obj.get_mut("flags").and_then(|f| f.as_array_mut()) {
                    flags.retain(|f| f != "dynamic");
                }
                if name.starts_with("affinity-") {
                    obj.remove("elem");
                } else if let Some(elem) = obj.get_mut("elem").and_then(|e| e.as_array_mut()) {
                    elem.sort_by_key(|e| e.to_string());
                }
                out.insert(format!("{kind} {name}"), body);
            }
            "chain" => {
                let name = obj["name"].as_str().unwrap().to_string();
                out.insert(format!("chain {name}"), body);
            }
            _ => {}
        }
    }
    for (chain, r) in rules {
        out.insert(format!("rules {chain}"), Value::Array(r));
    }
    out
}

fn listing(b: &NftBackend) -> Vec<BTreeMap<String, Value>> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|f| normalise(&b.list_table(f).unwrap()))
        .collect()
}

/// Runs one `nft -f` transaction in the namespace.
fn nft_load(ns: &Netns, script: &str) {
    use std::io::Write as _;
    let prefix = ns.prefix("nft");
    let mut child = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed");
}

/// One edit of the model's inputs.
type Step<'a> = Box<dyn Fn(&mut Model) + 'a>;

fn model_with(yaml: &str) -> Model {
    let mut model = Model::new(ModelConfig {
        node_name: NODE.into(),
        ..Default::default()
    });
    Manifests::parse(yaml).unwrap().load_into(&mut model);
    model
}

#[test]
fn golden_rulesets_load() {
    if !can_run("golden_rulesets_load") {
        return;
    }
    let ns = Netns::new("golden");
    for name in [
        "clusterip",
        "nodeport",
        "loadbalancer-local",
        "affinity",
        "no-endpoints",
        "dual-stack",
    ] {
        let yaml = std::fs::read_to_string(golden_path(&format!("{name}.yaml"))).unwrap();
        let ports = common::ports_from_yaml(&yaml);
        let mut b = ns.backend(golden_config());
        b.sync_all(&ports).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !b.list_table(Family::V4).unwrap()["nftables"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}

/// Edits in sequence through the real model: endpoint replaced, Service added, affinity timeout changed,
/// endpoints gone (reject), back, externalTrafficPolicy flipped, a port removed, a Service deleted. After
/// each incremental step, a full sync of the same state must leave an identical table.
#[test]
fn incremental_transactions_equal_full_sync() {
    if !can_run("incremental_transactions_equal_full_sync") {
        return;
    }
    let ns = Netns::new("incr");
    let read = |n: &str| std::fs::read_to_string(golden_path(&format!("{n}.yaml"))).unwrap();
    let base = [
        read("clusterip"),
        read("affinity"),
        read("loadbalancer-local"),
        read("dual-stack"),
    ]
    .join("\n---\n");
    let mut model = model_with(&base);
    model.take_changes();
    let mut b = ns.backend(golden_config());
    let ports: Vec<Arc<ServicePort>> = model.ports().cloned().collect();
    b.sync_all(&ports).unwrap();

    let np = read("nodeport");
    let steps: Vec<Step<'_>> = vec![
        Box::new(|m| {
            Manifests::parse(&read("clusterip").replace("10.244.1.12", "10.244.1.13"))
                .unwrap()
                .load_into(m)
        }),
        Box::new(move |m| Manifests::parse(&np).unwrap().load_into(m)),
        Box::new(|m| {
            Manifests::parse(&read("affinity").replace("600", "900"))
                .unwrap()
                .load_into(m)
        }),
        Box::new(|m| m.delete_slice("default", "sticky-1")),
        Box::new(|m| Manifests::parse(&read("affinity")).unwrap().load_into(m)),
        Box::new(|m| {
            Manifests::parse(
                &read("loadbalancer-local")
                    .replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster"),
            )
            .unwrap()
            .load_into(m)
        }),
        Box::new(|m| {
            let y =
                read("clusterip").replace("  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}\n", "");
            Manifests::parse(&y).unwrap().load_into(m)
        }),
        Box::new(|m| m.delete_service("default", "dual")),
        Box::new(|m| {
            Manifests::parse(&read("dual-stack").replace("fd00:10:244:1::81", "fd00:10:244:1::82"))
                .unwrap()
                .load_into(m)
        }),
    ];
    // A table of its own, so that its syncs leave `b`'s alone.
    let full = ns.backend(NftConfig {
        table: "svcnet-full".into(),
        ..golden_config()
    });
    for (i, step) in steps.iter().enumerate() {
        step(&mut model);
        let changes: Vec<Change> = model.take_changes().changes;
        assert!(!changes.is_empty(), "step {i} changed nothing");
        b.apply(&changes).unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert!(
            b.metrics_text()
                .contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0"),
            "step {i}: an incremental transaction failed"
        );
        // Objects of ports and affinity endpoints that went away are emptied at once and deleted later:
        // leave them out, but they must be empty. The last step deletes them and compares everything.
        if i + 1 == steps.len() {
            b.delete_stale_objects().unwrap();
        }
        let mut incremental = listing(&b);
        let mut stale = 0;
        for id in b.stale_objects() {
            let mut parts = id.splitn(4, ' ');
            let (kind, fam, _table, name) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let inc = &mut incremental[usize::from(fam == "ip6")];
            let obj = inc.remove(&format!("{kind} {name}"));
            assert!(obj.is_some(), "step {i}: {id} missing");
            stale += 1;
            assert!(
                !inc.contains_key(&format!("rules {name}")),
                "step {i}: stale {id} has rules"
            );
            assert!(
                obj.unwrap().get("elem").is_none(),
                "step {i}: stale {id} has elements"
            );
        }
        if i == 0 {
            assert_eq!(
                stale, 0,
                "an endpoint change of a Service without affinity leaves nothing stale"
            );
        }
        // The full ruleset of what `b` holds, each port at the place in the endpoint maps `b` gave it
        // (a full sync of `b` would renumber them, in name order).
        let ports: Vec<Arc<ServicePort>> = model.ports().cloned().collect();
        assert!(b.programmed().same_ports(&ports), "step {i}: state differs");
        nft_load(
            &ns,
            &render_programmed(b.programmed(), full.config(), &Default::default()),
        );
        let synced = listing(&full);
        // Endpoint maps are shared by groups of ports and are not deleted when their last port goes
        // (a full sync drops them): an empty one may remain.
        for (inc, syn) in incremental.iter_mut().zip(&synced) {
            inc.retain(|k, v| {
                !(k.starts_with("map ") && k.contains("endpoints-") && !syn.contains_key(k))
                    || v.get("elem").is_some()
            });
        }
        for (inc, syn) in incremental.iter().zip(&synced) {
            if inc != syn {
                let only_inc: Vec<_> = inc
                    .iter()
                    .filter(|(k, v)| syn.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .collect();
                let only_syn: Vec<_> = syn
                    .iter()
                    .filter(|(k, v)| inc.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .collect();
                panic!(
                    "step {i}: incremental and full sync differ\nincremental: {only_inc:#?}\nfull: {only_syn:#?}"
                );
            }
        }
    }
}

#[test]
fn full_sync_removes_stale_chains() {
    if !can_run("full_sync_removes_stale_chains") {
        return;
    }
    let ns = Netns::new("stale");
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let mut b = ns.backend(golden_config());
    b.sync_all(&ports).unwrap();
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        "svcnet",
        "service-STALE000-gone/svc/tcp/",
    ]);
    ns.exec(&[
        "nft",
        "add",
        "set",
        "ip",
        "svcnet",
        "affinity-STALE000-gone",
        "{ type ipv4_addr; }",
    ]);
    let mut fresh = ns.backend(golden_config());
    fresh.sync_all(&ports).unwrap();
    let text = ns.exec(&["nft", "list", "table", "ip", "svcnet"]);
    assert!(!text.contains("STALE000"), "{text}");
    assert!(text.contains("default/web/tcp/"));
    // And what is left is exactly the rendered ruleset loaded once.
    let rendered = render_full(&ports, &golden_config());
    let v4 = rendered.split("add table ip6").next().unwrap();
    assert_eq!(v4.matches("\tchain ").count(), text.matches("\tchain ").count());
    fresh.cleanup().unwrap();
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("svcnet"), "{tables}");
}

/// The value of one sample line of the backend's metrics (`name value`).
fn metric(b: &NftBackend, name: &str) -> f64 {
    let text = b.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A periodic full sync repairs what something else did to the tables; while nothing but the backend
/// itself has committed an nftables transaction since its last write (the ruleset generation says so),
/// there is nothing to repair, and it is skipped. Anyone else's transaction, or ports other than the
/// programmed ones, make it a real full sync again.
#[test]
fn periodic_full_sync_is_skipped_until_something_else_writes() {
    if !can_run("periodic_full_sync_is_skipped_until_something_else_writes") {
        return;
    }
    let ns = Netns::new("resync");
    let web = |eps: Vec<svcnet_dataplane::Endpoint>| {
        Arc::new(svc_port("web", Protocol::Tcp, "10.96.0.50", 80, eps))
    };
    let one = web(vec![ep("10.244.0.5", 8080, true)]);
    let mut b = ns.backend(golden_config());
    b.sync_all(std::slice::from_ref(&one)).unwrap();
    let full = "kubeproxy_sync_full_proxy_rules_duration_seconds_count";
    let skipped = "kubeproxy_sync_proxy_rules_nftables_resyncs_skipped_total";
    assert_eq!((metric(&b, full), metric(&b, skipped)), (1.0, 0.0));
    b.sync_all(std::slice::from_ref(&one)).unwrap();
    assert_eq!(
        (metric(&b, full), metric(&b, skipped)),
        (1.0, 1.0),
        "nothing changed"
    );

    // The backend's own incremental writes keep it skippable.
    let two = web(vec![ep("10.244.0.5", 8080, true), ep("10.244.0.6", 8080, true)]);
    b.apply(&[Change::Upsert {
        old: Some(one.clone()),
        new: two.clone(),
    }])
    .unwrap();
    b.sync_all(std::slice::from_ref(&two)).unwrap();
    assert_eq!(
        (metric(&b, full), metric(&b, skipped)),
        (1.0, 2.0),
        "only our own writes"
    );

    // Someone else's transaction: a real full sync, which repairs what it did.
    ns.exec(&["nft", "flush", "map", "ip", "svcnet", "service-ips"]);
    b.sync_all(std::slice::from_ref(&two)).unwrap();
    assert_eq!((metric(&b, full), metric(&b, skipped)), (2.0, 2.0), "drift");
    let text = ns.exec(&["nft", "list", "map", "ip", "svcnet", "service-ips"]);
    assert!(text.contains("10.96.0.50 . tcp . 80"), "{text}");
    b.sync_all(std::slice::from_ref(&two)).unwrap();
    assert_eq!((metric(&b, full), metric(&b, skipped)), (2.0, 3.0), "clean again");

    // Someone else's transaction followed by one of ours: ours does not make the tables clean again.
    ns.exec(&["nft", "flush", "map", "ip", "svcnet", "service-ips"]);
    b.apply(&[Change::Upsert {
        old: Some(two.clone()),
        new: one.clone(),
    }])
    .unwrap();
    b.sync_all(std::slice::from_ref(&one)).unwrap();
    assert_eq!(
        (metric(&b, full), metric(&b, skipped)),
        (3.0, 3.0),
        "drift before our write"
    );
    let text = ns.exec(&["nft", "list", "map", "ip", "svcnet", "service-ips"]);
    assert!(text.contains("10.96.0.50 . tcp . 80"), "{text}");

    // Ports other than the programmed ones are programmed, whatever the generation says.
    b.sync_all(std::slice::from_ref(&two)).unwrap();
    assert_eq!((metric(&b, full), metric(&b, skipped)), (4.0, 3.0));
    b.cleanup().unwrap();
}

/// A Local-policy LoadBalancer port with a `healthCheckNodePort` (whose server is the proxier's, not the
/// backend's) programs and changes incrementally like any other, and the partial syncs are counted.
#[test]
fn health_checked_port_changes_incrementally() {
    if !can_run("health_checked_port_changes_incrementally") {
        return;
    }
    let ns = Netns::new("health");
    let mut b = NftBackend::new(NftConfig {
        nft_command: ns.prefix("nft"),
        netns: Some(ns.path()),
        conntrack_command: ns.prefix("conntrack"),
        node_ips: vec!["127.0.0.1".parse().unwrap()],
        ..golden_config()
    });
    let mut p = svc_port(
        "lb",
        Protocol::Tcp,
        "10.96.0.40",
        80,
        vec![ep("10.244.0.50", 8080, true), ep("10.244.1.51", 8080, false)],
    );
    p.health_check_node_port = Some(30999);
    p.external_policy_local = true;
    p.load_balancer_ips = vec!["192.0.2.40".parse().unwrap()];
    p.external_endpoints = vec![ep("10.244.0.50", 8080, true)];
    let p = Arc::new(p);
    b.sync_all(std::slice::from_ref(&p)).unwrap();

    let mut q = (*p).clone();
    q.all_endpoints = vec![ep("10.244.1.51", 8080, false)];
    q.internal_endpoints = q.all_endpoints.clone();
    q.external_endpoints.clear();
    let q = Arc::new(q);
    b.apply(&[Change::Upsert {
        old: Some(p),
        new: q.clone(),
    }])
    .unwrap();
    b.apply(&[Change::Remove(q)]).unwrap();
    let metrics = b.metrics_text();
    assert!(
        metrics.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_nftables_service_ports 0"),
        "{metrics}"
    );
}

/// A restarted backend's full sync keeps the clients in ClientIP-affinity sets, with their remaining time.
#[test]
fn full_sync_keeps_affinity() {
    if !can_run("full_sync_keeps_affinity") {
        return;
    }
    let ns = Netns::new("keepaff");
    let yaml = std::fs::read_to_string(golden_path("affinity.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let mut b = ns.backend(golden_config());
    b.sync_all(&ports).unwrap();
    let listing = ns.exec(&["nft", "list", "table", "ip", "svcnet"]);
    let set = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("set affinity-"))
        .map(|rest| format!("affinity-{}", rest.trim_end_matches(" {")))
        .expect("an affinity set");
    ns.exec(&["nft", "add", "element", "ip", "svcnet", &set, "{ 10.244.9.9 }"]);
    drop(b);
    let mut fresh = ns.backend(golden_config());
    fresh.sync_all(&ports).unwrap();
    let after = ns.exec(&["nft", "list", "set", "ip", "svcnet", &set]);
    assert!(after.contains("10.244.9.9 expires"), "{after}");
    // Clients of sets that no longer exist are not carried anywhere.
    let none = common::ports_from_yaml(&yaml.replace("sessionAffinity: ClientIP", "sessionAffinity: None"));
    fresh.sync_all(&none).unwrap();
    let text = ns.exec(&["nft", "list", "table", "ip", "svcnet"]);
    assert!(!text.contains("10.244.9.9"), "{text}");
}

/// kube-proxy's conntrack settings are made in the programmed namespace after the first full sync, and
/// only there: a flow in CLOSE_WAIT then has an hour, as Kubernetes' e2e test "should set TCP CLOSE_WAIT
/// timeout" reads it from `conntrack -L`.
#[test]
fn conntrack_sysctls_follow_kube_proxy() {
    if !can_run("conntrack_sysctls_follow_kube_proxy") {
        return;
    }
    const DIR: &str = "/proc/sys/net/netfilter";
    let read_root = |name: &str| std::fs::read_to_string(format!("{DIR}/{name}")).ok();
    let root_before = ["nf_conntrack_tcp_timeout_close_wait", "nf_conntrack_udp_timeout"].map(read_root);
    let ns = Netns::new("sysctl");
    let yaml = std::fs::read_to_string(golden_path("affinity.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let mut b = ns.backend(NftConfig {
        conntrack: Some(svcnet_nft::sysctl::ConntrackSysctls {
            udp_timeout: Duration::from_secs(45),
            ..Default::default()
        }),
        ..golden_config()
    });
    b.sync_all(&ports).unwrap();
    let read_ns = |name: &str| ns.exec(&["cat", &format!("{DIR}/{name}")]).trim().to_string();
    assert_eq!(read_ns("nf_conntrack_tcp_timeout_close_wait"), "3600");
    assert_eq!(read_ns("nf_conntrack_tcp_timeout_established"), "86400");
    assert_eq!(read_ns("nf_conntrack_udp_timeout"), "45");
    // Left alone unless asked for.
    assert_eq!(read_ns("nf_conntrack_tcp_be_liberal"), "0");
    // The machine's own namespace is untouched.
    assert_eq!(
        ["nf_conntrack_tcp_timeout_close_wait", "nf_conntrack_udp_timeout"].map(read_root),
        root_before
    );

    // A connection the server closed and the client did not: the client side is in CLOSE_WAIT.
    let script = r#"
import socket, subprocess, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
port = srv.getsockname()[1]
cli = socket.create_connection(("127.0.0.1", port)); conn, _ = srv.accept(); conn.close()
time.sleep(0.2)
print(subprocess.run(["conntrack", "-L", "-p", "tcp", "--dport", str(port)], capture_output=True, text=True).stdout)
"#;
    let out = ns.exec(&["python3", "-c", script]);
    let line = out
        .lines()
        .find(|l| l.contains("CLOSE_WAIT"))
        .unwrap_or_else(|| panic!("no CLOSE_WAIT flow in {out:?}"));
    let timeout: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!((3540..=3600).contains(&timeout), "{line}");
}

/// The kernel's handle of the `ip svcnet` table: a table deleted and created again gets a new one.
fn table_handle(ns: &Netns) -> String {
    let prefix = ns.prefix("nft");
    let out = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["-a", "list", "table", "ip", "svcnet"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    first
        .split_once("# handle ")
        .map(|(_, h)| h.trim().to_string())
        .unwrap_or_else(|| panic!("no table handle in {first:?}"))
}

fn generation(ns: &Netns) -> u32 {
    svcnet_nft::netlink::Writer::open(Some(&ns.path()))
        .unwrap()
        .generation()
        .unwrap()
}

/// A backend of a new process takes over the tables an earlier one left: with nothing changed it writes
/// nothing at all (the ruleset generation stays); with Services changed meanwhile (an endpoint replaced,
/// a Service added, an affinity timeout changed, a port and a Service removed) one transaction changes
/// only those, the tables are never recreated (same handle), and they end up as a full rendering of the
/// same state would make them.
#[test]
fn takeover_changes_only_what_differs() {
    if !can_run("takeover_changes_only_what_differs") {
        return;
    }
    let ns = Netns::new("takeover");
    let read = |n: &str| std::fs::read_to_string(golden_path(&format!("{n}.yaml"))).unwrap();
    let base = [
        read("clusterip"),
        read("affinity"),
        read("loadbalancer-local"),
        read("dual-stack"),
    ]
    .join("\n---\n");
    let mut model = model_with(&base);
    model.take_changes();
    let ports: Vec<Arc<ServicePort>> = model.ports().cloned().collect();
    let mut first = ns.backend(golden_config());
    first.sync_all(&ports).unwrap();
    assert_eq!(first.takeover(), None, "nothing to take over in a new namespace");
    let handle = table_handle(&ns);
    drop(first);

    let before = generation(&ns);
    let mut same = ns.backend(golden_config());
    same.sync_all(&ports).unwrap();
    assert_eq!(same.takeover(), Some(svcnet_nft::TakeoverStats::default()));
    assert_eq!(generation(&ns), before, "an unchanged takeover writes nothing");
    drop(same);

    // Changes while no process ran.
    for y in [
        read("clusterip").replace("10.244.1.12", "10.244.1.13"),
        read("nodeport"),
        read("affinity").replace("600", "900"),
        read("clusterip").replace("  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}\n", ""),
    ] {
        Manifests::parse(&y).unwrap().load_into(&mut model);
    }
    model.delete_service("default", "dual");
    assert!(!model.take_changes().changes.is_empty());
    let ports: Vec<Arc<ServicePort>> = model.ports().cloned().collect();
    let mut next = ns.backend(golden_config());
    next.sync_all(&ports).unwrap();
    let stats = next.takeover().expect("taken over, not replaced");
    assert!(
        stats.chains > 0 && stats.elements > 0 && stats.sets > 0,
        "{stats:?}"
    );
    assert_eq!(table_handle(&ns), handle, "the table was not recreated");
    let full = ns.backend(NftConfig {
        table: "svcnet-full".into(),
        ..golden_config()
    });
    nft_load(
        &ns,
        &render_programmed(next.programmed(), full.config(), &Default::default()),
    );
    let (taken, synced) = (listing(&next), listing(&full));
    for (fam, (t, s)) in taken.iter().zip(&synced).enumerate() {
        let differ: Vec<_> = t
            .keys()
            .chain(s.keys())
            .filter(|k| t.get(*k) != s.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "family {fam}: taken over and full differ: {differ:#?}"
        );
    }
    // The state is known: increments go on from it, and another takeover finds nothing to do.
    let changes: Vec<Change> = {
        Manifests::parse(&read("clusterip"))
            .unwrap()
            .load_into(&mut model);
        model.take_changes().changes
    };
    next.apply(&changes).unwrap();
    assert!(
        next.metrics_text()
            .contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0"),
        "{}",
        next.metrics_text()
    );
    drop(next);
    let ports: Vec<Arc<ServicePort>> = model.ports().cloned().collect();
    let before = generation(&ns);
    let mut again = ns.backend(golden_config());
    again.sync_all(&ports).unwrap();
    assert_eq!(again.takeover(), Some(svcnet_nft::TakeoverStats::default()));
    assert_eq!(generation(&ns), before);
    assert_eq!(table_handle(&ns), handle);
}

/// An upgrade: the tables of the svcnet before grouped endpoint maps (one map per port, base chains
/// written differently; `golden/clusterip-map-per-port.nft`) are taken over in place, into exactly what
/// a full rendering makes, and the old maps are gone.
#[test]
fn takeover_upgrades_tables_with_a_map_per_port() {
    if !can_run("takeover_upgrades_tables_with_a_map_per_port") {
        return;
    }
    let ns = Netns::new("upgrade");
    let old = std::fs::read_to_string(golden_path("clusterip-map-per-port.nft")).unwrap();
    nft_load(&ns, &old);
    let handle = table_handle(&ns);
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let mut b = ns.backend(golden_config());
    b.sync_all(&ports).unwrap();
    let stats = b.takeover().expect("taken over, not replaced");
    assert!(stats.sets >= 3 && stats.chains > 0, "{stats:?}");
    assert_eq!(table_handle(&ns), handle, "the table was not recreated");
    let full = ns.backend(NftConfig {
        table: "svcnet-full".into(),
        ..golden_config()
    });
    nft_load(
        &ns,
        &render_programmed(b.programmed(), full.config(), &Default::default()),
    );
    for (fam, (t, s)) in listing(&b).iter().zip(&listing(&full)).enumerate() {
        let differ: Vec<_> = t
            .keys()
            .chain(s.keys())
            .filter(|k| t.get(*k) != s.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "family {fam}: upgraded and full differ: {differ:#?}"
        );
    }
}

/// What someone else did to the tables while no svcnet ran is undone by the next takeover, and nothing
/// else is written: elements deleted by hand (a verdict-map entry, an endpoint range) come back, an
/// element added by hand goes, a rule added to a service chain and a base chain flushed by hand are
/// rewritten (the rule count and the digest in the last rule's comment tell), and a chain svcnet does not
/// know is deleted. The tables keep their handle and end up as a full rendering makes them.
#[test]
fn takeover_repairs_what_others_changed() {
    if !can_run("takeover_repairs_what_others_changed") {
        return;
    }
    let ns = Netns::new("repair");
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let mut first = ns.backend(golden_config());
    first.sync_all(&ports).unwrap();
    let handle = table_handle(&ns);
    drop(first);

    let service_chain = "service-I6BWTMCE-default/web/tcp/";
    for edit in [
        "delete element ip svcnet service-ips { 10.96.0.10 . tcp . 80 }",
        "delete element ip svcnet endpoints-udp-0 { udp . 0-32767 }",
        "add element ip svcnet cluster-ips { 10.96.99.99 }",
        &format!("add rule ip svcnet {service_chain} counter"),
        "flush chain ip svcnet nat-output",
        "add chain ip svcnet not-svcnets",
    ] {
        nft_load(&ns, &format!("{edit}\n"));
    }
    let before = ns.exec(&["nft", "list", "table", "ip", "svcnet"]);
    assert!(!before.contains("10.96.0.10 . tcp . 80"), "{before}");

    let mut next = ns.backend(golden_config());
    next.sync_all(&ports).unwrap();
    let stats = next.takeover().expect("taken over, not replaced");
    assert_eq!(
        stats,
        svcnet_nft::TakeoverStats {
            sets: 0,
            chains: 3,
            elements: 3
        }
    );
    assert_eq!(table_handle(&ns), handle, "the table was not recreated");
    let full = ns.backend(NftConfig {
        table: "svcnet-full".into(),
        ..golden_config()
    });
    nft_load(
        &ns,
        &render_programmed(next.programmed(), full.config(), &Default::default()),
    );
    for (fam, (t, s)) in listing(&next).iter().zip(&listing(&full)).enumerate() {
        let differ: Vec<_> = t
            .keys()
            .chain(s.keys())
            .filter(|k| t.get(*k) != s.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "family {fam}: repaired and full differ: {differ:#?}"
        );
    }
    drop(next);

    // Repaired, the tables are as svcnet writes them: the next takeover writes nothing.
    let before = generation(&ns);
    let mut again = ns.backend(golden_config());
    again.sync_all(&ports).unwrap();
    assert_eq!(again.takeover(), Some(svcnet_nft::TakeoverStats::default()));
    assert_eq!(generation(&ns), before);
}

/// With several pod CIDRs per family the rules name a `pod-cidrs` interval set, whose elements a takeover
/// compares as nft prints them: unchanged, nothing is written; a CIDR added to the configuration meanwhile
/// is added to the set, and nothing else changes.
#[test]
fn takeover_follows_the_pod_cidrs() {
    if !can_run("takeover_follows_the_pod_cidrs") {
        return;
    }
    let ns = Netns::new("podcidrs");
    let yaml = std::fs::read_to_string(golden_path("clusterip.yaml")).unwrap();
    let ports = common::ports_from_yaml(&yaml);
    let config = |cidrs: &[&str]| NftConfig {
        pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ..golden_config()
    };
    let two = ["10.244.0.0/16", "10.245.0.0/16", "fd00:10:244::/56"];
    let mut first = ns.backend(config(&two));
    first.sync_all(&ports).unwrap();
    assert_eq!(first.takeover(), None);
    drop(first);

    let before = generation(&ns);
    let mut same = ns.backend(config(&two));
    same.sync_all(&ports).unwrap();
    assert_eq!(same.takeover(), Some(svcnet_nft::TakeoverStats::default()));
    assert_eq!(generation(&ns), before, "an unchanged takeover writes nothing");
    drop(same);

    let three = [
        "10.244.0.0/16",
        "10.245.0.0/16",
        "10.250.0.0/16",
        "fd00:10:244::/56",
    ];
    let mut next = ns.backend(config(&three));
    next.sync_all(&ports).unwrap();
    assert_eq!(
        next.takeover(),
        Some(svcnet_nft::TakeoverStats {
            sets: 0,
            chains: 0,
            elements: 1
        })
    );
    let set = ns.exec(&["nft", "list", "set", "ip", "svcnet", "pod-cidrs"]);
    assert!(set.contains("10.250.0.0/16"), "{set}");
}
