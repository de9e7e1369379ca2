//! The protobuf field tables of the objects that are sent but never stored: the TokenRequest
//! (`serviceaccounts/token`) and the authentication and authorization reviews (`kubectl create token`,
//! `kubectl auth whoami`, `kubectl auth can-i` send them as protobuf). Field numbers are those of
//! `k8s.io/api/{authentication,authorization}/v1/generated.proto`.

use crate::kinds::meta::OBJECT_META_PROTO;
use crate::proto::{Field, Wire, f, p, r};

const BOUND_OBJECT_REF: &[Field] = &[
    f(1, "kind", Wire::Str),
    f(2, "apiVersion", Wire::Str),
    f(3, "name", Wire::Str),
    f(4, "uid", Wire::Str),
];

const TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(
        2,
        "spec",
        Wire::Msg(&[
            r(1, "audiences", Wire::Str),
            p(4, "expirationSeconds", Wire::Int),
            f(3, "boundObjectRef", Wire::Msg(BOUND_OBJECT_REF)),
        ]),
    ),
];

const SELF_SUBJECT_REVIEW: &[Field] = &[f(1, "metadata", Wire::Msg(OBJECT_META_PROTO))];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Wire::Str),
    f(2, "verb", Wire::Str),
    f(3, "group", Wire::Str),
    f(4, "version", Wire::Str),
    f(5, "resource", Wire::Str),
    f(6, "subresource", Wire::Str),
    f(7, "name", Wire::Str),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Wire::Str), f(2, "verb", Wire::Str)];

const ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(
        2,
        "spec",
        Wire::Msg(&[
            f(1, "resourceAttributes", Wire::Msg(RESOURCE_ATTRIBUTES)),
            f(2, "nonResourceAttributes", Wire::Msg(NON_RESOURCE_ATTRIBUTES)),
            f(3, "user", Wire::Str),
            r(4, "groups", Wire::Str),
            f(6, "uid", Wire::Str),
        ]),
    ),
];

const RULES_REVIEW: &[Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(&[f(1, "namespace", Wire::Str)])),
];

/// The protobuf fields of a review or TokenRequest of `apiVersion` and `kind`.
pub fn proto_table(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        (
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview",
        ) => ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => RULES_REVIEW,
        _ => return None,
    })
}
