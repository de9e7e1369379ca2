//! Event (core/v1): no tagged lists; its object references are atomic for server-side apply.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs, r, st};
use crate::columns::{Column, DOC_NAME, col, wide};
use crate::resource::{FieldLabel, ResourceType};
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
    field_labels: &[("source", FieldLabel::At("/source/component"))],
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
    columns: COLUMNS,
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

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    col("Last Seen", "string", DOC_EVENT_LAST_TIMESTAMP),
    col("Type", "string", DOC_EVENT_TYPE),
    col("Reason", "string", DOC_EVENT_REASON),
    col("Object", "string", DOC_EVENT_INVOLVED_OBJECT),
    wide("Subobject", "string", DOC_EVENT_FIELD_PATH),
    wide("Source", "string", DOC_EVENT_SOURCE),
    col("Message", "string", DOC_EVENT_MESSAGE),
    wide("First Seen", "string", DOC_EVENT_FIRST_TIMESTAMP),
    wide("Count", "string", DOC_EVENT_COUNT),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: DOC_NAME,
        priority: 1,
    },
];

const DOC_EVENT_COUNT: &str = "The number of times this event has occurred.";

const DOC_EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";

const DOC_EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";

const DOC_EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";

const DOC_EVENT_LAST_TIMESTAMP: &str =
    "The time at which the most recent occurrence of this event was recorded.";

const DOC_EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";

const DOC_EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";

const DOC_EVENT_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";

const DOC_EVENT_TYPE: &str = "Type of this event (Normal, Warning), new types could be added in the future";
