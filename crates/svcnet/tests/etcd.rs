//! `svcnet up --etcd-servers`: the cluster kept in a real etcd (started by the test on loopback ports).
//! An etcd that is not there yet at start, an etcd that dies mid-run, and several API servers
//! (`--control-plane-only`) serving one cluster from one etcd: a write on one is read on all, and a
//! watch moved from one server to another at the same resourceVersion sees every event once, in order.

use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use serde_json::{Value, json};
use svcnet_testsupport::etcd::Etcd;
use svcnet_testsupport::raw::{rv, send};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}})
}

/// The ConfigMap the root-ca-cert-publisher keeps in every namespace: not one of the tests' writes.
const ROOT_CA: &str = "kube-root-ca.crt";

/// The names of a list's items, the publisher's ConfigMap left out.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n != ROOT_CA)
        .collect()
}

/// kubectl's raw GET of a health endpoint: (success, stdout + stderr).
fn health(c: &Cluster, path: &str) -> (bool, String) {
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["get", "--raw", &format!("{path}?verbose")],
        None,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// etcd not running when `svcnet up` starts: it says so (with the URL) and retries, and comes up once
/// etcd does.
#[test]
fn up_waits_for_etcd() {
    let port = svcnet_testsupport::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        Etcd::start_on(port)
    });
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--etcd-servers", &url]);
    let _etcd = late.join().unwrap();
    let log = c.log();
    assert!(
        log.contains("cannot reach etcd yet; retrying") && log.contains(&url),
        "{log}"
    );
    assert!(c.ok(&["get", "namespaces"]).contains("kube-system"));
}

/// Bad store flags are refused before anything starts.
#[test]
fn bad_etcd_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            vec!["--etcd-servers", "127.0.0.1:2379"],
            "--etcd-servers: \"127.0.0.1:2379\" is not an http:// or https:// URL",
        ),
        (
            vec!["--etcd-certfile", "/nonexistent"],
            "--etcd-certfile needs --etcd-servers",
        ),
        (
            vec![
                "--etcd-servers",
                "https://127.0.0.1:1",
                "--etcd-cafile",
                "/nonexistent",
            ],
            "reading /nonexistent",
        ),
        (
            vec![
                "--etcd-servers",
                "http://127.0.0.1:1",
                "--etcd-compaction-interval",
                "5x",
            ],
            "invalid duration \"5x\"",
        ),
        (
            vec!["--leader-elect-renew-deadline", "20s"],
            "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration",
        ),
    ] {
        let out = std::process::Command::new(SVCNET)
            .args(["up", "--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// etcd dies under a running cluster: reads go on from the cache, writes fail with a Status naming the
/// cause, `/readyz` says `[-]etcd failed` (and `/livez` stays ok); etcd back: all of it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_dying_mid_run() {
    let mut etcd = Etcd::start();
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--etcd-servers", &etcd.url()]);
    let k = c.client().await;
    assert_eq!(send(&k, "POST", CMS, Some(cm("before"))).await.0, 201);
    etcd.kill();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (ok, text) = health(&c, "/readyz");
            !ok && text.contains("[-]etcd failed: etcd http://127.0.0.1:")
        }),
        "{}",
        health(&c, "/readyz").1
    );
    assert!(health(&c, "/livez").0, "{}", health(&c, "/livez").1);
    let (code, list) = send(&k, "GET", CMS, None).await;
    assert_eq!((code, names(&list)), (200, vec!["before".to_string()]));
    let (code, status) = send(&k, "POST", CMS, Some(cm("during"))).await;
    assert!(code == 500 || code == 504, "{code} {status}");
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("etcd http://127.0.0.1:"),
        "{status}"
    );
    etcd.start_again();
    assert!(
        eventually(Duration::from_secs(15), || health(&c, "/readyz").0),
        "{}",
        health(&c, "/readyz").1
    );
    assert_eq!(send(&k, "POST", CMS, Some(cm("after"))).await.0, 201);
    let (_, list) = send(&k, "GET", CMS, None).await;
    assert_eq!(names(&list), ["after", "before"]);
}

