//! kube-proxy's configuration file (`--config FILE`, a `KubeProxyConfiguration` of
//! `kubeproxy.config.k8s.io/v1alpha1`, as kubeadm writes it into the `kube-proxy` ConfigMap), read for
//! `svcnet proxy`.
//!
//! Every field kube-proxy knows has a rule here: honoured (it sets what the matching flag sets), safe
//! to leave alone (a warning says why svcnet does not need it), or not supported (an error names it).
//! A field at its zero value (`null`, `""`, `0`, `false`, `0s`, an empty list or map) is always fine:
//! kubeadm writes every field, most of them empty, and empty means "kube-proxy's default". A field
//! kube-proxy does not know is an error too, as kube-proxy's strict decoding makes it. All problems are
//! reported at once.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml::Value;

use crate::dataplane_args::parse_duration;

/// `apiVersion` of the only version of the file kube-proxy reads.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";

/// What the file sets, each `None` when the file leaves it to the default (or to a flag).
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    /// `mode`: `nftables` or `userspace`.
    pub mode: Option<String>,
    /// `bindAddress`, unless unspecified (`0.0.0.0`, `::`): the node's address.
    pub bind_address: Option<IpAddr>,
    /// `healthzBindAddress`.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `metricsBindAddress`.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `clusterCIDR` (comma-separated).
    pub cluster_cidrs: Option<Vec<IpNet>>,
    /// `hostnameOverride`.
    pub hostname_override: Option<String>,
    /// `clientConnection.kubeconfig`.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// `nodePortAddresses`: CIDRs, or `primary`.
    pub nodeport_addresses: Option<Vec<String>>,
    /// `nftables.masqueradeAll` (or `linux.masqueradeAll`).
    pub masquerade_all: Option<bool>,
    /// `nftables.syncPeriod`: the full resync period.
    pub sync_period: Option<Duration>,
    /// `iptables.localhostNodePorts`: NodePorts on 127.0.0.1 as well.
    pub localhost_nodeports: Option<bool>,
    /// `conntrack.*` (or `linux.conntrack.*`).
    pub conntrack: Conntrack,
    /// `oomScoreAdj` (or `linux.oomScoreAdj`).
    pub oom_score_adj: Option<i64>,
    /// Fields present with a value svcnet has no use for, each with why that is safe.
    pub warnings: Vec<String>,
}

/// The `conntrack` block.
#[derive(Debug, Default, PartialEq)]
pub struct Conntrack {
    pub max_per_core: Option<u64>,
    pub min: Option<u64>,
    pub tcp_established_timeout: Option<Duration>,
    pub tcp_close_wait_timeout: Option<Duration>,
    pub tcp_be_liberal: Option<bool>,
    pub udp_timeout: Option<Duration>,
    pub udp_stream_timeout: Option<Duration>,
}

