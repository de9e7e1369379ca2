//! kube-controller-manager's bootstrap signer: the ConfigMap `kube-public/cluster-info` (the cluster's
//! address and CA as a kubeconfig, which anyone may read) carries, for every bootstrap token that allows
//! signing (`usage-bootstrap-signing: "true"`, not expired), a detached JWS of that kubeconfig keyed by
//! the token's secret (`jws-kubeconfig-<token-id>`). A joining node that knows the token can so tell
//! the real cluster-info from a forged one before it trusts the CA in it; [`verify_detached`] is its
//! side. Signatures of tokens that are gone are removed.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use svcnet_informer::{Event, Informer};
use tracing::{debug, warn};

/// The namespace and name of the ConfigMap.
pub const CLUSTER_INFO: (&str, &str) = ("kube-public", "cluster-info");
/// The data key of the kubeconfig in it.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The prefix of each token's signature key.
pub const JWS_PREFIX: &str = "jws-kubeconfig-";
/// The Secret type of bootstrap tokens.
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// kube's `ComputeDetachedSignature`: a compact HS256 JWS of `content` with key `token_secret` and
/// `kid` `token_id`, the payload left out (`header..signature`).
pub fn sign_detached(content: &str, token_id: &str, token_secret: &str) -> String {
    let header = b64url(json!({"alg": "HS256", "kid": token_id}).to_string().as_bytes());
    let signing_input = format!("{header}.{}", b64url(content.as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{header}..{}", b64url(tag.as_ref()))
}

/// Whether `jws` is a valid detached HS256 signature of `content` by the token (kubeadm's
/// `DetachedTokenIsValid`): the header must name HS256 and the token's id.
pub fn verify_detached(jws: &str, content: &str, token_id: &str, token_secret: &str) -> bool {
    let mut parts = jws.split('.');
    let (Some(header), Some(""), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header_json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let Ok(h) = serde_json::from_slice::<Value>(&header_json) else {
        return false;
    };
    if h["alg"] != "HS256" || h["kid"] != token_id {
        return false;
    }
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let signing_input = format!("{header}.{}", b64url(content.as_bytes()));
    ring::hmac::verify(&key, signing_input.as_bytes(), &sig).is_ok()
}

/// The `(id, secret)` of a bootstrap token Secret that may sign now (`now`: Unix seconds).
pub fn signing_token(secret: &Secret, now: i64) -> Option<(String, String)> {
    if secret.type_.as_deref() != Some(TOKEN_TYPE) || secret.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
    if get("usage-bootstrap-signing").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = get("expiration") {
        match exp.parse::<jiff::Timestamp>() {
            Ok(t) if t.as_second() > now => {}
            _ => return None,
        }
    }
    let id = get("token-id")?;
    (secret.metadata.name.as_deref() == Some(&format!("bootstrap-token-{id}"))).then_some(())?;
    Some((id, get("token-secret")?))
}

/// The signatures `cluster-info` should carry for these tokens.
pub fn wanted_signatures(kubeconfig: &str, tokens: &[(String, String)]) -> BTreeMap<String, String> {
    tokens
        .iter()
        .map(|(id, secret)| (format!("{JWS_PREFIX}{id}"), sign_detached(kubeconfig, id, secret)))
        .collect()
}

/// Runs the signer until the watches end: on every change of `cluster-info` or of a Secret in
/// `kube-system`, and every 30 s (tokens expire without an event), brings the signatures in line.
pub async fn run_bootstrap_signer(client: Client) {
    let (ns, name) = CLUSTER_INFO;
    let maps: Informer<ConfigMap> = Informer::new(crate::trim_managed_fields);
    maps.spawn_with(
        Api::namespaced(client.clone(), ns),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}")),
    );
    let secrets: Informer<Secret> = Informer::new(crate::trim_managed_fields);
    secrets.spawn(Api::namespaced(client.clone(), "kube-system"));
    let (mut map_events, mut secret_events) = (maps.subscribe(), secrets.subscribe());
    let (map_store, secret_store) = (maps.store(), secrets.store());
    secret_store.wait_until_synced().await;
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            ev = map_events.recv() => if ev.is_none() { return },
            ev = secret_events.recv() => match ev {
                None => return,
                Some(Event::Listed) => {}
                Some(_) => {}
            },
            _ = tick.tick() => {}
        }
        let Some(cm) = map_store.get_named(ns, name) else {
            continue;
        };
        let data = cm.data.clone().unwrap_or_default();
        let Some(kubeconfig) = data.get(KUBECONFIG_KEY) else {
            continue;
        };
        let now = jiff::Timestamp::now().as_second();
        let tokens: Vec<(String, String)> = secret_store
            .state()
            .iter()
            .filter_map(|s| signing_token(s, now))
            .collect();
        let want = wanted_signatures(kubeconfig, &tokens);
        let have: BTreeMap<String, String> = data
            .iter()
            .filter(|(k, _)| k.starts_with(JWS_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if want == have {
            continue;
        }
        // An update, as kube's signer makes (its role may update cluster-info, not patch it): the
        // cached object with the signatures wanted; a conflict means the ConfigMap changed, and its
        // event brings the next try.
        let mut updated = (*cm).clone();
        let data = updated.data.get_or_insert_with(Default::default);
        data.retain(|k, _| !k.starts_with(JWS_PREFIX));
        data.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
        match api.replace(name, &PostParams::default(), &updated).await {
            Ok(_) => debug!(tokens = want.len(), "cluster-info signatures updated"),
            Err(e) => warn!(error = %e, "updating the cluster-info signatures"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_signatures_verify_only_with_their_token() {
        let jws = sign_detached("content", "abcdef", "0123456789abcdef");
        assert!(jws.contains(".."));
        assert!(verify_detached(&jws, "content", "abcdef", "0123456789abcdef"));
        assert!(!verify_detached(&jws, "content!", "abcdef", "0123456789abcdef"));
        assert!(!verify_detached(&jws, "content", "abcdef", "0123456789abcdeX"));
        assert!(!verify_detached(&jws, "content", "abcdeX", "0123456789abcdef"));
        assert!(!verify_detached(
            "garbage",
            "content",
            "abcdef",
            "0123456789abcdef"
        ));
    }

    /// The signature kube's bootstrap signer tests expect (`TestSimpleSign`): same header, same bytes.
    #[test]
    fn matches_kubes_signature() {
        assert_eq!(
            sign_detached("payload", "abc123", "tokenSecret"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiYzEyMyJ9..QSxpUG7Q542CirTI2ECPSZjvBOJURUW5a7XqFpNI958"
        );
    }
}
