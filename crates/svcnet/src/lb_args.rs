//! `svcnet agent`'s flags for L2 announcement of LoadBalancer IPs ([`svcnet_l2announce`]), and starting it.
//!
//! On by default when the node has an underlay: with a `--node-ip` that is not loopback, the agent
//! answers ARP for the LoadBalancer IPs it is elected for on the interface carrying that address
//! (`svcnet lab` nodes: `eth0`). `--lb-interface NAME` names another interface (and then a failure to
//! open it stops the agent); `--lb-interface none` turns it off. `--lb-node-selector` keeps announcing to
//! the nodes whose labels match.

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
    /// The interface to answer ARP on for the LoadBalancer IPs this node is elected for (MetalLB's
    /// layer-2 mode). Default: the interface carrying --node-ip, unless that is loopback; `none`: off.
    #[arg(long, value_name = "NAME")]
    lb_interface: Option<String>,
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
        self.config(String::new(), String::new()).validate()?;
        Ok(())
    }

    fn config(&self, node_name: String, interface: String) -> L2Config {
        L2Config {
            node_name,
            interface,
            lease_duration: self.lb_lease_duration,
            renew_deadline: self.lb_renew_deadline,
            retry_period: self.lb_retry_period,
            local_routes: true,
            node_selector: self.lb_node_selector.clone().unwrap_or_default(),
        }
    }

    /// Starts the announcer under `supervisor` if it is on.
    pub fn spawn(
        &self,
        supervisor: &Supervisor,
        client: &kube::Client,
        node_name: &str,
        node_ip: IpAddr,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<()> {
        let (interface, explicit) = match self.lb_interface.as_deref() {
            Some("none") => return Ok(()),
            Some(name) => (name.to_string(), true),
            None if node_ip.is_loopback() => {
                info!(
                    "L2 announcement of LoadBalancer IPs is off: the node address is loopback (give --lb-interface)"
                );
                return Ok(());
            }
            None => match svcnet_l2announce::responder::interface_of(node_ip) {
                Some(name) => (name, false),
                None => {
                    warn!(%node_ip, "L2 announcement of LoadBalancer IPs is off: no interface carries the node address (give --lb-interface)");
                    return Ok(());
                }
            },
        };
        let cfg = self.config(node_name.to_string(), interface);
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
