//! `svcnet backup` and `svcnet restore` of the embedded store: a backup taken while `svcnet up` runs and
//! takes writes restores to exactly the objects it held (same UIDs, resourceVersions and ClusterIPs), and
//! the resourceVersion goes on from there. `svcnet migrate` moves a stopped cluster into etcd with its
//! UIDs, ClusterIPs and resourceVersion order.

use std::process::{Command, Output};

use svcnet_testsupport::Cluster;
use svcnet_testsupport::etcd::Etcd;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn svcnet(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(SVCNET)
        .args(&args[..1])
        .arg("--data-dir")
        .arg(dir)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn create_cm(c: &Cluster, name: &str) {
    let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n");
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["create", "-f", "-"],
        Some(&manifest),
    );
}

fn meta(c: &Cluster, kind: &str, name: &str) -> (String, String) {
    let o = c.get_json(&[kind, name]);
    (
        o["metadata"]["uid"].as_str().unwrap().to_string(),
        o["metadata"]["resourceVersion"].as_str().unwrap().to_string(),
    )
}

#[test]
fn backup_while_running_then_restore() {
    let mut c = Cluster::start_with(SVCNET, &["--no-agent"]);
    for i in 0..5 {
        create_cm(&c, &format!("cm{i}"));
    }
    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let ip = c.get_json(&["service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let before: Vec<(String, String)> = (0..5).map(|i| meta(&c, "configmap", &format!("cm{i}"))).collect();

    // Writes go on while the backup is taken.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.backup");
    let file_s = file.to_str().unwrap();
    let out = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..20 {
                create_cm(&c, &format!("during{i}"));
            }
        });
        let out = svcnet(&["backup", file_s], &c.dir);
        writer.join().unwrap();
        out
    });
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("backed up"), "{}", text(&out));
    let again = svcnet(&["backup", file_s], &c.dir);
    assert!(!again.status.success());
    assert!(text(&again).contains("exists"), "{}", text(&again));
    let refused = svcnet(&["restore", file_s], &c.dir);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("svcnet up is running on"),
        "{}",
        text(&refused)
    );

    create_cm(&c, "after-backup");
    c.stop("TERM");
    let out = svcnet(&["restore", file_s], &c.dir);
    assert!(out.status.success(), "{}", text(&out));
    let restored_at: u64 = text(&out)
        .split("at revision ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("the revision restored");
    c.start_again();

    let after: Vec<(String, String)> = (0..5).map(|i| meta(&c, "configmap", &format!("cm{i}"))).collect();
    assert_eq!(after, before, "same UIDs and resourceVersions");
    assert_eq!(c.get_json(&["service", "web"])["spec"]["clusterIP"], ip.as_str());
    let missing = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["get", "configmap", "after-backup"],
        None,
    );
    assert!(!missing.status.success(), "a write after the backup is not in it");
    // Whatever part of the concurrent writes made it in is consistent: each is there whole or not at all,
    // and none is newer than the backup's revision.
    let list = c.get_json(&["configmaps"]);
    // (`kube-root-ca.crt` is the root-ca-cert-publisher's, which writes it again if a restore lacks it.)
    for item in list["items"].as_array().unwrap() {
        if item["metadata"]["name"] == "kube-root-ca.crt" {
            continue;
        }
        let rv: u64 = item["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv <= restored_at, "{item}");
    }
    create_cm(&c, "next");
    let (_, rv) = meta(&c, "configmap", "next");
    assert!(rv.parse::<u64>().unwrap() > restored_at);

    // A stopped cluster is backed up from its file.
    c.stop("TERM");
    let offline = dir.path().join("offline.backup");
    let out = svcnet(&["backup", offline.to_str().unwrap()], &c.dir);
    assert!(out.status.success(), "{}", text(&out));
    let bad = svcnet(&["restore", c.dir.join("svcnet.log").to_str().unwrap()], &c.dir);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("reading the backup"), "{}", text(&bad));
}

#[test]
fn migrate_a_one_node_cluster_into_etcd() {
    let mut c = Cluster::start_with(SVCNET, &["--no-agent"]);
    for i in 0..5 {
        create_cm(&c, &format!("cm{i}"));
    }
    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = c.get_json(&["service", "web"]);
    let before: Vec<(String, String)> = (0..5).map(|i| meta(&c, "configmap", &format!("cm{i}"))).collect();
    let etcd = Etcd::start();
    let url = etcd.url();
    let refused = svcnet(&["migrate", "--etcd-servers", &url], &c.dir);
    assert!(
        text(&refused).contains("stop it before migrating"),
        "{}",
        text(&refused)
    );
    c.stop("TERM");
    let no_etcd = svcnet(&["migrate"], &c.dir);
    assert!(
        text(&no_etcd).contains("needs --etcd-servers"),
        "{}",
        text(&no_etcd)
    );
    let out = svcnet(&["migrate", "--etcd-servers", &url], &c.dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migrated"), "{}", text(&out));
    let twice = svcnet(&["migrate", "--etcd-servers", &url], &c.dir);
    assert!(
        text(&twice).contains("migrate only into an empty one"),
        "{}",
        text(&twice)
    );

    c.set_flags(&["--no-agent", "--etcd-servers", &url]);
    c.start_again();
    let after: Vec<(String, String)> = (0..5).map(|i| meta(&c, "configmap", &format!("cm{i}"))).collect();
    let uids = |v: &[(String, String)]| v.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>();
    assert_eq!(uids(&after), uids(&before), "same UIDs");
    let revs: Vec<u64> = after.iter().map(|(_, r)| r.parse().unwrap()).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "resourceVersion order kept: {revs:?}"
    );
    let moved = c.get_json(&["service", "web"]);
    assert_eq!(moved["metadata"]["uid"], svc["metadata"]["uid"]);
    assert_eq!(moved["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
    // Written together on redb, so migrated together: one revision in etcd too.
    let address = c.get_json(&["ipaddress", moved["spec"]["clusterIP"].as_str().unwrap()]);
    assert_eq!(
        address["metadata"]["resourceVersion"], moved["metadata"]["resourceVersion"],
        "the Service and its IPAddress at one revision"
    );
    let keys = etcd.etcdctl(&["get", "--prefix", "/registry/", "--keys-only"]);
    assert!(String::from_utf8_lossy(&keys.stdout).contains("web"));
}
