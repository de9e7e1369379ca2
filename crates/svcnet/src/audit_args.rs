//! `svcnet up`'s audit flags, kube-apiserver's names: `--audit-log-path` (`-` is stdout) with
//! `--audit-policy-file`, the rotation flags, `--audit-log-mode` and `--audit-log-format`. What svcnet
//! does not do (compressed backups, the legacy format, `blocking-strict`) is refused by name at
//! start-up rather than ignored.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use svcnet_apiserver::audit::{self, Auditor, Policy};
use tracing::warn;

/// The flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Write audit events (`audit.k8s.io/v1` Event, JSON lines) to this file, `-` for standard output.
    /// Needs --audit-policy-file: without a policy no event is written, as on kube-apiserver.
    #[arg(long, value_name = "PATH")]
    audit_log_path: Option<String>,
    /// The audit policy (`audit.k8s.io/v1` Policy, YAML or JSON): which requests are logged at which
    /// level. Unknown fields and invalid rules stop the start-up.
    #[arg(long, value_name = "FILE")]
    audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log before it grows past this many megabytes (0: 100, lumberjack's default,
    /// as kube-apiserver).
    #[arg(long, default_value_t = 0, value_name = "MB")]
    audit_log_maxsize: u64,
    /// Keep at most this many rotated audit logs (0: keep all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    audit_log_maxbackup: usize,
    /// Remove rotated audit logs older than this many days (0: never).
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    audit_log_maxage: u64,
    /// `blocking` (kube's default): a request waits until its events are written, 5 s at most; `batch`:
    /// requests never wait, events are dropped (and counted) while the 10,000-event buffer is full.
    #[arg(long, default_value = "blocking", value_name = "MODE")]
    audit_log_mode: String,
    /// `json` only (kube's default); kube's `legacy` text format is not written.
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    audit_log_format: String,
    /// Compressing rotated audit logs is not supported: the flag exists to say so.
    #[arg(long)]
    audit_log_compress: bool,
}

impl AuditArgs {
    /// The auditor the flags ask for; `None` when auditing is off.
    pub fn auditor(&self) -> Result<Option<Arc<Auditor>>> {
        let mode = match self.audit_log_mode.as_str() {
            "blocking" => audit::sink::Mode::Blocking,
            "batch" => audit::sink::Mode::Batch,
            "blocking-strict" => bail!(
                "--audit-log-mode blocking-strict is not supported by svcnet (a failed audit write never \
                 fails a request); use blocking or batch"
            ),
            other => bail!("--audit-log-mode: unknown mode {other:?}: use blocking or batch"),
        };
        match self.audit_log_format.as_str() {
            "json" => {}
            "legacy" => bail!("--audit-log-format legacy is not supported by svcnet; use json"),
            other => bail!("--audit-log-format: unknown format {other:?}: use json"),
        }
        if self.audit_log_compress {
            bail!("--audit-log-compress is not supported by svcnet: rotated audit logs stay uncompressed");
        }
        // The policy is read even without a log, so that a bad one is found now.
        let policy = match &self.audit_policy_file {
            Some(p) => Some(Policy::load(p).context("--audit-policy-file")?),
            None => None,
        };
        let Some(path) = &self.audit_log_path else {
            if policy.is_some() {
                warn!("--audit-policy-file without --audit-log-path: no audit events are written");
            }
            return Ok(None);
        };
        let Some(policy) = policy else {
            warn!(
                "--audit-log-path without --audit-policy-file: no audit events are written (as on kube-apiserver)"
            );
            return Ok(None);
        };
        let target = if path == "-" {
            audit::sink::Target::Stdout
        } else {
            audit::sink::Target::File {
                path: PathBuf::from(path),
                max_size_mb: self.audit_log_maxsize,
                max_backups: self.audit_log_maxbackup,
                max_age_days: self.audit_log_maxage,
            }
        };
        let sink = audit::Sink::start(target, mode).context("--audit-log-path")?;
        Ok(Some(Auditor::new(policy, sink)))
    }
}
