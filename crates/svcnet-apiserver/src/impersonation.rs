//! Impersonation, as kube-apiserver's `WithImpersonation` filter: a request carrying
//! `Impersonate-User` (and optionally `Impersonate-Group`, `Impersonate-Uid`, `Impersonate-Extra-<key>`)
//! acts as that user once the requestor is authorized for each part with the verb `impersonate` — on
//! `users`, `serviceaccounts` (a `system:serviceaccount:NS:NAME` user), `groups` (core group) and
//! `uids`, `userextras/<key>` (`authentication.k8s.io`). `kubectl --as/--as-group/--as-uid` sends them.
//! A part the requestor may not impersonate gets kube's Forbidden for that part.

use std::collections::BTreeMap;

use http::HeaderMap;

use crate::ApiServer;
use crate::authn::{AUTHENTICATED, UserInfo};
use crate::authz::{self, rbac::Attributes};
use crate::errors::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const SA_PREFIX: &str = "system:serviceaccount:";
const ANONYMOUS: &str = "system:anonymous";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// One thing a request asks to impersonate (kube builds a `v1.ObjectReference` per header value).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    kind: &'static str,
    namespace: String,
    name: String,
    /// `authentication.k8s.io/v1` for UIDs and extras.
    api_version: &'static str,
    /// The extra's key.
    field_path: String,
}

impl Ask {
    fn new(kind: &'static str, name: &str) -> Self {
        Ask {
            kind,
            namespace: String::new(),
            name: name.to_string(),
            api_version: "",
            field_path: String::new(),
        }
    }

    /// Go's `%v` of the `ObjectReference` (kube puts it in one error message).
    fn go_format(&self) -> String {
        format!(
            "{{{} {} {}  {}  {}}}",
            self.kind, self.namespace, self.name, self.api_version, self.field_path
        )
    }

    /// The authorization attributes of impersonating this.
    fn attributes(&self) -> Attributes {
        let (group, resource, subresource) = match self.kind {
            "ServiceAccount" => ("", "serviceaccounts", ""),
            "User" => ("", "users", ""),
            "Group" => ("", "groups", ""),
            "UserExtra" => ("authentication.k8s.io", "userextras", self.field_path.as_str()),
            _ => ("authentication.k8s.io", "uids", ""),
        };
        Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            namespace: self.namespace.clone(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: self.name.clone(),
            path: String::new(),
        }
    }
}

/// A ServiceAccount's namespace and name from its user name (kube's `serviceaccount.SplitUsername`).
fn split_sa_username(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user.strip_prefix(SA_PREFIX)?.split_once(':')?;
    let valid = !name.contains(':')
        && svcnet_api::validation::name_is_dns_label(ns, false).is_empty()
        && svcnet_api::validation::name_is_dns_subdomain(name, false).is_empty();
    valid.then_some((ns, name))
}

