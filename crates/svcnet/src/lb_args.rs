//! The node's flags for L2 announcement of LoadBalancer IPs ([`svcnet_l2announce`]), and starting it:
//! `svcnet agent` and the all-in-one `svcnet up` share them.
//!
//! On by default when the node has an underlay: with a node address that is not loopback (`agent
//! --node-ip`, `up --api-listen`), the node answers ARP and NDP for the LoadBalancer IPs it is elected
//! for on the interface carrying that address (`svcnet lab` nodes: `eth0`). `--lb-interfaces A,B`
//! names the interfaces instead (MetalLB's `L2Advertisement.interfaces`; a failure to open one then
//! stops the node; `--lb-interface` is the same flag); `--lb-interfaces none` turns it off.
//! `--lb-node-selector` keeps announcing to the nodes whose labels match.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use svcnet_l2announce::L2Config;
use svcnet_l2announce::LabelSelector;
use tracing::{info, warn};

use crate::dataplane_args::parse_duration;
use crate::supervise::Supervisor;

/// `--lb-node-selector`, parsed as kubectl's `-l` is.
fn parse_node_selector(s: &str) -> Result<LabelSelector, String> {
    LabelSelector::parse(s).map_err(|e| format!("invalid label selector: {e}"))
}

/// The flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LbAnnounceArgs {
    /// The interfaces (comma-separated) to answer ARP and NDP on for the LoadBalancer IPs this node is
    /// elected for (MetalLB's layer-2 mode); no other interface answers. Default: the interface carrying
    /// the node's address, unless that is loopback; `none`: off.
    #[arg(
        long = "lb-interfaces",
        alias = "lb-interface",
        value_name = "NAME,…",
        value_delimiter = ','
    )]
    lb_interfaces: Vec<String>,
    /// Only nodes whose labels match this label selector (e.g. `node-role/edge=true`) announce
    /// LoadBalancer IPs; give every agent the same one. Default: every Ready node.
    #[arg(long, value_name = "SELECTOR", value_parser = parse_node_selector)]
    lb_node_selector: Option<LabelSelector>,
    /// How long a LoadBalancer IP's Lease is valid after its holder last renewed it (whole seconds):
    /// a dead holder's IPs move after about this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    lb_lease_duration: Duration,
    /// How long a holder keeps announcing while it cannot renew its Lease (shorter than the Lease).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    lb_renew_deadline: Duration,
    /// How often a holder renews its Leases and other nodes retry.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    lb_retry_period: Duration,
}

impl LbAnnounceArgs {
    /// The durations against client-go's rules, before anything starts.
    pub fn check(&self) -> Result<()> {
        if self.lb_interfaces.iter().any(|i| i == "none") && self.lb_interfaces.len() > 1 {
            anyhow::bail!(
                "--lb-interfaces: `none` turns announcing off and cannot be listed with interfaces"
            );
        }
        self.config(String::new(), self.lb_interfaces.clone())
            .validate()?;
        Ok(())
    }

    fn config(&self, node_name: String, interfaces: Vec<String>) -> L2Config {
        L2Config {
            node_name,
            interfaces,
            lease_duration: self.lb_lease_duration,
            renew_deadline: self.lb_renew_deadline,
            retry_period: self.lb_retry_period,
            local_routes: true,
            node_selector: self.lb_node_selector.clone().unwrap_or_default(),
        }
    }

    /// Starts the announcer under `supervisor` if it is on. `underlay`: whether the node's address is
    /// on a network the node may announce on by default (`agent`: always; `up`: with `--pod-network
    /// netns`, so that an all-in-one node on a workstation never starts answering ARP on its LAN
    /// unless asked to with `--lb-interfaces`).
    pub fn spawn(
        &self,
        supervisor: &Supervisor,
        client: &kube::Client,
        node_name: &str,
        node_ip: IpAddr,
        underlay: bool,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<()> {
        let (interfaces, explicit) = match self.lb_interfaces.as_slice() {
            [none] if none == "none" => return Ok(()),
            [_, ..] => (self.lb_interfaces.clone(), true),
            [] if !underlay => {
                info!(
                    "L2 announcement of LoadBalancer IPs is off: no underlay by default without --pod-network netns (give --lb-interfaces)"
                );
                return Ok(());
            }
            [] if node_ip.is_loopback() => {
                info!(
                    "L2 announcement of LoadBalancer IPs is off: the node address is loopback (give --lb-interfaces)"
                );
                return Ok(());
            }
            [] => match svcnet_l2announce::responder::interface_of(node_ip) {
                Some(name) => (vec![name], false),
                None => {
                    warn!(%node_ip, "L2 announcement of LoadBalancer IPs is off: no interface carries the node address (give --lb-interfaces)");
                    return Ok(());
                }
            },
        };
        let cfg = self.config(node_name.to_string(), interfaces);
        let client = client.clone();
        let metrics = svcnet_l2announce::Metrics::new(registry);
        supervisor.spawn("lb-announce", async move {
            match svcnet_l2announce::run(client, cfg, metrics).await {
                // Chosen by default, not asked for: a node that cannot open the packet socket (no
                // CAP_NET_RAW) still runs, and says why it does not announce.
                Err(e) if !explicit => {
                    warn!(error = %e, "L2 announcement of LoadBalancer IPs is off");
                    std::future::pending::<()>().await;
                    Ok(())
                }
                r => Ok(r?),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lb: LbAnnounceArgs,
    }

    fn parse(args: &[&str]) -> LbAnnounceArgs {
        let mut argv = vec!["svcnet"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags").lb
    }

    #[test]
    fn interfaces_are_a_comma_separated_list_and_the_singular_flag_is_the_same() {
        assert_eq!(
            parse(&["--lb-interfaces", "eth0,eth2"]).lb_interfaces,
            ["eth0", "eth2"]
        );
        assert_eq!(
            parse(&["--lb-interface", "eth1", "--lb-interfaces", "eth3"]).lb_interfaces,
            ["eth1", "eth3"]
        );
        assert!(parse(&[]).lb_interfaces.is_empty());
        assert!(parse(&["--lb-interfaces", "eth0,eth2"]).check().is_ok());
        assert!(parse(&["--lb-interfaces", "none"]).check().is_ok());
        let err = parse(&["--lb-interfaces", "none,eth0"]).check().unwrap_err();
        assert!(
            err.to_string().contains("cannot be listed with interfaces"),
            "{err}"
        );
        let err = parse(&["--lb-interfaces", "eth0,,eth1"]).check().unwrap_err();
        assert!(err.to_string().contains("an interface name is empty"), "{err}");
    }
}
