//! svcnet's service model: the part of kube-proxy every backend shares, as pure functions.
//!
//! Services and EndpointSlices go in as watch events ([`Model::upsert_service`], [`Model::upsert_slice`], …);
//! out come [`Change`]s to the table of [`ServicePort`]s ([`Model::take_changes`]): each ClusterIP, NodePort,
//! externalIP and LoadBalancer IP of each port, with its endpoints chosen as kube-proxy chooses them (ready,
//! else serving-terminating; traffic policies; topology hints). Only Services touched since the last call
//! are recomputed, and only ports whose result differs are reported, so one endpoint change costs one
//! Service's work whatever the size of the cluster. A [`Backend`] (nftables, userspace proxy) applies them.
//!
//! No I/O happens here: the node agent feeds events from its watches, `svcnet proxy --manifests` feeds the
//! objects of a YAML file ([`manifests`]).

pub mod manifests;
mod model;
mod types;

pub use model::{Changes, Model, ModelConfig, SERVICE_PROXY_NAME_LABEL, TRIGGER_TIME_ANNOTATION};
pub use types::{
    BALANCE_ANNOTATION, Backend, BackendError, Balance, Change, Endpoint, Frontend, FrontendKind, Name,
    Protocol, ServicePort, ServicePortName, UnknownBalance,
};