/// Go's `url.PathUnescape`; `None` for a malformed escape.
fn path_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the headers ask to impersonate, in kube's order (`buildImpersonationRequests`).
fn asks(headers: &HeaderMap) -> Result<Vec<Ask>, ApiError> {
    let mut asks = Vec::new();
    let user = headers
        .get(USER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !user.is_empty() {
        asks.push(match split_sa_username(&user) {
            Some((ns, name)) => Ask {
                namespace: ns.to_string(),
                ..Ask::new("ServiceAccount", name)
            },
            None => Ask::new("User", &user),
        });
    }
    let mut others = false;
    for g in headers.get_all(GROUP) {
        others = true;
        asks.push(Ask::new("Group", &String::from_utf8_lossy(g.as_bytes())));
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        others = true;
        // Header names are lower case already; keys may be %-encoded to carry what headers cannot.
        let key = path_unescape(key).unwrap_or_else(|| key.to_string());
        asks.push(Ask {
            api_version: "authentication.k8s.io/v1",
            field_path: key,
            ..Ask::new("UserExtra", &String::from_utf8_lossy(value.as_bytes()))
        });
    }
    if let Some(uid) = headers.get(UID).filter(|v| !v.is_empty()) {
        others = true;
        asks.push(Ask {
            api_version: "authentication.k8s.io/v1",
            ..Ask::new("UID", &String::from_utf8_lossy(uid.as_bytes()))
        });
    }
    if others && user.is_empty() {
        let list: Vec<String> = asks.iter().map(Ask::go_format).collect();
        return Err(ApiError::internal(format!(
            "requested [{}] without impersonating a user",
            list.join(" ")
        )));
    }
    Ok(asks)
}

impl ApiServer {
    /// The user `requestor` acts as: `Ok(None)` without impersonation headers; the impersonated user
    /// once each part is allowed; kube's Forbidden for the first part that is not (or its 500 for
    /// groups, extras or a uid without a user).
    pub fn impersonate(
        &self,
        requestor: &UserInfo,
        headers: &HeaderMap,
    ) -> Result<Option<UserInfo>, ApiError> {
        let asks = asks(headers)?;
        if asks.is_empty() {
            return Ok(None);
        }
        let groups_given = headers.contains_key(GROUP);
        let mut user = UserInfo::default();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ask in &asks {
            let attrs = ask.attributes();
            if let Err(reason) = self.decide(requestor, &attrs) {
                return Err(authz::forbidden(requestor, &attrs, &reason));
            }
            match ask.kind {
                "ServiceAccount" => {
                    user.name = format!("{SA_PREFIX}{}:{}", ask.namespace, ask.name);
                    // A ServiceAccount's groups are known; given groups replace them.
                    if !groups_given {
                        user.groups.push("system:serviceaccounts".into());
                        user.groups
                            .push(format!("system:serviceaccounts:{}", ask.namespace));
                    }
                }
                "User" => user.name = ask.name.clone(),
                "Group" => user.groups.push(ask.name.clone()),
                "UserExtra" => extra
                    .entry(ask.field_path.clone())
                    .or_default()
                    .push(ask.name.clone()),
                _ => user.uid = ask.name.clone(),
            }
        }
        user.extra = extra;
        // kube: an impersonated user is authenticated unless it is anonymous or its groups say
        // otherwise.
        if user.name != ANONYMOUS {
            if !user
                .groups
                .iter()
                .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
            {
                user.groups.push(AUTHENTICATED.into());
            }
        } else if !user.in_group(UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.into());
        }
        Ok(Some(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_the_headers_as_kube_does() {
        let a = asks(&headers(&[
            ("Impersonate-User", "system:serviceaccount:team-a:robot"),
            ("Impersonate-Group", "dev"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Extra-Reason%2Fwhy", "audit"),
            ("Impersonate-Uid", "1234"),
        ]))
        .unwrap();
        let kinds: Vec<_> = a.iter().map(|a| (a.kind, a.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("ServiceAccount", "robot"),
                ("Group", "dev"),
                ("Group", "ops"),
                ("UserExtra", "audit"),
                ("UID", "1234")
            ]
        );
        assert_eq!(a[0].namespace, "team-a");
        assert_eq!(a[3].field_path, "reason/why");
        assert_eq!(a[3].attributes().subresource, "reason/why");
        assert_eq!(a[4].attributes().api_group, "authentication.k8s.io");
        // Not a valid ServiceAccount name: a plain user.
        let a = asks(&headers(&[("Impersonate-User", "system:serviceaccount:a:b:c")])).unwrap();
        assert_eq!(a[0].kind, "User");
        assert!(asks(&HeaderMap::new()).unwrap().is_empty());
        let e = asks(&headers(&[("Impersonate-Group", "dev")])).unwrap_err();
        assert_eq!(e.code, 500);
        assert_eq!(
            e.message,
            "Internal error occurred: requested [{Group  dev    }] without impersonating a user"
        );
    }

    #[test]
    fn unescapes_like_go() {
        assert_eq!(path_unescape("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(path_unescape("a+b").as_deref(), Some("a+b"));
        assert_eq!(path_unescape("a%2"), None);
    }
}
