//! CertificateSigningRequest (certificates.k8s.io/v1): a request for a certificate from a signer, how
//! joining nodes get their client certificate (signer `kubernetes.io/kube-apiserver-client-kubelet`).
//! Cluster-scoped; the `approval` subresource carries the Approved/Denied conditions, `status` the
//! issued certificate.

use super::Kind;
use super::meta::{CONDITIONS_STATUS, OBJECT_META};
use crate::apply::{ApplyKind, Structs, Ty, conditions, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p, r as rep};
use crate::resource::ResourceType;
use crate::rules::{NameRule, Rules};

/// The CertificateSigningRequest kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        namespaced: false,
        short_names: &["csr"],
        categories: &[],
        subresources: &["approval", "status"],
        delete_collection: true,
        field_selectors: &["spec.signerName"],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "CertificateSigningRequest",
        always_present: &["spec"],
        structs: apply_structs,
    },
    proto: Some(PROTO),
    rules: Rules {
        // kube's CSR names are path segments (`ValidateCertificateRequestName`).
        name: NameRule::PathSegment,
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

/// `k8s.io/api/certificates/v1/generated.proto` (what `kubectl certificate approve` sends). `spec.extra`
/// (a map of string lists) is not decoded: approval and status writes keep the stored spec anyway.
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(super::meta::OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
    f(3, "status", Wire::Msg(STATUS_PROTO)),
];

const SPEC_PROTO: &[proto::Field] = &[
    f(1, "request", Wire::Bytes),
    f(2, "username", Wire::Str),
    f(3, "uid", Wire::Str),
    rep(4, "groups", Wire::Str),
    rep(5, "usages", Wire::Str),
    f(7, "signerName", Wire::Str),
    p(8, "expirationSeconds", Wire::Int),
];

const STATUS_PROTO: &[proto::Field] = &[
    rep(1, "conditions", Wire::Msg(CONDITION_PROTO)),
    f(2, "certificate", Wire::Bytes),
];

const CONDITION_PROTO: &[proto::Field] = &[
    f(1, "type", Wire::Str),
    f(2, "reason", Wire::Str),
    f(3, "message", Wire::Str),
    f(4, "lastUpdateTime", Wire::Time),
    f(5, "lastTransitionTime", Wire::Time),
    f(6, "status", Wire::Str),
];

static PATCH: TypeSchema = TypeSchema {
    name: "object",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "CertificateSigningRequest",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("CertificateSigningRequestSpec")),
            ("status", r("CertificateSigningRequestStatus")),
        ]),
    );
    // usages and groups are `+listType=atomic` (what an unlisted list is); extra a granular map of
    // atomic lists.
    s.insert(
        "CertificateSigningRequestSpec",
        st(vec![(
            "extra",
            Ty::Map {
                values: Box::new(Ty::Untyped),
                atomic: false,
            },
        )]),
    );
    s.insert(
        "CertificateSigningRequestStatus",
        st(vec![("conditions", conditions())]),
    );
}

/// The columns of kube's printer for this kind (`printCertificateSigningRequest`).
const COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", DOC_SIGNER_NAME),
    col("Requestor", "string", DOC_REQUEST),
    col("RequestedDuration", "string", DOC_EXPIRATION_SECONDS),
    col("Condition", "string", DOC_CONDITIONS),
];

const DOC_SIGNER_NAME: &str = "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`. If empty, it will be defaulted:\n 1. If it's a kubelet client certificate, it is assigned\n    \"kubernetes.io/kube-apiserver-client-kubelet\".\n 2. If it's a kubelet serving certificate, it is assigned\n    \"kubernetes.io/kubelet-serving\".\n 3. Otherwise, it is assigned \"kubernetes.io/legacy-unknown\".\nDistribution of trust for signers happens out of band. You can select on this field using `spec.signerName`.";
const DOC_REQUEST: &str = "Base64-encoded PKCS#10 CSR data";
const DOC_EXPIRATION_SECONDS: &str = "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree\n     implementations prior to v1.22)\n  2. Signer whose configured maximum is shorter than the requested duration\n  3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes.\n\nAs of v1.22, this field is beta and is controlled via the CSRDuration feature gate.";
const DOC_CONDITIONS: &str = "Conditions applied to the request, such as approval or denial.";
