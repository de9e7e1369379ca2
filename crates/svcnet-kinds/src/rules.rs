//! The declarative part of a kind's write rules: what the API server's generic handlers do
//! differently for it. The kind's code (status reset, defaulting, validation, allocations) is its
//! strategy in the API server; everything that is a plain yes/no or a name lives here, with the kind.

/// How the API server treats writes of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A `PUT` of a missing object creates it (kube's `AllowCreateOnUpdate`).
    pub create_on_update: bool,
    /// The rule `metadata.name` must follow.
    pub name: NameRule,
    /// Spec changes count in `metadata.generation` (starting at 1), which controllers report back as
    /// `status.observedGeneration`.
    pub tracks_generation: bool,
    /// What `DELETE` does.
    pub delete: DeleteRules,
    /// A warning every create and update of the kind answers with (kube's `Warning` header): what
    /// svcnet stores but does not act on, said instead of silently ignored.
    pub write_warning: Option<&'static str>,
}

/// The rule `metadata.name` must follow (kube's `ValidateObjectMeta` name functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS subdomain (RFC 1123), the default.
    DnsSubdomain,
    /// A DNS label (RFC 1035), as Service names must be.
    Dns1035Label,
    /// A namespace name.
    Namespace,
    /// A URL path segment (no `/` or `%`, not `.` or `..`), as RBAC object names are.
    PathSegment,
    /// An IP address, as IPAddress names are (kube's `ValidateIPAddressName`).
    IpAddress,
}

/// What `DELETE` does for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRules {
    /// Names that may never be deleted (the system namespaces).
    pub protected_names: &'static [&'static str],
    /// Deletion only marks the object (`deletionTimestamp`), finalizers or not; a controller finishes
    /// it (namespace finalization).
    pub always_marks: bool,
    /// `status.phase` of a marked object (a Namespace's `Terminating`).
    pub marked_phase: Option<&'static str>,
    /// Deletion waits for a grace period while the object's node stops it (pods).
    pub grace_period: bool,
    /// The answer is a `Status`, not the deleted object (kube does that for Events and Leases).
    pub answers_status: bool,
}

impl Rules {
    /// No special rules.
    pub const DEFAULT: Rules = Rules {
        create_on_update: false,
        name: NameRule::DnsSubdomain,
        tracks_generation: false,
        delete: DeleteRules::DEFAULT,
        write_warning: None,
    };
}

impl DeleteRules {
    /// Deletion at once, answered with the deleted object.
    pub const DEFAULT: DeleteRules = DeleteRules {
        protected_names: &[],
        always_marks: false,
        marked_phase: None,
        grace_period: false,
        answers_status: false,
    };
}
