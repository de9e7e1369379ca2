//! The HA control plane under failure: three API servers (`svcnet up --control-plane-only`) on a
//! three-member etcd (all started by the tests on loopback ports), one server killed with `kill -9` and
//! then etcd's leader, under writes through all three servers. Nothing acknowledged is lost, a watch
//! that moves to another server sees every revision etcd recorded exactly once and in order; a node
//! agent (`svcnet agent --api-servers`) keeps its data plane and moves to another server by itself,
//! and endpoints keep following pods when the instance holding the EndpointSlice Lease dies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, TryStreamExt};
use serde_json::{Value, json};
use svcnet_testsupport::agent::Agent;
use svcnet_testsupport::etcd::{Etcd, EtcdCluster};
use svcnet_testsupport::kubectl::NEWEST;
use svcnet_testsupport::raw::{rv, try_send};
use svcnet_testsupport::{Cluster, eventually, net};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const SVCS: &str = "/api/v1/namespaces/default/services";

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap().to_string()
}

/// What the writers got acknowledged: (revision, kind, name, phase it was acknowledged in).
type Acked = Vec<(u64, &'static str, String, usize)>;

/// Writes through `servers` in turn (so every server takes writes) until `stop`: a ConfigMap create,
/// every third op a NodePort Service, every fourth an update of one of this writer's ConfigMaps through
/// another server than its create. Only 2xx answers count as acknowledged.
async fn writer(
    id: usize,
    servers: Vec<kube::Client>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
) -> Acked {
    let mut acked = Vec::new();
    let mut made: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = &servers[n % servers.len()];
        let result = if n % 4 == 3 && !made.is_empty() {
            let cm = made[n % made.len()].clone();
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm}, "data": {"k": format!("update-{n}")}});
            // An unconditional update (no resourceVersion): the server retries its own conflicts.
            try_send(k, "PUT", &format!("{CMS}/{cm}"), Some(body))
                .await
                .map(|r| ("ConfigMap", r))
        } else if n % 3 == 2 {
            let svc = format!("s{id}-{n}");
            let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
                "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": svc}}});
            try_send(k, "POST", SVCS, Some(body))
                .await
                .map(|r| ("Service", r))
        } else {
            let cm = format!("w{id}-{n}");
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm}, "data": {"k": "created"}});
            try_send(k, "POST", CMS, Some(body))
                .await
                .map(|r| ("ConfigMap", r))
        };
        if let Ok((kind, (code, obj))) = result
            && (200..300).contains(&code)
        {
            if kind == "ConfigMap" && code == 201 {
                made.push(name(&obj));
            }
            acked.push((rv(&obj), kind, name(&obj), phase.load(Ordering::Relaxed)));
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    acked
}

/// Watches ConfigMaps from `from` on the first server; when its stream breaks, resumes on the next one
/// at the last resourceVersion seen. Returns (revision, name) of every event once `stop` is set and
/// nothing arrived for 3 s.
async fn roaming_watch(
    servers: Vec<kube::Client>,
    from: u64,
    stop: Arc<AtomicBool>,
) -> (Vec<(u64, String)>, usize) {
    let mut seen = Vec::new();
    let mut last = from;
    let mut moves = 0;
    for k in servers.iter().cycle().take(10) {
        let path = format!("{CMS}?watch=true&allowWatchBookmarks=true&resourceVersion={last}");
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        let Ok(lines) = k.request_stream(req).await else {
            moves += 1;
            continue;
        };
        let lines = lines.lines();
        futures::pin_mut!(lines);
        loop {
            match tokio::time::timeout(Duration::from_secs(3), lines.try_next()).await {
                Ok(Ok(Some(l))) => {
                    let ev: Value = serde_json::from_str(&l).unwrap();
                    assert_ne!(ev["type"], "ERROR", "{ev}");
                    last = rv(&ev["object"]);
                    if ev["type"] != "BOOKMARK" {
                        seen.push((last, name(&ev["object"])));
                    }
                }
                Err(_) if stop.load(Ordering::Relaxed) => return (seen, moves),
                Err(_) => {}
                // The server went away: on to the next one.
                Ok(_) => break,
            }
        }
        moves += 1;
    }
    panic!("the watch broke ten times");
}

