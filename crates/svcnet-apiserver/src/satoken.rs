//! ServiceAccount tokens: the TokenRequest API (`POST …/serviceaccounts/NAME/token`, what
//! `kubectl create token` and the node agent call) and the authenticator that accepts the tokens.
//!
//! Tokens are JWTs with kube-apiserver's claims (`iss`, `sub` = `system:serviceaccount:NS:NAME`,
//! `aud`, `exp`, `iat`, `nbf`, `jti` and the private `kubernetes.io` claim naming the namespace, the
//! ServiceAccount and the bound pod), signed ES256 with a key kept in `DIR/pki/sa.key`. Like kube's
//! bound tokens they are checked on every request: the ServiceAccount and the bound pod must still
//! exist with the uids the token names, so deleting either revokes the token at once.

use std::path::Path;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use svcnet_api::field::FieldError;

use crate::ApiServer;
use crate::authn::UserInfo;
use crate::errors::ApiError;
use crate::handlers::Reply;
use crate::request::ResourceRoute;

/// The issuer and default audience of the tokens (kube-apiserver's defaults in kubeadm clusters).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A token's lifetime when the request names none (kube's one hour).
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// The shortest lifetime a request may ask for (kube's ten minutes).
const MIN_EXPIRATION: i64 = 600;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Errors loading the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The key could not be generated or parsed.
    #[error("service-account signing key: {0}")]
    Key(String),
}

/// Signs and verifies ServiceAccount tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    /// Loads `dir/pki/sa.key`, creating it on first start (the key survives restarts, and so do the
    /// tokens it signed).
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join("pki").join("sa.key");
        if !path.exists() {
            let key = rcgen::KeyPair::generate().map_err(|e| KeyError::Key(e.to_string()))?;
            crate::pki::write_private(&path, &key.serialize_pem())?;
        }
        let pem = std::fs::read_to_string(&path).map_err(|source| crate::pki::PkiError::Io {
            path: path.clone(),
            source,
        })?;
        let der = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| KeyError::Key(format!("{}: {e}", path.display())))?
            .serialize_der();
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| KeyError::Key(e.to_string()))?;
        // kube names the key by a hash of its public part.
        let kid = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            key.public_key().as_ref(),
        ));
        Ok(Signer { key, kid, rng })
    }

    /// A signed JWT carrying `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| ApiError::internal("signing the token failed"))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of a token this signer signed that is valid now (`now`, Unix seconds) for the API
    /// server's audience; `None` for anything else.
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        self.verify_for(token, now, &[ISSUER.to_string()])
            .map(|(claims, _)| claims)
    }

    /// The claims of a token this signer signed that is valid now for one of `audiences`, and the
    /// audiences it is valid for (those of its `aud` claim among `audiences`, as kube's authenticator
    /// intersects them); `None` for anything else.
    pub fn verify_for(&self, token: &str, now: i64, audiences: &[String]) -> Option<(Value, Vec<String>)> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(c).ok()?).ok()?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return None;
        }
        let valid_for: Vec<String> = claims
            .get("aud")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| audiences.iter().any(|x| x == a))
            .map(str::to_string)
            .collect();
        let exp = claims.get("exp").and_then(Value::as_i64)?;
        // kube allows a minute of clock skew on `nbf`.
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        (!valid_for.is_empty() && now < exp && nbf <= now + 60).then_some((claims, valid_for))
    }

    /// The public half of the key as a JSON Web Key Set (RFC 7517), what kube-apiserver serves at
    /// `/openid/v1/jwks` so that others can check its tokens without asking it.
    pub fn jwks(&self) -> Value {
        // ring gives the uncompressed SEC1 point: 0x04, then X and Y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64.encode(x),
            "y": B64.encode(y),
        }]})
    }
}

