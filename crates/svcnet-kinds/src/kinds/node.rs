//! Node (core/v1).

use super::Kind;
use super::meta::OBJECT_META;
use crate::apply::{ApplyKind, Structs, Ty, conditions, granular_map, list_map, r, set, st};
use crate::patch::{Field, TypeSchema};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The Node kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &["spec.unschedulable"],
    },
    patch: &PATCH,
    apply: ApplyKind {
        root: "Node",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules::DEFAULT,
};

static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeSpec",
    fields: &[Field::merge_set("podCIDRs")],
};

static STATUS_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeStatus",
    fields: &[
        Field::merge("conditions", "type"),
        Field::merge("addresses", "type"),
    ],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Node",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &STATUS_PATCH),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "Node",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("NodeSpec")),
            ("status", r("NodeStatus")),
        ]),
    );
    s.insert("NodeSpec", st(vec![("podCIDRs", set())]));
    s.insert(
        "NodeStatus",
        st(vec![
            ("addresses", list_map(Ty::Untyped, &["type"])),
            ("conditions", conditions()),
            ("capacity", granular_map()),
            ("allocatable", granular_map()),
        ]),
    );
}