/// Reads watch events (skipping bookmarks) from `path` until `n` arrived or 20 s passed.
async fn watch_events(client: &kube::Client, path: &str, n: usize) -> Vec<Value> {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let lines = client.request_stream(req).await.unwrap().lines();
    futures::pin_mut!(lines);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, lines.try_next()).await {
            Ok(Ok(Some(l))) => {
                let ev: Value = serde_json::from_str(&l).unwrap();
                if ev["type"] != "BOOKMARK" && ev["object"]["metadata"]["name"] != ROOT_CA {
                    out.push(ev);
                }
            }
            _ => break,
        }
    }
    out
}

/// Three API servers on one etcd: each serves the others' writes at once (consistent reads), one
/// kubeconfig works against all, and a watch that moves from one server to another mid-stream at the
/// resourceVersion it got to sees every change exactly once, in order, while writes go through all
/// three; killing one server (`kill -9`) leaves the others serving everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_api_servers_on_one_etcd() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = ["--control-plane-only", "--etcd-servers", url.as_str()];
    let mut a = Cluster::start_with(SVCNET, &flags);
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let c = Cluster::start_joining(SVCNET, &a, &flags);
    // One kubeconfig (a's), every server; and a ServiceAccount token one server issued is good on
    // every one (they share the signing key, as kubeadm's control-plane nodes share sa.key).
    a.ok(&["create", "serviceaccount", "robot"]);
    let token = a.ok(&["create", "token", "robot"]).trim().to_string();
    for other in [&b, &c] {
        let server = format!("--server=https://{}", other.addr);
        assert!(a.ok(&[&server, "get", "namespaces"]).contains("kube-system"));
        let whoami = [
            server.as_str(),
            "--token",
            &token,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ];
        assert!(
            eventually(Duration::from_secs(10), || a
                .kubectl_v("", &whoami, None)
                .status
                .success()),
            "{:?}",
            a.kubectl_v("", &whoami, None)
        );
        assert_eq!(a.ok(&whoami), "system:serviceaccount:default:robot");
    }
    let (ka, kb, kc) = (a.client().await, b.client().await, c.client().await);
    let servers = [ka.clone(), kb.clone(), kc.clone()];

    // A write on one is read on every one, at once.
    for (i, k) in servers.iter().enumerate() {
        assert_eq!(send(k, "POST", CMS, Some(cm(&format!("first-{i}")))).await.0, 201);
        for reader in &servers {
            let (_, list) = send(reader, "GET", CMS, None).await;
            let want: Vec<String> = (0..=i).map(|j| format!("first-{j}")).collect();
            assert_eq!(names(&list), want);
        }
    }

    // A watch on a from the list's version; 40 writes through all three servers meanwhile.
    let (_, list) = send(&kb, "GET", CMS, None).await;
    let from = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let writers = servers.clone();
    let writes = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..40 {
            let k = &writers[i % 3];
            let (code, obj) = if i % 4 == 3 {
                // An update of an earlier object, through another server than its create.
                let name = format!("w-{:02}", i - 3);
                let mut o = send(k, "GET", &format!("{CMS}/{name}"), None).await.1;
                o["data"]["k"] = json!("updated");
                send(k, "PUT", &format!("{CMS}/{name}"), Some(o)).await
            } else {
                send(k, "POST", CMS, Some(cm(&format!("w-{i:02}")))).await
            };
            assert!(code == 200 || code == 201, "{code} {obj}");
            acked.push((rv(&obj), obj["metadata"]["name"].as_str().unwrap().to_string()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    });
    let first = watch_events(&ka, &format!("{CMS}?watch=true&resourceVersion={from}"), 20).await;
    assert_eq!(first.len(), 20);
    let resume = rv(&first[19]["object"]);
    let rest = watch_events(&kc, &format!("{CMS}?watch=true&resourceVersion={resume}"), 20).await;
    let acked = writes.await.unwrap();
    let seen: Vec<(u64, String)> = first
        .iter()
        .chain(&rest)
        .map(|e| {
            (
                rv(&e["object"]),
                e["object"]["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(seen, want, "every acknowledged write once, in revision order");
    let types: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "MODIFIED").count(), 10);
    assert_eq!(types.iter().filter(|t| **t == "ADDED").count(), 30);
    // And each is the write etcd itself recorded at that revision.
    for (rev, name) in &seen {
        let out = etcd.etcdctl(&[
            "get",
            &format!("/registry/core/configmaps/default/{name}"),
            &format!("--rev={rev}"),
            "-w",
            "json",
        ]);
        let got: Value = serde_json::from_slice(&out.stdout).expect("etcdctl JSON");
        assert_eq!(
            got["kvs"][0]["mod_revision"],
            json!(rev),
            "{name} at {rev}: {got}"
        );
    }

    // One server killed: the others serve every object and take writes.
    a.stop("KILL");
    assert_eq!(send(&kb, "POST", CMS, Some(cm("after-kill"))).await.0, 201);
    let (_, list) = send(&kc, "GET", CMS, None).await;
    assert_eq!(names(&list).len(), 3 + 30 + 1);
    assert!(names(&list).contains(&"after-kill".to_string()));
}

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: c\n        image: python3\n"
    )
}

