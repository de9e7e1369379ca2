//! Nodes join as with `kubeadm join`: `svcnet token create --print-join-command` prints the command, a
//! node runs it verbatim, verifies the cluster by the CA hash and the token's signature on cluster-info,
//! gets its own client certificate through a CertificateSigningRequest the control plane approves and
//! signs, and from then on works with only that certificate (the Node authorizer and RBAC decide what
//! it may do); it renews the certificate before it expires. CSRs also work by hand with kubectl.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::agent::Agent;
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn svcnet(args: &[&str]) -> std::process::Output {
    Command::new(SVCNET).args(args).output().unwrap()
}

fn join_command(c: &Cluster, ttl: &str) -> String {
    let out = svcnet(&[
        "token",
        "create",
        "--print-join-command",
        "--ttl",
        ttl,
        "--kubeconfig",
        c.kubeconfig().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The arguments of a printed `svcnet agent …` command.
fn agent_args(command: &str) -> Vec<String> {
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    assert_eq!(&words[..2], ["svcnet", "agent"], "{command}");
    words[2..].to_vec()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args.iter().position(|a| a == name).unwrap();
    &args[i + 1]
}

/// The flags a node on this test machine needs beside the join command: its name, its own ports.
fn node_flags(name: &str) -> Vec<String> {
    let port = |_| free_port("127.0.0.1").to_string();
    vec![
        "--node-name".into(),
        name.into(),
        "--dns-listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{}", port(())),
        "--healthz-listen".into(),
        format!("127.0.0.1:{}", port(())),
    ]
}

/// Runs a join that must fail; its log.
fn join_fails(c: &Cluster, name: &str, args: &[String]) -> String {
    let dir = c.dir.join(name);
    let mut all: Vec<String> = args.to_vec();
    all.extend(node_flags(name));
    all.extend(["--bootstrap-timeout".into(), "10".into()]);
    // Discovery keeps trying while the token is unknown (it may be signed any moment): briefly here.
    all.extend(["--discovery-timeout".into(), "3".into()]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut agent = Agent::start_with(SVCNET, &dir, &refs);
    let status = agent.exited_within(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the join of {name} did not fail: {status:?}\n{}",
        agent.log()
    );
    assert!(!dir.join("kubeconfig").exists(), "{name} wrote a kubeconfig");
    agent.log()
}

/// `kubectl get ARGS -o json`, `Null` when there is no such object.
fn get_maybe(c: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json", "--ignore-not-found"]);
    let out = c.kubectl_v("", &a, None);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn node_ready(c: &Cluster, node: &str) -> bool {
    let n = get_maybe(c, &["node", node]);
    n["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "True"))
}

fn run(c: &Cluster, kc: &Path, args: &[&str]) -> (bool, String) {
    let out = c.kubectl_as(kc, args);
    let text = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(text).trim().to_string(),
    )
}

#[track_caller]
fn allowed(c: &Cluster, kc: &Path, args: &[&str]) -> String {
    let (ok, text) = run(c, kc, args);
    assert!(ok, "kubectl {args:?} as the joined node: {text}");
    text
}

#[track_caller]
fn refused(c: &Cluster, kc: &Path, args: &[&str], output: &str) {
    let (ok, text) = run(c, kc, args);
    assert!(!ok, "kubectl {args:?} as the joined node succeeded: {text}");
    assert_eq!(text, output, "kubectl {args:?}");
}

/// (not before, not after) of the certificate in the joined node's PEM file.
fn cert_validity(pem: &str) -> (i64, i64) {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = block.parse_x509().unwrap();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn csrs(c: &Cluster) -> Vec<Value> {
    c.get_json(&["csr"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn http_ok(ip: &str, port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[..n].starts_with(b"HTTP/1.0 200"))
}

const WORKLOAD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: joined
  containers:
  - name: main
    image: python:3
    command: ["sh", "-c", "exec python3 -m http.server 8080 --bind $POD_IP"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Node
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: theirs}
spec:
  nodeName: other
  containers: [{name: main, image: busybox}]
"#;

#[test]
fn a_node_joins_with_a_token_and_then_uses_only_its_own_certificate() {
    // The control plane alone: the joined node is the only node, and its data plane the only one.
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--no-agent",
            "--cluster-signing-duration",
            "45s",
        ],
    );

    // cluster-info is public, nothing else is.
    let info = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
    assert!(eventually(Duration::from_secs(10), || c.curl(&[], info).0 == 200));
    let (_, body) = c.curl(&[], info);
    assert!(body.contains("certificate-authority-data"), "{body}");
    assert_eq!(c.curl(&[], "/api/v1/namespaces/kube-public/configmaps").0, 401);
    assert_eq!(
        c.curl(&[], "/api/v1/namespaces/kube-system/configmaps/cluster-info")
            .0,
        401
    );

    let command = join_command(&c, "1h");
    let args = agent_args(&command);
    let token = flag(&args, "--token").to_string();
    let (id, secret) = token.split_once('.').unwrap();
    assert_eq!(flag(&args, "--server"), format!("https://{}", c.addr));
    assert!(flag(&args, "--ca-cert-hash").starts_with("sha256:"), "{command}");
    // The bootstrap signer signs cluster-info for the new token.
    assert!(eventually(Duration::from_secs(40), || {
        c.get_json(&["cm", "-n", "kube-public", "cluster-info"])["data"][format!("jws-kubeconfig-{id}")]
            .is_string()
    }));

    // A wrong CA hash: the server is not trusted.
    let mut wrong = args.clone();
    let i = wrong.iter().position(|a| a == "--ca-cert-hash").unwrap();
    wrong[i + 1] = format!("sha256:{}", "0".repeat(64));
    let log = join_fails(&c, "wrong-hash", &wrong);
    assert!(
        log.contains("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys"),
        "{log}"
    );
    // A token the cluster does not know: no signature for it.
    let mut unknown = args.clone();
    let i = unknown.iter().position(|a| a == "--token").unwrap();
    unknown[i + 1] = "zzzzzz.0123456789abcdef".into();
    let log = join_fails(&c, "unknown-token", &unknown);
    assert!(
        log.contains("This token id \"zzzzzz\" is invalid for this cluster"),
        "{log}"
    );
    // The right id with a wrong secret: the signature does not verify.
    unknown[i + 1] = format!("{id}.0000000000000000");
    let log = join_fails(&c, "wrong-secret", &unknown);
    assert!(
        log.contains("failed to verify JWS signature of received cluster info object"),
        "{log}"
    );
    assert_eq!(
        c.curl(
            &["-H", &format!("Authorization: Bearer {id}.0000000000000000")],
            "/apis/certificates.k8s.io/v1/certificatesigningrequests"
        )
        .0,
        401
    );
    // An expired token: the API server no longer knows it (401), so no certificate.
    let expired = agent_args(&join_command(&c, "1s"));
    std::thread::sleep(Duration::from_millis(2100));
    let log = join_fails(&c, "expired", &expired);
    assert!(
        log.contains("Unauthorized") || log.contains("is invalid for this cluster"),
        "{log}"
    );
    assert_eq!(
        c.curl(
            &[
                "-H",
                &format!("Authorization: Bearer {}", flag(&expired, "--token"))
            ],
            "/apis/certificates.k8s.io/v1/certificatesigningrequests"
        )
        .0,
        401
    );

    // The join command, verbatim.
    let dir = c.dir.join("joined");
    let mut all = args.clone();
    all.extend(node_flags("joined"));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut agent = Agent::start_with(SVCNET, &dir, &refs);
    assert!(
        eventually(Duration::from_secs(60), || node_ready(&c, "joined")),
        "the node never became Ready:\n{}",
        agent.log()
    );
    // Its CSR, approved for the bootstrap token and signed.
    let node_csrs = csrs(&c);
    let first = node_csrs
        .iter()
        .find(|x| x["spec"]["username"] == format!("system:bootstrap:{id}"))
        .unwrap_or_else(|| panic!("no CSR from the token: {node_csrs:?}"));
    assert_eq!(
        first["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(first["status"]["conditions"][0]["reason"], "AutoApproved");
    let table = c.ok(&["get", "csr"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&format!("system:bootstrap:{id}"))
                && l.contains("kubernetes.io/kube-apiserver-client-kubelet")
                && l.contains("Approved,Issued")),
        "{table}"
    );

    // Its own credential, and nothing of the admin's or the token in its data directory.
    let kc = dir.join("kubeconfig");
    let pem_path = dir.join("pki/kubelet-client-current.pem");
    let first_pem = std::fs::read_to_string(&pem_path).unwrap();
    let admin_token = std::fs::read_to_string(c.dir.join("pki/token")).unwrap();
    for entry in walk(&dir) {
        let Ok(text) = std::fs::read(&entry) else { continue };
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains(admin_token.trim()),
            "the admin token is in {}",
            entry.display()
        );
        assert!(
            !text.contains(secret),
            "the bootstrap token is in {}",
            entry.display()
        );
    }
    let who: Value = serde_json::from_str(&allowed(&c, &kc, &["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:joined");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:nodes", "system:authenticated"])
    );

    // A pod bound to it runs, its status written by the node, and serves through a Service on the
    // node's own data plane (its proxier reads Services and EndpointSlices as the node).
    c.ok_v("", &["apply", "-f", "-"], Some(WORKLOAD));
    assert!(
        eventually(Duration::from_secs(40), || {
            let p = c.get_json(&["pod", "web"]);
            p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
        }),
        "{}\n{}",
        c.get_json(&["pod", "web"]),
        agent.log()
    );
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        eventually(Duration::from_secs(30), || http_ok(&cluster_ip, 80)),
        "the Service at {cluster_ip}:80 never answered\n{}",
        agent.log()
    );
    // Its container logs, through the API server: the node checks the server's credential with a
    // TokenReview (it holds no cluster token).
    assert!(
        eventually(Duration::from_secs(10), || {
            String::from_utf8_lossy(&c.kubectl_v("", &["logs", "web"], None).stdout)
                .contains("\"GET / HTTP/1.0\" 200")
        }),
        "{:?}\n{}",
        c.kubectl_v("", &["logs", "web"], None),
        agent.log()
    );
    assert_eq!(
        c.curl(
            &["-H", "Authorization: Bearer nonsense"],
            "/apis/authentication.k8s.io/v1/tokenreviews"
        )
        .0,
        401
    );

    // Its DNS server published itself as a kube-dns endpoint.
    assert!(eventually(Duration::from_secs(20), || {
        get_maybe(&c, &["endpointslice", "-n", "kube-system", "kube-dns-joined"])["endpoints"].is_array()
    }));
    // Its own Node and Lease.
    allowed(&c, &kc, &["label", "node", "joined", "team=a"]);
    let lease = c.get_json(&["lease", "-n", "kube-node-lease", "joined"]);
    assert_eq!(lease["spec"]["holderIdentity"], "joined");

    // What it may not do, in kube's words.
    refused(
        &c,
        &kc,
        &["label", "node", "other", "team=a"],
        r#"Error from server (Forbidden): nodes "other" is forbidden: node "joined" is not allowed to modify node "other""#,
    );
    refused(
        &c,
        &kc,
        &["create", "service", "clusterip", "x", "--tcp=80"],
        r#"error: failed to create ClusterIP service: services is forbidden: User "system:node:joined" cannot create resource "services" in API group "" in the namespace "default""#,
    );
    refused(
        &c,
        &kc,
        &["delete", "pod", "theirs", "--wait=false"],
        r#"Error from server (Forbidden): pods "Unknown" is forbidden: node "joined" can only delete pods with spec.nodeName set to itself"#,
    );
    let (code, body) = c.curl(
        &[
            "--cert",
            pem_path.to_str().unwrap(),
            "--key",
            pem_path.to_str().unwrap(),
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"status":{"message":"from joined"}}"#,
        ],
        "/api/v1/namespaces/default/pods/theirs/status",
    );
    assert_eq!(code, 403, "{body}");
    refused(
        &c,
        &kc,
        &["annotate", "lease", "other", "-n", "kube-node-lease", "a=b"],
        r#"Error from server (Forbidden): leases.coordination.k8s.io "other" is forbidden: User "system:node:joined" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "kube-node-lease": can only access node lease with the same name as the requesting node"#,
    );

    // Nodes may write EndpointSlices in kube-system (their DNS endpoint) but only their own.
    let foreign = c.dir.join("foreign-slice.yaml");
    std::fs::write(
        &foreign,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: kube-dns-other, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.99], nodeName: other}]\n",
    )
    .unwrap();
    let (ok, text) = run(&c, &kc, &["create", "-f", foreign.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"endpointslices.discovery.k8s.io "kube-dns-other" is forbidden: node "joined" can only write its own kube-dns EndpointSlice "kube-system/kube-dns-joined""#),
        "{text}"
    );

    // A restart reuses the certificate: no token, no new CSR.
    let before = csrs(&c).len();
    agent.kill_agent_only();
    let mut plain = vec!["--node-name".to_string(), "joined".into()];
    plain.extend(node_flags("joined").split_off(2));
    let refs: Vec<&str> = plain.iter().map(String::as_str).collect();
    let mut agent = Agent::start_with(SVCNET, &dir, &refs);
    assert!(
        eventually(Duration::from_secs(20), || agent
            .log()
            .contains("using this node's certificate from an earlier join")),
        "{}",
        agent.log()
    );
    assert!(
        agent.exited_within(Duration::from_secs(2)).is_none(),
        "{}",
        agent.log()
    );
    assert_eq!(csrs(&c).len(), before);

    // Renewal at 80 % of the 45 s lifetime, approved as the node's own, and the node keeps working
    // after the first certificate expired.
    let (_, first_expiry) = cert_validity(&first_pem);
    assert!(
        eventually(Duration::from_secs(60), || {
            csrs(&c).iter().any(|x| {
                x["spec"]["username"] == "system:node:joined"
                    && x["status"]["certificate"].is_string()
                    && x["status"]["conditions"][0]["message"]
                        == "Auto approving self kubelet client certificate after SubjectAccessReview."
            })
        }),
        "no renewal: {:?}\n{}",
        csrs(&c),
        agent.log()
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&pem_path).is_ok_and(|p| cert_validity(&p).1 > first_expiry)
    }));
    let now = || jiff::Timestamp::now().as_second();
    while now() < first_expiry + 12 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let renewed = c.node_lease_renewed("joined");
    assert!(
        renewed > first_expiry,
        "the Lease was last renewed at {renewed}, before the first certificate expired at {first_expiry}\n{}",
        agent.log()
    );
    assert!(node_ready(&c, "joined"));
    drop(agent);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A CSR as kubectl sends one, for `cn`.
