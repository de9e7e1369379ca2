//! Authentication: who a request comes from, as kube-apiserver decides it.
//!
//! The authenticators are tried in kube-apiserver's order and the first that recognises the request
//! wins: an X.509 client certificate signed by the cluster CA (CN = user name, O = groups; rustls has
//! already verified the chain during the handshake, see [`crate::pki::server_config`]), then the bearer
//! token — the admin token (a member of `system:masters`), a token from the static token file
//! (`--token-auth-file`), or a ServiceAccount token ([`crate::satoken`]). Every authenticated user also
//! gets the group `system:authenticated`, as kube's group adder gives it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The group whose members may do everything (kube's privileged group, checked before RBAC).
pub const MASTERS: &str = "system:masters";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The admin token's user name (the kubeconfig's user is called the same).
pub const ADMIN_USER: &str = "svcnet-admin";
/// Who the API server is toward node agents (kube-apiserver's `--kubelet-client-certificate` CN): the
/// credential it presents for `pods/log`, `exec`, `attach` and `portforward` authenticates as this user,
/// which RBAC grants nothing, so that a node agent without the admin token (a node that joined with its
/// own certificate) can check the credential with a TokenReview, as a kubelet's webhook authentication
/// does.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The user of a request without credentials where anonymous requests are allowed.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of [`ANONYMOUS_USER`].
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// Where a request without credentials is `system:anonymous` (and RBAC decides) instead of getting 401:
/// kube-apiserver's anonymous authenticator limited to these paths, as its structured authentication
/// configuration (`anonymous: {enabled: true, conditions: [{path: …}]}`) does. The cluster-info
/// ConfigMap is how a joining node finds the cluster's CA (kubeadm's discovery by token).
pub const ANONYMOUS_PATHS: &[&str] = &["/api/v1/namespaces/kube-public/configmaps/cluster-info"];

/// Who a request comes from (kube's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// A unique id, if the authenticator gives one.
    pub uid: String,
    /// The groups the user is in.
    pub groups: Vec<String>,
    /// Further attributes (a ServiceAccount token's pod name, say).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user of `name` in `groups`, without uid or extras.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        UserInfo {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo::new(ANONYMOUS_USER, &[UNAUTHENTICATED])
    }

    /// Adds `system:authenticated` unless the user has it (kube's `AuthenticatedGroupAdder`).
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.to_string());
        }
        self
    }

    /// Whether the user is in the group.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The user as `authentication.k8s.io/v1` `UserInfo` renders it (SelfSubjectReview, TokenReview).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// Errors reading the static token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record is malformed (kube's wording where kube has one).
    #[error("{0}")]
    Format(String),
}

/// Reads a static token file in kube-apiserver's `--token-auth-file` CSV format: `token,user,uid` and an
/// optional fourth column of comma-separated groups (quoted when it has more than one). Records with an
/// empty token are skipped, a repeated token keeps its last record (both with a warning, as kube does).
pub fn read_token_file(path: &Path) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        // Go's csv reader skips empty lines.
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_csv_line(line)
            .map_err(|e| TokenFileError::Format(format!("record on line {}: {e}", i + 1)))?;
        if record.len() < 3 {
            return Err(TokenFileError::Format(format!(
                "token file '{}' must have at least 3 columns (token, user name, user uid), found {}",
                path.display(),
                record.len()
            )));
        }
        if record[0].is_empty() {
            tracing::warn!(file = %path.display(), line = i + 1, "empty token in the token file; record skipped");
            continue;
        }
        let mut user = UserInfo {
            name: record[1].clone(),
            uid: record[2].clone(),
            ..Default::default()
        };
        if let Some(groups) = record.get(3) {
            user.groups = groups.split(',').map(str::to_string).collect();
        }
        if tokens.insert(record[0].clone(), user).is_some() {
            tracing::warn!(file = %path.display(), line = i + 1, "duplicate token in the token file; the last record wins");
        }
    }
    Ok(tokens)
}

/// Splits one CSV record (RFC 4180 quoting, as Go's `encoding/csv` reads it).
fn parse_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
            out.push(field);
        }
    }
}

/// The user a verified client certificate names: CN is the user, each O a group (kube's
/// `CommonNameUserConversion`). `None` for a certificate without a common name.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(UserInfo {
        name,
        groups,
        ..Default::default()
    })
}

/// When a client certificate stops being valid (seconds since the epoch). The certificate is checked
/// once per connection; a connection that outlives it is no longer its user's (kube's x509
/// authenticator checks the time on every request, so a renewed certificate must bring new connections).
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The bearer token of an `Authorization` header, as kube's bearer token authenticator reads it: the
/// scheme is case-insensitive, and the token is the word after it (split on single spaces, so
/// "Bearer  x" carries an empty, invalid token).
pub fn bearer_token(header: &str) -> Option<&str> {
    let mut parts = header.trim().splitn(3, ' ');
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return None;
    };
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tokens known without looking anything up: the admin token and the static token file.
pub struct StaticTokens {
    admin: String,
    file: HashMap<String, UserInfo>,
}

impl StaticTokens {
    /// The admin token and the records of the token file (empty without `--token-auth-file`).
    pub fn new(admin: String, file: HashMap<String, UserInfo>) -> Self {
        StaticTokens { admin, file }
    }

    /// The user a token belongs to, if it is one of these.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        if constant_time_eq(token, &self.admin) {
            return Some(UserInfo::new(ADMIN_USER, &[MASTERS]));
        }
        self.file.get(token).cloned()
    }

    /// The admin token.
    pub fn admin(&self) -> &str {
        &self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records() {
        assert_eq!(parse_csv_line("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            parse_csv_line(r#"t,alice,1,"dev,ops""#).unwrap(),
            ["t", "alice", "1", "dev,ops"]
        );
        assert_eq!(parse_csv_line(r#""a""b",c"#).unwrap(), ["a\"b", "c"]);
        assert!(parse_csv_line(r#"a,"b"#).is_err());
        assert!(parse_csv_line(r#"a,b"c"#).is_err());
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "t1,alice,u1,\"dev,ops\"\n\nt2,bob,u2\n,nobody,u3\n").unwrap();
        let t = read_token_file(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["t1"].groups, ["dev", "ops"]);
        assert_eq!(t["t2"].name, "bob");
        assert!(t["t2"].groups.is_empty());
        std::fs::write(&p, "t1,alice\n").unwrap();
        let e = read_token_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("must have at least 3 columns (token, user name, user uid), found 2"),
            "{e}"
        );
    }

    #[test]
    fn bearer() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer  abc"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        let s = StaticTokens::new("admin".into(), HashMap::new());
        let u = s.lookup("admin").unwrap().authenticated();
        assert_eq!(u.groups, [MASTERS, AUTHENTICATED]);
        assert!(s.lookup("other").is_none());
    }
}
