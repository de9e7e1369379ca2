//! LoadBalancer IPAM through kubectl: `svcnet up --lb-pool` gives LoadBalancer Services ingress
//! addresses from the pool (EXTERNAL-IP), honours requested addresses, leaves Services `<pending>` with an
//! Event when the pool is exhausted and hands freed addresses to them, releases on type change, leaves
//! other classes alone, and keeps assignments (resolving duplicates, oldest first) across restarts.
//! Services with the same `svcnet.io/allow-shared-ip` share an address when their ports do not clash.
//!
//! Every pool lies inside 127.0.0.0/8: nothing here may reach outside the loopback range.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::cluster::tail;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const POOL: &[&str] = &["--lb-pool", "127.240.0.10-127.240.0.12"];
const WAIT: Duration = Duration::from_secs(20);

/// Creates a Service of `type: LoadBalancer` with extra spec lines and annotations (YAML, indented).
fn create_lb(c: &Cluster, name: &str, spec: &str, annotations: &str) {
    let meta = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{meta}spec:\n  type: LoadBalancer\n  \
         ports:\n  - port: 80\n{spec}"
    );
    c.ok_v("1.33", &["create", "-f", "-"], Some(&yaml));
}

fn ingress(c: &Cluster, name: &str) -> Vec<String> {
    let svc = c.get_json(&["svc", name]);
    svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|i| i["ip"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `name` shows exactly `want` as ingress addresses.
fn wait_ingress(c: &Cluster, name: &str, want: &[&str]) {
    let ok = eventually(WAIT, || ingress(c, name) == want);
    assert!(
        ok,
        "svc {name}: ingress {:?}, want {want:?}\nlog tail:\n{}",
        ingress(c, name),
        tail(&c.log(), 30)
    );
}

/// The EXTERNAL-IP column of `kubectl get svc NAME`.
fn external_ip(c: &Cluster, name: &str) -> String {
    let out = c.ok(&["get", "svc", name, "--no-headers"]);
    out.split_whitespace().nth(3).unwrap_or_default().to_owned()
}

/// (type, reason, message, source component) of the Events about `name`.
fn events(c: &Cluster, name: &str) -> Vec<(String, String, String, String)> {
    let sel = format!("involvedObject.name={name}");
    let list = c.get_json(&["events", "--field-selector", &sel]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&e["type"]),
                s(&e["reason"]),
                s(&e["message"]),
                s(&e["source"]["component"]),
            )
        })
        .collect()
}

fn has_event(c: &Cluster, name: &str, reason: &str, message: &str) -> bool {
    events(c, name)
        .iter()
        .any(|(_, r, m, _)| r == reason && m.contains(message))
}

#[test]
fn assigns_from_the_pool_and_shows_external_ip() {
    let c = Cluster::start_with(SVCNET, POOL);
    create_lb(&c, "web", "", "");
    wait_ingress(&c, "web", &["127.240.0.10"]);
    assert_eq!(external_ip(&c, "web"), "127.240.0.10");
    let svc = c.get_json(&["svc", "web", "--show-managed-fields"]);
    assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    let managers: Vec<&str> = svc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subresource"] == "status")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["svcnet-lb-ipam"]);
    // A Normal Event says what was assigned.
    let ev = events(&c, "web");
    assert!(
        ev.contains(&(
            "Normal".into(),
            "IPAllocated".into(),
            "Assigned IP [\"127.240.0.10\"]".into(),
            "svcnet-lb-ipam".into()
        )),
        "{ev:?}"
    );
    // A ClusterIP Service gets nothing, and the next LoadBalancer the next address.
    c.ok(&["create", "service", "clusterip", "plain", "--tcp=80:80"]);
    create_lb(&c, "web2", "", "");
    wait_ingress(&c, "web2", &["127.240.0.11"]);
    assert!(ingress(&c, "plain").is_empty());
    assert_eq!(external_ip(&c, "plain"), "<none>");
}