/// Two control-plane instances: a controller runs only on the instance holding its Lease
/// (`kube-system/svcnet-workload-controller` for the one that makes ReplicaSets); when that instance is
/// killed, the other takes its Leases once they expire and the controllers go on there.
#[test]
fn controllers_fail_over_between_instances() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let flags = [
        &["--control-plane-only", "--etcd-servers", url.as_str()][..],
        &svcnet_testsupport::etcd::FAST_LEADER_ELECTION[..],
    ]
    .concat();
    let mut a = Cluster::start_with(SVCNET, &flags);
    let a_id = std::fs::read_to_string(a.dir.join("leader-identity")).unwrap();
    const LEASES: [&str; 11] = [
        "svcnet-workload-controller",
        "svcnet-root-ca-cert-publisher",
        "svcnet-clusterrole-aggregation-controller",
        "svcnet-endpointslice-controller",
        "svcnet-node-controller",
        "svcnet-serviceaccount-controller",
        "svcnet-namespace-controller",
        "svcnet-garbage-collector",
        "svcnet-certificate-controllers",
        "svcnet-bootstrap-signer",
        "svcnet-allocation-repair",
    ];
    for lease in LEASES {
        assert!(
            eventually(Duration::from_secs(10), || a.lease_holder(lease) == a_id),
            "{lease}"
        );
    }
    let b = Cluster::start_joining(SVCNET, &a, &flags);
    let b_id = std::fs::read_to_string(b.dir.join("leader-identity")).unwrap();
    assert_ne!(a_id, b_id);
    assert!(eventually(Duration::from_secs(10), || {
        b.log().matches("waiting to lead").count() == LEASES.len()
    }));
    b.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(&deployment("one")),
    );
    let replicasets =
        |c: &Cluster, app: &str| names(&c.get_json(&["replicasets", "-l", &format!("app={app}")])).len();
    assert!(eventually(Duration::from_secs(10), || replicasets(&b, "one") == 1));
    // Still one after a while: b, not leading, made none of its own.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replicasets(&b, "one"), 1);
    for lease in LEASES {
        assert_eq!(b.lease_holder(lease), a_id, "{lease}");
    }
    assert!(!b.log().contains("leading: this controller runs on this instance"));

    a.stop("KILL");
    let t0 = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || LEASES
            .iter()
            .all(|l| b.lease_holder(l) == b_id)),
        "{}",
        b.log()
    );
    // Lease duration (3 s) plus a retry period or two.
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    b.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(&deployment("two")),
    );
    assert!(eventually(Duration::from_secs(10), || replicasets(&b, "two") == 1));
    assert_eq!(replicasets(&b, "one"), 1);
}

/// An object under the API server's body limit (3 MiB) but over etcd's request limit (1.5 MiB) is refused
/// with 413 naming etcd's limit, not a 500, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_etcds_request_limit_is_413() {
    let etcd = Etcd::start();
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--etcd-servers", &etcd.url()]);
    let k = c.client().await;
    let mut big = cm("big");
    big["data"]["k"] = json!("x".repeat(2_000_000));
    let (code, status) = send(&k, "POST", CMS, Some(big)).await;
    assert_eq!(code, 413, "{status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("etcdserver: request is too large"),
        "{status}"
    );
    assert_eq!(send(&k, "GET", &format!("{CMS}/big"), None).await.0, 404);
}
