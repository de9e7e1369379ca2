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
    /// Nodes a second whose pods may be evicted (tainted `NoExecute`) in a zone that is healthy, or
    /// whose nodes are all down while another zone is not.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
    /// The same in an unhealthy zone (see `--unhealthy-zone-threshold`) of more than
    /// `--large-cluster-size-threshold` nodes; smaller unhealthy zones evict nothing.
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f64,
    /// The share of a zone's nodes (at least three) that must be not Ready for the zone to be unhealthy.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f64,
    /// Zones of more nodes than this are large (see `--secondary-node-eviction-rate`).
    #[arg(long, default_value_t = 50)]
    pub large_cluster_size_threshold: usize,
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
        for (flag, v) in [
            ("--node-eviction-rate", self.node_eviction_rate),
            (
                "--secondary-node-eviction-rate",
                self.secondary_node_eviction_rate,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                anyhow::bail!("{flag} must be a number of nodes a second, 0 or more (got {v})");
            }
        }
        let t = self.unhealthy_zone_threshold;
        if !(t > 0.0 && t <= 1.0) {
            anyhow::bail!("--unhealthy-zone-threshold must be above 0 and at most 1 (got {t})");
        }
        Ok(())
    }

    /// The eviction rates the node lifecycle controller uses.
    pub fn eviction(&self) -> svcnet_controllers::disruption::EvictionRates {
        svcnet_controllers::disruption::EvictionRates {
            rate: self.node_eviction_rate,
            secondary_rate: self.secondary_node_eviction_rate,
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
            large_cluster_size_threshold: self.large_cluster_size_threshold,
        }
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

    #[test]
    fn eviction_rates_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            l: NodeLifecycleArgs,
        }
        let parse = |args: &[&str]| {
            let mut argv = vec!["svcnet"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap().l
        };
        let defaults = parse(&[]);
        assert!(defaults.check().is_ok());
        assert_eq!(
            defaults.eviction(),
            svcnet_controllers::disruption::EvictionRates::default()
        );
        let err = |args: &[&str]| parse(args).check().unwrap_err().to_string();
        assert!(err(&["--node-eviction-rate=-1"]).contains("--node-eviction-rate must be"));
        assert!(err(&["--unhealthy-zone-threshold=0"]).contains("--unhealthy-zone-threshold must be"));
        assert!(err(&["--unhealthy-zone-threshold=1.5"]).contains("at most 1"));
        assert!(parse(&["--secondary-node-eviction-rate=0"]).check().is_ok());
    }
}
