//! RBAC authorization with Kubernetes' semantics, through real kubectl: a matrix of users (token file
//! users, a client certificate's group, a ServiceAccount) × verbs × namespaced and cluster-scoped
//! resources, each checked both with `kubectl auth can-i` and with the real request, the expected
//! answer derived from the default roles' rules (view, edit, system:basic-user, system:discovery) and
//! the test's own Role with resourceNames; Forbidden in kube's words; `kubectl auth can-i --list`.

use std::path::PathBuf;

use svcnet_testsupport::Cluster;
use svcnet_testsupport::users::{self, Credential};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: editors}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: editors}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-configmap, namespace: team-a}
rules:
- {apiGroups: [""], resources: [configmaps], resourceNames: [settings], verbs: [get, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-configmap}
subjects: [{kind: ServiceAccount, name: robot}]
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
    viewer: PathBuf,
    editor: PathBuf,
    nobody: PathBuf,
    robot: PathBuf,
}

fn start() -> (Cluster, Users) {
    let w = users::control_plane_with_users(
        SVCNET,
        &[("viewer", "viewer-token"), ("nobody", "nobody-token")],
        SETUP,
        &[],
    );
    let c = w.c;
    let robot_token = c
        .ok(&["create", "token", "robot", "-n", "team-a"])
        .trim()
        .to_string();
    let cert = users::cluster_cert(&c, "erin", &["editors"]);
    let u = Users {
        viewer: w.kubeconfigs[0].clone(),
        editor: users::kubeconfig(&c, "erin", Credential::Cert(&cert)),
        nobody: w.kubeconfigs[1].clone(),
        robot: users::kubeconfig(&c, "robot", Credential::Token(&robot_token)),
    };
    (c, u)
}

/// `kubectl auth can-i ARGS` as the kubeconfig's user: yes or no.
fn can_i(c: &Cluster, kc: &std::path::Path, args: &[&str]) -> bool {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    let out = c.kubectl_as(kc, &a);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.success(), answer == "yes");
    answer == "yes"
}

