//! Kubernetes API semantics that need no I/O: the registry of served kinds, field errors and `Status`
//! objects, label and field selectors, validation, defaulting and server-side table printing.
//!
//! This crate has no tokio and no networking on purpose: the API server, the controllers and the node
//! agent all share it, and its functions are easy to test as pure functions.

pub mod certificates;
pub mod events;
pub mod field;
pub mod lb_announce;
pub mod resources;
pub mod selector;
pub mod service;
pub mod table;
pub mod validation;
pub mod workload;
