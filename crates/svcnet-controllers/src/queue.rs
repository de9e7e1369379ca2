//! The controllers' work queue, now [`svcnet_informer::queue`]; re-exported so the controllers' paths
//! (and `endpointslice::Key`) stay as they were.

pub use svcnet_informer::queue::{Key, WorkQueue};