/// `svcnet.io/allow-shared-ip`: DNS on TCP and on UDP share one address; a Service of the same key
/// whose port clashes waits (`<pending>`, an `AllocationFailed` Event naming holder and port) and gets
/// the address once the clash is gone; another key, or none, never shares; a request for the shared
/// address follows the same rules.
#[test]
fn services_with_one_sharing_key_share_an_address() {
    let c = Cluster::start_with(SVCNET, POOL);
    let key = |k: &str| format!("    svcnet.io/allow-shared-ip: {k}\n");
    create_lb(&c, "plain", "", "");
    wait_ingress(&c, "plain", &["127.240.0.10"]);
    create_lb(&c, "dns-tcp", "    protocol: TCP\n", &key("dns"));
    wait_ingress(&c, "dns-tcp", &["127.240.0.11"]);
    create_lb(&c, "dns-udp", "    protocol: UDP\n", &key("dns"));
    wait_ingress(&c, "dns-udp", &["127.240.0.11"]);
    assert_eq!(external_ip(&c, "dns-udp"), "127.240.0.11");
    // 80/TCP is dns-tcp's: refused, and pending.
    create_lb(&c, "dns-clash", "", &key("dns"));
    assert!(
        eventually(WAIT, || has_event(
            &c,
            "dns-clash",
            "AllocationFailed",
            "cannot share 127.240.0.11 (sharing key \"dns\") with Service default/dns-tcp, which uses port 80/TCP too"
        )),
        "{:?}",
        events(&c, "dns-clash")
    );
    assert_eq!(external_ip(&c, "dns-clash"), "<pending>");
    // Another key gets an address of its own; a request for the shared address without the key is
    // refused in the same words as a taken address.
    create_lb(&c, "web", "", &key("web"));
    wait_ingress(&c, "web", &["127.240.0.12"]);
    create_lb(&c, "asks", "  loadBalancerIP: 127.240.0.11\n", "");
    assert!(
        eventually(WAIT, || has_event(
            &c,
            "asks",
            "AllocationFailed",
            "requested address 127.240.0.11 is already in use by Service default/dns-tcp (this Service has no svcnet.io/allow-shared-ip annotation)"
        )),
        "{:?}",
        events(&c, "asks")
    );
    // dns-tcp moves to another port: the clash is gone and dns-clash joins.
    c.ok(&[
        "patch",
        "svc",
        "dns-tcp",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 53}]"#,
    ]);
    wait_ingress(&c, "dns-clash", &["127.240.0.11"]);
    // The address stays while any Service holds it.
    c.ok(&["delete", "svc", "dns-tcp", "dns-udp"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ingress(&c, "dns-clash"), ["127.240.0.11"]);
    assert_eq!(external_ip(&c, "asks"), "<pending>");
    // The last holder goes: the address is free, and the waiting request gets it.
    c.ok(&["delete", "svc", "dns-clash"]);
    wait_ingress(&c, "asks", &["127.240.0.11"]);
}

