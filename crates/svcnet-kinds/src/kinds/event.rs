//! Event (core/v1): no tagged lists; its object references are atomic for server-side apply.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs, r, st};
use crate::resource::ResourceType;
use crate::rules::{DeleteRules, Rules};

/// The Event kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "Event",
        always_present: &["involvedObject", "source"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        create_on_update: true,
        delete: DeleteRules {
            answers_status: true,
            ..DeleteRules::DEFAULT
        },
        ..Rules::DEFAULT
    },
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "Event",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("involvedObject", r("ObjectReference")),
            ("related", r("ObjectReference")),
        ]),
    );
}
