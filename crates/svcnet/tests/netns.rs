//! `--pod-network netns` end to end (root only): `svcnet up` runs inside a network namespace of the test's
//! own (the "node"), never touching the machine's root namespace; each pod gets its own namespace on the
//! node bridge with an address from 10.244.0.0/24, pods reach each other and the node reaches them by pod
//! IP, each pod sees Kubernetes' resolv.conf for its namespace, exec probes run inside the pod's namespace,
//! and a pod's namespace goes with it.
//!
//! Without root (or without iproute2) the test says it is skipped and passes.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use svcnet_agent::netns::{host_veth_name, netns_name};
use svcnet_testsupport::netns::{Namespaces, POD_NETWORK_FLAGS, can_run, command_in, ip};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// Names `ip netns list` shows (its stderr complains about entries mounted only in the agent's mount
/// namespace; only the names matter here).
fn netns_list() -> Vec<String> {
    let out = ip(&["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn pod_yaml(name: &str, namespace: &str, command: &str, probe: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: main\n    image: python:3\n    command: [\"sh\", \"-c\", {command:?}]\n{probe}"
    )
}

/// Applies a pod of [`pod_yaml`]'s shape.
fn apply_pod(c: &Cluster, name: &str, namespace: &str, command: &str, probe: &str) {
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod_yaml(name, namespace, command, probe)),
    );
}

/// A readiness probe over HTTP from the node, through the bridge, for a server on 8080.
const HTTP_PROBE: &str =
    "    readinessProbe:\n      httpGet: {port: 8080, path: /}\n      periodSeconds: 1\n";

