//! ClusterIP and NodePort allocation through the store, as Kubernetes 1.33 does it, driven with real
//! kubectl against the real binary: ServiceCIDRs (the default one from `--service-cidr`, one added at
//! run time to grow the range, one deleted while in use), an IPAddress per ClusterIP, the repair loop,
//! and several API servers on one real etcd creating Services at once without ever sharing an address
//! or a port.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::etcd::Etcd;
use svcnet_testsupport::kubectl::NEWEST;
use svcnet_testsupport::raw::{rv, send};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(list: &Value) -> BTreeSet<String> {
    items(list)
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn cluster_ip(c: &Cluster, name: &str) -> String {
    c.get_json(&["service", name])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ready_condition(cidr: &Value) -> Value {
    items(&serde_json::json!({"items": cidr["status"]["conditions"].clone()}))
        .into_iter()
        .find(|c| c["type"] == "Ready")
        .unwrap_or(Value::Null)
}

fn events(c: &Cluster, ns: &str, reason: &str) -> Vec<String> {
    items(&c.get_json(&["events", "-n", ns]))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The default ServiceCIDR and an IPAddress per ClusterIP, printed as kubectl prints them; an
/// IPAddress goes with its Service; a taken address is refused in kube's words; kube's validation of
/// both kinds.
#[test]
fn servicecidrs_and_ipaddresses() {
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--service-cidr", "127.96.0.0/24"]);
    assert!(eventually(Duration::from_secs(10), || {
        ready_condition(&c.get_json(&["servicecidr", "kubernetes"]))["status"] == "True"
    }));
    let cidr = c.get_json(&["servicecidr", "kubernetes"]);
    assert_eq!(cidr["spec"]["cidrs"], serde_json::json!(["127.96.0.0/24"]));
    assert_eq!(
        cidr["metadata"]["finalizers"],
        serde_json::json!(["networking.k8s.io/service-cidr-finalizer"])
    );
    assert_eq!(
        ready_condition(&cidr)["message"],
        "Kubernetes Service CIDR is ready"
    );

    c.ok(&["create", "service", "clusterip", "web", "--tcp", "80"]);
    let ip = cluster_ip(&c, "web");
    let table = c.ok(&["get", "servicecidrs,ipaddresses"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "CIDRS", "AGE"], "{table}");
    assert_eq!(
        lines[1][..2],
        ["servicecidr.networking.k8s.io/kubernetes", "127.96.0.0/24"]
    );
    assert!(lines.contains(&vec!["NAME", "PARENTREF"]), "{table}");
    for (addr, parent) in [
        (ip.as_str(), "services/default/web"),
        ("127.96.0.1", "services/default/kubernetes"),
        ("127.96.0.10", "services/kube-system/kube-dns"),
    ] {
        let row = vec![format!("ipaddress.networking.k8s.io/{addr}"), parent.to_string()];
        assert!(
            lines
                .iter()
                .any(|l| l.iter().map(|s| s.to_string()).collect::<Vec<_>>() == row),
            "{row:?} in\n{table}"
        );
    }
    let obj = c.get_json(&["ipaddress", &ip]);
    assert_eq!(
        obj["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"],
        "ipallocator.k8s.io"
    );
    assert_eq!(
        obj["metadata"]["labels"]["ipaddress.kubernetes.io/ip-family"],
        "IPv4"
    );
    assert_eq!(
        obj["spec"]["parentRef"],
        serde_json::json!({"group": "", "resource": "services", "namespace": "default", "name": "web"})
    );

    // A taken address, asked for by another Service.
    let err = c.fail_v(
        NEWEST,
        &[
            "create",
            "service",
            "clusterip",
            "copy",
            "--tcp",
            "80",
            "--clusterip",
            &ip,
        ],
        None,
    );
    assert!(
        err.contains(&format!(
            "spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
        )),
        "{err}"
    );
    // Outside every ServiceCIDR.
    let err = c.fail_v(
        NEWEST,
        &[
            "create",
            "service",
            "clusterip",
            "far",
            "--tcp",
            "80",
            "--clusterip",
            "127.99.0.9",
        ],
        None,
    );
    assert!(
        err.contains("failed to allocate IP 127.99.0.9: the provided IP (127.99.0.9) is not in the valid range. The range of valid IPs is 127.96.0.0/24"),
        "{err}"
    );
    // A dry run takes nothing.
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--tcp",
        "80",
        "--clusterip",
        "127.96.0.77",
        "--dry-run=server",
    ]);
    assert!(
        c.kubectl_v(NEWEST, &["get", "ipaddress", "127.96.0.77"], None)
            .status
            .code()
            != Some(0)
    );

    // The IPAddress goes with its Service.
    c.ok(&["delete", "service", "web"]);
    assert!(!names(&c.get_json(&["ipaddresses"])).contains(&ip));
    // ... and so the address is free again.
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "again",
        "--tcp",
        "80",
        "--clusterip",
        &ip,
    ]);
    // A type change to ExternalName releases it too.
    c.ok(&[
        "patch",
        "service",
        "again",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"example.com","clusterIP":"","clusterIPs":null}}"#,
    ]);
    assert!(!names(&c.get_json(&["ipaddresses"])).contains(&ip));

    // kube's validation of both kinds.
    let err = c.fail_v(
        NEWEST,
        &["create", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: two}\nspec: {cidrs: [10.0.0.0/24, 10.1.0.0/24]}\n"),
    );
    assert!(
        err.contains(r#"The ServiceCIDR "two" is invalid: spec.cidrs: Invalid value: networking.ServiceCIDRSpec{CIDRs:[]string{"10.0.0.0/24", "10.1.0.0/24"}}: may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"#),
        "{err}"
    );
    let err = c.fail_v(
        NEWEST,
        &["create", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: IPAddress\nmetadata: {name: 2001:DB8::1}\nspec: {parentRef: {resource: services, name: x, namespace: default}}\n"),
    );
    assert!(
        err.contains(
            r#"metadata.name: Invalid value: "2001:DB8::1": must be in canonical form ("2001:db8::1")"#
        ),
        "{err}"
    );
    let err = c.fail_v(
        NEWEST,
        &[
            "patch",
            "servicecidr",
            "kubernetes",
            "--type=merge",
            "-p",
            r#"{"spec":{"cidrs":["127.97.0.0/24"]}}"#,
        ],
        None,
    );
    assert!(
        err.contains(r#"spec.cidrs: Invalid value: []string{"127.97.0.0/24"}: field is immutable"#),
        "{err}"
    );
}

/// A full range says so in kube's words; a ServiceCIDR added at run time grows it; deleting a
/// ServiceCIDR whose addresses are in use leaves it terminating (Ready False, `Terminating`) until the
/// Service holding one goes; the repair loop deletes a leaked IPAddress and recreates a Service's
/// missing one, with kube's Events.
#[test]
fn growing_and_shrinking_the_range_and_repair() {
    // 14 usable addresses, of which `kubernetes` and `kube-dns` hold two.
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--no-agent",
            "--service-cidr",
            "127.96.0.0/28",
            "--allocation-leak-grace-period",
            "2s",
            "--allocation-repair-period",
            "1s",
        ],
    );
    for i in 0..12 {
        c.ok(&["create", "service", "clusterip", &format!("s{i}"), "--tcp", "80"]);
    }
    let err = c.fail_v(
        NEWEST,
        &["create", "service", "clusterip", "more", "--tcp", "80"],
        None,
    );
    assert!(
        err.contains("Internal error occurred: failed to allocate a serviceIP: range is full"),
        "{err}"
    );
    // kube-apiserver's allocator metrics say the same.
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    for line in [
        r#"kube_apiserver_clusterip_allocator_allocated_ips{cidr="127.96.0.0/28"} 14"#,
        r#"kube_apiserver_clusterip_allocator_available_ips{cidr="127.96.0.0/28"} 0"#,
        r#"kube_apiserver_clusterip_allocator_allocation_total{cidr="127.96.0.0/28",scope="dynamic"} 12"#,
        r#"kube_apiserver_clusterip_allocator_allocation_errors_total{cidr="127.96.0.0/28",scope="dynamic"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // A second range.
    c.ok_v(
        NEWEST,
        &["create", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: extra}\nspec: {cidrs: [127.97.0.0/28]}\n"),
    );
    c.ok(&["create", "service", "clusterip", "more", "--tcp", "80"]);
    let ip = cluster_ip(&c, "more");
    assert!(ip.starts_with("127.97.0."), "{ip}");
    assert!(eventually(Duration::from_secs(10), || {
        ready_condition(&c.get_json(&["servicecidr", "extra"]))["status"] == "True"
    }));

    // Deleted while `more` holds an address in it: it stays, terminating.
    c.ok(&["delete", "servicecidr", "extra", "--wait=false"]);
    assert!(eventually(Duration::from_secs(10), || {
        let cond = ready_condition(&c.get_json(&["servicecidr", "extra"]));
        cond["status"] == "False" && cond["reason"] == "Terminating"
    }));
    let cond = ready_condition(&c.get_json(&["servicecidr", "extra"]));
    assert_eq!(
        cond["message"],
        "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR"
    );
    std::thread::sleep(Duration::from_secs(12));
    let extra = c.get_json(&["servicecidr", "extra"]);
    assert!(extra["metadata"]["deletionTimestamp"].is_string(), "{extra}");
    // A terminating range hands out nothing.
    c.ok(&["delete", "service", "s0"]);
    c.ok(&["create", "service", "clusterip", "s0", "--tcp", "80"]);
    assert!(cluster_ip(&c, "s0").starts_with("127.96.0."));
    // Once nothing is left in it, it goes (after kube's 10 s grace).
    c.ok(&["delete", "service", "more"]);
    assert!(eventually(Duration::from_secs(20), || {
        !c.kubectl_v(NEWEST, &["get", "servicecidr", "extra"], None)
            .status
            .success()
    }));

    // A leaked IPAddress (as a crash between allocating and writing the Service leaves) is deleted once
    // older than the grace period.
    let freed = cluster_ip(&c, "s1");
    c.ok(&["delete", "service", "s1"]);
    assert!(!names(&c.get_json(&["ipaddresses"])).contains(&freed));
    c.ok_v(
        NEWEST,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: IPAddress\nmetadata:\n  name: {freed}\n  labels:\n    ipaddress.kubernetes.io/managed-by: ipallocator.k8s.io\n    ipaddress.kubernetes.io/ip-family: IPv4\nspec:\n  parentRef: {{group: \"\", resource: services, namespace: default, name: ghost}}\n"
        )),
    );
    assert!(eventually(Duration::from_secs(15), || {
        !c.kubectl_v(NEWEST, &["get", "ipaddress", &freed], None)
            .status
            .success()
    }));
    assert!(
        events(&c, "default", "IPAddressNotAllocated").contains(&format!(
            "IPAddress: {freed} for Service default/ghost appears to have leaked: cleaning up"
        )),
        "{:?}",
        events(&c, "default", "IPAddressNotAllocated")
    );

    // A Service whose IPAddress went missing gets it back.
    let held = cluster_ip(&c, "s3");
    c.ok(&["delete", "ipaddress", &held]);
    assert!(eventually(Duration::from_secs(15), || {
        c.kubectl_v(NEWEST, &["get", "ipaddress", &held], None)
            .status
            .success()
    }));
    assert_eq!(
        c.get_json(&["ipaddress", &held])["spec"]["parentRef"]["name"],
        "s3"
    );
    assert!(
        events(&c, "default", "ClusterIPNotAllocated")
            .contains(&format!("Cluster IP [IPv4]: {held} is not allocated; repairing")),
        "{:?}",
        events(&c, "default", "ClusterIPNotAllocated")
    );
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    for line in [
        r#"kube_apiserver_clusterip_repair_ip_errors_total{type="leak"} 1"#,
        r#"kube_apiserver_clusterip_repair_ip_errors_total{type="repair"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

/// Three API servers on one etcd and many `kubectl create service nodeport` at once through all of
/// them, until the ClusterIP range is exactly full: every create succeeds, no ClusterIP and no NodePort
/// is held twice, each address has its IPAddress, and the next create is refused as full.
#[test]
fn api_servers_on_one_etcd_never_hand_out_an_address_twice() {
    let etcd = Etcd::start();
    let url = etcd.url();
    // 62 usable addresses; `kubernetes` and `kube-dns` hold two: 60 for the test.
    let flags = [
        "--control-plane-only",
        "--etcd-servers",
        url.as_str(),
        "--service-cidr",
        "127.96.0.0/26",
        "--service-node-port-range",
        "30000-30099",
    ];
    let a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let c = Cluster::start_joining(SVCNET, &a, &flags);
    let servers: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|s| format!("--server=https://{}", s.addr))
        .collect();
    // Six writers, two per server, ten Services each, all at once.
    std::thread::scope(|scope| {
        for w in 0..6 {
            let (a, server) = (&a, &servers[w % 3]);
            scope.spawn(move || {
                for i in 0..10 {
                    a.ok(&[
                        server,
                        "create",
                        "service",
                        "nodeport",
                        &format!("w{w}-{i}"),
                        "--tcp",
                        "80",
                    ]);
                }
            });
        }
    });
    let services = items(&a.get_json(&["services", "-A"]));
    assert_eq!(services.len(), 62);
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in &services {
        let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(ips.insert(ip.clone()), "{ip} held twice");
        for p in s["spec"]["ports"].as_array().unwrap() {
            if let Some(n) = p["nodePort"].as_i64() {
                assert!(ports.insert(n), "NodePort {n} held twice");
            }
        }
    }
    assert_eq!(ports.len(), 60);
    // Every address has its IPAddress, naming the Service that holds it, read through another server.
    let addresses = items(&b.get_json(&[&servers[2], "ipaddresses"]));
    assert_eq!(addresses.len(), 62);
    for s in &services {
        let ip = s["spec"]["clusterIP"].as_str().unwrap();
        let obj = addresses
            .iter()
            .find(|o| o["metadata"]["name"] == ip)
            .unwrap_or_else(|| panic!("no IPAddress {ip}"));
        assert_eq!(obj["spec"]["parentRef"]["name"], s["metadata"]["name"]);
    }
    // Full, whichever server is asked.
    for server in &servers {
        let err = a.fail_v(
            NEWEST,
            &[
                server,
                "create",
                "service",
                "clusterip",
                "one-more",
                "--tcp",
                "80",
            ],
            None,
        );
        assert!(
            err.contains("failed to allocate a serviceIP: range is full"),
            "{err}"
        );
    }
}

/// A Service written into etcd behind the API servers' back (as old data or a bad restore could be),
/// holding another Service's ClusterIP and NodePort: the repair loop reports both with kube's Events,
/// once, not on every pass, and takes nothing from the Service that holds them rightly.
#[test]
fn the_repair_loop_reports_what_is_held_twice() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--no-agent",
            "--etcd-servers",
            &url,
            "--allocation-repair-period",
            "1s",
        ],
    );
    c.ok(&["create", "service", "nodeport", "a", "--tcp", "80"]);
    let a = c.get_json(&["service", "a"]);
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    let port = a["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let mut b = a.clone();
    b["metadata"]["name"] = "b".into();
    b["metadata"]["uid"] = "8b1d6a3e-0000-4000-8000-000000000001".into();
    let meta = b["metadata"].as_object_mut().unwrap();
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    let out = etcd.etcdctl(&["put", "/registry/core/services/default/b", &b.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(15), || {
        !events(&c, "default", "ClusterIPAlreadyAllocated").is_empty()
            && events(&c, "default", "PortAlreadyAllocated").len() >= 2
    }));
    assert_eq!(
        events(&c, "default", "ClusterIPAlreadyAllocated"),
        [format!(
            "Cluster IP [IPv4]:{ip} was assigned to multiple services. Please recreate service"
        )]
    );
    assert!(
        events(&c, "default", "PortAlreadyAllocated")
            .iter()
            .all(|m| *m == format!("Port {port} was assigned to multiple services; please recreate service")),
    );
    // Passes go on (a change wakes one; the period is 1 s), the reports do not repeat.
    c.ok(&["create", "service", "clusterip", "wake", "--tcp", "80"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(events(&c, "default", "ClusterIPAlreadyAllocated").len(), 1);
    assert_eq!(events(&c, "default", "PortAlreadyAllocated").len(), 2);
    // `a` keeps its IPAddress.
    assert_eq!(c.get_json(&["ipaddress", &ip])["spec"]["parentRef"]["name"], "a");
}

/// The NodePorts the stored bitmap (`/registry/ranges/servicenodeports`) holds, read from etcd itself.
fn stored_node_ports(etcd: &Etcd) -> usize {
    use base64::Engine;
    let out = etcd.etcdctl(&["get", "/registry/ranges/servicenodeports", "--print-value-only"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let data = base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap_or_default())
        .unwrap_or_default();
    data.iter().map(|b| b.count_ones() as usize).sum()
}

/// Three API servers on one etcd, writers creating NodePort Services through all of them, and the one
/// holding the repair Lease killed (`kill -9`) in the middle: no ClusterIP or NodePort ends up held
/// twice, every Service is there once, and whatever the dead server had reserved for a create it never
/// finished is released by the repair loop, now on another instance, after the grace period.
#[test]
fn an_api_server_killed_mid_creates_leaves_nothing_held_twice_or_for_long() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = [
        &[
            "--control-plane-only",
            "--etcd-servers",
            url.as_str(),
            "--service-cidr",
            "127.96.0.0/24",
            "--service-node-port-range",
            "30000-30999",
        ][..],
        &svcnet_testsupport::etcd::FAST_LEADER_ELECTION[..],
        &[
            "--allocation-leak-grace-period",
            "2s",
            "--allocation-repair-period",
            "1s",
        ][..],
    ]
    .concat();
    let mut a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let c = Cluster::start_joining(SVCNET, &a, &flags);
    let a_id = std::fs::read_to_string(a.dir.join("leader-identity")).unwrap();
    let holder = |k: &Cluster| k.lease_holder("svcnet-allocation-repair");
    // The first server takes the repair Lease at start; on a loaded machine that can take a while.
    assert!(
        eventually(Duration::from_secs(30), || holder(&b) == a_id),
        "the repair Lease is held by {:?}, not the first server {a_id:?}",
        holder(&b)
    );
    let servers: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|s| format!("--server=https://{}", s.addr))
        .collect();
    let created = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for w in 0..6 {
            let (c, servers, created) = (&c, &servers, &created);
            scope.spawn(move || {
                for i in 0..10 {
                    let name = format!("w{w}-{i}");
                    // A create that fails on a dying server goes to the next one; one the dead server
                    // wrote before dying is there already.
                    let mut errors = Vec::new();
                    let done = (0..6).any(|attempt| {
                        let server = &servers[(w + attempt) % 3];
                        let out = c.kubectl_v(
                            NEWEST,
                            &[server, "create", "service", "nodeport", &name, "--tcp", "80"],
                            None,
                        );
                        let err = String::from_utf8_lossy(&out.stderr).into_owned();
                        let ok = out.status.success() || err.contains("already exists");
                        errors.push(format!("{server}: {}", err.trim()));
                        ok
                    });
                    assert!(done, "{name} was never created:\n{}", errors.join("\n"));
                    created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        while created.load(std::sync::atomic::Ordering::Relaxed) < 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.stop("KILL");
    });
    let services = items(&c.get_json(&["services", "-A"]));
    assert_eq!(services.len(), 62);
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in &services {
        assert!(ips.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
        for p in s["spec"]["ports"].as_array().unwrap() {
            if let Some(n) = p["nodePort"].as_i64() {
                assert!(ports.insert(n), "NodePort {n} held twice");
            }
        }
    }
    assert_eq!(ports.len(), 60);
    // The repair Lease moved, and what the dead server left half done is released: exactly one
    // IPAddress per Service, naming it, and exactly the Services' NodePorts in the bitmap.
    assert!(eventually(Duration::from_secs(10), || {
        let h = holder(&c);
        !h.is_empty() && h != a_id
    }));
    assert!(
        eventually(Duration::from_secs(20), || {
            let addresses = items(&c.get_json(&["ipaddresses"]));
            addresses.len() == services.len() && stored_node_ports(&etcd) == ports.len()
        }),
        "{} IPAddresses for {} Services; {} NodePorts stored for {}",
        items(&c.get_json(&["ipaddresses"])).len(),
        services.len(),
        stored_node_ports(&etcd),
        ports.len()
    );
    for addr in items(&c.get_json(&["ipaddresses"])) {
        let name = addr["spec"]["parentRef"]["name"].as_str().unwrap();
        let svc = services
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{addr}"));
        assert_eq!(svc["spec"]["clusterIP"], addr["metadata"]["name"]);
    }
}

/// A Service stored before IPAddresses existed (written straight into etcd while no API server ran):
/// at start-up, before anything new is allocated, its address gets its IPAddress and its port its bit,
/// so neither can be handed out again; no repair was needed (no Event).
#[test]
fn stored_services_without_allocations_are_adopted_at_start() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut c = Cluster::start_with(
        SVCNET,
        &[
            "--no-agent",
            "--etcd-servers",
            &url,
            "--service-cidr",
            "127.96.0.0/24",
        ],
    );
    c.ok(&["create", "service", "nodeport", "model", "--tcp", "80"]);
    let mut old = c.get_json(&["service", "model"]);
    c.stop("TERM");
    old["metadata"]["name"] = "old".into();
    old["metadata"]["uid"] = "8b1d6a3e-0000-4000-8000-000000000002".into();
    let meta = old["metadata"].as_object_mut().unwrap();
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    old["spec"]["clusterIP"] = "127.96.0.50".into();
    old["spec"]["clusterIPs"] = serde_json::json!(["127.96.0.50"]);
    old["spec"]["ports"][0]["nodePort"] = 30050.into();
    let out = etcd.etcdctl(&["put", "/registry/core/services/default/old", &old.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.start_again();
    assert_eq!(
        c.get_json(&["ipaddress", "127.96.0.50"])["spec"]["parentRef"]["name"],
        "old"
    );
    let err = c.fail_v(
        NEWEST,
        &[
            "create",
            "service",
            "clusterip",
            "x",
            "--tcp",
            "80",
            "--clusterip",
            "127.96.0.50",
        ],
        None,
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = c.fail_v(
        NEWEST,
        &[
            "create",
            "service",
            "nodeport",
            "y",
            "--tcp",
            "80",
            "--node-port",
            "30050",
        ],
        None,
    );
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 30050: provided port is already allocated"),
        "{err}"
    );
    assert!(events(&c, "default", "ClusterIPNotAllocated").is_empty());
    assert!(events(&c, "default", "PortNotAllocated").is_empty());
}

const SVCS: &str = "/api/v1/namespaces/default/services";

fn clusterip_service(name: &str) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}]}})
}

