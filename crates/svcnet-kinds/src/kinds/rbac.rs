//! The RBAC kinds (rbac.authorization.k8s.io/v1): Role and ClusterRole (rules), RoleBinding and
//! ClusterRoleBinding (subjects bound to a role). They differ only in scope and printer, so the four
//! live in this one file. The API server enforces them (`svcnet_apiserver::authz`).

use super::Kind;
use super::meta::{LABEL_SELECTOR_PROTO, METADATA_ONLY, OBJECT_META_PROTO};
use crate::apply::{ApplyKind, Structs, atomic_struct, r, st};
use crate::columns::{AGE, Column, DEFAULT_COLUMNS, NAME, col, wide};
use crate::proto::{self, Wire, f, r as rep};
use crate::resource::ResourceType;
use crate::rules::Rules;

const fn resource(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind,
        plural,
        singular,
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    }
}

const RULES: Rules = Rules {
    create_on_update: true,
    name: crate::rules::NameRule::PathSegment,
    ..Rules::DEFAULT
};

/// The Role kind.
pub static ROLE: Kind = Kind {
    resource: resource("Role", "roles", "role", true),
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "Role",
        always_present: &[],
        structs: role_structs,
    },
    proto: Some(ROLE_PROTO),
    rules: RULES,
    columns: DEFAULT_COLUMNS,
};

/// The ClusterRole kind.
pub static CLUSTER_ROLE: Kind = Kind {
    resource: resource("ClusterRole", "clusterroles", "clusterrole", false),
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "ClusterRole",
        always_present: &[],
        structs: cluster_role_structs,
    },
    proto: Some(CLUSTER_ROLE_PROTO),
    rules: RULES,
    columns: DEFAULT_COLUMNS,
};

/// The RoleBinding kind.
pub static ROLE_BINDING: Kind = Kind {
    resource: resource("RoleBinding", "rolebindings", "rolebinding", true),
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "RoleBinding",
        always_present: &[],
        structs: role_binding_structs,
    },
    proto: Some(BINDING_PROTO),
    rules: RULES,
    columns: BINDING_COLUMNS,
};

/// The ClusterRoleBinding kind.
pub static CLUSTER_ROLE_BINDING: Kind = Kind {
    resource: resource(
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "ClusterRoleBinding",
        always_present: &[],
        structs: cluster_role_binding_structs,
    },
    proto: Some(BINDING_PROTO),
    rules: RULES,
    columns: BINDING_COLUMNS,
};

/// `rbac/v1` `PolicyRule`'s protobuf fields.
const POLICY_RULE_PROTO: &[proto::Field] = &[
    rep(1, "verbs", Wire::Str),
    rep(2, "apiGroups", Wire::Str),
    rep(3, "resources", Wire::Str),
    rep(4, "resourceNames", Wire::Str),
    rep(5, "nonResourceURLs", Wire::Str),
];

/// `Role`'s protobuf fields (kubectl 1.33's `create role` sends protobuf).
const ROLE_PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    rep(2, "rules", Wire::Msg(POLICY_RULE_PROTO)),
];

/// `ClusterRole`'s protobuf fields.
const CLUSTER_ROLE_PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    rep(2, "rules", Wire::Msg(POLICY_RULE_PROTO)),
    f(
        3,
        "aggregationRule",
        Wire::Msg(&[rep(1, "clusterRoleSelectors", Wire::Msg(LABEL_SELECTOR_PROTO))]),
    ),
];

/// `RoleBinding`'s and `ClusterRoleBinding`'s protobuf fields.
const BINDING_PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    rep(
        2,
        "subjects",
        Wire::Msg(&[
            f(1, "kind", Wire::Str),
            f(2, "apiGroup", Wire::Str),
            f(3, "name", Wire::Str),
            f(4, "namespace", Wire::Str),
        ]),
    ),
    f(
        3,
        "roleRef",
        Wire::Msg(&[
            f(1, "apiGroup", Wire::Str),
            f(2, "kind", Wire::Str),
            f(3, "name", Wire::Str),
        ]),
    ),
];

/// Rules, subjects and the role reference are atomic in kube's schema (`+listType=atomic`).
fn rbac_structs(root: &'static str, fields: &[&'static str], s: &mut Structs) {
    super::meta::structs(s);
    s.insert("RbacAtomic", atomic_struct());
    let mut v = vec![("metadata", r("ObjectMeta"))];
    v.extend(fields.iter().map(|f| (*f, r("RbacAtomic"))));
    s.insert(root, st(v));
}

fn role_structs(s: &mut Structs) {
    rbac_structs("Role", &["rules"], s);
}

fn cluster_role_structs(s: &mut Structs) {
    rbac_structs("ClusterRole", &["rules", "aggregationRule"], s);
}

fn role_binding_structs(s: &mut Structs) {
    rbac_structs("RoleBinding", &["subjects", "roleRef"], s);
}

fn cluster_role_binding_structs(s: &mut Structs) {
    rbac_structs("ClusterRoleBinding", &["subjects", "roleRef"], s);
}

/// The columns of kube's binding printers (`pkg/printers/internalversion`).
const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", DOC_ROLE_REF),
    AGE,
    wide("Users", "string", DOC_USERS),
    wide("Groups", "string", DOC_GROUPS),
    wide("ServiceAccounts", "string", DOC_SERVICE_ACCOUNTS),
];

const DOC_ROLE_REF: &str = "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";
const DOC_USERS: &str = "Users in the binding";
const DOC_GROUPS: &str = "Groups in the binding";
const DOC_SERVICE_ACCOUNTS: &str = "ServiceAccounts in the binding";
