//! RBAC escalation prevention through real kubectl: a namespace admin may create Roles and
//! RoleBindings only with permissions it holds, unless it may `escalate` roles or `bind` the role; an
//! `aggregationRule` takes cluster-admin's rights; refusals in kube's words ("is attempting to grant
//! RBAC permissions not currently held", the missing rules in kube's compact form).

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
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lead-admin, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: lead}]
---
# May create ClusterRoles, holds little else.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: clusterrole-writer}
rules:
- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [create, get, update, patch]}
- {apiGroups: [""], resources: [configmaps], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crmaker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusterrole-writer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: crmaker}]
"#;

fn manifest(c: &Cluster, name: &str, text: &str) -> PathBuf {
    let p = c.dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `kubectl ARGS -f FILE` as the kubeconfig's user: (success, stderr).
fn with_file(c: &Cluster, kc: &Path, verb: &str, file: &Path) -> (bool, String) {
    let out = c.kubectl_as(kc, &[verb, "-f", file.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn role(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: team-a}}\nrules:\n{rules}"
    )
}

fn binding(name: &str, kind: &str, role: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: team-a}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: {role}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: someone}}]\n"
    )
}

#[test]
fn roles_and_bindings_grant_only_what_their_author_holds() {
    let users::WithUsers {
        c,
        kubeconfigs,
        dir: _dir,
    } = users::control_plane_with_users(
        SVCNET,
        &[("lead", "lead-token"), ("crmaker", "crmaker-token")],
        SETUP,
        &[],
    );
    let (lead, crmaker) = (kubeconfigs[0].clone(), kubeconfigs[1].clone());
    let held = "- {apiGroups: [\"\"], resources: [pods, services], verbs: [get, list]}\n";
    let nodes = "- {apiGroups: [\"\"], resources: [nodes], verbs: [get, list]}\n- {apiGroups: [apps], resources: [deployments], verbs: [get]}\n";

    // Rules the namespace admin holds there: allowed.
    let (ok, err) = with_file(&c, &lead, "create", &manifest(&c, "r1", &role("r1", held)));
    assert!(ok, "{err}");
    // Rules it does not hold (nodes are cluster-scoped; admin does not read them): kube's refusal.
    let (ok, err) = with_file(&c, &lead, "create", &manifest(&c, "r2", &role("r2", nodes)));
    assert!(!ok);
    assert!(
        err.ends_with(
            "roles.rbac.authorization.k8s.io \"r2\" is forbidden: user \"lead\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"
        ),
        "{err}"
    );
    // An update that adds what it does not hold is refused too; one within its rights goes.
    let (ok, err) = with_file(
        &c,
        &lead,
        "apply",
        &manifest(&c, "r1b", &role("r1", &format!("{held}{nodes}"))),
    );
    assert!(!ok);
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let more = "- {apiGroups: [\"\"], resources: [pods, services, configmaps], verbs: [get, list, watch]}\n";
    let (ok, err) = with_file(&c, &lead, "apply", &manifest(&c, "r1c", &role("r1", more)));
    assert!(ok, "{err}");

    // Bindings: to a role whose rules it holds (edit is within admin), yes; to cluster-admin, no.
    let (ok, err) = with_file(
        &c,
        &lead,
        "create",
        &manifest(&c, "b1", &binding("b1", "ClusterRole", "edit")),
    );
    assert!(ok, "{err}");
    let (ok, err) = with_file(
        &c,
        &lead,
        "create",
        &manifest(&c, "b2", &binding("b2", "ClusterRole", "cluster-admin")),
    );
    assert!(!ok);
    assert!(
        err.ends_with(
            "rolebindings.rbac.authorization.k8s.io \"b2\" is forbidden: user \"lead\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}"
        ),
        "{err}"
    );
    let (ok, err) = with_file(
        &c,
        &lead,
        "create",
        &manifest(&c, "b3", &binding("b3", "Role", "nope")),
    );
    assert!(!ok);
    assert!(
        err.ends_with(
            "rolebindings.rbac.authorization.k8s.io \"b3\" is forbidden: role.rbac.authorization.k8s.io \"nope\" not found"
        ),
        "{err}"
    );

    // `bind` on cluster-admin and `escalate` on roles lift the checks, as on Kubernetes.
    let grants = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: bind-and-escalate}
rules:
- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], resourceNames: [cluster-admin], verbs: [bind]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles], verbs: [escalate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lead-binds, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: bind-and-escalate}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: lead}]
"#;
    c.ok_v("", &["apply", "-f", "-"], Some(grants));
    let (ok, err) = with_file(&c, &lead, "create", &c.dir.join("b2.yaml"));
    assert!(ok, "{err}");
    let (ok, err) = with_file(&c, &lead, "create", &c.dir.join("r2.yaml"));
    assert!(ok, "{err}");

    // A ClusterRole: its rules must be held cluster-wide; an aggregationRule needs everything.
    let cr = |name: &str, body: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\n{body}"
        )
    };
    let (ok, err) = with_file(
        &c,
        &crmaker,
        "create",
        &manifest(
            &c,
            "cr1",
            &cr(
                "cr1",
                "rules:\n- {apiGroups: [\"\"], resources: [configmaps], verbs: [get]}\n",
            ),
        ),
    );
    assert!(ok, "{err}");
    let (ok, err) = with_file(
        &c,
        &crmaker,
        "create",
        &manifest(
            &c,
            "cr2",
            &cr(
                "cr2",
                "rules:\n- {apiGroups: [\"\"], resources: [secrets], verbs: [get]}\n",
            ),
        ),
    );
    assert!(!ok);
    assert!(
        err.contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{err}"
    );
    let (ok, err) = with_file(
        &c,
        &crmaker,
        "create",
        &manifest(
            &c,
            "cr3",
            &cr(
                "cr3",
                "aggregationRule:\n  clusterRoleSelectors: [{matchLabels: {team: a}}]\nrules: []\n",
            ),
        ),
    );
    assert!(!ok);
    assert!(
        err.ends_with(
            "clusterroles.rbac.authorization.k8s.io \"cr3\" is forbidden: must have cluster-admin privileges to use the aggregationRule"
        ),
        "{err}"
    );
    // The admin (system:masters) is never checked.
    c.ok(&["create", "-f", c.dir.join("cr3.yaml").to_str().unwrap()]);
}