fn csr_yaml(name: &str, cn: &str, signer: &str, expiration: u32) -> String {
    use base64::Engine;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: {signer}\n  expirationSeconds: {expiration}\n  usages: [digital signature, client auth]\n"
    )
}

#[test]
fn csrs_are_approved_denied_and_signed_through_kubectl() {
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--no-agent",
            "--cluster-signing-duration",
            "1h",
        ],
    );
    c.ok_v(
        "",
        &["apply", "-f", "-"],
        Some(&csr_yaml(
            "alice",
            "alice",
            "kubernetes.io/kube-apiserver-client",
            600,
        )),
    );
    let csr = c.get_json(&["csr", "alice"]);
    // The requester is the API server's to say.
    assert_eq!(csr["spec"]["username"], "svcnet-admin");
    let table = c.ok(&["get", "csr", "alice"]);
    assert!(
        table.contains("kubernetes.io/kube-apiserver-client")
            && table.contains("10m")
            && table.contains("Pending"),
        "{table}"
    );
    assert_eq!(
        c.ok(&["certificate", "approve", "alice"]).trim(),
        "certificatesigningrequest.certificates.k8s.io/alice approved"
    );
    assert!(eventually(Duration::from_secs(20), || {
        c.get_json(&["csr", "alice"])["status"]["certificate"].is_string()
    }));
    let csr = c.get_json(&["csr", "alice"]);
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(csr["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let (not_before, not_after) = cert_validity(&String::from_utf8(pem).unwrap());
    // expirationSeconds honoured (with the signer's backdate before it).
    assert_eq!(not_after - not_before, 600 + 60);
    assert!(c.ok(&["get", "csr", "alice"]).contains("Approved,Issued"));

    // Denied: never signed, and no longer approvable.
    c.ok_v(
        "",
        &["apply", "-f", "-"],
        Some(&csr_yaml(
            "bob",
            "bob",
            "kubernetes.io/kube-apiserver-client",
            600,
        )),
    );
    assert_eq!(
        c.ok(&["certificate", "deny", "bob"]).trim(),
        "certificatesigningrequest.certificates.k8s.io/bob denied"
    );
    assert!(c.ok(&["get", "csr", "bob"]).contains("Denied"));
    let err = c.fail_v("", &["certificate", "approve", "bob"], None);
    assert!(err.contains("Denied"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.get_json(&["csr", "bob"])["status"]["certificate"].is_null());
    // Not a node-client request: no auto-approval; approved by hand, the kubelet signer refuses it.
    c.ok_v(
        "",
        &["apply", "-f", "-"],
        Some(&csr_yaml(
            "dave",
            "dave",
            "kubernetes.io/kube-apiserver-client-kubelet",
            600,
        )),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.ok(&["get", "csr", "dave"]).contains("Pending"));
    c.ok(&["certificate", "approve", "dave"]);
    assert!(eventually(Duration::from_secs(20), || {
        c.ok(&["get", "csr", "dave"]).contains("Approved,Failed")
    }));
    let failed = c.get_json(&["csr", "dave"])["status"]["conditions"][1].clone();
    assert_eq!(failed["type"], "Failed");
    assert_eq!(failed["reason"], "SignerValidationFailure");
    assert_eq!(failed["message"], "subject organization is not system:nodes");

    // kube's validation, word for word.
    let err = c.fail_v(
        "",
        &["apply", "-f", "-"],
        Some(&csr_yaml(
            "short",
            "x",
            "kubernetes.io/kube-apiserver-client",
            599,
        )),
    );
    assert!(
        err.contains(r#"The CertificateSigningRequest "short" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"#),
        "{err}"
    );
    let err = c.fail_v(
        "",
        &["apply", "-f", "-"],
        Some(&csr_yaml("signer", "x", "nodomain", 600)),
    );
    assert!(
        err.contains("spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        "{err}"
    );
}

/// `kubectl` as the node of `kc` with `stdin`: (success, stdout or stderr).
fn run_in(c: &Cluster, kc: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let path = kc.to_string_lossy().into_owned();
    let out = c.kubectl_env(
        svcnet_testsupport::kubectl::NEWEST,
        args,
        Some(stdin),
        &[("KUBECONFIG", &path)],
    );
    let text = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(text).trim().to_string(),
    )
}

fn announcement_lease(ns: &str, name: &str, holder: &str) -> String {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ");
    format!(
        "apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: {name}, namespace: {ns}}}
spec: {{holderIdentity: \"{holder}\", leaseDurationSeconds: 3, renewTime: \"{now}\"}}
"
    )
}

/// A joined node, with only its own certificate, can do what the L2 announcer of LoadBalancer IPs does
/// (take and renew an announcement Lease `svcnet-lb-*` holding itself, release it, name itself in the
/// Service's `svcnet.io/lb-announcing-node` annotation, watch the Leases) and nothing around it: no Lease
/// for another node, no other Lease outside `kube-node-lease` (a controller's election Lease), no other
/// change to a Service, no Service created.
#[test]
fn a_joined_node_announces_with_its_own_certificate_and_nothing_more() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns", "--no-agent"]);
    let args = agent_args(&join_command(&c, "1h"));
    let dir = c.dir.join("edge");
    let mut all = args.clone();
    all.extend(node_flags("edge"));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let agent = Agent::start_with(SVCNET, &dir, &refs);
    assert!(
        eventually(Duration::from_secs(60), || node_ready(&c, "edge")),
        "the node never became Ready:\n{}",
        agent.log()
    );
    let kc = dir.join("kubeconfig");
    c.ok(&["create", "namespace", "team-a"]);
    c.ok(&[
        "-n",
        "team-a",
        "create",
        "service",
        "loadbalancer",
        "web",
        "--tcp",
        "80",
    ]);
    let whoami = allowed(
        &c,
        &kc,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(whoami, "system:node:edge");

    // Take the announcement Lease, renew it, watch them all, release it, take it again.
    let (ok, text) = run_in(
        &c,
        &kc,
        &["create", "-f", "-"],
        &announcement_lease("team-a", "svcnet-lb-web", "edge"),
    );
    assert!(ok, "taking the Lease: {text}");
    let first = c.get_json(&["lease", "-n", "team-a", "svcnet-lb-web"]);
    assert_eq!(first["spec"]["holderIdentity"], "edge");
    std::thread::sleep(Duration::from_millis(20));
    let (ok, text) = run_in(
        &c,
        &kc,
        &["replace", "-f", "-"],
        &announcement_lease("team-a", "svcnet-lb-web", "edge"),
    );
    assert!(ok, "renewing the Lease: {text}");
    let renewed = c.get_json(&["lease", "-n", "team-a", "svcnet-lb-web"]);
    assert_ne!(renewed["spec"]["renewTime"], first["spec"]["renewTime"]);
    assert!(allowed(&c, &kc, &["get", "leases", "-A"]).contains("svcnet-lb-web"));
    let (ok, text) = run_in(
        &c,
        &kc,
        &["replace", "-f", "-"],
        &announcement_lease("team-a", "svcnet-lb-web", ""),
    );
    assert!(ok, "releasing the Lease: {text}");
    let (ok, text) = run_in(
        &c,
        &kc,
        &["replace", "-f", "-"],
        &announcement_lease("team-a", "svcnet-lb-web", "edge"),
    );
    assert!(ok, "taking the released Lease: {text}");
    // Name itself on the Service, and take the name away again.
    allowed(
        &c,
        &kc,
        &[
            "-n",
            "team-a",
            "annotate",
            "service",
            "web",
            "svcnet.io/lb-announcing-node=edge",
        ],
    );
    let svc = c.get_json(&["service", "-n", "team-a", "web"]);
    assert_eq!(
        svc["metadata"]["annotations"]["svcnet.io/lb-announcing-node"],
        "edge"
    );
    allowed(
        &c,
        &kc,
        &[
            "-n",
            "team-a",
            "annotate",
            "service",
            "web",
            "svcnet.io/lb-announcing-node-",
        ],
    );

    // Nothing beyond.
    let (ok, text) = run_in(
        &c,
        &kc,
        &["replace", "-f", "-"],
        &announcement_lease("team-a", "svcnet-lb-web", "other"),
    );
    assert!(!ok);
    assert_eq!(
        text,
        "Error from server (Forbidden): error when replacing \"STDIN\": leases.coordination.k8s.io \"svcnet-lb-web\" is forbidden: node \"edge\" can only hold an L2 announcement lease itself or release its own"
    );
    let (ok, text) = run_in(
        &c,
        &kc,
        &["create", "-f", "-"],
        &announcement_lease("team-a", "mine", "edge"),
    );
    assert!(!ok);
    assert_eq!(
        text,
        "Error from server (Forbidden): error when creating \"STDIN\": leases.coordination.k8s.io \"mine\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace, or write L2 announcement leases \"svcnet-lb-*\""
    );
    let (ok, text) = run_in(
        &c,
        &kc,
        &["replace", "-f", "-"],
        &announcement_lease("kube-system", "svcnet-endpointslice-controller", "edge"),
    );
    assert!(!ok);
    assert!(
        text.contains("User \"system:node:edge\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-system\""),
        "{text}"
    );
    refused(
        &c,
        &kc,
        &[
            "-n",
            "team-a",
            "annotate",
            "service",
            "web",
            "svcnet.io/lb-announcing-node=other",
        ],
        "Error from server (Forbidden): services \"web\" is forbidden: node \"edge\" can only name itself in the annotation \"svcnet.io/lb-announcing-node\" or remove its own name",
    );
    refused(
        &c,
        &kc,
        &["-n", "team-a", "label", "service", "web", "owned=yes"],
        "Error from server (Forbidden): services \"web\" is forbidden: node \"edge\" can only set the annotation \"svcnet.io/lb-announcing-node\" of a Service",
    );
    refused(
        &c,
        &kc,
        &[
            "-n",
            "team-a",
            "create",
            "service",
            "clusterip",
            "mine",
            "--tcp",
            "80",
        ],
        "error: failed to create ClusterIP service: services is forbidden: User \"system:node:edge\" cannot create resource \"services\" in API group \"\" in the namespace \"team-a\"",
    );
    refused(
        &c,
        &kc,
        &["-n", "team-a", "delete", "lease", "svcnet-lb-web"],
        "Error from server (Forbidden): leases.coordination.k8s.io \"svcnet-lb-web\" is forbidden: User \"system:node:edge\" cannot delete resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"team-a\": can only access leases in the \"kube-node-lease\" system namespace",
    );
    drop(agent);
}

/// The server a kubeconfig names.
fn server_of(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A node joined with `--api-servers` reaches the API through its balancer: its clients follow the
/// renewed certificate there too (the node keeps its Lease after the first certificate expired), its
/// own kubeconfig keeps naming the server it joined (the balancer's is `balancer.kubeconfig` beside
/// it), and it comes back after a restart with the certificate it has.
#[test]
fn a_node_joined_through_its_balancer_renews_and_restarts() {
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--no-agent",
            "--cluster-signing-duration",
            "45s",
        ],
    );
    let args = agent_args(&join_command(&c, "1h"));
    let dir = c.dir.join("ha-node");
    let lb = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let server = format!("https://{}", c.addr);
    let mut all = args.clone();
    all.extend(node_flags("ha-node"));
    all.extend([
        "--api-servers".into(),
        server.clone(),
        "--api-lb-listen".into(),
        lb.clone(),
    ]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut agent = Agent::start_with(SVCNET, &dir, &refs);
    assert!(
        eventually(Duration::from_secs(60), || node_ready(&c, "ha-node")),
        "the node never became Ready:\n{}",
        agent.log()
    );
    let own = dir.join("kubeconfig");
    let via = dir.join("balancer.kubeconfig");
    assert_eq!(server_of(&own), server, "the node's own kubeconfig");
    assert_eq!(
        server_of(&via),
        format!("https://{lb}"),
        "the balancer's kubeconfig"
    );
    let whoami = allowed(
        &c,
        &via,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(whoami, "system:node:ha-node");

    // Renewal through the balancer, and the node's clients on the new certificate once the first
    // one expired.
    let pem_path = dir.join("pki/kubelet-client-current.pem");
    let (_, first_expiry) = cert_validity(&std::fs::read_to_string(&pem_path).unwrap());
    assert!(
        eventually(Duration::from_secs(60), || {
            std::fs::read_to_string(&pem_path).is_ok_and(|p| cert_validity(&p).1 > first_expiry)
        }),
        "no renewal:\n{}",
        agent.log()
    );
    let now = || jiff::Timestamp::now().as_second();
    while now() < first_expiry + 12 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let renewed = c.node_lease_renewed("ha-node");
    assert!(
        renewed > first_expiry,
        "the Lease was last renewed at {renewed}, before the first certificate expired at {first_expiry}\n{}",
        agent.log()
    );
    assert_eq!(server_of(&own), server, "the node's own kubeconfig after renewal");

    // A restart: the node's own kubeconfig and certificate, no new CSR.
    let before = csrs(&c).len();
    agent.restart("TERM");
    assert!(
        eventually(Duration::from_secs(30), || {
            agent
                .log()
                .matches("using this node's certificate from an earlier join")
                .count()
                >= 1
                && allowed(&c, &via, &["get", "node", "ha-node", "-o", "name"]) == "node/ha-node"
        }),
        "{}",
        agent.log()
    );
    assert_eq!(
        server_of(&own),
        server,
        "the node's own kubeconfig after the restart"
    );
    assert!(eventually(Duration::from_secs(30), || node_ready(&c, "ha-node")));
    assert_eq!(csrs(&c).len(), before);
    drop(agent);
}
