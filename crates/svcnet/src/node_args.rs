//! `svcnet up`'s node lifecycle flags (kube-controller-manager's names and defaults) and `svcnet agent`'s
//! Lease duration check (the kubelet's rule), refused before anything starts.

use std::time::Duration;

use crate::dataplane_args::parse_duration;

/// A duration flag that also takes bare seconds (`4` = `4s`, svcnet's earlier form).
fn parse_duration_or_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_duration(text),
    }
}

/// How the control plane watches nodes.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeLifecycleArgs {
    /// How long a node may go without renewing its Lease before it is marked NotReady (`Ready=Unknown`)
    /// and tainted `node.kubernetes.io/unreachable`: a duration (`40s`) or whole seconds.
    #[arg(long, default_value = "40s", value_parser = parse_duration_or_seconds)]
    pub node_monitor_grace_period: Duration,
    /// How often node Leases are checked against the grace period.
    #[arg(long, default_value = "5s", value_parser = parse_duration_or_seconds)]
    pub node_monitor_period: Duration,
}

impl NodeLifecycleArgs {
    /// Refuses periods that cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.node_monitor_period.is_zero() {
            anyhow::bail!("--node-monitor-period must be greater than 0");
        }
        if self.node_monitor_grace_period.is_zero() {
            anyhow::bail!("--node-monitor-grace-period must be greater than 0");
        }
        Ok(())
    }
}

/// The kubelet's rule for `--node-lease-duration-seconds`.
pub fn check_lease_duration(secs: u64) -> anyhow::Result<()> {
    if secs == 0 {
        anyhow::bail!("invalid configuration: nodeLeaseDurationSeconds must be greater than 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_or_bare_seconds() {
        assert_eq!(parse_duration_or_seconds("4"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration_or_seconds("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration_or_seconds("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration_or_seconds("soon")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(check_lease_duration(0).is_err() && check_lease_duration(2).is_ok());
    }
}