#[test]
fn requested_addresses_are_honoured() {
    let c = Cluster::start_with(SVCNET, POOL);
    create_lb(&c, "field", "  loadBalancerIP: 127.240.0.12\n", "");
    create_lb(
        &c,
        "annotated",
        "",
        "    svcnet.io/load-balancer-ips: 127.240.0.11\n",
    );
    wait_ingress(&c, "field", &["127.240.0.12"]);
    wait_ingress(&c, "annotated", &["127.240.0.11"]);
    // Dynamic allocation goes around requested addresses.
    create_lb(&c, "dynamic", "", "");
    wait_ingress(&c, "dynamic", &["127.240.0.10"]);

    // Taken, outside the pool, malformed: no ingress, a Warning saying why.
    create_lb(&c, "taken", "  loadBalancerIP: 127.240.0.12\n", "");
    create_lb(
        &c,
        "outside",
        "",
        "    svcnet.io/load-balancer-ips: 127.241.0.1\n",
    );
    create_lb(&c, "bad", "", "    svcnet.io/load-balancer-ips: not-an-ip\n");
    let cases = [
        (
            "taken",
            "requested address 127.240.0.12 is already in use by Service default/field",
        ),
        ("outside", "requested address 127.241.0.1 is not in the pool"),
        (
            "bad",
            "annotation svcnet.io/load-balancer-ips: \"not-an-ip\" is not an IP address",
        ),
    ];
    for (name, message) in cases {
        assert!(
            eventually(WAIT, || has_event(&c, name, "AllocationFailed", message)),
            "{name}: {:?}",
            events(&c, name)
        );
        assert!(ingress(&c, name).is_empty(), "{name}");
        assert_eq!(external_ip(&c, name), "<pending>");
    }
    // When the holder lets go, the Service that asked for the address gets it.
    c.ok(&["delete", "svc", "field"]);
    wait_ingress(&c, "taken", &["127.240.0.12"]);
    // Moving a Service to another requested address frees its old one.
    c.ok(&[
        "annotate",
        "svc",
        "annotated",
        "--overwrite",
        "svcnet.io/load-balancer-ips=127.240.0.12",
    ]);
    assert!(eventually(WAIT, || has_event(
        &c,
        "annotated",
        "AllocationFailed",
        "requested address 127.240.0.12 is already in use by Service default/taken"
    )));
    wait_ingress(&c, "annotated", &[]);
}

#[test]
fn exhaustion_pending_event_and_release() {
    let c = Cluster::start_with(SVCNET, POOL);
    for name in ["a", "b", "c"] {
        create_lb(&c, name, "", "");
        assert!(eventually(WAIT, || ingress(&c, name).len() == 1), "{name}");
    }
    create_lb(&c, "d", "", "");
    create_lb(&c, "e", "", "");
    let ev = |name: &str| {
        let ok = eventually(WAIT, || {
            has_event(&c, name, "AllocationFailed", "no available IPv4 address in pool")
        });
        assert!(ok, "{name}: {:?}", events(&c, name));
    };
    ev("d");
    ev("e");
    let warning = events(&c, "d")
        .into_iter()
        .find(|e| e.1 == "AllocationFailed")
        .unwrap();
    assert_eq!(warning.0, "Warning");
    assert_eq!(warning.3, "svcnet-lb-ipam");
    assert_eq!(external_ip(&c, "d"), "<pending>");
    let describe = c.ok(&["describe", "svc", "d"]);
    assert!(
        describe.contains("AllocationFailed")
            && describe.contains("no available IPv4 address in pool")
            && describe.contains("svcnet-lb-ipam"),
        "{describe}"
    );

    // Deleting one frees its address for the oldest waiting Service.
    let b_ip = ingress(&c, "b")[0].clone();
    c.ok(&["delete", "svc", "b"]);
    wait_ingress(&c, "d", &[&b_ip]);
    assert!(ingress(&c, "e").is_empty());

    // A type change away releases and clears the ingress; the next waiting Service gets the address.
    let c_ip = ingress(&c, "c")[0].clone();
    c.ok(&["patch", "svc", "c", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    wait_ingress(&c, "e", &[&c_ip]);
    assert!(ingress(&c, "c").is_empty());
    assert_eq!(external_ip(&c, "c"), "<none>");
    // And back to LoadBalancer: now it waits.
    c.ok(&["patch", "svc", "c", "-p", r#"{"spec":{"type":"LoadBalancer"}}"#]);
    assert!(eventually(WAIT, || {
        events(&c, "c").iter().any(|e| e.1 == "AllocationFailed")
    }));
    assert_eq!(external_ip(&c, "c"), "<pending>");
}

#[test]
fn other_classes_are_left_alone() {
    let c = Cluster::start_with(SVCNET, POOL);
    create_lb(&c, "theirs", "  loadBalancerClass: example.com/other\n", "");
    create_lb(&c, "ours", "  loadBalancerClass: svcnet.io/lb\n", "");
    create_lb(&c, "unclassed", "", "");
    // Once both of ours are served, the other class has been seen (the watch is ordered) and skipped.
    wait_ingress(&c, "ours", &["127.240.0.10"]);
    wait_ingress(&c, "unclassed", &["127.240.0.11"]);
    let theirs = c.get_json(&["svc", "theirs", "--show-managed-fields"]);
    assert_eq!(theirs["status"]["loadBalancer"], serde_json::json!({}));
    assert!(events(&c, "theirs").is_empty());
    let managers = theirs["metadata"]["managedFields"].to_string();
    assert!(!managers.contains("svcnet-lb-ipam"), "{managers}");
    assert_eq!(external_ip(&c, "theirs"), "<pending>");
    // Another implementation's status is not overwritten.
    c.ok(&[
        "patch",
        "svc",
        "theirs",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"127.250.0.1"}]}}}"#,
    ]);
    create_lb(&c, "later", "", "");
    wait_ingress(&c, "later", &["127.240.0.12"]);
    assert_eq!(ingress(&c, "theirs"), ["127.250.0.1"]);
}

