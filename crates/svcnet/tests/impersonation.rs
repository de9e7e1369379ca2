//! Impersonation through real kubectl (`--as`, `--as-group`, `--as-uid`) and curl (`Impersonate-Extra-*`):
//! a matrix of impersonators × impersonated users and groups × verbs × resources, each checked with
//! `kubectl auth can-i` and the real request, which must agree with RBAC; impersonating without the
//! `impersonate` permission gets kube's Forbidden for the user, group, ServiceAccount or uid asked for.

use std::path::{Path, PathBuf};

use svcnet_testsupport::Cluster;
use svcnet_testsupport::users;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: jane-views, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dev-edits, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: dev}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-configmap, namespace: team-a}
rules:
- {apiGroups: [""], resources: [configmaps], resourceNames: [settings], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-configmap}
subjects: [{kind: ServiceAccount, name: robot}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonator}
rules:
- {apiGroups: [""], resources: [users], resourceNames: [jane], verbs: [impersonate]}
- {apiGroups: [""], resources: [groups], resourceNames: [dev], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: boss-impersonates}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonator}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: boss}]
---
# ServiceAccounts of team-a, through a namespaced binding (kube checks them in their namespace).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: impersonate-sas, namespace: team-a}
rules:
- {apiGroups: [""], resources: [serviceaccounts], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: boss-impersonates-sas, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonate-sas}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: boss}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team-a}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other, namespace: team-a}
data: {a: "1"}
"#;

struct Users {
    boss: PathBuf,
    nobody: PathBuf,
}

fn start() -> (Cluster, Users, tempfile::TempDir) {
    let w = users::control_plane_with_users(
        SVCNET,
        &[("boss", "boss-token"), ("nobody", "nobody-token")],
        SETUP,
        &[],
    );
    let u = Users {
        boss: w.kubeconfigs[0].clone(),
        nobody: w.kubeconfigs[1].clone(),
    };
    (w.c, u, w.dir)
}

/// (impersonator's kubeconfig, `--as…` flags, `auth can-i` words, the real request, allowed by RBAC)
type Case<'a> = (&'a Path, &'a [&'a str], &'a [&'a str], &'a [&'a str], bool);

