//! The registry of resource types svcnet serves, as the kinds' definitions in `svcnet_kinds` state
//! them: group, version, kind, names, scope, verbs, subresources and supported field selectors.
//!
//! Everything the API server does generically (routing, discovery, OpenAPI, storage keys, watch) reads
//! these; serving a new kind is one new file in `svcnet_kinds::kinds` plus one registry line.

pub use svcnet_kinds::resource::*;
