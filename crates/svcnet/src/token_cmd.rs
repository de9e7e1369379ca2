//! `svcnet token create`: a bootstrap token, as `kubeadm token create` makes one — a random
//! `ID.SECRET` stored as the Secret `kube-system/bootstrap-token-ID` (type
//! `bootstrap.kubernetes.io/token`, usable for authentication, in the group
//! `system:bootstrappers:svcnet:default-node-token`, expiring after `--ttl`). The API server then
//! authenticates it as `system:bootstrap:ID` until it expires or the Secret is deleted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rand::Rng;

/// `svcnet token …`.
#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Create a bootstrap token and print it (`ID.SECRET`).
    Create(CreateArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The admin kubeconfig (written by `svcnet up`).
    #[arg(long, default_value = "./svcnet-data/kubeconfig")]
    kubeconfig: PathBuf,
    /// How long the token is valid: a number with `s`, `m` or `h` (`0`: it never expires).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// A human-readable description stored with the token.
    #[arg(long)]
    description: Option<String>,
    /// Print the whole command a node joins with (`svcnet agent --server … --token … --ca-cert-hash …`),
    /// as `kubeadm token create --print-join-command` does, instead of the token alone.
    #[arg(long)]
    print_join_command: bool,
}

/// `90s`, `30m`, `24h` or `0`.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 90s, 30m, 24h, or 0 for no expiry"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: use e.g. 90s, 30m, 24h, or 0 for no expiry"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// `n` random characters of `[a-z0-9]`, the bootstrap token alphabet.
fn random_part(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn run(args: TokenArgs) -> Result<()> {
    let TokenCommand::Create(args) = args.command;
    let client = crate::kube_client(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let (id, secret) = (random_part(6), random_part(16));
    let mut data: std::collections::BTreeMap<String, String> = [
        ("token-id", id.as_str()),
        ("token-secret", secret.as_str()),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        (
            "auth-extra-groups",
            "system:bootstrappers:svcnet:default-node-token",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !args.ttl.is_zero() {
        let Ok(ttl) = jiff::SignedDuration::try_from(args.ttl) else {
            bail!("--ttl is too long");
        };
        let at = jiff::Timestamp::now()
            .checked_add(ttl)
            .context("--ttl is too long")?;
        data.insert("expiration".into(), at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if let Some(d) = &args.description {
        data.insert("description".into(), d.clone());
    }
    let obj = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &obj)
        .await
        .context("creating the bootstrap token Secret")?;
    if !args.print_join_command {
        println!("{id}.{secret}");
        return Ok(());
    }
    let (server, ca_pem) = kubeconfig_cluster(&args.kubeconfig)?;
    let hash = crate::join::ca_cert_hash(&ca_pem)?;
    println!("svcnet agent --server {server} --token {id}.{secret} --ca-cert-hash {hash}");
    Ok(())
}

/// The server and CA (PEM) of the kubeconfig's current cluster.
fn kubeconfig_cluster(path: &std::path::Path) -> Result<(String, String)> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let context = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("the kubeconfig has no current context")?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .context("the kubeconfig's cluster is missing")?;
    let server = cluster.server.context("the kubeconfig names no server")?;
    let ca = cluster
        .certificate_authority_data
        .context("the kubeconfig has no certificate-authority-data")?;
    let ca_pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca.trim())?)?;
    Ok((server, ca_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_token_parts() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        assert!(parse_ttl("1d").is_err() && parse_ttl("h").is_err());
        let p = random_part(16);
        assert_eq!(p.len(), 16);
        assert!(svcnet_apiserver::bootstrap_token::parse(&format!("{}.{p}", random_part(6))).is_some());
    }
}