/// The HTTP status `url` answers with, fetched from inside the node's namespace ("" if none).
fn status_from_node(node: &str, url: &str) -> String {
    command_in(node, "python3")
        .arg("-c")
        .arg(format!(
            "import urllib.request; print(urllib.request.urlopen({url:?}, timeout=5).status)"
        ))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn wait_ready(c: &Cluster, namespace: &str, name: &str) -> Value {
    let mut last = Value::Null;
    let ok = eventually(WAIT, || {
        last = c.get_json(&["pod", name, "-n", namespace]);
        last["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    assert!(
        ok,
        "pod {namespace}/{name} never became ready: {last}\n{}",
        c.log()
    );
    last
}

fn logs(c: &Cluster, namespace: &str, name: &str) -> String {
    let out = c.kubectl_v("1.33", &["logs", name, "-n", namespace], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the bridge port of the pod `uid` (in the node namespace `node`) is in hairpin mode.
fn hairpin(node: &str, uid: &str) -> bool {
    let out = ip(&["-n", node, "-d", "link", "show", "dev", &host_veth_name(uid)]);
    String::from_utf8_lossy(&out.stdout).contains("hairpin on")
}

#[test]
fn pods_get_their_own_network_namespaces() {
    if let Err(why) = can_run() {
        println!("skipped: {why} (the netns pod network creates network namespaces)");
        return;
    }
    let mut ns = Namespaces::create();
    // Declared after `ns`, so dropped first: svcnet stops (and deletes its pods' namespaces) before the
    // guard removes whatever is left.
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &POD_NETWORK_FLAGS);
    let kube_dns = c.get_json(&["svc", "kube-dns", "-n", "kube-system"])["spec"]["clusterIP"]
        .as_str()
        .expect("kube-dns has a ClusterIP")
        .to_string();
    assert_eq!(kube_dns, "10.96.0.10");
    c.ok(&["create", "namespace", "team"]);

    // A server whose readiness is probed over HTTP from the node, through the bridge.
    apply_pod(
        &c,
        "server",
        "default",
        "exec python3 -m http.server 8080",
        HTTP_PROBE,
    );
    // A pod printing its resolv.conf; its exec readiness probe passes only inside the pod's namespace,
    // where eth0 carries $POD_IP.
    let exec_probe = "    readinessProbe:\n      exec:\n        command: [\"sh\", \"-c\", \"ip -o -4 addr show dev eth0 | grep -q \\\"inet $POD_IP/32\\\"\"]\n      periodSeconds: 1\n";
    apply_pod(
        &c,
        "resolv",
        "team",
        "cat /etc/resolv.conf; exec sleep 3600",
        exec_probe,
    );
    let server = wait_ready(&c, "default", "server");
    let resolv = wait_ready(&c, "team", "resolv");
    let server_ip = server["status"]["podIP"].as_str().unwrap().to_string();
    let resolv_ip = resolv["status"]["podIP"].as_str().unwrap().to_string();
    for ip in [&server_ip, &resolv_ip] {
        assert!(
            ip.starts_with("10.244.0."),
            "pod IP {ip} not from the node's pod CIDR"
        );
        assert_ne!(ip, "10.244.0.1", "the gateway went to a pod");
    }
    assert_ne!(server_ip, resolv_ip);
    let server_ns = ns.track_pod(netns_name(server["metadata"]["uid"].as_str().unwrap()));
    let resolv_ns = ns.track_pod(netns_name(resolv["metadata"]["uid"].as_str().unwrap()));
    let listed = netns_list();
    assert!(
        listed.contains(&server_ns) && listed.contains(&resolv_ns),
        "{listed:?}"
    );

    // Pod to pod by pod IP.
    let client_cmd = format!(
        "while true; do python3 -c \"import urllib.request; print('status', urllib.request.urlopen('http://{server_ip}:8080/', timeout=2).status)\"; sleep 1; done"
    );
    apply_pod(&c, "client", "default", &client_cmd, "");
    let client = wait_ready(&c, "default", "client");
    let client_ns = ns.track_pod(netns_name(client["metadata"]["uid"].as_str().unwrap()));
    assert!(
        eventually(WAIT, || logs(&c, "default", "client").contains("status 200")),
        "client never reached the server at {server_ip}: {}\n{}",
        logs(&c, "default", "client"),
        c.log()
    );

    // Kubernetes' resolv.conf for the pod's namespace.
    let text = logs(&c, "team", "resolv");
    assert!(
        text.contains("search team.svc.cluster.local svc.cluster.local cluster.local\n"),
        "{text}"
    );
    assert!(text.contains(&format!("nameserver {kube_dns}\n")), "{text}");
    assert!(text.contains("options ndots:5"), "{text}");

    // The node (its namespace) reaches pod IPs.
    let url = format!("http://{server_ip}:8080/");
    assert_eq!(status_from_node(&ns.node.name, &url), "200");

    // Every pod's bridge port is in hairpin mode (a pod may reach itself through its Service).
    let server_uid = server["metadata"]["uid"].as_str().unwrap().to_string();
    let client_uid = client["metadata"]["uid"].as_str().unwrap().to_string();
    for uid in [&server_uid, &client_uid] {
        assert!(hairpin(&ns.node.name, uid), "{uid}: hairpin off");
    }
    // Someone turns it off on one port: the agent's restart repairs it.
    let veth = host_veth_name(&client_uid);
    let off = ip(&[
        "-n",
        &ns.node.name,
        "link",
        "set",
        "dev",
        &veth,
        "type",
        "bridge_slave",
        "hairpin",
        "off",
    ]);
    assert!(off.status.success(), "{off:?}");
    assert!(!hairpin(&ns.node.name, &client_uid));

    // The agent dies without cleaning up and comes back: the pods keep their IPs and namespace names, and
    // run again in working namespaces.
    let mut c = c;
    c.restart("KILL");
    let again = wait_ready(&c, "default", "server");
    assert_eq!(again["status"]["podIP"].as_str(), Some(server_ip.as_str()));
    wait_ready(&c, "team", "resolv");
    // The API shows the old agent's status until the new one wrote its own; a namespace this agent cannot
    // reach (its mount was made in the killed agent's mount namespace) is made again meanwhile.
    let mut listed = Vec::new();
    assert!(
        eventually(WAIT, || {
            listed = netns_list();
            [&server_ns, &resolv_ns, &client_ns]
                .iter()
                .all(|n| listed.contains(n))
        }),
        "{listed:?}\n{}",
        c.log()
    );
    assert!(
        eventually(WAIT, || status_from_node(&ns.node.name, &url) == "200"),
        "server unreachable after restart\n{}",
        c.log()
    );
    assert!(
        eventually(WAIT, || logs(&c, "default", "client").contains("status 200")),
        "client lost the server after restart: {:?}\n{}\n{}",
        c.kubectl_v("1.33", &["logs", "client"], None),
        c.get_json(&["pod", "client"]),
        c.log()
    );
    assert!(
        eventually(WAIT, || hairpin(&ns.node.name, &client_uid)),
        "the restarted agent did not repair the hairpin flag\n{}",
        c.log()
    );

    // Deleting a pod deletes its namespace and resolv.conf.
    c.ok(&["delete", "pod", "server", "--wait=true"]);
    assert!(
        eventually(WAIT, || !netns_list().contains(&server_ns)),
        "{server_ns} outlived its pod: {:?}",
        netns_list()
    );
    assert!(!Path::new("/etc/netns").join(&server_ns).exists());
    assert!(netns_list().contains(&resolv_ns));

    // The node going away (svcnet stops) takes the remaining pods' namespaces with it.
    drop(c);
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| *n == resolv_ns || *n == client_ns)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A pod whose network namespace cannot be set up (here: someone deleted the node's bridge under the agent)
/// gets no event when the cause passes. The agent sets the node side up again and retries the pod on its own,
/// as the kubelet retries a failed sandbox: the pod starts and is reachable, with nobody touching it.
#[test]
fn a_pod_whose_network_setup_failed_is_retried_until_it_starts() {
    if let Err(why) = can_run() {
        println!("skipped: {why} (the netns pod network creates network namespaces)");
        return;
    }
    let mut ns = Namespaces::create();
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &POD_NETWORK_FLAGS);
    apply_pod(
        &c,
        "first",
        "default",
        "exec python3 -m http.server 8080",
        HTTP_PROBE,
    );
    let first = wait_ready(&c, "default", "first");
    ns.track_pod(netns_name(first["metadata"]["uid"].as_str().unwrap()));

    let out = ip(&["-n", &ns.node.name, "link", "del", "svcnet0"]);
    assert!(out.status.success(), "{out:?}");
    apply_pod(
        &c,
        "late",
        "default",
        "exec python3 -m http.server 8080",
        HTTP_PROBE,
    );
    let late = wait_ready(&c, "default", "late");
    ns.track_pod(netns_name(late["metadata"]["uid"].as_str().unwrap()));
    assert!(
        c.log().contains("could not set up the pod's network namespace"),
        "the bridge was gone, yet the first setup did not fail:\n{}",
        c.log()
    );
    // Ready already says the node reached it through the bridge (the probe is HTTP from the node); say
    // it again from a second process.
    let url = format!("http://{}:8080/", late["status"]["podIP"].as_str().unwrap());
    assert_eq!(status_from_node(&ns.node.name, &url), "200");
}
