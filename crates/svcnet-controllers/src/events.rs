//! Recording core/v1 Events about objects, as client-go's (legacy) event recorder does.
//!
//! kube-runtime's recorder writes `events.k8s.io/v1` Events; kubectl's `get events` and `describe`
//! read core/v1 ones (`involvedObject`, `source`, `count`), and those are what every API server serves,
//! so the controllers write core/v1 Events directly. Recording is best effort: a failure is logged and
//! never stops a controller.

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, PostParams};
pub use svcnet_api::events::Involved;
use svcnet_api::events::{build_event, event_namespace};
use tracing::{debug, warn};

/// Writes core/v1 Events in the involved object's namespace on behalf of one component.
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// The last name suffix used, so two Events in the same nanosecond still get distinct names.
    last_suffix: i128,
}

impl Recorder {
    /// A recorder that signs its Events with `component` (`source.component`, `reportingComponent`).
    pub fn new(client: Client, component: &'static str) -> Self {
        Self {
            client,
            component,
            last_suffix: 0,
        }
    }

    /// Records one Event; logs instead of failing.
    pub async fn record(&mut self, about: &Involved<'_>, type_: &str, reason: &str, message: &str) {
        let now = jiff::Timestamp::now();
        // client-go names Events `<object>.<unix nanoseconds in hex>`.
        self.last_suffix = now.as_nanosecond().max(self.last_suffix + 1);
        let ev = build_event(
            about,
            self.component,
            type_,
            reason,
            message,
            now,
            self.last_suffix,
        );
        let api: Api<Event> = Api::namespaced(self.client.clone(), event_namespace(about));
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                debug!(object = %format!("{}/{}", about.namespace, about.name), reason, message, "event recorded")
            }
            Err(e) => warn!(
                object = %format!("{}/{}", about.namespace, about.name),
                reason, message, error = %e, "could not record event"
            ),
        }
    }
}
