//! The one vocabulary every layer of svcnet's API machinery reads: what each resource kind *is*.
//!
//! A kind's definition lives in one file under [`kinds`]: its resource type (group, version, names,
//! scope, verbs, subresources, selectable fields), its printer columns, its field tables (protobuf tags for the bodies
//! kubectl sends, strategic-merge-patch strategies and merge keys, server-side apply list types) and
//! its write rules (the declarative part; the code is the kind's strategy in the API server). `svcnet-api`, `svcnet-patch`, `svcnet-apply` and `svcnet-apiserver` all read it;
//! serving a new kind is one new file plus one line in [`kinds::KINDS`].
//!
//! The crate depends on nothing but `serde_json` and does no I/O, so it can sit below every other
//! svcnet crate.

#![forbid(unsafe_code)]

pub mod apply;
pub mod columns;
pub mod kinds;
pub mod patch;
pub mod proto;
pub mod quote;
pub mod resource;
pub mod reviews;
pub mod rules;

pub use kinds::{KINDS, Kind};
pub use quote::go_quote;
pub use resource::{FieldLabel, ResourceType};
pub use rules::{DeleteRules, NameRule, Rules};
