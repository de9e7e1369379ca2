//! kubectl's typed commands, which send protobuf bodies (1.33 does for ConfigMaps, Secrets, the RBAC
//! kinds and the DeleteOptions of `kubectl drain`). `kubectl create <kind>` for every kind svcnet serves
//! that has a `create` subcommand is
//! checked end to end against what the same command prints with `--dry-run=client -o json`, which is the
//! object kubectl would have sent as JSON. The stored object must hold exactly those fields.

use std::time::{Duration, Instant};

use serde_json::Value;
use svcnet_testsupport::Cluster;
use svcnet_testsupport::kubectl::KUBECTLS;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// The fields of each kind the comparison covers (everything but metadata, which the server fills).
fn fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "ConfigMap" => &["data", "binaryData", "immutable"],
        "Secret" => &["data", "type", "immutable"],
        "Role" => &["rules"],
        "ClusterRole" => &["rules", "aggregationRule"],
        "RoleBinding" | "ClusterRoleBinding" => &["subjects", "roleRef"],
        other => panic!("no fields listed for {other}"),
    }
}

#[test]
fn typed_create_commands_store_what_kubectl_sends() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns", "--no-agent"]);
    let pki = c.dir.join("pki");
    let (cert, key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let binary = c.dir.join("blob.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150, 255, b'\n']).unwrap();
    for v in KUBECTLS {
        let n = |s: &str| format!("{s}-{}", v.replace('.', "-"));
        let cert = format!("--cert={}", cert.display());
        let key = format!("--key={}", key.display());
        let blob = format!("--from-file=blob={}", binary.display());
        let commands: Vec<Vec<String>> = vec![
            vec![
                "configmap".into(),
                n("cm"),
                "--from-literal=a=b".into(),
                "--from-literal=empty=".into(),
                blob.clone(),
            ],
            vec![
                "secret".into(),
                "generic".into(),
                n("s"),
                "--from-literal=user=admin".into(),
                blob,
                "--type=example.com/kind".into(),
            ],
            vec!["secret".into(), "tls".into(), n("tls"), cert, key],
            vec![
                "secret".into(),
                "docker-registry".into(),
                n("reg"),
                "--docker-server=registry.example".into(),
                "--docker-username=u".into(),
                "--docker-password=p".into(),
            ],
            vec![
                "role".into(),
                n("reader"),
                "--verb=get,list,watch".into(),
                "--resource=pods,services,deployments.apps".into(),
                "--resource-name=one".into(),
            ],
            vec![
                "rolebinding".into(),
                n("rb"),
                format!("--role={}", n("reader")),
                "--user=bob".into(),
                "--group=devs".into(),
                "--serviceaccount=default:robot".into(),
            ],
            vec![
                "clusterrole".into(),
                n("cr"),
                "--verb=get".into(),
                "--non-resource-url=/logs/*".into(),
            ],
            vec![
                "clusterrole".into(),
                n("agg"),
                "--aggregation-rule=rbac.example.com/aggregate-to-view=true".into(),
            ],
            vec![
                "clusterrolebinding".into(),
                n("crb"),
                format!("--clusterrole={}", n("cr")),
                "--user=alice".into(),
            ],
        ];
        for cmd in commands {
            let mut args: Vec<&str> = vec!["create"];
            args.extend(cmd.iter().map(String::as_str));
            // What kubectl sends, as JSON.
            let mut dry = args.clone();
            dry.extend(["--dry-run=client", "-o", "json"]);
            let sent: Value = serde_json::from_str(&c.ok_v(v, &dry, None)).unwrap();
            // The real request (protobuf from 1.33).
            let mut real = args.clone();
            real.extend(["-o", "json"]);
            let answered: Value = serde_json::from_str(&c.ok_v(v, &real, None)).unwrap();
            let kind = sent["kind"].as_str().unwrap().to_string();
            let name = sent["metadata"]["name"].as_str().unwrap();
            let stored = c.get_json(&[&kind.to_lowercase(), name]);
            // `null` and absent say the same (kubectl 1.27 prints an aggregated ClusterRole's `rules: null`).
            let at = |o: &Value, f: &str| o.get(f).filter(|v| !v.is_null()).cloned();
            for field in fields(&kind) {
                assert_eq!(
                    at(&sent, field),
                    at(&stored, field),
                    "kubectl {v} {args:?}: {field} of {stored}"
                );
                assert_eq!(
                    at(&sent, field),
                    at(&answered, field),
                    "kubectl {v} {args:?}: {field} answered"
                );
            }
            assert!(stored["metadata"]["uid"].is_string(), "{stored}");
        }
        // The bindings work: bob may now read pods named `one` in the namespace, alice /logs/x.
        let can = |args: &[&str]| {
            c.kubectl_v(v, &[&["auth", "can-i"][..], args].concat(), None)
                .status
                .success()
        };
        assert!(can(&["get", "pods/one", "--as=bob"]));
        assert!(!can(&["get", "pods/two", "--as=bob"]));
        assert!(can(&["get", "/logs/x", "--as=alice"]));
        assert!(!can(&["get", "/metrics", "--as=alice"]));
    }
}

/// `kubectl drain` cordons the node and deletes its pods (with protobuf DeleteOptions, as svcnet serves
/// no eviction API); a Deployment's replacements wait unscheduled until `kubectl uncordon`.
#[test]
fn drain_and_uncordon() {
    let c = Cluster::start_with(SVCNET, &["--node-name", "n1", "--no-dns"]);
    c.ok(&["run", "lone", "--image=sleep", "--command", "--", "sleep", "300"]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=sleep",
        "--replicas=2",
        "--",
        "sleep",
        "300",
    ]);
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}\n{}", c.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait("pods ready", &|| {
        c.ready_pods("app=web").len() == 2 && c.ready_pods("run=lone").len() == 1
    });
    for v in KUBECTLS {
        let out = c.ok_v(
            v,
            &["drain", "n1", "--force", "--grace-period=1", "--timeout=60s"],
            None,
        );
        assert!(
            out.contains("node/n1 drained") || out.contains("node/n1 already cordoned"),
            "{out}"
        );
        let node = c.get_json(&["node", "n1"]);
        assert_eq!(node["spec"]["unschedulable"], true, "{node}");
        let pods = c.get_json(&["pods"]);
        let items = pods["items"].as_array().unwrap();
        assert!(
            items.iter().all(|p| p["metadata"]["labels"]["app"] == "web"),
            "{pods}"
        );
        assert!(
            items.iter().all(|p| p["spec"].get("nodeName").is_none()),
            "{pods}"
        );
        c.ok_v(v, &["uncordon", "n1"], None);
        wait("pods back after uncordon", &|| c.ready_pods("app=web").len() == 2);
    }
}
