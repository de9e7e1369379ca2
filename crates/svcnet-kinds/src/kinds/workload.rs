//! What the apps/v1 workload kinds (Deployment, ReplicaSet) share.

use crate::apply::{Structs, conditions, r, st};

/// Server-side apply's structs of a workload's spec and status.
pub fn structs(s: &mut Structs) {
    super::pod::template_structs(s);
    s.insert(
        "DeploymentSpec",
        st(vec![
            ("selector", r("LabelSelector")),
            ("template", r("PodTemplateSpec")),
        ]),
    );
    s.insert("WorkloadStatus", st(vec![("conditions", conditions())]));
}