/// Where the key set is served: kube-apiserver's `serviceaccount.JWKSPath`.
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// The OpenID Connect discovery document kube-apiserver serves at
/// `/.well-known/openid-configuration` (ServiceAccountIssuerDiscovery): the issuer of the tokens and
/// where its keys are, `jwks_uri` on the API server's own address (`host`) as kube's default.
pub fn openid_configuration(host: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("https://{host}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn resource(plural: &str) -> &'static svcnet_api::resources::ResourceType {
    svcnet_api::resources::lookup("", "v1", plural).expect("core kinds are served")
}

impl ApiServer {
    /// The user a ServiceAccount token stands for, if it is one of ours, unexpired, for the API
    /// server's audience, and its ServiceAccount and bound pod still exist as they were when it was
    /// issued.
    pub(crate) fn authenticate_service_account(&self, token: &str) -> Option<UserInfo> {
        self.authenticate_service_account_for(token, &[ISSUER.to_string()])
            .map(|(user, _)| user)
    }

    /// [`Self::authenticate_service_account`] for a token meant for one of `audiences` (a TokenReview's):
    /// the user and the audiences the token is valid for.
    pub(crate) fn authenticate_service_account_for(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Option<(UserInfo, Vec<String>)> {
        let signer = self.sa_signer.as_ref()?;
        let (claims, valid_for) = signer.verify_for(token, unix_now(), audiences)?;
        let k = claims.get("kubernetes.io")?;
        let ns = str_at(k, "/namespace");
        let sa_name = str_at(k, "/serviceaccount/name");
        let sa_uid = str_at(k, "/serviceaccount/uid");
        let sa = self.cached(resource("serviceaccounts"), Some(ns), sa_name)?;
        if str_at(&sa, "/metadata/uid") != sa_uid || sa.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        let mut user = UserInfo {
            name: format!("system:serviceaccount:{ns}:{sa_name}"),
            uid: sa_uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
            ],
            ..Default::default()
        };
        if let Some(pod) = k.get("pod") {
            let (name, uid) = (str_at(pod, "/name"), str_at(pod, "/uid"));
            let live = self.cached(resource("pods"), Some(ns), name)?;
            if str_at(&live, "/metadata/uid") != uid {
                return None;
            }
            // A terminating pod's token works until its grace period ends, as kube's does.
            if let Some(at) = live
                .pointer("/metadata/deletionTimestamp")
                .and_then(Value::as_str)
                && at
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t.as_second() <= unix_now())
            {
                return None;
            }
            user.extra
                .insert("authentication.kubernetes.io/pod-name".into(), vec![name.into()]);
            user.extra
                .insert("authentication.kubernetes.io/pod-uid".into(), vec![uid.into()]);
        }
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            user.extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={jti}")],
            );
        }
        Some((user, valid_for))
    }

    /// `POST …/serviceaccounts/NAME/token`: issues a token for the ServiceAccount, bound to a pod if
    /// the request names one, and answers the TokenRequest with the token in its status.
    pub fn token_request(&self, route: &ResourceRoute, mut req: Value) -> Result<Reply, ApiError> {
        let Some(signer) = self.sa_signer.as_ref() else {
            return Err(ApiError::not_implemented(
                "this server issues no service-account tokens",
            ));
        };
        let ns = route.namespace.clone().unwrap_or_default();
        let name = route.name.clone().unwrap_or_default();
        let kind = req.get("kind").and_then(Value::as_str).unwrap_or("TokenRequest");
        let api_version = req
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("authentication.k8s.io/v1");
        if kind != "TokenRequest" || api_version != "authentication.k8s.io/v1" {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version (authentication.k8s.io/v1)"
            )));
        }
        let sa = self
            .cached(resource("serviceaccounts"), Some(&ns), &name)
            .ok_or_else(|| ApiError::not_found(resource("serviceaccounts"), &name))?;
        let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
        let mut errs = Vec::new();
        let expiration = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION,
            Some(v) => match v.as_i64() {
                Some(s) if s < MIN_EXPIRATION => {
                    errs.push(FieldError::invalid(
                        "spec.expirationSeconds",
                        s,
                        "may not specify a duration less than 10 minutes",
                    ));
                    s
                }
                Some(s) if s > 1 << 32 => {
                    errs.push(FieldError::invalid(
                        "spec.expirationSeconds",
                        s,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                    s
                }
                Some(s) => s,
                None => return Err(ApiError::bad_request("spec.expirationSeconds must be an integer")),
            },
        };
        let audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| vec![ISSUER.to_string()]);
        let mut pod_claim = None;
        if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            let (bkind, bname, buid) = (
                str_at(bound, "/kind"),
                str_at(bound, "/name"),
                str_at(bound, "/uid"),
            );
            match bkind {
                "Pod" => {
                    let pod = self
                        .cached(resource("pods"), Some(&ns), bname)
                        .ok_or_else(|| ApiError::not_found(resource("pods"), bname))?;
                    let uid = str_at(&pod, "/metadata/uid");
                    if !buid.is_empty() && buid != uid {
                        return Err(ApiError::conflict_msg(
                            resource("pods"),
                            bname,
                            &format!(
                                "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                            ),
                        ));
                    }
                    let pod_sa = pod
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or("default");
                    if pod_sa != name {
                        return Err(ApiError::bad_request(format!(
                            "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                        )));
                    }
                    pod_claim = Some(json!({"name": bname, "uid": uid}));
                }
                other => {
                    errs.push(FieldError::not_supported(
                        "spec.boundObjectRef.kind",
                        other,
                        &["Pod"],
                    ));
                }
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                &name,
                &errs,
            ));
        }
        let now = unix_now();
        let exp = now + expiration;
        let mut k = json!({
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": str_at(&sa, "/metadata/uid")},
        });
        if let Some(p) = pod_claim {
            k["pod"] = p;
        }
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": now,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k,
            "nbf": now,
            "sub": format!("system:serviceaccount:{ns}:{name}"),
        });
        let token = signer.sign(&claims)?;
        let map = req
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("a TokenRequest must be a JSON object"))?;
        map.insert("kind".into(), json!("TokenRequest"));
        map.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        map.insert(
            "metadata".into(),
            json!({"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)}),
        );
        let mut spec = spec;
        spec["audiences"] = json!(audiences);
        spec["expirationSeconds"] = json!(expiration);
        map.insert("spec".into(), spec);
        map.insert(
            "status".into(),
            json!({"token": token, "expirationTimestamp": rfc3339(exp)}),
        );
        Ok(Reply {
            code: 201,
            body: req,
            warnings: Vec::new(),
            raw: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let again = Signer::load_or_create(dir.path()).unwrap();
        let claims = json!({"iss": ISSUER, "aud": [ISSUER], "exp": 2000, "nbf": 1000});
        let t = s.sign(&claims).unwrap();
        assert_eq!(
            again.verify(&t, 1500),
            Some(claims.clone()),
            "the key survives a restart"
        );
        assert!(s.verify(&t, 2000).is_none(), "expired");
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join("pki")).unwrap();
        let forged = Signer::load_or_create(other.path())
            .unwrap()
            .sign(&claims)
            .unwrap();
        assert!(s.verify(&forged, 1500).is_none(), "another key");
        let wrong_aud = s
            .sign(&json!({"iss": ISSUER, "aud": ["x"], "exp": 2000}))
            .unwrap();
        assert!(s.verify(&wrong_aud, 1500).is_none(), "another audience");
        let vault = s
            .sign(&json!({"iss": ISSUER, "aud": ["vault", "x"], "exp": 2000}))
            .unwrap();
        assert!(s.verify(&vault, 1500).is_none(), "not the API server's audience");
        let (_, valid_for) = s
            .verify_for(&vault, 1500, &["vault".to_string(), "y".to_string()])
            .unwrap();
        assert_eq!(valid_for, ["vault"], "the audiences asked for that the token has");
        assert!(s.verify("a.b.c", 1500).is_none());
        assert!(s.verify(&format!("{t}x"), 1500).is_none());
    }

    /// The key set holds the very key that signs: a token verifies against the published X and Y.
    #[test]
    fn jwks_publishes_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let jwks = s.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        let mut point = vec![4u8];
        point.extend(B64.decode(key["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(key["y"].as_str().unwrap()).unwrap());
        let t = s.sign(&json!({"iss": ISSUER})).unwrap();
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], key["kid"]);
        let (input, sig) = t.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .expect("the published key verifies the token");
        let doc = openid_configuration("10.0.0.1:6443");
        assert_eq!(doc["issuer"], ISSUER);
        assert_eq!(doc["jwks_uri"], "https://10.0.0.1:6443/openid/v1/jwks");
    }
}
