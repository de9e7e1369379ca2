//! Which store `svcnet up` keeps the cluster in: the embedded redb file in `--data-dir` (the default), or
//! etcd with kube-apiserver's `--etcd-*` flags, which lets several `svcnet up --control-plane-only`
//! instances serve one cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use svcnet_store::Store;
use svcnet_store::redb::RedbStore;
use svcnet_store_etcd::{ConnectError, EtcdConfig, EtcdStore};
use tracing::{info, warn};

/// How long `svcnet up` keeps trying to reach etcd at start before it gives up.
const ETCD_START_PATIENCE: Duration = Duration::from_secs(60);

/// The store flags of `svcnet up` (kube-apiserver's names).
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Keep the cluster in etcd at these client URLs (comma-separated) instead of the embedded store.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub etcd_servers: Vec<String>,
    /// The prefix every key is stored under in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// CA file that signed etcd's serving certificate (https:// URLs).
    #[arg(long, value_name = "FILE")]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, value_name = "FILE")]
    etcd_keyfile: Option<PathBuf>,
    /// How often etcd's history is compacted (Go duration such as `5m`, `90s`, `1m30s`; `0` turns it off).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: Duration,
}

impl StoreArgs {
    /// Whether the cluster lives in etcd.
    pub fn etcd(&self) -> bool {
        !self.etcd_servers.is_empty()
    }

    /// The store in words, for the start-up wait `/readyz` reports.
    pub fn describe(&self) -> String {
        if self.etcd() {
            format!("etcd {}", self.etcd_servers.join(","))
        } else {
            "the embedded store".into()
        }
    }

    /// Opens the store: the embedded one in `data_dir`, or etcd, retried with a clear message for up to
    /// a minute while it cannot be reached (it may be starting beside us).
    pub async fn open(&self, data_dir: &Path) -> Result<Arc<dyn Store>> {
        if !self.etcd() {
            for (flag, set) in [
                ("--etcd-cafile", self.etcd_cafile.is_some()),
                ("--etcd-certfile", self.etcd_certfile.is_some()),
                ("--etcd-keyfile", self.etcd_keyfile.is_some()),
            ] {
                if set {
                    bail!("{flag} needs --etcd-servers");
                }
            }
            let store = RedbStore::open(&data_dir.join("store.redb")).context("opening the store")?;
            return Ok(Arc::new(store));
        }
        let config = EtcdConfig {
            endpoints: self.etcd_servers.clone(),
            prefix: self.etcd_prefix.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            compaction_interval: self.etcd_compaction_interval,
        };
        let start = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            match EtcdStore::connect(config.clone()).await {
                Ok(store) => return Ok(Arc::new(store)),
                Err(ConnectError::Config(bad)) => bail!("{bad}"),
                Err(ConnectError::Unreachable(e)) if start.elapsed() < ETCD_START_PATIENCE => {
                    warn!(error = %e, retry_in = ?delay, "cannot reach etcd yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(ConnectError::Unreachable(e)) => {
                    bail!(
                        "{e} (gave up after {}s; is etcd running at {}?)",
                        ETCD_START_PATIENCE.as_secs(),
                        self.etcd_servers.join(",")
                    )
                }
            }
            info!("connecting to etcd again");
        }
    }
}

/// Parses a Go duration as kube-apiserver's flags take it: `0`, or numbers with units `h`, `m`, `s`,
/// `ms` in sequence (`1h30m`, `90s`, `1.5m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {s:?}: use e.g. 5m, 90s or 1m30s");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, scale) = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        total += n * scale;
        rest = &rest[unit.len()..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h1m1s"), Ok(Duration::from_secs(3661)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "m", "5x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