/// etcd's own record of the ConfigMap changes after `from`: (mod revision, name) of every write, in
/// order, up to the latest one.
async fn etcd_history(etcd: &EtcdCluster, from: u64) -> Vec<(u64, String)> {
    let prefix = "/registry/core/configmaps/default/";
    let urls: Vec<String> = etcd
        .members
        .iter()
        .filter(|m| m.pid().is_some())
        .map(Etcd::url)
        .collect();
    let mut client = etcd_client::Client::connect(urls, None).await.unwrap();
    let now = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let latest = now.kvs().iter().map(|kv| kv.mod_revision()).max().unwrap_or(0) as u64;
    let mut stream = client
        .watch(
            prefix,
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from as i64 + 1),
            ),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.last().is_none_or(|(r, _)| *r < latest) {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("etcd's history within 10 s")
            .unwrap()
            .expect("etcd watch open");
        assert!(!resp.canceled(), "etcd watch canceled: {}", resp.cancel_reason());
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            let key = kv.key_str().unwrap();
            out.push((
                kv.mod_revision() as u64,
                key.trim_start_matches(prefix).to_string(),
            ));
        }
    }
    out
}

/// What a run of [`writes_while_a_server_and_a_member_die`] left.
struct Outcome {
    acked: Acked,
    /// What the roaming watch saw, and how often it moved.
    seen: Vec<(u64, String)>,
    moves: usize,
    /// etcd's own history of ConfigMaps over the run.
    history: Vec<(u64, String)>,
    /// The ConfigMaps and Services listed afterwards (through servers other than the killed one).
    cm_names: BTreeSet<String>,
    services: Vec<Value>,
}

/// Which member of `etcd` leads it now.
fn etcd_leader(etcd: &EtcdCluster) -> usize {
    let out = etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("etcdctl endpoint status JSON");
    let leader_url = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Status"]["header"]["member_id"] == e["Status"]["leader"])
        .and_then(|e| e["Endpoint"].as_str())
        .expect("a member that leads")
        .to_string();
    etcd.members.iter().position(|m| m.url() == leader_url).unwrap()
}

/// Three API servers on a three-member etcd, writes through all three (three writers) and a watch on
/// a; a dies (`kill -9`) after 3 s, etcd's leader 3 s later, the writes stop 15 s after that.
async fn writes_while_a_server_and_a_member_die() -> Outcome {
    let mut etcd = EtcdCluster::start(3);
    let urls = etcd.urls();
    let flags = ["--control-plane-only", "--etcd-servers", urls.as_str()];
    let mut a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let c = Cluster::start_joining(SVCNET, &a, &flags);
    let (ka, kb, kc) = (a.client().await, b.client().await, c.client().await);

    let (_, list) = try_send(&kb, "GET", CMS, None).await.unwrap();
    let from: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let watcher = tokio::spawn(roaming_watch(
        vec![ka.clone(), kb.clone(), kc.clone()],
        from,
        watch_stop.clone(),
    ));
    let all = [ka.clone(), kb.clone(), kc.clone()];
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let servers = (0..3).map(|j| all[(i + j) % 3].clone()).collect();
            tokio::spawn(writer(i, servers, stop.clone(), phase.clone()))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    a.stop("KILL");
    phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The leader, the harder case: writes in flight are lost with it and time out in etcd (about 7 s)
    // while the others elect a new one, so this phase is long enough for writes to go on after that.
    let leader = etcd_leader(&etcd);
    etcd.members[leader].kill();
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked: Acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    watch_stop.store(true, Ordering::Relaxed);
    let (seen, moves) = watcher.await.unwrap();
    let history = etcd_history(&etcd, from).await;
    let (_, cms) = try_send(&kc, "GET", CMS, None).await.unwrap();
    let cm_names = cms["items"].as_array().unwrap().iter().map(name).collect();
    let (_, svcs) = try_send(&kb, "GET", SVCS, None).await.unwrap();
    Outcome {
        acked,
        seen,
        moves,
        history,
        cm_names,
        services: svcs["items"].as_array().unwrap().clone(),
    }
}

