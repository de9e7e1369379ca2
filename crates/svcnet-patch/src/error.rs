//! The error type shared by every patch type, with the HTTP status, Status
//! `reason` and Status `message` kube-apiserver would answer with.
//!
//! kube-apiserver classifies patch failures in
//! `k8s.io/apiserver/pkg/endpoints/handlers/patch.go`: undecodable bodies are
//! 400 BadRequest, a JSON patch that cannot be applied is a generic 422, a JSON
//! patch with too many operations is 413, and strategic merge patch errors are
//! sorted by `interpretStrategicMergePatchError` into 400 / 422; everything it
//! does not recognise falls through to a plain 500 whose message is the raw
//! error text. The `Display` texts below are the Go error texts.

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The body of a JSON patch or JSON merge patch is not valid JSON of the
    /// expected shape. kube: 400 BadRequest, `error decoding patch: ...`.
    #[error("error decoding patch: {0}")]
    DecodePatch(String),

    /// The body of a strategic merge patch is not valid JSON or not a JSON
    /// object. kube: 400 BadRequest with the bare decoder message.
    #[error("{0}")]
    DecodeStrategicPatch(String),

    /// A JSON merge patch body that is JSON `null` (evanphx/json-patch's
    /// `errBadJSONPatch`). kube: 400 BadRequest.
    #[error("Invalid JSON Patch")]
    InvalidMergePatch,

    /// A JSON patch with more operations than kube-apiserver accepts.
    /// kube: 413 RequestEntityTooLarge.
    #[error("The allowed maximum operations in a JSON patch is {max}, got {got}")]
    TooManyOperations {
        /// The limit (10000 in kube-apiserver).
        max: usize,
        /// How many operations the patch has.
        got: usize,
    },

    /// A JSON patch operation failed (a `test` that did not match, a path
    /// that does not exist, an unknown `op`, ...). kube: 422 with the generic
    /// message "the server rejected our request due to an error in our
    /// request"; the detailed text here is what evanphx/json-patch reports.
    #[error("{0}")]
    JsonPatchFailed(String),

    /// The object being strategically patched is not a JSON object
    /// (`mergepatch.ErrBadJSONDoc`). kube: 400 BadRequest.
    #[error("invalid JSON document")]
    InvalidDocument,

    /// A `$deleteFromPrimitiveList/...` key is malformed
    /// (`mergepatch.ErrBadPatchFormatForPrimitiveList`). kube: 400 BadRequest.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveListFormat,

    /// `$retainKeys` is not a list, or the patch sets a field the list does
    /// not retain (`mergepatch.ErrBadPatchFormatForRetainKeys`).
    /// kube: 400 BadRequest.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeysFormat,

    /// A `$setElementOrder...` key is malformed
    /// (`mergepatch.ErrBadPatchFormatForSetElementOrderList`).
    /// kube: 400 BadRequest.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrderFormat,

    /// A list whose items are lists (`mergepatch.ErrNoListOfLists`).
    /// kube: 422 with the generic "rejected our request" message.
    #[error("lists of lists are not supported")]
    ListOfLists,

    /// A list item (or `$setElementOrder` entry) of a list merged by key
    /// lacks the merge key (`mergepatch.ErrNoMergeKey`). kube: 500.
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The offending item, printed like Go's `%v` of a map.
        map: String,
        /// The merge key the schema declares.
        key: String,
    },

    /// `$patch` with a value other than `replace` or `delete` on a map
    /// (`mergepatch.ErrBadPatchType`); note that kube rejects `$patch: merge`
    /// on maps with this error too. kube: 500.
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownDirective {
        /// The directive value, printed like Go's `%s`.
        directive: String,
        /// The map carrying it, printed like Go's `%v`.
        map: String,
    },

    /// `$patch: merge` on an item of a list merged by key, which apimachinery
    /// has never implemented. kube: 500.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,

    /// The patch list and its `$setElementOrder` list disagree on the order
    /// of the items they share. kube: 500.
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    SetElementOrderMismatch {
        /// The patch list, printed like Go's `%v`.
        patch: String,
        /// The `$setElementOrder` list, printed like Go's `%v`.
        order: String,
    },

    /// The items of a merged list (original and patch together) are not all
    /// of one JSON type. kube: 500.
    #[error("list element types are not identical: {0}")]
    MixedListElements(String),

    /// A value has the wrong JSON type for its place in the patch
    /// (`mergepatch.ErrBadArgType`), e.g. a `$setElementOrder` that is not a
    /// list. kube: 500.
    #[error("expected a {expected}, but received a {actual}")]
    WrongType {
        /// The Go type apimachinery expected.
        expected: &'static str,
        /// The Go type it got.
        actual: &'static str,
    },

    /// A list is declared `patchStrategy: merge` over objects but no merge key
    /// is known for it. Cannot happen with the built-in tables. kube: 500.
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKeyDeclared(String),
}

