//! Real kubectl (the oldest and newest supported versions) against a real `svcnet up`: every command a
//! user runs day to day, with output shapes and error texts as a Kubernetes cluster gives them.

use std::time::Duration;
use svcnet_testsupport::Cluster;
use svcnet_testsupport::cluster::write_file;
use svcnet_testsupport::kubectl::{KUBECTLS, kubectl_path};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const BACKEND: &str = "apiVersion: v1
kind: Service
metadata:
  name: backend
spec:
  type: ClusterIP
  selector:
    app: backend-app
  ports:
    - port: 80
      targetPort: 8080
";

#[test]
fn day_to_day_commands_with_every_kubectl() {
    let c = Cluster::start(SVCNET);
    for v in KUBECTLS {
        let ns = format!("t{}", v.replace('.', "-"));
        c.ok_v(v, &["create", "namespace", &ns], None);
        let n = ["-n", ns.as_str()];
        let with = |args: &[&str]| -> Vec<String> { n.iter().chain(args).map(|s| s.to_string()).collect() };
        let run = |args: &[&str]| {
            c.ok_v(
                v,
                &with(args).iter().map(String::as_str).collect::<Vec<_>>(),
                None,
            )
        };
        let run_in = |args: &[&str], input: &str| {
            c.ok_v(
                v,
                &with(args).iter().map(String::as_str).collect::<Vec<_>>(),
                Some(input),
            )
        };

        // create service clusterip, with get in every output format
        assert!(
            run(&["create", "service", "clusterip", "web", "--tcp=80:8080"]).contains("service/web created")
        );
        let wide = run(&["get", "svc", "web", "-o", "wide"]);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "web");
        assert_eq!(row[1], "ClusterIP");
        assert!(
            row[2].starts_with("127."),
            "ClusterIP from the default loopback range: {row:?}"
        );
        assert_eq!(row[4], "80/TCP");
        assert_eq!(row[6], "app=web");
        let y: serde_yaml::Value = serde_yaml::from_str(&run(&["get", "svc", "web", "-o", "yaml"])).unwrap();
        assert_eq!(y["spec"]["ports"][0]["targetPort"].as_i64(), Some(8080));
        assert_eq!(y["spec"]["type"].as_str(), Some("ClusterIP"));
        let j: serde_json::Value = serde_json::from_str(&run(&["get", "svc", "web", "-o", "json"])).unwrap();
        assert!(j["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
        assert!(j["metadata"]["resourceVersion"].as_str().is_some());
        assert!(j["metadata"]["creationTimestamp"].as_str().is_some());

        // describe
        let d = run(&["describe", "svc", "web"]);
        for needle in [
            "Name:",
            "web",
            "Type:",
            "ClusterIP",
            "TargetPort:",
            "8080/TCP",
            "Selector:",
            "app=web",
        ] {
            assert!(d.contains(needle), "describe lacks {needle:?}:\n{d}");
        }

        // apply: create, unchanged, configured
        let f = write_file(&c.dir, &format!("backend-{v}.yaml"), BACKEND);
        assert!(run(&["apply", "-f", &f]).contains("service/backend created"));
        assert!(run(&["apply", "-f", &f]).contains("service/backend unchanged"));
        let f2 = write_file(
            &c.dir,
            &format!("backend2-{v}.yaml"),
            &BACKEND.replace("8080", "9090"),
        );
        assert!(run(&["apply", "-f", &f2]).contains("service/backend configured"));
        assert_eq!(
            run(&[
                "get",
                "svc",
                "backend",
                "-o",
                "jsonpath={.spec.ports[0].targetPort}"
            ]),
            "9090"
        );

        // server-side apply, and its conflict with the client-side applier's field
        let ssa = BACKEND.replace("backend", "ssa");
        assert!(run_in(&["apply", "--server-side", "-f", "-"], &ssa).contains("serverside-applied"));
        let mf = run(&[
            "get",
            "svc",
            "ssa",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
            "--show-managed-fields",
        ]);
        assert!(mf.contains("kubectl"), "managedFields: {mf}");
        let conflict = c.kubectl_v(
            v,
            &with(&["apply", "--server-side", "--field-manager=other", "-f", "-"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            Some(&ssa.replace("8080", "7070")),
        );
        assert!(!conflict.status.success());
        let err = String::from_utf8_lossy(&conflict.stderr);
        assert!(err.contains("conflict"), "expected an apply conflict: {err}");
        run_in(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &ssa.replace("8080", "7070"),
        );
        assert_eq!(
            run(&["get", "svc", "ssa", "-o", "jsonpath={.spec.ports[0].targetPort}"]),
            "7070"
        );

        // patch, all three types
        run(&[
            "patch",
            "svc",
            "backend",
            "-p",
            r#"{"metadata":{"labels":{"patched":"strategic"}}}"#,
        ]);
        run(&[
            "patch",
            "svc",
            "backend",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
        ]);
        run(&[
            "patch",
            "svc",
            "backend",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#,
        ]);
        let labels = run(&["get", "svc", "backend", "-o", "jsonpath={.metadata.labels}"]);
        assert!(
            labels.contains("strategic") && labels.contains("merged"),
            "{labels}"
        );
        assert_eq!(
            run(&["get", "svc", "backend", "-o", "jsonpath={.spec.ports[0].port}"]),
            "81"
        );

        // label, annotate
        run(&["label", "svc", "backend", "tier=web"]);
        run(&["annotate", "svc", "backend", "note=hello"]);
        assert!(run(&["get", "svc", "-l", "tier=web", "-o", "name"]).contains("service/backend"));
        assert_eq!(
            run(&[
                "get",
                "svc",
                "backend",
                "-o",
                "jsonpath={.metadata.annotations.note}"
            ]),
            "hello"
        );
        assert_eq!(
            run(&["get", "svc", "-l", "tier!=web", "-o", "name"])
                .lines()
                .count(),
            2
        );

        // edit with a scripted editor
        let editor = write_file(
            &c.dir,
            "editor.sh",
            "#!/bin/sh\nsed -i 's/tier: web/tier: edited/' \"$1\"\n",
        );
        std::process::Command::new("chmod")
            .args(["+x", &editor])
            .status()
            .unwrap();
        let out = c.kubectl_env(
            v,
            &with(&["edit", "svc", "backend"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            None,
            &[("EDITOR", &editor), ("KUBE_EDITOR", &editor)],
        );
        assert!(
            out.status.success(),
            "edit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            run(&["get", "svc", "backend", "-o", "jsonpath={.metadata.labels.tier}"]),
            "edited"
        );

        // get --raw
        let raw = c.ok_v(
            v,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/services/backend"),
            ],
            None,
        );
        let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(raw["kind"], "Service");

        // delete
        assert!(run(&["delete", "svc", "backend"]).contains("service \"backend\" deleted"));
        let err = c.fail_v(
            v,
            &with(&["get", "svc", "backend"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            None,
        );
        assert!(err.contains("services \"backend\" not found"), "{err}");
    }
}

#[test]
fn get_watch_streams_changes() {
    let c = Cluster::start(SVCNET);
    for v in KUBECTLS {
        let name = format!("w{}", v.replace('.', ""));
        let mut watcher = std::process::Command::new(kubectl_path(v))
            .args(["get", "svc", "-w", "--request-timeout=0"])
            .env("KUBECONFIG", c.kubeconfig())
            .env("KUBECACHEDIR", c.dir.join(format!("kcache-w{v}")))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Give the watch time to establish before changing anything.
        std::thread::sleep(Duration::from_millis(1500));
        c.ok(&["create", "service", "clusterip", &name, "--tcp=80:8080"]);
        c.ok(&["label", "svc", &name, "x=y"]);
        c.ok(&["delete", "svc", &name]);
        std::thread::sleep(Duration::from_millis(1000));
        let _ = watcher.kill();
        let out = watcher.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let rows = text.lines().filter(|l| l.starts_with(&name)).count();
        assert!(
            rows >= 3,
            "kubectl {v} get -w saw {rows} rows for {name}:\n{text}"
        );
        assert!(text.lines().next().unwrap_or("").starts_with("NAME"), "{text}");
    }
}

#[test]
fn errors_read_as_kubernetes_writes_them() {
    let c = Cluster::start(SVCNET);
    for v in KUBECTLS {
        let bad =
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Name\nspec:\n  ports:\n  - port: 70000\n";
        let err = c.fail_v(v, &["apply", "-f", "-"], Some(bad));
        assert!(err.contains("The Service \"Bad_Name\" is invalid"), "{err}");
        assert!(err.contains("metadata.name: Invalid value: \"Bad_Name\": a DNS-1035 label must consist of lower case alphanumeric characters"), "{err}");
        assert!(
            err.contains("spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
            "{err}"
        );

        let unknown = "apiVersion: v1\nkind: Service\nmetadata:\n  name: u\nspec:\n  foo: bar\n  ports:\n  - port: 80\n";
        let err = c.fail_v(v, &["create", "-f", "-"], Some(unknown));
        assert!(
            err.contains("strict decoding error: unknown field \"spec.foo\""),
            "{err}"
        );
        // With validation off the unknown field is dropped, as Kubernetes does.
        c.ok_v(v, &["create", "--validate=false", "-f", "-"], Some(unknown));
        c.ok_v(v, &["delete", "svc", "u"], None);

        let err = c.fail_v(v, &["get", "svc", "nope"], None);
        assert!(
            err.contains("Error from server (NotFound): services \"nope\" not found"),
            "{err}"
        );
        c.ok_v(v, &["create", "service", "clusterip", "dup", "--tcp=80"], None);
        let err = c.fail_v(v, &["create", "service", "clusterip", "dup", "--tcp=80"], None);
        assert!(err.contains("services \"dup\" already exists"), "{err}");

        // A stale resourceVersion is a conflict with Kubernetes' wording.
        let mut obj = c.get_json(&["svc", "dup"]);
        c.ok_v(v, &["label", "svc", "dup", "bump=1"], None);
        obj["metadata"]["labels"] = serde_json::json!({"stale": "true"});
        let err = c.fail_v(v, &["replace", "-f", "-"], Some(&obj.to_string()));
        assert!(
            err.contains(
                "the object has been modified; please apply your changes to the latest version and try again"
            ),
            "{err}"
        );
        c.ok_v(v, &["delete", "svc", "dup"], None);

        let err = c.fail_v(v, &["create", "-f", "-"], Some("this is: [not, a manifest"));
        assert!(!err.is_empty());
        let err = c.fail_v(v, &["get", "svc", "-l", "bad key=1"], None);
        assert!(
            err.contains("unable to parse requirement") || err.contains("found"),
            "{err}"
        );
    }
}

#[test]
fn credentials_are_required() {
    let c = Cluster::start(SVCNET);
    let cfg = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let token = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let wrong = cfg.replace(&token, "not-the-token");
    std::fs::write(c.dir.join("bad-kubeconfig"), wrong).unwrap();
    let out = std::process::Command::new(kubectl_path("1.33"))
        .args(["get", "svc"])
        .env("KUBECONFIG", c.dir.join("bad-kubeconfig"))
        .env("KUBECACHEDIR", c.dir.join("kcache-bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // Health and version are public, as on kube-apiserver.
    assert_eq!(c.ok(&["get", "--raw", "/readyz"]), "ok");
    assert_eq!(c.ok(&["get", "--raw", "/livez"]), "ok");
    let version: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/version"])).unwrap();
    assert_eq!(version["major"], "1");
}

#[test]
fn namespaces_exist_and_deletion_empties_them() {
    let c = Cluster::start(SVCNET);
    let ns = c.ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    c.ok(&["create", "namespace", "doomed"]);
    c.ok_v("1.33", &["-n", "doomed", "apply", "-f", "-"], Some(BACKEND));
    // kubectl waits until the namespace is really gone.
    c.ok(&["delete", "namespace", "doomed", "--timeout=30s"]);
    let err = c.fail_v("1.33", &["get", "ns", "doomed"], None);
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
    let err = c.fail_v(
        "1.33",
        &["-n", "doomed", "create", "service", "clusterip", "x", "--tcp=80"],
        None,
    );
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
    let err = c.fail_v("1.33", &["delete", "namespace", "default"], None);
    assert!(err.contains("forbidden"), "{err}");
}

#[test]
fn explain_and_api_resources_work() {
    let c = Cluster::start(SVCNET);
    let r = c.ok(&["api-resources"]);
    for needle in [
        "services",
        "svc",
        "endpointslices",
        "discovery.k8s.io/v1",
        "leases",
        "namespaces",
    ] {
        assert!(r.contains(needle), "api-resources lacks {needle}:\n{r}");
    }
    let e = c.ok(&["explain", "service.spec.ports"]);
    assert!(e.contains("targetPort"), "{e}");
    let versions = c.ok(&["api-versions"]);
    assert!(
        versions.contains("discovery.k8s.io/v1") && versions.contains("v1"),
        "{versions}"
    );
}
