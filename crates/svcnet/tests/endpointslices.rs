//! The EndpointSlice, Endpoints and mirroring controllers against a real `svcnet up` whose node agent
//! runs real pods, observed with kubectl. The controllers are the ones `svcnet up` runs.

use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(40);

fn pod_yaml(name: &str, labels: &str, command: &str, probe: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: main\n    image: python:3\n    command: [\"sh\", \"-c\", {command:?}]\n    readinessProbe:\n{probe}      periodSeconds: 1\n      failureThreshold: 1\n"
    )
}

fn exec_probe(args: &str) -> String {
    format!("      exec: {{command: [{args}]}}\n")
}

fn slices(c: &Cluster, svc: &str) -> Vec<Value> {
    let v = c.get_json(&[
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
    ]);
    v["items"].as_array().cloned().unwrap_or_default()
}

fn endpoints_of(slices: &[Value]) -> Vec<Value> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn endpoint_for<'a>(eps: &'a [Value], pod: &str) -> Option<&'a Value> {
    eps.iter().find(|e| e["targetRef"]["name"] == pod)
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    let mut ip = String::new();
    let ok = eventually(WAIT, || {
        let p = c.get_json(&["pod", name]);
        ip = p["status"]["podIP"].as_str().unwrap_or("").to_owned();
        !ip.is_empty() && p["status"]["phase"] == "Running"
    });
    assert!(ok, "pod {name} never ran\n{}", c.log());
    ip
}