/// Under writes through three API servers, one server and then etcd's leader die: writes go on in
/// each phase, every acknowledged write is in etcd's history and in the lists afterwards, and a watch
/// that moves from the killed server to another sees exactly etcd's history of ConfigMaps: every
/// revision once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_an_api_server_and_then_an_etcd_member_die() {
    let o = writes_while_a_server_and_a_member_die().await;
    for p in 0..3 {
        let n = o.acked.iter().filter(|w| w.3 == p).count();
        assert!(n > 10, "phase {p}: only {n} writes acknowledged");
    }
    assert!(o.moves >= 1, "the watch never moved off the killed server");

    let in_history: BTreeSet<(u64, String)> = o.history.iter().cloned().collect();
    assert_eq!(
        in_history.len(),
        o.history.len(),
        "etcd recorded one write per revision"
    );
    for (r, kind, n, _) in &o.acked {
        if *kind == "ConfigMap" {
            assert!(
                in_history.contains(&(*r, n.clone())),
                "acknowledged {n}@{r} not in etcd"
            );
        }
    }
    assert_eq!(o.seen.len(), o.history.len(), "events seen vs etcd's history");
    assert_eq!(
        o.seen, o.history,
        "the watch saw etcd's history exactly once, in order"
    );

    let svc_names: BTreeSet<String> = o.services.iter().map(name).collect();
    for (_, kind, n, _) in &o.acked {
        let names = if *kind == "ConfigMap" {
            &o.cm_names
        } else {
            &svc_names
        };
        assert!(names.contains(n), "acknowledged {kind} {n} missing afterwards");
    }
}

/// The same run: no two Services hold one ClusterIP or NodePort, though three servers allocated them at
/// once while one of them and an etcd member died (ClusterIPs are IPAddress objects created only if
/// absent, NodePorts a compare-and-swapped bitmap; with per-server bitmaps about five NodePorts of ~200
/// went to two Services each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cluster_ip_or_node_port_held_twice_across_api_servers() {
    let o = writes_while_a_server_and_a_member_die().await;
    let mut ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ports: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for s in &o.services {
        ips.entry(s["spec"]["clusterIP"].as_str().unwrap().to_string())
            .or_default()
            .push(name(s));
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_u64() {
                ports.entry(np).or_default().push(name(s));
            }
        }
    }
    let dup_ips: Vec<_> = ips.iter().filter(|(_, v)| v.len() > 1).collect();
    let dup_ports: Vec<_> = ports.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        dup_ips.is_empty() && dup_ports.is_empty(),
        "{} Services; ClusterIPs held twice: {dup_ips:?}; NodePorts held twice: {dup_ports:?}",
        o.services.len()
    );
}

/// The `IP:port`s the `kubernetes` Service's Endpoints list.
fn apiserver_endpoints(c: &Cluster) -> BTreeSet<String> {
    let ep = c.get_json(&["endpoints", "kubernetes"]);
    ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let port = s["ports"][0]["port"].as_u64().unwrap();
            s["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |a| format!("{}:{port}", a["ip"].as_str().unwrap()))
        })
        .collect()
}