/// The message kube-apiserver puts in a Status for a generic 422 response.
const GENERIC_UNPROCESSABLE: &str = "the server rejected our request due to an error in our request";

impl PatchError {
    /// The HTTP status code kube-apiserver answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::DecodePatch(_)
            | Self::DecodeStrategicPatch(_)
            | Self::InvalidMergePatch
            | Self::InvalidDocument
            | Self::BadPrimitiveListFormat
            | Self::BadRetainKeysFormat
            | Self::BadSetElementOrderFormat => 400,
            Self::TooManyOperations { .. } => 413,
            Self::JsonPatchFailed(_) | Self::ListOfLists => 422,
            Self::MissingMergeKey { .. }
            | Self::UnknownDirective { .. }
            | Self::MergeDirectiveInList
            | Self::SetElementOrderMismatch { .. }
            | Self::MixedListElements(_)
            | Self::WrongType { .. }
            | Self::NoMergeKeyDeclared(_) => 500,
        }
    }

    /// The `reason` of the Status kube-apiserver answers with. The 500s are
    /// errors kube never wrapped in a Status, which it reports with an empty
    /// (`Unknown`) reason.
    pub fn reason(&self) -> &'static str {
        match self.http_status() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            422 => "Invalid",
            _ => "",
        }
    }

    /// The `message` of the Status kube-apiserver answers with. For the 422s
    /// kube discards the detail and sends a fixed text; `Display` keeps it.
    pub fn status_message(&self) -> String {
        match self.http_status() {
            422 => GENERIC_UNPROCESSABLE.to_owned(),
            413 => format!("Request entity too large: {self}"),
            _ => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_are_bad_request() {
        let e = PatchError::DecodePatch("unexpected end of JSON input".into());
        assert_eq!(e.http_status(), 400);
        assert_eq!(e.reason(), "BadRequest");
        assert_eq!(
            e.status_message(),
            "error decoding patch: unexpected end of JSON input"
        );
        assert_eq!(PatchError::InvalidMergePatch.to_string(), "Invalid JSON Patch");
        assert_eq!(PatchError::InvalidMergePatch.http_status(), 400);
    }

    #[test]
    fn json_patch_failure_is_generic_422() {
        let e = PatchError::JsonPatchFailed("testing value /a failed: test failed".into());
        assert_eq!(e.http_status(), 422);
        assert_eq!(e.reason(), "Invalid");
        assert_eq!(e.status_message(), GENERIC_UNPROCESSABLE);
        assert_eq!(e.to_string(), "testing value /a failed: test failed");
    }

    #[test]
    fn too_many_operations_is_413() {
        let e = PatchError::TooManyOperations {
            max: 10000,
            got: 10001,
        };
        assert_eq!(e.http_status(), 413);
        assert_eq!(e.reason(), "RequestEntityTooLarge");
        assert_eq!(
            e.status_message(),
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn smp_errors_follow_interpret_strategic_merge_patch_error() {
        for e in [
            PatchError::InvalidDocument,
            PatchError::BadPrimitiveListFormat,
            PatchError::BadRetainKeysFormat,
            PatchError::BadSetElementOrderFormat,
        ] {
            assert_eq!(e.http_status(), 400, "{e}");
        }
        assert_eq!(PatchError::ListOfLists.http_status(), 422);
        let e = PatchError::MissingMergeKey {
            map: "map[value:b]".into(),
            key: "name".into(),
        };
        assert_eq!(e.http_status(), 500);
        assert_eq!(e.reason(), "");
        assert_eq!(
            e.status_message(),
            "map: map[value:b] does not contain declared merge key: name"
        );
    }
}