/// kubectl as the kubeconfig's user with `as_args` (`--as …`) and `args`: (success, stdout, stderr).
fn run(c: &Cluster, kc: &Path, as_args: &[&str], args: &[&str]) -> (bool, String, String) {
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(as_args);
    let out = c.kubectl_as(kc, &a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn can_i_and_real_requests_agree_for_impersonated_users() {
    let (c, u, _dir) = start();
    let admin = c.kubeconfig();
    // (Manifests: kubectl sends `create configmap` as protobuf, which svcnet does not take for
    // ConfigMaps.)
    let manifest = |name: &str| {
        let path = c.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: team-a}}\n"),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let (j1, j2, c1) = (manifest("j1"), manifest("j2"), manifest("c1"));
    let jane: &[&str] = &["--as", "jane"];
    let jane_dev: &[&str] = &["--as", "jane", "--as-group", "dev"];
    let robot: &[&str] = &["--as", "system:serviceaccount:team-a:robot"];
    let carl_dev: &[&str] = &["--as", "carl", "--as-group", "dev"];
    // (impersonator, --as…, can-i words, the real request, allowed by RBAC for the impersonated user)
    let cases: &[Case] = &[
        // jane alone: view in team-a.
        (
            &u.boss,
            jane,
            &["list", "services", "-n", "team-a"],
            &["get", "services", "-n", "team-a"],
            true,
        ),
        (
            &u.boss,
            jane,
            &["get", "configmaps/other", "-n", "team-a"],
            &["get", "configmap", "other", "-n", "team-a"],
            true,
        ),
        (
            &u.boss,
            jane,
            &["create", "configmaps", "-n", "team-a"],
            &["create", "-f", &j1],
            false,
        ),
        (
            &u.boss,
            jane,
            &["list", "services", "-n", "default"],
            &["get", "services", "-n", "default"],
            false,
        ),
        (&u.boss, jane, &["list", "nodes"], &["get", "nodes"], false),
        // jane as a member of dev: edit in team-a, still nothing elsewhere.
        (
            &u.boss,
            jane_dev,
            &["create", "configmaps", "-n", "team-a"],
            &["create", "-f", &j2],
            true,
        ),
        (
            &u.boss,
            jane_dev,
            &["delete", "configmaps/other", "-n", "team-a"],
            &["delete", "configmap", "other", "-n", "team-a"],
            true,
        ),
        (
            &u.boss,
            jane_dev,
            &["create", "services", "-n", "default"],
            &[
                "create",
                "service",
                "clusterip",
                "s1",
                "--tcp=80",
                "-n",
                "default",
            ],
            false,
        ),
        (
            &u.boss,
            jane_dev,
            &["create", "roles.rbac.authorization.k8s.io", "-n", "team-a"],
            &[
                "create",
                "role",
                "r",
                "--verb=get",
                "--resource=pods",
                "-n",
                "team-a",
            ],
            false,
        ),
        // A ServiceAccount: its Role names one ConfigMap.
        (
            &u.boss,
            robot,
            &["get", "configmaps/settings", "-n", "team-a"],
            &["get", "configmap", "settings", "-n", "team-a"],
            true,
        ),
        (
            &u.boss,
            robot,
            &["list", "configmaps", "-n", "team-a"],
            &["get", "configmaps", "-n", "team-a"],
            false,
        ),
        // The admin (system:masters) may impersonate anyone; RBAC then decides as for that user.
        (
            &admin,
            carl_dev,
            &["create", "configmaps", "-n", "team-a"],
            &["create", "-f", &c1],
            true,
        ),
        (
            &admin,
            carl_dev,
            &["list", "secrets", "-n", "default"],
            &["get", "secrets", "-n", "default"],
            false,
        ),
        (
            &admin,
            &["--as", "carl"],
            &["list", "configmaps", "-n", "team-a"],
            &["get", "configmaps", "-n", "team-a"],
            false,
        ),
    ];
    for (kc, as_args, can, request, allowed) in cases {
        let who = format!("{} {as_args:?}", kc.file_name().unwrap().to_string_lossy());
        let mut can_args = vec!["auth", "can-i"];
        can_args.extend_from_slice(can);
        let (ok, answer, err) = run(&c, kc, as_args, &can_args);
        assert!(
            answer == "yes" || answer == "no",
            "{who}: can-i {can:?}: {answer} {err}"
        );
        assert_eq!(answer == "yes", *allowed, "{who}: can-i {can:?}");
        assert_eq!(ok, *allowed, "{who}: can-i {can:?} exit status");
        let (ok, _, err) = run(&c, kc, as_args, request);
        assert_eq!(ok, *allowed, "{who}: kubectl {request:?}: {err}");
        if !allowed {
            // Denied as the impersonated user, not the impersonator.
            let user = as_args[1];
            assert!(
                err.contains(&format!("is forbidden: User \"{user}\" cannot")),
                "{who}: kubectl {request:?}: {err}"
            );
        }
    }

    // Who the server thinks the caller is: the impersonated user with its groups.
    let (ok, out, err) = run(&c, &u.boss, jane_dev, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        v["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );
    let (ok, out, err) = run(&c, &u.boss, robot, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );
}

#[test]
fn impersonating_without_permission_is_forbidden_in_kubes_words() {
    let (c, u, _dir) = start();
    let forbidden = |kc: &Path, as_args: &[&str], want: &str| {
        // Every request carries the headers, discovery first: kubectl's discovery client shows a
        // Forbidden status only as "unknown" (as against kube-apiserver), so the exact words are checked
        // on a request that needs no discovery.
        let (ok, _, err) = run(
            &c,
            kc,
            as_args,
            &["get", "--raw", "/api/v1/namespaces/team-a/services"],
        );
        assert!(!ok);
        assert_eq!(
            err,
            format!("Error from server (Forbidden): {want}"),
            "{as_args:?}"
        );
        for args in [
            &["get", "services", "-n", "team-a"][..],
            &["auth", "can-i", "list", "services", "-n", "team-a"],
        ] {
            let (ok, out, err) = run(&c, kc, as_args, args);
            assert!(!ok && out.is_empty(), "{args:?} {as_args:?}: {out}");
            assert!(
                err.contains("Error from server (Forbidden)"),
                "{args:?} {as_args:?}: {err}"
            );
        }
    };
    forbidden(
        &u.nobody,
        &["--as", "jane"],
        r#"users "jane" is forbidden: User "nobody" cannot impersonate resource "users" in API group "" at the cluster scope"#,
    );
    // boss may impersonate jane and dev, nobody else.
    forbidden(
        &u.boss,
        &["--as", "bob"],
        r#"users "bob" is forbidden: User "boss" cannot impersonate resource "users" in API group "" at the cluster scope"#,
    );
    forbidden(
        &u.boss,
        &["--as", "jane", "--as-group", "dev", "--as-group", "ops"],
        r#"groups "ops" is forbidden: User "boss" cannot impersonate resource "groups" in API group "" at the cluster scope"#,
    );
    forbidden(
        &u.boss,
        &["--as", "system:serviceaccount:default:default"],
        r#"serviceaccounts "default" is forbidden: User "boss" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "default""#,
    );
    forbidden(
        &u.boss,
        &["--as", "jane", "--as-uid", "1234"],
        r#"uids.authentication.k8s.io "1234" is forbidden: User "boss" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#,
    );

    // What kubectl cannot send: extras, and groups without a user.
    let token = std::fs::read_to_string(c.dir.join("pki/token")).unwrap();
    let admin = format!("Authorization: Bearer {}", token.trim());
    let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let (code, body) = c.curl(
        &[
            "-X",
            "POST",
            "-H",
            &admin,
            "-H",
            "Content-Type: application/json",
            "-H",
            "Impersonate-User: jane",
            "-H",
            "Impersonate-Extra-Reason%2Fwhy: audit",
            "-H",
            "Impersonate-Extra-Reason%2Fwhy: test",
            "-H",
            "Impersonate-Uid: 1234",
            "-d",
            review,
        ],
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    );
    assert_eq!(code, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["status"]["userInfo"],
        serde_json::json!({"username": "jane", "uid": "1234", "groups": ["system:authenticated"], "extra": {"reason/why": ["audit", "test"]}})
    );
    let (code, body) = c.curl(
        &[
            "-H",
            "Authorization: Bearer boss-token",
            "-H",
            "Impersonate-User: jane",
            "-H",
            "Impersonate-Extra-Scopes: view",
        ],
        "/api/v1/namespaces/team-a/services",
    );
    assert_eq!(code, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"],
        r#"userextras.authentication.k8s.io "view" is forbidden: User "boss" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope"#
    );
    assert_eq!(v["reason"], "Forbidden");
    let (code, body) = c.curl(
        &["-H", &admin, "-H", "Impersonate-Group: dev"],
        "/api/v1/namespaces/team-a/services",
    );
    assert_eq!(code, 500, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"],
        "Internal error occurred: requested [{Group  dev    }] without impersonating a user"
    );
}
