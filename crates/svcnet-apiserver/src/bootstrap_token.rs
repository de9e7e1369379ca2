//! Bootstrap tokens, as kube-apiserver's `--enable-bootstrap-token-auth`: a token `ID.SECRET`
//! (`[a-z0-9]{6}.[a-z0-9]{16}`) is valid while the Secret `kube-system/bootstrap-token-ID` of type
//! `bootstrap.kubernetes.io/token` holds that secret, allows authentication
//! (`usage-bootstrap-authentication: "true"`) and has not expired (`expiration`, RFC 3339). It stands
//! for the user `system:bootstrap:ID` in `system:bootstrappers` and the Secret's `auth-extra-groups`
//! (each must start with `system:bootstrappers:`). Joining nodes use it until they have their own
//! certificate (`svcnet token create` makes one).

use base64::Engine;
use serde_json::Value;

use crate::ApiServer;
use crate::authn::{UserInfo, constant_time_eq};

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// The group every bootstrap token's user is in.
pub const GROUP: &str = "system:bootstrappers";

/// `ID.SECRET` split, if the token has a bootstrap token's shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A data entry of a Secret as stored (base64), decoded.
fn data(secret: &Value, key: &str) -> Option<String> {
    let enc = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(enc).ok()?;
    String::from_utf8(raw).ok()
}

/// The user the bootstrap token Secret `secret` makes of `token_secret` at `now` (Unix seconds).
pub fn user_of(secret: &Value, id: &str, token_secret: &str, now: i64) -> Option<UserInfo> {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || secret.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    if data(secret, "token-id").as_deref() != Some(id)
        || !constant_time_eq(&data(secret, "token-secret")?, token_secret)
        || data(secret, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(exp) = data(secret, "expiration") {
        // An expiration that does not parse is an expired token, as kube treats it.
        match exp.parse::<jiff::Timestamp>() {
            Ok(t) if t.as_second() > now => {}
            _ => return None,
        }
    }
    let mut groups = vec![GROUP.to_string()];
    if let Some(extra) = data(secret, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !g.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    Some(UserInfo {
        name: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    })
}

impl ApiServer {
    /// The user a bootstrap token stands for, if its Secret in `kube-system` allows it now.
    pub(crate) fn authenticate_bootstrap_token(&self, token: &str) -> Option<UserInfo> {
        let (id, secret) = parse(token)?;
        let rt = svcnet_api::resources::lookup("", "v1", "secrets")?;
        let stored = self.cached(rt, Some("kube-system"), &format!("bootstrap-token-{id}"))?;
        let now = jiff::Timestamp::now().as_second();
        user_of(&stored, id, secret, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: &str, extra: &str) -> Value {
        json!({"type": SECRET_TYPE, "data": {
            "token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"),
            "expiration": b64(expiration), "auth-extra-groups": b64(extra)}})
    }

    #[test]
    fn tokens_are_checked_as_kube_checks_them() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.0123456789abcde"), None);
        let now = "2030-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        let s = secret(
            "2030-01-02T00:00:00Z",
            "system:bootstrappers:svcnet:default-node-token",
        );
        let u = user_of(&s, "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:svcnet:default-node-token"
            ]
        );
        assert!(user_of(&s, "abcdef", "0123456789abcdeX", now).is_none());
        assert!(
            user_of(
                &secret("2029-12-31T00:00:00Z", ""),
                "abcdef",
                "0123456789abcdef",
                now
            )
            .is_none()
        );
        assert!(
            user_of(
                &secret("2030-01-02T00:00:00Z", "system:masters"),
                "abcdef",
                "0123456789abcdef",
                now
            )
            .is_none()
        );
        let mut opaque = s.clone();
        opaque["type"] = json!("Opaque");
        assert!(user_of(&opaque, "abcdef", "0123456789abcdef", now).is_none());
    }
}