/// The addresses the EndpointSlices of `svc` list.
fn endpoint_addresses(c: &Cluster, svc: &str) -> Vec<String> {
    let slices = c.get_json(&[
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
    ]);
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// A Service without selector named `svc`, with an EndpointSlice naming the test server `to`; its
/// ClusterIP address.
fn service_to(c: &Cluster, svc: &str, to: std::net::SocketAddr) -> std::net::SocketAddr {
    let yaml = format!(
        "{}{}",
        net::service(svc, "null", 80, &to.port().to_string(), "TCP", ""),
        net::slices(svc, "p", "TCP", &[to])
    );
    c.ok_v(NEWEST, &["apply", "-f", "-"], Some(&yaml));
    let ip = c.get_json(&["service", svc])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    format!("{ip}:80").parse().unwrap()
}

/// Whether a connection to `addr` reaches the test server called `who`.
fn reaches(addr: std::net::SocketAddr, who: &str) -> bool {
    net::hello(None, addr).is_ok_and(|(_, name)| name == who)
}

/// A node agent joined with `--api-servers` over three API servers (single etcd, 3 s Leases). The
/// instance it uses, which also holds every controller Lease, is killed: the agent's data plane keeps
/// serving, the agent moves to another server (its Node stays Ready, a Service created after the kill
/// reaches its data plane, the kubeconfig it wrote for kubectl keeps working; a server in its list
/// that answers but is not ready is passed by), and the EndpointSlice
/// controller, now on another instance, follows a pod's labels within the Lease duration + 1 s. The
/// `kubernetes` Service's Endpoints list the three servers, then the two that are left.
#[test]
fn an_agent_moves_to_another_api_server_and_endpoints_keep_following_pods() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = [
        &["--control-plane-only", "--etcd-servers", url.as_str()][..],
        &svcnet_testsupport::etcd::FAST_LEADER_ELECTION[..],
    ]
    .concat();
    let mut a = Cluster::start_with(SVCNET, &flags);
    let a_id = std::fs::read_to_string(a.dir.join("leader-identity")).unwrap();
    const LEASE: &str = "svcnet-endpointslice-controller";
    assert!(eventually(Duration::from_secs(10), || a.lease_holder(LEASE) == a_id));
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let c = Cluster::start_joining(SVCNET, &a, &flags);
    // Every server's Lease puts it into the `kubernetes` Service's endpoints.
    let all: BTreeSet<String> = [&a.addr, &b.addr, &c.addr].into_iter().cloned().collect();
    assert!(
        eventually(Duration::from_secs(10), || apiserver_endpoints(&a) == all),
        "{:?}, want {all:?}",
        apiserver_endpoints(&a)
    );
    // A fourth instance of the cluster (same CA) that never gets its etcd: it answers, but not ready.
    // It comes first in the agent's list, and the agent's balancer must pass it by.
    let waiting_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(waiting_dir.path().join("pki")).unwrap();
    for f in ["ca.crt", "ca.key", "sa.key", "token"] {
        std::fs::copy(a.dir.join("pki").join(f), waiting_dir.path().join("pki").join(f)).unwrap();
    }
    let waiting_port = net::free_port("127.0.0.1");
    let dead_etcd = format!("http://127.0.0.1:{}", net::free_port("127.0.0.1"));
    let _waiting = Up(std::process::Command::new(SVCNET)
        .args(["up", "--control-plane-only", "--metrics-listen", "127.0.0.1:0"])
        .args(["--api-listen", &format!("127.0.0.1:{waiting_port}")])
        .args(["--etcd-servers", &dead_etcd, "--data-dir"])
        .arg(waiting_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", waiting_port)).is_ok()
    }));
    let servers = [format!("https://127.0.0.1:{waiting_port}")]
        .into_iter()
        .chain([&a, &b, &c].map(|s| format!("https://{}", s.addr)))
        .collect::<Vec<_>>()
        .join(",");

    let agent_dir = b.dir.join("node-ha");
    let agent = Agent::start(
        SVCNET,
        &a.kubeconfig(),
        "node-ha",
        &agent_dir,
        &["--api-servers", &servers, "--api-lb-listen", "127.0.0.1:0"],
    );
    let node_ready = |c: &Cluster| {
        c.get_json(&["nodes"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["metadata"]["name"] == "node-ha")
            .flat_map(|n| n["status"]["conditions"].as_array().cloned().unwrap_or_default())
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    };
    assert!(
        eventually(Duration::from_secs(30), || node_ready(&b)),
        "{}",
        agent.log()
    );
    // kubectl on the node: the kubeconfig the agent wrote names its balancer.
    let node_kubeconfig = agent_dir.join("kubeconfig");
    let kubectl_on_node = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", node_kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        b.kubectl_env(NEWEST, &all, None, &[])
    };
    let kc = std::fs::read_to_string(&node_kubeconfig).unwrap();
    assert!(!kc.contains(&a.addr), "{kc}");
    assert!(kubectl_on_node(&["get", "nodes"]).status.success());

    // A pod behind a Service, and a Service to a test server: both on the node's data plane.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  \
               terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: x\n    \
               command: [sleep, \"300\"]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n\
               spec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    b.ok_v(NEWEST, &["apply", "-f", "-"], Some(pod));
    assert!(
        eventually(Duration::from_secs(30), || endpoint_addresses(&b, "web").len()
            == 1),
        "{}",
        agent.log()
    );
    let before = service_to(&b, "before", net::tcp_server("127.0.0.1", "before"));
    assert!(eventually(Duration::from_secs(15), || reaches(before, "before")));

    // The instance the agent talks to and every controller runs on dies.
    a.stop("KILL");
    let t0 = Instant::now();
    // The data plane keeps serving while the control plane moves.
    assert!(reaches(before, "before"));
    // The pod leaves the Service through another server: the EndpointSlice controller, on another
    // instance once the Lease expired, drops it within the Lease duration + 1 s of the kill.
    b.ok(&["label", "pod", "web", "app=other", "--overwrite"]);
    let within = Duration::from_secs(3 + 1).saturating_sub(t0.elapsed());
    assert!(
        eventually(within, || endpoint_addresses(&c, "web").is_empty()),
        "endpoints still {:?} {:?} after the kill",
        endpoint_addresses(&c, "web"),
        t0.elapsed()
    );
    assert_ne!(b.lease_holder(LEASE), a_id);
    b.ok(&["label", "pod", "web", "app=web", "--overwrite"]);
    assert!(eventually(Duration::from_secs(2), || endpoint_addresses(
        &c, "web"
    )
    .len()
        == 1));

    // A Service made after the kill reaches the node's data plane (its proxy process moved too), and
    // the node keeps renewing its Lease through another server.
    let after = service_to(&c, "after", net::tcp_server("127.0.0.1", "after"));
    assert!(
        eventually(Duration::from_secs(15), || reaches(after, "after")),
        "{}",
        agent.log()
    );
    assert!(reaches(before, "before"));
    let first = b.node_lease_renewed("node-ha");
    assert!(
        eventually(Duration::from_secs(15), || b.node_lease_renewed("node-ha")
            != first),
        "the node's Lease was not renewed after the kill:\n{}",
        agent.log()
    );
    assert!(node_ready(&c));
    assert!(kubectl_on_node(&["get", "services", "after"]).status.success());
    let log = agent.log();
    assert!(log.contains("API server connections switch over"), "{log}");
    assert!(
        log.contains("API server not ready at start") && log.contains(&format!("127.0.0.1:{waiting_port}")),
        "{log}"
    );

    // The `kubernetes` Endpoints listed all three servers; a's Lease expires (15 s) and it leaves them.
    let live: BTreeSet<String> = [&b.addr, &c.addr].into_iter().cloned().collect();
    assert!(
        eventually(Duration::from_secs(25), || apiserver_endpoints(&c) == live),
        "{:?}, want {live:?}",
        apiserver_endpoints(&c)
    );
}