#[test]
fn a_matrix_of_users_verbs_and_resources() {
    let (c, u) = start();
    // (user, `auth can-i` words, the real request, allowed)
    let cases: &[(&PathBuf, &[&str], &[&str], bool)] = &[
        // view, bound in team-a only.
        (
            &u.viewer,
            &["list", "services", "-n", "team-a"],
            &["get", "services", "-n", "team-a"],
            true,
        ),
        (
            &u.viewer,
            &["get", "configmaps/settings", "-n", "team-a"],
            &["get", "configmap", "settings", "-n", "team-a"],
            true,
        ),
        (
            &u.viewer,
            &["list", "services", "-n", "default"],
            &["get", "services", "-n", "default"],
            false,
        ),
        (
            &u.viewer,
            &["create", "services", "-n", "team-a"],
            &[
                "create",
                "service",
                "clusterip",
                "new",
                "--tcp=80",
                "-n",
                "team-a",
            ],
            false,
        ),
        (
            &u.viewer,
            &["list", "leases.coordination.k8s.io", "-n", "team-a"],
            &["get", "leases", "-n", "team-a"],
            false,
        ),
        (
            &u.viewer,
            &["list", "deployments.apps", "-n", "team-a"],
            &["get", "deployments", "-n", "team-a"],
            true,
        ),
        (&u.viewer, &["list", "nodes"], &["get", "nodes"], false),
        (
            &u.viewer,
            &["get", "namespaces/team-a", "-n", "team-a"],
            &["get", "namespace", "team-a"],
            true,
        ),
        (
            &u.viewer,
            &["get", "namespaces/default", "-n", "default"],
            &["get", "namespace", "default"],
            false,
        ),
        (
            &u.viewer,
            &["list", "roles.rbac.authorization.k8s.io", "-n", "team-a"],
            &["get", "roles", "-n", "team-a"],
            false,
        ),
        // edit, bound cluster-wide to the certificate's group.
        (
            &u.editor,
            &["create", "services", "-n", "default"],
            &[
                "create",
                "service",
                "clusterip",
                "made-by-erin",
                "--tcp=80",
                "-n",
                "default",
            ],
            true,
        ),
        (
            &u.editor,
            &["delete", "configmaps/other", "-n", "team-a"],
            &["delete", "configmap", "other", "-n", "team-a"],
            true,
        ),
        (
            &u.editor,
            &["list", "services", "--all-namespaces"],
            &["get", "services", "-A"],
            true,
        ),
        (&u.editor, &["list", "nodes"], &["get", "nodes"], false),
        (
            &u.editor,
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
        (
            &u.editor,
            &["create", "namespaces"],
            &["create", "namespace", "erins"],
            false,
        ),
        // No binding of its own: only what every authenticated user has.
        (
            &u.nobody,
            &["list", "services", "-n", "default"],
            &["get", "services", "-n", "default"],
            false,
        ),
        (&u.nobody, &["list", "namespaces"], &["get", "namespaces"], false),
        // A ServiceAccount with a Role naming one object.
        (
            &u.robot,
            &["get", "configmaps/settings", "-n", "team-a"],
            &["get", "configmap", "settings", "-n", "team-a"],
            true,
        ),
        (
            &u.robot,
            &["get", "configmaps/other", "-n", "team-a"],
            &["get", "configmap", "other", "-n", "team-a"],
            false,
        ),
        (
            &u.robot,
            &["list", "configmaps", "-n", "team-a"],
            &["get", "configmaps", "-n", "team-a"],
            false,
        ),
    ];
    for (kc, can, request, allowed) in cases {
        let who = kc.file_name().unwrap().to_string_lossy();
        assert_eq!(can_i(&c, kc, can), *allowed, "{who}: can-i {can:?}");
        let out = c.kubectl_as(kc, request);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.success(),
            *allowed,
            "{who}: kubectl {request:?}: {err}"
        );
        if !allowed {
            assert!(
                err.contains("is forbidden: User"),
                "{who}: kubectl {request:?}: {err}"
            );
        }
    }
    // Everyone authenticated may ask about itself and read discovery, not more.
    // (system:basic-user's review rights are checked in the --list test: can-i resolves a resource
    // through discovery, which does not list the review groups yet.)
    assert!(can_i(&c, &u.nobody, &["get", "/api"]));
    assert!(!can_i(&c, &u.nobody, &["get", "/metrics"]));
    let out = c.kubectl_as(&u.nobody, &["get", "--raw", "/metrics"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            r#"Error from server (Forbidden): forbidden: User "nobody" cannot get path "/metrics""#
        ),
        "{out:?}"
    );
    // The admin (system:masters) may do everything.
    assert!(can_i(&c, &c.kubeconfig(), &["*", "*"]));
}

