//! Bootstrap tokens (the first half of a node joining, as with kubeadm): `svcnet token create` stores a
//! random `ID.SECRET` as the Secret `kube-system/bootstrap-token-ID`, and the API server authenticates
//! it as `system:bootstrap:ID` in `system:bootstrappers` (no other rights) until it expires or its Secret
//! is deleted. A wrong secret, an expired token or a deleted one get 401.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::Cluster;
use svcnet_testsupport::users::{self, Credential};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn token_create(c: &Cluster, ttl: &str) -> String {
    let out = Command::new(SVCNET)
        .args(["token", "create", "--ttl", ttl, "--kubeconfig"])
        .arg(c.kubeconfig())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn services_as(c: &Cluster, token: &str) -> u16 {
    c.curl(
        &["-H", &format!("Authorization: Bearer {token}")],
        "/api/v1/namespaces/default/services",
    )
    .0
}

#[test]
fn bootstrap_tokens_authenticate_until_they_expire_or_are_deleted() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns", "--no-agent"]);
    let token = token_create(&c, "1h");
    let (id, secret) = token.split_once('.').expect("ID.SECRET");
    assert!(id.len() == 6 && secret.len() == 16, "{token}");

    // Stored as kube stores it: stringData became base64 data, of the bootstrap token type.
    let s = c.get_json(&["secret", "-n", "kube-system", &format!("bootstrap-token-{id}")]);
    assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
    assert!(s.get("stringData").is_none(), "{s}");
    use base64::Engine;
    let data = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(data("token-secret"), secret);
    assert_eq!(data("usage-bootstrap-authentication"), "true");
    let listed = c.ok(&["get", "secrets", "-n", "kube-system"]);
    assert!(listed.contains("bootstrap.kubernetes.io/token"), "{listed}");
    // kubeadm lists tokens by the Secret's type (`--field-selector type=...`), as kube-apiserver serves.
    c.ok(&[
        "create",
        "secret",
        "generic",
        "other",
        "-n",
        "kube-system",
        "--from-literal=a=b",
    ]);
    let by_type = |t: &str| {
        c.ok(&[
            "get",
            "secrets",
            "-n",
            "kube-system",
            "--field-selector",
            &format!("type={t}"),
            "-o",
            "name",
        ])
    };
    let tokens = by_type("bootstrap.kubernetes.io/token");
    assert!(
        tokens.contains(&format!("secret/bootstrap-token-{id}")),
        "{tokens}"
    );
    assert!(!tokens.contains("secret/other"), "{tokens}");
    let opaque = by_type("Opaque");
    assert!(
        opaque.contains("secret/other") && !opaque.contains("bootstrap-token"),
        "{opaque}"
    );

    // Who the token is.
    let kc = users::kubeconfig(&c, "joiner", Credential::Token(&token));
    let out = c.kubectl_as(&kc, &["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    let user = &who["status"]["userInfo"];
    assert_eq!(user["username"], format!("system:bootstrap:{id}"));
    assert_eq!(
        user["groups"],
        serde_json::json!([
            "system:bootstrappers",
            "system:bootstrappers:svcnet:default-node-token",
            "system:authenticated"
        ])
    );
    // Nothing more than that: no role grants it Services.
    assert_eq!(services_as(&c, &token), 403);
    // A wrong secret for the same ID is nobody.
    assert_eq!(services_as(&c, &format!("{id}.0000000000000000")), 401);

    // An expired token is nobody.
    let short = token_create(&c, "1s");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(services_as(&c, &short), 401);

    // Deleting the Secret revokes the token.
    c.ok(&[
        "delete",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    assert_eq!(services_as(&c, &token), 401);

    // Bad flags are refused with a message.
    let out = Command::new(SVCNET)
        .args(["token", "create", "--ttl", "1d"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid duration \"1d\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