/// Bad `--api-servers` entries are refused before anything starts.
#[test]
fn bad_api_servers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    for (args, want) in [
        (
            vec!["agent", "--api-servers", "127.0.0.1:6443"],
            "\"127.0.0.1:6443\" is not an https://HOST[:PORT] URL of an API server",
        ),
        (
            vec!["proxy", "--api-servers", "http://127.0.0.1:6443"],
            "\"http://127.0.0.1:6443\" is not an https://HOST[:PORT] URL of an API server",
        ),
        (vec!["dns", "--api-lb-listen", "127.0.0.1:0"], "--api-servers"),
    ] {
        let out = std::process::Command::new(SVCNET)
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Kills the `svcnet up` a test started by hand, by PID.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An API server whose etcd is not up yet answers on its address from the start: `/livez` ok,
/// `/readyz` failing with the wait named (so a balancer skips it), other requests 503; once etcd is
/// up it becomes ready.
#[test]
fn readyz_answers_not_ready_while_waiting_for_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let api = net::free_port("127.0.0.1");
    let etcd_port = net::free_port("127.0.0.1");
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let _up = Up(std::process::Command::new(SVCNET)
        .args(["up", "--control-plane-only", "--metrics-listen", "127.0.0.1:0"])
        .args([
            "--api-listen",
            &format!("127.0.0.1:{api}"),
            "--etcd-servers",
            &etcd_url,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap());
    let get = |path: &str| -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(dir.path().join("data/pki/ca.crt"))
            .arg(format!("https://127.0.0.1:{api}{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || get("/livez").0 == 200),
        "{}",
        up_log()
    );
    let (code, body) = get("/readyz?verbose");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains(&format!(
            "[-]etcd failed: waiting for the store to open (etcd {etcd_url})"
        )),
        "{body}"
    );
    let (code, body) = get("/api/v1/namespaces");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"reason\":\"ServiceUnavailable\""), "{body}");

    let _etcd = Etcd::start_on(etcd_port);
    assert!(
        eventually(Duration::from_secs(30), || get("/readyz").0 == 200),
        "{}",
        up_log()
    );
    assert!(up_log().contains("cannot reach etcd yet; retrying"));
}