/// What svcnet does with one field of the file.
#[derive(Clone, Copy)]
enum Rule {
    /// Read into [`FileConfig`].
    Honoured,
    /// Not needed by svcnet: a non-zero value gets this warning.
    Safe(&'static str),
    /// Not supported: a non-zero value is an error with this reason.
    Refused(&'static str),
    /// A map whose keys are free (feature gates): a non-empty one gets this warning.
    FreeMap(&'static str),
}

const IPTABLES: &str =
    "svcnet has no iptables mode; its kernel data plane is nftables (set the same field under `nftables:`)";
const IPVS: &str = "svcnet has no IPVS mode; use mode nftables";
const WINDOWS: &str = "svcnet runs on Linux only";
const MIN_SYNC: &str = "svcnet programs every change as it arrives, batched within milliseconds, so no minimum sync period is needed";

/// Every field of `KubeProxyConfiguration` v1alpha1 (Kubernetes 1.27–1.33), by its path.
const FIELDS: &[(&str, Rule)] = &[
    ("apiVersion", Rule::Honoured),
    ("kind", Rule::Honoured),
    (
        "featureGates",
        Rule::FreeMap("feature gates do not apply to svcnet; they are ignored"),
    ),
    ("clientConnection.kubeconfig", Rule::Honoured),
    (
        "clientConnection.acceptContentTypes",
        Rule::Safe("svcnet's client negotiates its own content types"),
    ),
    (
        "clientConnection.contentType",
        Rule::Safe("svcnet's client negotiates its own content types"),
    ),
    (
        "clientConnection.qps",
        Rule::Safe("svcnet's client is not rate-limited; it only watches"),
    ),
    (
        "clientConnection.burst",
        Rule::Safe("svcnet's client is not rate-limited; it only watches"),
    ),
    ("logging", Rule::Safe("svcnet's log level is set with RUST_LOG")),
    ("hostnameOverride", Rule::Honoured),
    ("bindAddress", Rule::Honoured),
    ("healthzBindAddress", Rule::Honoured),
    ("metricsBindAddress", Rule::Honoured),
    (
        "bindAddressHardFail",
        Rule::Safe("svcnet logs an address it cannot bind and runs on without that endpoint"),
    ),
    ("enableProfiling", Rule::Safe("svcnet has no profiling endpoint")),
    (
        "showHiddenMetricsForVersion",
        Rule::Safe("svcnet has no hidden metrics"),
    ),
    ("mode", Rule::Honoured),
    ("iptables.localhostNodePorts", Rule::Honoured),
    ("iptables.masqueradeAll", Rule::Refused(IPTABLES)),
    ("iptables.masqueradeBit", Rule::Refused(IPTABLES)),
    ("iptables.minSyncPeriod", Rule::Safe(MIN_SYNC)),
    ("iptables.syncPeriod", Rule::Refused(IPTABLES)),
    ("ipvs", Rule::Refused(IPVS)),
    ("nftables.masqueradeAll", Rule::Honoured),
    ("nftables.masqueradeBit", Rule::Honoured),
    ("nftables.minSyncPeriod", Rule::Safe(MIN_SYNC)),
    ("nftables.syncPeriod", Rule::Honoured),
    ("linux.masqueradeAll", Rule::Honoured),
    ("linux.oomScoreAdj", Rule::Honoured),
    ("linux.conntrack", Rule::Honoured),
    ("winkernel", Rule::Refused(WINDOWS)),
    ("windows", Rule::Refused(WINDOWS)),
    ("detectLocalMode", Rule::Honoured),
    (
        "detectLocal.bridgeInterface",
        Rule::Refused("svcnet detects local traffic by clusterCIDR only"),
    ),
    (
        "detectLocal.interfaceNamePrefix",
        Rule::Refused("svcnet detects local traffic by clusterCIDR only"),
    ),
    ("clusterCIDR", Rule::Honoured),
    ("nodePortAddresses", Rule::Honoured),
    ("oomScoreAdj", Rule::Honoured),
    ("conntrack", Rule::Honoured),
    (
        "configSyncPeriod",
        Rule::Safe("svcnet watches and never relies on periodic relists"),
    ),
    (
        "portRange",
        Rule::Safe("kube-proxy itself ignores portRange since the userspace mode went"),
    ),
];

/// The rule for `path`: its own, or that of the nearest listed parent.
fn rule_of(path: &str) -> Option<Rule> {
    let mut p = path;
    loop {
        if let Some((_, r)) = FIELDS.iter().find(|(f, _)| *f == p) {
            return Some(*r);
        }
        p = p.rsplit_once('.')?.0;
    }
}

/// Whether a value is its type's zero value (what kubeadm writes for "default").
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || parse_duration(s).is_ok_and(|d| d.is_zero()),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.values().all(is_zero),
        Value::Tagged(t) => is_zero(&t.value),
    }
}

/// Every leaf of a YAML map with its dotted path (a map that `FIELDS` lists as a whole stays one leaf).
fn leaves<'a>(prefix: &str, map: &'a serde_yaml::Mapping, out: &mut Vec<(String, &'a Value)>) {
    for (k, v) in map {
        let key = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
        let path = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        let listed_whole = FIELDS
            .iter()
            .any(|(f, r)| *f == path && matches!(r, Rule::FreeMap(_) | Rule::Safe(_) | Rule::Refused(_)));
        match v {
            Value::Mapping(m) if !listed_whole && !m.is_empty() => leaves(&path, m, out),
            _ => out.push((path, v)),
        }
    }
}

/// Parses a `KubeProxyConfiguration` document. Errors list every problem, one per line.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not a YAML document: {e}"))?;
    let Value::Mapping(map) = &doc else {
        return Err("a KubeProxyConfiguration must be a YAML map".into());
    };
    let mut leaves_found = Vec::new();
    leaves("", map, &mut leaves_found);
    let mut cfg = FileConfig::default();
    let mut errors = Vec::new();
    for (path, v) in leaves_found {
        match rule_of(&path) {
            None => errors.push(format!(
                "{path}: unknown field (strict decoding error: unknown field \"{path}\")"
            )),
            Some(Rule::Refused(why)) if !is_zero(v) => errors.push(format!("{path}: not supported: {why}")),
            Some(Rule::Safe(why)) if !is_zero(v) => cfg.warnings.push(format!("{path} is ignored: {why}")),
            Some(Rule::FreeMap(why)) if !is_zero(v) => cfg.warnings.push(format!("{path}: {why}")),
            Some(Rule::Honoured) => {
                if let Err(e) = honour(&mut cfg, &path, v) {
                    errors.push(format!("{path}: {e}"));
                }
            }
            Some(_) => {}
        }
    }
    if map.get("kind").is_none() {
        errors.push("kind: Required value: must be KubeProxyConfiguration".into());
    }
    if map.get("apiVersion").is_none() {
        errors.push(format!("apiVersion: Required value: must be {API_VERSION}"));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors.join("\n"))
    }
}