/// A Service and its IPAddress are written in one store transaction: both carry one resourceVersion.
/// A watch of Services resumed at it on `watch_on` (another server on etcd) gets every later Service
/// event once, in order, and not the Service itself; a create that fails leaves no IPAddress behind.
async fn one_revision_then_resume(create_on: &kube::Client, watch_on: &kube::Client) {
    use futures::{AsyncBufReadExt, TryStreamExt};
    let (code, first) = send(create_on, "POST", SVCS, Some(clusterip_service("first"))).await;
    assert_eq!(code, 201, "{first}");
    let at = rv(&first);
    let ip = first["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (code, address) = send(
        watch_on,
        "GET",
        &format!("/apis/networking.k8s.io/v1/ipaddresses/{ip}"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{address}");
    assert_eq!(rv(&address), at, "the Service and its IPAddress at one revision");

    let path = format!("{SVCS}?watch=true&resourceVersion={at}");
    let lines = watch_on
        .request_stream(http::Request::get(path).body(Vec::new()).unwrap())
        .await
        .unwrap()
        .lines();
    let watcher = tokio::spawn(async move {
        futures::pin_mut!(lines);
        let mut seen = Vec::new();
        // Until nothing more comes for 3 s.
        while let Ok(Ok(Some(l))) = tokio::time::timeout(Duration::from_secs(3), lines.try_next()).await {
            let ev: Value = serde_json::from_str(&l).unwrap();
            let name = ev["object"]["metadata"]["name"].as_str().unwrap().to_string();
            seen.push((rv(&ev["object"]), ev["type"].as_str().unwrap().to_string(), name));
        }
        seen
    });

    let addresses = |list: Value| items(&list).len();
    let (_, list) = send(create_on, "GET", "/apis/networking.k8s.io/v1/ipaddresses", None).await;
    let before = addresses(list);
    let mut expected = Vec::new();
    for i in 0..10 {
        // Through both servers in turn.
        let client = if i % 2 == 0 { create_on } else { watch_on };
        let name = format!("later-{i}");
        let (code, obj) = send(client, "POST", SVCS, Some(clusterip_service(&name))).await;
        assert_eq!(code, 201, "{obj}");
        let (_, address) = send(
            client,
            "GET",
            &format!(
                "/apis/networking.k8s.io/v1/ipaddresses/{}",
                obj["spec"]["clusterIP"].as_str().unwrap()
            ),
            None,
        )
        .await;
        assert_eq!(rv(&address), rv(&obj), "{name}");
        expected.push((rv(&obj), "ADDED".to_string(), name));
    }
    // A create that fails (the name is taken) picked an address but wrote nothing.
    let (code, err) = send(create_on, "POST", SVCS, Some(clusterip_service("later-0"))).await;
    assert_eq!(
        (code, err["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{err}"
    );
    let (_, list) = send(watch_on, "GET", "/apis/networking.k8s.io/v1/ipaddresses", None).await;
    assert_eq!(
        addresses(list),
        before + 10,
        "one IPAddress per created Service, none more"
    );

    let seen = watcher.await.unwrap();
    assert_eq!(seen, expected, "every later event once, in order, nothing before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_and_its_ipaddress_share_a_revision_on_redb() {
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--service-cidr", "127.96.0.0/24"]);
    let k = c.client().await;
    one_revision_then_resume(&k, &k).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_and_its_ipaddress_share_a_revision_on_etcd_and_a_watch_resumes_elsewhere() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = [
        "--control-plane-only",
        "--etcd-servers",
        url.as_str(),
        "--service-cidr",
        "127.96.0.0/24",
    ];
    let a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    one_revision_then_resume(&a.client().await, &b.client().await).await;
}
