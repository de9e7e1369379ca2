//! The three non-apply patch types kube-apiserver accepts on PATCH, as pure
//! functions over `serde_json::Value`:
//!
//! * JSON patch (`application/json-patch+json`, RFC 6902): [`json_patch()`];
//! * JSON merge patch (`application/merge-patch+json`, RFC 7386):
//!   [`merge_patch`];
//! * strategic merge patch (`application/strategic-merge-patch+json`), as
//!   apimachinery's `strategicpatch` applies it on the server:
//!   [`strategic_merge_patch`], driven by the per-kind metadata in
//!   [`schema`].
//!
//! [`apply_patch`] takes a request body and the patch type and returns the
//! patched object or a [`PatchError`] that knows the HTTP status, Status
//! reason and message kube-apiserver would answer with.

mod error;
mod gofmt;
mod jsonpatch;
mod mergepatch;
pub mod schema;
mod strategic;

use serde_json::Value;

pub use error::PatchError;
pub use jsonpatch::{MAX_JSON_PATCH_OPERATIONS, json_patch};
pub use mergepatch::merge_patch;
pub use strategic::{strategic_merge_patch, strategic_merge_patch_with_schema};

/// The patch types handled here (server-side apply is handled elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchKind {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchKind {
    /// The patch kind of a request's `Content-Type`, ignoring parameters
    /// such as `; charset=utf-8`; `None` for anything else (kube answers
    /// 415 Unsupported Media Type).
    pub fn from_content_type(content_type: &str) -> Option<PatchKind> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        [PatchKind::Json, PatchKind::Merge, PatchKind::StrategicMerge]
            .into_iter()
            .find(|k| k.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type of this patch kind.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchKind::Json => "application/json-patch+json",
            PatchKind::Merge => "application/merge-patch+json",
            PatchKind::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

/// Applies the patch in `patch_body` (the raw request body) to `original`.
///
/// For strategic merge patch the metadata comes from the object's
/// `apiVersion` and `kind`; see [`strategic_merge_patch`].
///
/// ```
/// use serde_json::json;
/// use svcnet_patch::{PatchKind, apply_patch};
///
/// let svc = json!({
///     "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
///     "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}
/// });
/// let kind = PatchKind::from_content_type("application/strategic-merge-patch+json").unwrap();
/// let out = apply_patch(kind, &svc, br#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#).unwrap();
/// assert_eq!(out["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 443}]));
///
/// let err = apply_patch(PatchKind::Json, &svc, br#"[{"op":"test","path":"/kind","value":"Pod"}]"#)
///     .unwrap_err();
/// assert_eq!(err.http_status(), 422);
/// ```
pub fn apply_patch(kind: PatchKind, original: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    let patch: Result<Value, _> = serde_json::from_slice(patch_body);
    match kind {
        PatchKind::Json => {
            let patch = patch.map_err(|e| PatchError::DecodePatch(e.to_string()))?;
            json_patch(original, &patch)
        }
        PatchKind::Merge => {
            let patch = patch.map_err(|e| PatchError::DecodePatch(e.to_string()))?;
            mergepatch::merge_patch_body(original, &patch)
        }
        PatchKind::StrategicMerge => {
            let patch = patch.map_err(|e| PatchError::DecodeStrategicPatch(e.to_string()))?;
            strategic_merge_patch(original, &patch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "finalizers": ["a"]},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}
        })
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/json-patch+json"),
            Some(PatchKind::Json)
        );
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("Application/Strategic-Merge-Patch+JSON"),
            Some(PatchKind::StrategicMerge)
        );
        assert_eq!(PatchKind::from_content_type("application/apply-patch+yaml"), None);
        assert_eq!(PatchKind::from_content_type("application/json"), None);
        assert_eq!(PatchKind::from_content_type(""), None);
        for k in [PatchKind::Json, PatchKind::Merge, PatchKind::StrategicMerge] {
            assert_eq!(PatchKind::from_content_type(k.content_type()), Some(k));
        }
    }

    #[test]
    fn apply_each_kind() {
        let out = apply_patch(
            PatchKind::Json,
            &svc(),
            br#"[{"op":"replace","path":"/spec/ports/1/port","value":8443}]"#,
        )
        .unwrap();
        assert_eq!(out["spec"]["ports"][1]["port"], json!(8443));

        let out = apply_patch(PatchKind::Merge, &svc(), br#"{"spec":{"ports":[{"port":81}]}}"#).unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port": 81}]));

        let out = apply_patch(
            PatchKind::StrategicMerge,
            &svc(),
            br#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }

    #[test]
    fn undecodable_bodies_are_400() {
        for kind in [PatchKind::Json, PatchKind::Merge, PatchKind::StrategicMerge] {
            for body in [&b"{"[..], b"", b"not json"] {
                let err = apply_patch(kind, &svc(), body).unwrap_err();
                assert_eq!(err.http_status(), 400, "{kind:?} {err}");
                assert_eq!(err.reason(), "BadRequest");
            }
        }
        let err = apply_patch(PatchKind::Json, &svc(), b"{").unwrap_err();
        assert!(err.to_string().starts_with("error decoding patch: "), "{err}");
        let err = apply_patch(PatchKind::StrategicMerge, &svc(), b"[1]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
    }

    #[test]
    fn null_bodies() {
        assert_eq!(apply_patch(PatchKind::Json, &svc(), b"null").unwrap(), svc());
        assert_eq!(
            apply_patch(PatchKind::StrategicMerge, &svc(), b"null").unwrap(),
            svc()
        );
        assert_eq!(
            apply_patch(PatchKind::Merge, &svc(), b"null").unwrap_err(),
            PatchError::InvalidMergePatch
        );
    }
}