/// `svcnet proxy --api-servers` (kube-proxy alone, userspace): the server it uses dies, and a Service
/// made afterwards through the other one still reaches its data plane; the first keeps serving.
#[test]
fn svcnet_proxy_moves_to_another_api_server() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = ["--control-plane-only", "--etcd-servers", url.as_str()];
    let mut a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let servers = format!("https://{},https://{}", a.addr, b.addr);
    let kubeconfig = a.kubeconfig().display().to_string();
    let proxy = svcnet_testsupport::process::Process::start(
        SVCNET,
        &[],
        &[
            "proxy",
            "--kubeconfig",
            &kubeconfig,
            "--api-servers",
            &servers,
            "--proxy-mode",
            "userspace",
            "--hostname-override",
            "proxy-node",
            "--bind-address",
            "127.0.0.1",
            "--healthz-bind-address",
            "127.0.0.1:0",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ],
    )
    .unwrap_or_else(|log| panic!("svcnet proxy did not start:\n{log}"));
    let one = service_to(&a, "one", net::tcp_server("127.0.0.1", "one"));
    assert!(
        eventually(Duration::from_secs(15), || reaches(one, "one")),
        "{}",
        proxy.log()
    );
    a.stop("KILL");
    let two = service_to(&b, "two", net::tcp_server("127.0.0.1", "two"));
    assert!(
        eventually(Duration::from_secs(15), || reaches(two, "two")),
        "{}",
        proxy.log()
    );
    assert!(reaches(one, "one"));
    assert!(
        proxy.log().contains("API server connections switch over"),
        "{}",
        proxy.log()
    );
}

/// `svcnet dns --api-servers` (CoreDNS alone): the server it uses dies, and a Service made afterwards
/// through the other one is answered.
#[test]
fn svcnet_dns_moves_to_another_api_server() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = ["--control-plane-only", "--etcd-servers", url.as_str()];
    let mut a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let servers = format!("https://{},https://{}", a.addr, b.addr);
    let kubeconfig = a.kubeconfig().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let port = net::free_port("127.0.0.1");
    let conf = dir.path().join("Corefile");
    std::fs::write(
        &conf,
        format!(".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local\n}}\n"),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let dns = svcnet_testsupport::process::Process::start(
        SVCNET,
        &[],
        &[
            "dns",
            "--kubeconfig",
            &kubeconfig,
            "--api-servers",
            &servers,
            "--conf",
            &conf,
        ],
    )
    .unwrap_or_else(|log| panic!("svcnet dns did not start:\n{log}"));
    let lookup = |name: &str| -> String {
        let out = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+time=2",
                "+tries=1",
                "+short",
            ])
            .arg(format!("{name}.default.svc.cluster.local"))
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cluster_ip = |c: &Cluster, name: &str| {
        c.ok(&["create", "service", "clusterip", name, "--tcp=80"]);
        c.get_json(&["svc", name])["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let one = cluster_ip(&a, "one");
    assert!(
        eventually(Duration::from_secs(15), || lookup("one") == one),
        "{}",
        dns.log()
    );
    a.stop("KILL");
    let two = cluster_ip(&b, "two");
    assert!(
        eventually(Duration::from_secs(15), || lookup("two") == two),
        "{}",
        dns.log()
    );
    assert_eq!(lookup("one"), one);
    assert!(
        dns.log().contains("API server connections switch over"),
        "{}",
        dns.log()
    );
}

/// An API server stopped with SIGTERM takes itself out of the `kubernetes` endpoints at once (as
/// kube-apiserver's lease reconciler does on shutdown), not after its Lease expires (15 s).
#[test]
fn a_stopped_api_server_leaves_the_kubernetes_endpoints_at_once() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = ["--control-plane-only", "--etcd-servers", url.as_str()];
    let a = Cluster::start_with(SVCNET, &flags);
    let mut b = Cluster::start_joining(SVCNET, &a, &flags);
    let both: BTreeSet<String> = [a.addr.clone(), b.addr.clone()].into();
    assert!(
        eventually(Duration::from_secs(10), || apiserver_endpoints(&a) == both),
        "{:?}",
        apiserver_endpoints(&a)
    );
    b.stop("TERM");
    let t0 = Instant::now();
    let only_a: BTreeSet<String> = [a.addr.clone()].into();
    assert!(
        eventually(Duration::from_secs(3), || apiserver_endpoints(&a) == only_a),
        "{:?} {:?} after SIGTERM",
        apiserver_endpoints(&a),
        t0.elapsed()
    );
}