#[test]
fn restart_keeps_assignments() {
    let mut c = Cluster::start_with(SVCNET, POOL);
    for name in ["a", "b", "c"] {
        create_lb(&c, name, "", "");
        assert!(eventually(WAIT, || ingress(&c, name).len() == 1), "{name}");
    }
    let (b_ip, c_ip) = (ingress(&c, "b"), ingress(&c, "c"));
    // Leave a gap below b and c: a naive rebuild would hand the lowest address out again.
    let a_ip = ingress(&c, "a");
    c.ok(&["delete", "svc", "a"]);
    let rv = |c: &Cluster, name: &str| {
        c.get_json(&["svc", name])["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (b_rv, c_rv) = (rv(&c, "b"), rv(&c, "c"));
    c.restart("TERM");
    create_lb(&c, "d", "", "");
    wait_ingress(&c, "d", &a_ip.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ingress(&c, "b"), b_ip);
    assert_eq!(ingress(&c, "c"), c_ip);
    assert_eq!(rv(&c, "b"), b_rv, "b was not rewritten");
    assert_eq!(rv(&c, "c"), c_rv, "c was not rewritten");
}

/// Duplicates found at start-up go to the oldest Service; the younger one gets another address and an
/// Event. The duplicates are written while `svcnet up` runs without a pool (no IPAM to undo them).
#[test]
fn duplicates_at_start_oldest_wins() {
    let mut c = Cluster::start_with(SVCNET, POOL);
    c.stop("TERM");
    let mut bare = start_without_pool(&c);
    create_lb(&c, "z-old", "", "");
    std::thread::sleep(Duration::from_millis(1100)); // creationTimestamp has one-second resolution
    create_lb(&c, "a-young", "", "");
    for name in ["z-old", "a-young"] {
        c.ok(&[
            "patch",
            "svc",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"127.240.0.11"}]}}}"#,
        ]);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(bare.id().to_string())
        .status();
    let _ = bare.wait();
    c.restart("TERM");
    wait_ingress(&c, "a-young", &["127.240.0.10"]);
    assert_eq!(ingress(&c, "z-old"), ["127.240.0.11"]);
    assert!(has_event(
        &c,
        "a-young",
        "AddressConflict",
        "address 127.240.0.11 is also assigned to the older Service default/z-old"
    ));
}

/// `svcnet up` on `c`'s data directory and address, without `--lb-pool`.
fn start_without_pool(c: &Cluster) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .arg("up")
        .arg("--data-dir")
        .arg(&c.dir)
        .arg("--api-listen")
        .arg(&c.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn svcnet");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.contains("svcnet is up"), "{line:?}");
    child
}