#[test]
fn forbidden_in_kubes_words_and_rules_listed() {
    let (c, u) = start();
    let out = c.kubectl_as(&u.viewer, &["get", "services", "-n", "default"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): services is forbidden: User "viewer" cannot list resource "services" in API group "" in the namespace "default""#
    );
    let out = c.kubectl_as(&u.viewer, &["get", "nodes", "n1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): nodes "n1" is forbidden: User "viewer" cannot get resource "nodes" in API group "" at the cluster scope"#
    );
    let out = c.kubectl_as(&u.viewer, &["get", "deployments", "-n", "default"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): deployments.apps is forbidden: User "viewer" cannot list resource "deployments" in API group "apps" in the namespace "default""#
    );

    // `auth can-i --list`: the view role's rules in team-a, and only the basics elsewhere.
    let list = String::from_utf8_lossy(
        &c.kubectl_as(&u.viewer, &["auth", "can-i", "--list", "-n", "team-a"])
            .stdout,
    )
    .into_owned();
    let line = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_string)
    };
    assert!(
        line("services").is_some_and(|l| l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        line("selfsubjectaccessreviews.authorization.k8s.io").is_some_and(|l| l.contains("[create]")),
        "{list}"
    );
    assert!(line("secrets").is_none(), "{list}");
    let list = String::from_utf8_lossy(
        &c.kubectl_as(&u.viewer, &["auth", "can-i", "--list", "-n", "default"])
            .stdout,
    )
    .into_owned();
    assert!(!list.contains("services "), "{list}");

    // Aggregation: a ClusterRole labelled to join `view` extends everyone bound to view.
    let extra = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: view-nodes\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- {apiGroups: [\"\"], resources: [secrets], verbs: [list]}\n";
    c.ok_v("", &["apply", "-f", "-"], Some(extra));
    assert!(can_i(&c, &u.viewer, &["list", "secrets", "-n", "team-a"]));
    // … and through edit (which aggregates view), for the editors too.
    assert!(can_i(&c, &u.editor, &["list", "secrets", "-n", "default"]));
    c.ok(&["delete", "clusterrole", "view-nodes"]);
    assert!(!can_i(&c, &u.viewer, &["list", "secrets", "-n", "team-a"]));

    // A SubjectAccessReview (the admin asks about another user), in kube's reason wording.
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"viewer","resourceAttributes":{"namespace":"team-a","verb":"list","resource":"services"}}}"#;
    let out = c.ok_v(
        "",
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            "-",
        ],
        Some(sar),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["allowed"], true);
    assert_eq!(
        v["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "viewers/team-a" of ClusterRole "view" to User "viewer""#
    );
    // The same review from a manifest: kubectl finds the kind through discovery (and its schema through
    // OpenAPI), as with any other kind; a LocalSubjectAccessReview is namespaced.
    let out = c.ok_v("", &["create", "-f", "-", "-o", "json"], Some(sar));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["allowed"], true, "{out}");
    let lsar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"LocalSubjectAccessReview","metadata":{"namespace":"default"},"spec":{"user":"viewer","resourceAttributes":{"namespace":"default","verb":"list","resource":"services"}}}"#;
    let out = c.ok_v("", &["create", "-f", "-", "-o", "json"], Some(lsar));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "LocalSubjectAccessReview");
    assert_eq!(v["status"]["allowed"], false, "{out}");
    let res = c.ok(&[
        "api-resources",
        "--api-group",
        "authorization.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        res.lines()
            .any(|l| l == "subjectaccessreviews.authorization.k8s.io"),
        "{res}"
    );
    // The default roles exist as kube's do.
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node-proxier",
        "system:kube-dns",
    ] {
        c.ok(&["get", "clusterrole", role]);
    }
}

/// The aggregated ClusterRoles hold their rules as on Kubernetes (the clusterrole-aggregation
/// controller): `view` lists what `system:aggregate-to-view` grants, a chart's ClusterRole labelled
/// `aggregate-to-view` joins it (and `edit` and `admin`, which aggregate `view`) and grants what it
/// adds to everyone bound to `view`, and leaves it when the label goes.
#[test]
fn aggregated_cluster_roles_show_their_rules() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns", "--no-agent"]);
    let grants = |role: &str, resource: &str| {
        let rules = c.get_json(&["clusterrole", role])["rules"].clone();
        rules.as_array().is_some_and(|a| {
            a.iter().any(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|x| x == resource))
            })
        })
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        assert!(
            svcnet_testsupport::eventually(std::time::Duration::from_secs(20), f),
            "{what}\n{}",
            c.log()
        );
    };
    let can_list_secrets = || {
        c.kubectl_v(
            svcnet_testsupport::kubectl::NEWEST,
            &[
                "auth",
                "can-i",
                "list",
                "secrets",
                "--as=someone",
                "-n",
                "default",
            ],
            None,
        )
        .status
        .success()
    };
    wait("view has its rules", &|| {
        grants("view", "services") && grants("view", "endpointslices")
    });
    wait("admin has edit's and view's", &|| {
        grants("admin", "rolebindings") && grants("admin", "services")
    });
    assert!(!grants("view", "secrets"), "kube's view grants no secrets");
    let described = c.ok(&["describe", "clusterrole", "view"]);
    assert!(described.contains("services"), "{described}");
    c.ok(&[
        "create",
        "rolebinding",
        "v",
        "--clusterrole=view",
        "--user=someone",
        "-n",
        "default",
    ]);
    assert!(!can_list_secrets());

    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: secrets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, list, watch]}
"#,
        ),
    );
    wait("view has secrets", &|| grants("view", "secrets"));
    assert!(can_list_secrets());

    c.ok(&[
        "label",
        "clusterrole",
        "secrets-view",
        "rbac.authorization.k8s.io/aggregate-to-view-",
    ]);
    wait("view without secrets", &|| {
        !grants("view", "secrets") && grants("view", "services")
    });
    assert!(!can_list_secrets());
}