fn wait_slices(c: &Cluster, svc: &str, what: &str, mut f: impl FnMut(&[Value]) -> bool) {
    let mut last = Vec::new();
    let ok = eventually(WAIT, || {
        last = slices(c, svc);
        f(&last)
    });
    assert!(ok, "{what}: slices of {svc}: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpointslices_follow_real_pods() {
    // The controllers are the ones `svcnet up` runs, as API clients; small slices to see packing.
    let c = Cluster::start_with(SVCNET, &["--max-endpoints-per-slice", "5"]);

    // Three pods: two HTTP servers and one that drains slowly on SIGTERM.
    let port = free_port("127.0.0.1");
    let http = format!("exec python3 -m http.server {port} --bind $POD_IP");
    let tcp = format!("      tcpSocket: {{port: {port}}}\n");
    for name in ["web-0", "web-1"] {
        c.ok_v(
            "1.33",
            &["apply", "-f", "-"],
            Some(&pod_yaml(name, "app: web", &http, &tcp)),
        );
    }
    let slow = "trap 'sleep 4; exit 0' TERM; while true; do sleep 0.2; done";
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod_yaml("web-2", "app: web", slow, &exec_probe("\"true\""))),
    );
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {{team: blue}}\nspec:\n  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n"
        )),
    );
    let ips: Vec<String> = ["web-0", "web-1", "web-2"]
        .iter()
        .map(|n| pod_ip(&c, n))
        .collect();

    // One slice with the three ready endpoints.
    wait_slices(&c, "web", "three ready endpoints", |s| {
        let eps = endpoints_of(s);
        s.len() == 1 && eps.len() == 3 && eps.iter().all(|e| e["conditions"]["ready"] == true)
    });
    let s = &slices(&c, "web")[0];
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(s["metadata"]["labels"]["team"], "blue");
    assert!(s["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(s["ports"][0]["port"], port);
    assert_eq!(s["ports"][0]["name"], "http");
    let eps = endpoints_of(std::slice::from_ref(s));
    let mut got: Vec<String> = eps
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = ips.clone();
    want.sort();
    assert_eq!(got, want);
    for e in &eps {
        assert_eq!(e["targetRef"]["kind"], "Pod");
        assert!(e["targetRef"]["uid"].is_string());
        assert!(e["nodeName"].is_string(), "{e}");
    }
    // The legacy Endpoints too.
    assert!(eventually(WAIT, || {
        let ep = c.get_json(&["endpoints", "web"]);
        ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3)
    }));
    let table = c.ok(&["get", "endpoints", "web"]);
    assert!(
        table.contains(&format!("{}:{port}", ips[0])) || table.contains("more"),
        "{table}"
    );

    // Nothing changes: the slice is not rewritten.
    let rv = slices(&c, "web")[0]["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(slices(&c, "web")[0]["metadata"]["resourceVersion"], rv);

    // Graceful deletion: serving and terminating while it drains, then gone.
    c.ok(&["delete", "pod", "web-2", "--wait=false"]);
    wait_slices(&c, "web", "web-2 terminating", |s| {
        let eps = endpoints_of(s);
        endpoint_for(&eps, "web-2").is_some_and(|e| {
            e["conditions"] == serde_json::json!({"ready": false, "serving": true, "terminating": true})
        })
    });
    assert!(eventually(WAIT, || {
        let ep = c.get_json(&["endpoints", "web"]);
        ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)
    }));
    wait_slices(&c, "web", "web-2 gone", |s| {
        let eps = endpoints_of(s);
        eps.len() == 2 && endpoint_for(&eps, "web-2").is_none()
    });

    // Readiness flips follow the probe.
    let flag = c.dir.join("gate-ready");
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            "gate",
            "app: gate",
            "sleep 300",
            &exec_probe(&format!("\"test\", \"-f\", {:?}", flag.display().to_string())),
        )),
    );
    c.ok(&["create", "service", "clusterip", "gate", "--tcp=80:8080"]);
    c.ok(&["set", "selector", "service", "gate", "app=gate"]);
    pod_ip(&c, "gate");
    let gate_ready = |want: bool| {
        wait_slices(&c, "gate", &format!("gate ready={want}"), |s| {
            endpoint_for(&endpoints_of(s), "gate")
                .is_some_and(|e| e["conditions"]["ready"] == want && e["conditions"]["serving"] == want)
        })
    };
    gate_ready(false);
    let ep = c.get_json(&["endpoints", "gate"]);
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"].as_array().map(Vec::len),
        Some(1)
    );
    std::fs::write(&flag, "").unwrap();
    gate_ready(true);
    std::fs::remove_file(&flag).unwrap();
    gate_ready(false);

    // A selector change moves the endpoints.
    c.ok(&["label", "pod", "web-0", "tier=front"]);
    c.ok(&["set", "selector", "service", "web", "app=web,tier=front"]);
    wait_slices(&c, "web", "only web-0 after the selector change", |s| {
        let eps = endpoints_of(s);
        eps.len() == 1 && endpoint_for(&eps, "web-0").is_some()
    });

    // Twenty pods with at most five endpoints per slice: four slices, all ready.
    let mut many = String::new();
    for i in 0..20 {
        many.push_str("---\n");
        many.push_str(&pod_yaml(
            &format!("many-{i}"),
            "app: many",
            "sleep 300",
            &exec_probe("\"true\""),
        ));
    }
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&many));
    c.ok(&["create", "service", "clusterip", "many", "--tcp=80:8080"]);
    c.ok(&["set", "selector", "service", "many", "app=many"]);
    wait_slices(&c, "many", "twenty endpoints in four slices", |s| {
        let eps = endpoints_of(s);
        s.len() == 4
            && s.iter()
                .all(|x| x["endpoints"].as_array().map(Vec::len) == Some(5))
            && eps.iter().all(|e| e["conditions"]["ready"] == true)
    });
    assert!(eventually(WAIT, || {
        let ep = c.get_json(&["endpoints", "many"]);
        ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(20)
    }));
    // Pods came and went and twenty turned ready at once, each a write of the same Endpoints right after
    // the last: the controller waits for its cache to see its own write instead of writing over an older
    // copy and being refused with a conflict (and a retry half a second later).
    let log = c.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sync failed") && l.contains("\"endpoints\""))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // Deleting the Service: the garbage collector removes its slices; the controller its Endpoints.
    c.ok(&["delete", "service", "web"]);
    wait_slices(&c, "web", "web's slices collected", |s| s.is_empty());
    assert!(eventually(WAIT, || {
        !c.kubectl_v("1.33", &["get", "endpoints", "web"], None)
            .status
            .success()
    }));

    // A Service without a selector: hand-written Endpoints are mirrored to a slice.
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  ports:\n  - {name: http, port: 80}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: ext\n  labels: {env: prod}\nsubsets:\n- addresses: [{ip: 127.0.0.77}]\n  ports: [{name: http, port: 8080}]\n"),
    );
    wait_slices(&c, "ext", "mirrored slice", |s| {
        s.len() == 1
            && s[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "endpointslicemirroring-controller.k8s.io"
            && s[0]["metadata"]["labels"]["env"] == "prod"
            && s[0]["endpoints"][0]["addresses"][0] == "127.0.0.77"
            && s[0]["ports"][0]["port"] == 8080
    });
    // The API server's own Endpoints carry skip-mirror: only its own slice exists.
    let k = slices(&c, "kubernetes");
    assert!(
        k.iter().all(
            |s| s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                != "endpointslicemirroring-controller.k8s.io"
        ),
        "{k:#?}"
    );
}
