//! Authentication as kube-apiserver's: client certificates signed by the cluster CA, the static token
//! file, the admin token and ServiceAccount tokens from the TokenRequest API (`kubectl create token`),
//! each seen through `kubectl auth whoami`; anonymous and bad credentials get 401 except on the public
//! paths; TokenReview answers whom a token belongs to; what clients verify the API server and its
//! tokens with: the `kube-root-ca.crt` ConfigMap in every namespace and the issuer discovery documents.

use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::users::{self, Credential};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "alice-token,alice,alice-uid,\"dev,ops\"\nbob-token,bob,bob-uid\n",
    )
    .unwrap();
    // The token file is read at start; the directory may go afterwards.
    Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--no-agent",
            "--token-auth-file",
            tokens.to_str().unwrap(),
        ],
    )
}

/// `kubectl auth whoami -o json` as the kubeconfig's user: its `status.userInfo`, or the error text.
fn whoami(c: &Cluster, kubeconfig: &std::path::Path) -> Result<Value, String> {
    let out = c.kubectl_as(kubeconfig, &["auth", "whoami", "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("whoami JSON");
    Ok(v["status"]["userInfo"].clone())
}

fn groups(u: &Value) -> Vec<&str> {
    u["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect()
}

#[test]
fn users_from_certificates_the_token_file_and_the_admin_token() {
    let c = start();
    let admin = whoami(&c, &c.kubeconfig()).unwrap();
    assert_eq!(admin["username"], "svcnet-admin");
    assert_eq!(groups(&admin), ["system:masters", "system:authenticated"]);

    let alice = users::kubeconfig(&c, "alice", Credential::Token("alice-token"));
    let u = whoami(&c, &alice).unwrap();
    assert_eq!(u["username"], "alice");
    assert_eq!(u["uid"], "alice-uid");
    assert_eq!(groups(&u), ["dev", "ops", "system:authenticated"]);
    let bob = users::kubeconfig(&c, "bob", Credential::Token("bob-token"));
    assert_eq!(groups(&whoami(&c, &bob).unwrap()), ["system:authenticated"]);

    let cert = users::cluster_cert(&c, "carol", &["team-a"]);
    let carol = users::kubeconfig(&c, "carol", Credential::Cert(&cert));
    let u = whoami(&c, &carol).unwrap();
    assert_eq!(u["username"], "carol");
    assert_eq!(groups(&u), ["team-a", "system:authenticated"]);

    // A certificate from another CA (even one with the same name), a garbage token, no credential at
    // all: 401, as kube-apiserver answers.
    let stranger = users::stranger_cert("carol", &["system:masters"]);
    let forged = users::kubeconfig(&c, "stranger", Credential::Cert(&stranger));
    let garbage = users::kubeconfig(&c, "garbage", Credential::Token("not-a-token"));
    for kc in [&forged, &garbage] {
        let out = c.kubectl_as(kc, &["get", "services"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("error: You must be logged in to the server"),
            "{}: {err}",
            kc.display()
        );
    }
    let (code, body) = c.curl(&[], "/api/v1/namespaces/default/services");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
    // kube-apiserver's public paths answer anyone; the rest of the non-resource paths do not.
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(c.curl(&[], path).0, 200, "{path}");
    }
    for path in ["/metrics", "/api", "/apis", "/openapi/v2"] {
        assert_eq!(c.curl(&[], path).0, 401, "{path}");
    }
}

#[test]
fn service_account_tokens_are_checked_on_every_request() {
    let c = start();
    c.ok(&["create", "serviceaccount", "robot"]);
    let token = c.ok(&["create", "token", "robot"]).trim().to_string();
    let robot = users::kubeconfig(&c, "robot", Credential::Token(&token));
    let u = whoami(&c, &robot).unwrap();
    assert_eq!(u["username"], "system:serviceaccount:default:robot");
    assert_eq!(
        groups(&u),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    let sa_uid = c.ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(u["uid"], sa_uid.as_str());

    // A token whose claims were changed no longer matches its signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    let forged = users::kubeconfig(&c, "forged", Credential::Token(&parts.join(".")));
    assert!(whoami(&c, &forged).unwrap_err().contains("Unauthorized"));

    // Bound to a pod: valid while the pod is, named in the user's extras.
    c.ok_v(
        "",
        &[
            "run",
            "worker",
            "--image=svcnet/none",
            "--overrides",
            r#"{"spec":{"serviceAccountName":"robot"}}"#,
        ],
        None,
    );
    let bound = c
        .ok(&[
            "create",
            "token",
            "robot",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "worker",
            "--duration",
            "20m",
        ])
        .trim()
        .to_string();
    let worker = users::kubeconfig(&c, "worker", Credential::Token(&bound));
    let u = whoami(&c, &worker).unwrap();
    assert_eq!(u["extra"]["authentication.kubernetes.io/pod-name"][0], "worker");
    c.ok(&["delete", "pod", "worker", "--grace-period=0", "--force"]);
    assert!(
        eventually(Duration::from_secs(10), || whoami(&c, &worker).is_err()),
        "a token bound to a deleted pod stops working"
    );
    // The unbound token still works until its ServiceAccount goes.
    assert!(whoami(&c, &robot).is_ok());
    c.ok(&["delete", "sa", "robot"]);
    assert!(whoami(&c, &robot).unwrap_err().contains("Unauthorized"));

    // kube's validation of the request.
    let err = c.fail_v("", &["create", "token", "default", "--duration", "5m"], None);
    assert!(
        err.contains(
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
        ),
        "{err}"
    );
    let err = c.fail_v("", &["create", "token", "nobody"], None);
    assert!(err.contains(r#"serviceaccounts "nobody" not found"#), "{err}");
    let err = c.fail_v(
        "",
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "gone",
        ],
        None,
    );
    assert!(err.contains(r#"pods "gone" not found"#), "{err}");
}

/// `kubectl create -f -` of a TokenReview for `token` (with `audiences`, if any), as the kubeconfig's
/// user: the answered `status`, or the error text.
fn token_review(c: &Cluster, kc: &std::path::Path, token: &str, audiences: &[&str]) -> Result<Value, String> {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    });
    let file = c.dir.join("tokenreview.json");
    std::fs::write(&file, review.to_string()).unwrap();
    let out = c.kubectl_as(kc, &["create", "-f", file.to_str().unwrap(), "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("TokenReview JSON");
    Ok(v["status"].clone())
}

#[test]
fn token_reviews_answer_whom_a_token_belongs_to() {
    let c = start();
    let admin = c.kubeconfig();
    c.ok(&["create", "serviceaccount", "reviewer"]);
    let sa_token = c.ok(&["create", "token", "reviewer"]).trim().to_string();
    // A token file user, with system:authenticated added as kube's token authenticators add it.
    let s = token_review(&c, &admin, "alice-token", &[]).unwrap();
    assert_eq!(s["authenticated"], true, "{s}");
    assert_eq!(s["user"]["username"], "alice");
    assert_eq!(s["user"]["uid"], "alice-uid");
    assert_eq!(groups(&s["user"]), ["dev", "ops", "system:authenticated"]);
    assert_eq!(
        s["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    // A ServiceAccount token: valid for the API server's audience, not for another.
    let s = token_review(&c, &admin, &sa_token, &[]).unwrap();
    assert_eq!(s["authenticated"], true, "{s}");
    assert_eq!(s["user"]["username"], "system:serviceaccount:default:reviewer");
    assert_eq!(
        groups(&s["user"]),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    let s = token_review(&c, &admin, &sa_token, &["https://vault.example"]).unwrap();
    assert_eq!(s["authenticated"], false, "{s}");
    // Garbage and a deleted ServiceAccount's token: not authenticated.
    let s = token_review(&c, &admin, "garbage", &[]).unwrap();
    assert_eq!(s, serde_json::json!({"authenticated": false, "user": {}}));
    c.ok(&["delete", "serviceaccount", "reviewer"]);
    assert!(eventually(Duration::from_secs(10), || {
        token_review(&c, &admin, &sa_token, &[]).unwrap()["authenticated"] == false
    }));
    // Creating TokenReviews takes RBAC's permission (system:auth-delegator has it).
    let bob = users::kubeconfig(&c, "bob", Credential::Token("bob-token"));
    let err = token_review(&c, &bob, "alice-token", &[]).unwrap_err();
    assert!(
        err.contains(r#"User "bob" cannot create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope"#),
        "{err}"
    );
    let err = token_review(&c, &admin, "", &[]).unwrap_err();
    assert!(
        err.contains("token is required for TokenReview in authentication"),
        "{err}"
    );
}

/// ServiceAccountIssuerDiscovery as kube-apiserver serves it: the OpenID Connect discovery document
/// names the issuer the tokens carry and where the keys are, the key set holds the key that signed a
/// token (by `kid`), every ServiceAccount may read both (kube's `system:service-account-issuer-discovery`
/// binding), and other users without a grant get 403, anonymous requests 401.
#[test]
fn service_account_issuer_discovery() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let c = start();
    c.ok(&["create", "serviceaccount", "robot"]);
    let token = c.ok(&["create", "token", "robot"]).trim().to_string();
    let robot = users::kubeconfig(&c, "robot", Credential::Token(&token));
    let raw = |kc: &std::path::Path, path: &str| {
        let out = c.kubectl_as(kc, &["get", "--raw", path]);
        if out.status.success() {
            Ok(serde_json::from_slice::<Value>(&out.stdout).expect("JSON"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let part = |i: usize| -> Value {
        serde_json::from_slice(&b64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
    };
    let (header, claims) = (part(0), part(1));

    let doc = raw(&robot, "/.well-known/openid-configuration").unwrap();
    assert_eq!(doc["issuer"], claims["iss"], "{doc}");
    assert_eq!(doc["response_types_supported"], serde_json::json!(["id_token"]));
    assert_eq!(doc["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!([header["alg"]])
    );
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    assert!(
        jwks_uri.starts_with("https://") && jwks_uri.ends_with("/openid/v1/jwks"),
        "{jwks_uri}"
    );

    let jwks = raw(&robot, "/openid/v1/jwks").unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("no key {} in {jwks}", header["kid"]));
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    for coord in ["x", "y"] {
        assert_eq!(
            b64.decode(key[coord].as_str().unwrap()).unwrap().len(),
            32,
            "{key}"
        );
    }
    // The admin may read it too (cluster-admin); a user bound to nothing may not.
    assert!(raw(&c.kubeconfig(), "/openid/v1/jwks").is_ok());
    let bob = users::kubeconfig(&c, "bob", Credential::Token("bob-token"));
    let err = raw(&bob, "/.well-known/openid-configuration").unwrap_err();
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");
    let anon = users::kubeconfig(&c, "anon", Credential::Token("not-a-token"));
    let err = raw(&anon, "/openid/v1/jwks").unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
}

/// kube's conformance test "ServiceAccounts should guarantee kube-root-ca.crt exist in any namespace":
/// the ConfigMap holds the cluster CA (the one the admin's kubeconfig trusts) with kube's description,
/// is made in a new namespace, made again when deleted, and put back when its data is changed.
#[test]
fn kube_root_ca_crt_exists_in_every_namespace() {
    use base64::Engine;
    let c = start();
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let ca_b64 = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .expect("the kubeconfig carries its CA")
        .trim()
        .to_string();
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap()).unwrap();
    let get = |ns: &str| {
        let out = c.kubectl_v(
            "",
            &["get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "json"],
            None,
        );
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let holds_ca = |ns: &str| get(ns).is_some_and(|cm| cm["data"]["ca.crt"] == ca.as_str());
    assert!(
        eventually(Duration::from_secs(10), || holds_ca("default")),
        "{:?}",
        get("default")
    );
    let cm = get("default").unwrap();
    assert_eq!(
        cm["metadata"]["annotations"]["kubernetes.io/description"],
        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints \
such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of \
Kubernetes clusters."
    );

    c.ok(&["create", "namespace", "fresh"]);
    assert!(
        eventually(Duration::from_secs(10), || holds_ca("fresh")),
        "a new namespace gets it"
    );

    let uid = cm["metadata"]["uid"].clone();
    c.ok(&["delete", "configmap", "kube-root-ca.crt"]);
    assert!(
        eventually(Duration::from_secs(10), || get("default").is_some_and(
            |cm| cm["metadata"]["uid"] != uid && cm["data"]["ca.crt"] == ca.as_str()
        )),
        "made again after its deletion"
    );

    c.ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"ca.crt":"forged","extra":"x"}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(10), || get("default")
            .is_some_and(|cm| { cm["data"] == serde_json::json!({"ca.crt": ca}) })),
        "put back after a change: {:?}",
        get("default")
    );
}