fn string(v: &Value) -> Result<Option<&str>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("expected a string, got {}", short(other))),
    }
}

fn short(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default().trim().to_string()
}

fn duration(v: &Value) -> Result<Option<Duration>, String> {
    string(v)?.map(parse_duration).transpose()
}

fn boolean(v: &Value) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(format!("expected true or false, got {}", short(other))),
    }
}

fn int(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("expected an integer, got {n}")),
        other => Err(format!("expected an integer, got {}", short(other))),
    }
}

fn unsigned(v: &Value) -> Result<Option<u64>, String> {
    int(v)?
        .map(|i| u64::try_from(i).map_err(|_| format!("must be greater than or equal to 0, got {i}")))
        .transpose()
}

/// `IP:port`, or a bare IP with the endpoint's default port (kube-proxy accepts both).
fn bind_address(v: &Value, default_port: u16) -> Result<Option<SocketAddr>, String> {
    let Some(s) = string(v)? else { return Ok(None) };
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, default_port)))
        .map(Some)
        .map_err(|_| format!("{s:?} must be IP:port"))
}

fn honour(cfg: &mut FileConfig, path: &str, v: &Value) -> Result<(), String> {
    let ct = &mut cfg.conntrack;
    match path.strip_prefix("linux.").unwrap_or(path) {
        "apiVersion" => match string(v)? {
            Some(API_VERSION) => {}
            other => return Err(format!("must be {API_VERSION}, not {other:?}")),
        },
        "kind" => match string(v)? {
            Some("KubeProxyConfiguration") => {}
            other => return Err(format!("must be KubeProxyConfiguration, not {other:?}")),
        },
        "clientConnection.kubeconfig" => cfg.kubeconfig = string(v)?.map(Into::into),
        "hostnameOverride" => cfg.hostname_override = string(v)?.map(str::to_lowercase),
        "bindAddress" => {
            cfg.bind_address = string(v)?
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| format!("{s:?} is not an IP address"))
                })
                .transpose()?
                .filter(|ip| !ip.is_unspecified())
        }
        "healthzBindAddress" => cfg.healthz_bind_address = bind_address(v, 10256)?,
        "metricsBindAddress" => cfg.metrics_bind_address = bind_address(v, 10249)?,
        "mode" => {
            cfg.mode = match string(v)? {
                None => None,
                Some(m @ ("nftables" | "userspace")) => Some(m.to_string()),
                Some(m @ ("iptables" | "ipvs" | "kernelspace")) => {
                    return Err(format!(
                        "mode {m:?} is not supported by svcnet; use \"nftables\" (or \"userspace\")"
                    ));
                }
                Some(m) => {
                    return Err(format!(
                        "unknown proxy mode {m:?}; svcnet runs \"nftables\" or \"userspace\""
                    ));
                }
            }
        }
        "iptables.localhostNodePorts" => cfg.localhost_nodeports = boolean(v)?,
        "nftables.masqueradeAll" | "masqueradeAll" => {
            if let Some(b) = boolean(v)? {
                cfg.masquerade_all = Some(cfg.masquerade_all.unwrap_or(false) || b);
            }
        }
        "nftables.masqueradeBit" => match int(v)? {
            None | Some(14) => {}
            Some(b) => {
                return Err(format!(
                    "svcnet marks packets to masquerade with bit 14 (kube-proxy's default), not {b}"
                ));
            }
        },
        "nftables.syncPeriod" => cfg.sync_period = duration(v)?,
        "oomScoreAdj" => {
            cfg.oom_score_adj = int(v)?;
            if let Some(o) = cfg.oom_score_adj.filter(|o| !(-1000..=1000).contains(o)) {
                return Err(format!("must be within [-1000, 1000], got {o}"));
            }
        }
        "detectLocalMode" => match string(v)? {
            None | Some("ClusterCIDR") => {}
            Some(m) => {
                return Err(format!(
                    "svcnet detects local traffic by clusterCIDR only (detectLocalMode ClusterCIDR), not {m:?}"
                ));
            }
        },
        "clusterCIDR" => {
            cfg.cluster_cidrs = string(v)?
                .map(|s| {
                    s.split(',')
                        .map(|c| {
                            c.trim()
                                .parse::<IpNet>()
                                .map_err(|_| format!("{c:?} is not a CIDR"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
        }
        "nodePortAddresses" => match v {
            Value::Null => {}
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for i in items {
                    let s = string(i)?.unwrap_or_default();
                    if s != "primary" && s.parse::<IpNet>().is_err() {
                        return Err(format!("{s:?} must be a CIDR or \"primary\""));
                    }
                    out.push(s.to_string());
                }
                cfg.nodeport_addresses = (!out.is_empty()).then_some(out);
            }
            other => return Err(format!("expected a list, got {}", short(other))),
        },
        "conntrack" => {}
        "conntrack.maxPerCore" => ct.max_per_core = unsigned(v)?,
        "conntrack.min" => ct.min = unsigned(v)?,
        "conntrack.tcpEstablishedTimeout" => ct.tcp_established_timeout = duration(v)?,
        "conntrack.tcpCloseWaitTimeout" => ct.tcp_close_wait_timeout = duration(v)?,
        "conntrack.tcpBeLiberal" => ct.tcp_be_liberal = boolean(v)?,
        "conntrack.udpTimeout" => ct.udp_timeout = duration(v)?,
        "conntrack.udpStreamTimeout" => ct.udp_stream_timeout = duration(v)?,
        other => return Err(format!("unknown field {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::serde::Deserialize as _;

    /// The KubeProxyConfiguration kubeadm 1.30 writes into the `kube-proxy` ConfigMap (`config.conf`),
    /// with the cluster's pod subnet filled in; `tests/proxy_drop_in.rs` runs it too.
    const KUBEADM: &str = include_str!("kubeadm-kube-proxy.conf");

    /// The KubeProxyConfiguration `deploy/svcnet-proxy.yaml` ships in its ConfigMap.
    #[test]
    fn the_shipped_configuration_is_read_without_warnings() {
        let yaml = include_str!("../../../deploy/svcnet-proxy.yaml");
        let cm = serde_yaml::Deserializer::from_str(yaml)
            .map(|d| serde_yaml::Value::deserialize(d).expect("a YAML document"))
            .find(|d| d["kind"] == "ConfigMap")
            .expect("the ConfigMap");
        let text = cm["data"]["config.conf"].as_str().expect("config.conf");
        let cfg = parse(text).expect("valid");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.mode.as_deref(), Some("nftables"));
        assert_eq!(cfg.bind_address, None);
    }

    #[test]
    fn kubeadms_file_is_read_with_its_values_and_no_warning() {
        let cfg = parse(KUBEADM).unwrap();
        assert_eq!(cfg.cluster_cidrs, Some(vec!["10.244.0.0/16".parse().unwrap()]));
        assert_eq!(
            cfg.kubeconfig.as_deref(),
            Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(cfg.bind_address, None, "0.0.0.0 means unspecified");
        assert_eq!(cfg.mode, None);
        // null leaves a field to kube-proxy's default; an explicit 0s means "leave the kernel's value".
        assert_eq!(
            cfg.conntrack,
            Conntrack {
                tcp_be_liberal: Some(false),
                udp_timeout: Some(Duration::ZERO),
                udp_stream_timeout: Some(Duration::ZERO),
                ..Default::default()
            }
        );
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn honoured_fields_are_read() {
        let cfg = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
             hostnameOverride: Node-1\nbindAddress: 10.0.0.5\nhealthzBindAddress: 0.0.0.0:10256\n\
             metricsBindAddress: 127.0.0.1\nnodePortAddresses: [primary, 10.0.0.0/8]\n\
             nftables: {masqueradeAll: true, syncPeriod: 30s, masqueradeBit: 14}\n\
             conntrack: {maxPerCore: 0, min: 65536, tcpEstablishedTimeout: 1h0m0s}\noomScoreAdj: -999\n",
        )
        .unwrap();
        assert_eq!(cfg.mode.as_deref(), Some("nftables"));
        assert_eq!(cfg.hostname_override.as_deref(), Some("node-1"));
        assert_eq!(cfg.bind_address, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(cfg.healthz_bind_address, Some("0.0.0.0:10256".parse().unwrap()));
        assert_eq!(cfg.metrics_bind_address, Some("127.0.0.1:10249".parse().unwrap()));
        assert_eq!(
            cfg.nodeport_addresses,
            Some(vec!["primary".into(), "10.0.0.0/8".into()])
        );
        assert_eq!(cfg.masquerade_all, Some(true));
        assert_eq!(cfg.sync_period, Some(Duration::from_secs(30)));
        assert_eq!(cfg.conntrack.max_per_core, Some(0));
        assert_eq!(cfg.conntrack.min, Some(65536));
        assert_eq!(
            cfg.conntrack.tcp_established_timeout,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(cfg.oom_score_adj, Some(-999));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let err = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
             ipvs: {scheduler: rr}\nfoo: 1\niptables: {masqueradeAll: true}\nnftables: {masqueradeBit: 15}\n",
        )
        .unwrap_err();
        for want in [
            "mode: mode \"ipvs\" is not supported",
            "ipvs: not supported: svcnet has no IPVS mode",
            "foo: unknown field",
            "iptables.masqueradeAll: not supported",
            "nftables.masqueradeBit: svcnet marks packets",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        assert_eq!(err.lines().count(), 5, "{err}");
    }

    #[test]
    fn safe_fields_warn() {
        let cfg = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             nftables: {minSyncPeriod: 1s}\nfeatureGates: {Foo: true}\nclientConnection: {qps: 50}\n",
        )
        .unwrap();
        assert_eq!(cfg.warnings.len(), 3, "{:?}", cfg.warnings);
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.starts_with("nftables.minSyncPeriod is ignored"))
        );
    }

    #[test]
    fn the_wrong_kind_or_version_is_refused() {
        let err = parse("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(
            err.contains("apiVersion: must be kubeproxy.config.k8s.io/v1alpha1"),
            "{err}"
        );
        assert!(err.contains("kind: must be KubeProxyConfiguration"), "{err}");
        assert!(parse("- a\n").is_err());
    }
}
