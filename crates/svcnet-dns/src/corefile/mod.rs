//! CoreDNS's configuration file, the Corefile, for `svcnet dns`: the subset of plugins a Kubernetes
//! cluster's DNS uses (kubeadm's default Corefile and the usual edits of it), turned into svcnet's
//! settings. Anything else is refused with CoreDNS's own error form, naming the directive and its line,
//! so that a Corefile never means something here that it does not mean to CoreDNS.
//!
//! [`syntax`] reads the file's structure; this module gives it meaning.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::DnsConfig;
use crate::forward::CachePolicy;
use crate::lookup::PodsMode;

mod syntax;

pub use syntax::{CorefileError, Directive, ServerBlock, parse};

/// The plugins `svcnet dns` understands, in the order CoreDNS runs them (listed in errors).
pub const PLUGINS: &[&str] = &[
    "bind",
    "errors",
    "health",
    "ready",
    "prometheus",
    "reload",
    "loop",
    "loadbalance",
    "cache",
    "kubernetes",
    "forward",
];

/// `health`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Where `/health` is served (`:8080`).
    pub addr: SocketAddr,
    /// How long the server keeps answering after it is told to stop.
    pub lameduck: Duration,
}

/// `reload`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// How often the file is checked.
    pub interval: Duration,
    /// Up to this much is added to each interval at random.
    pub jitter: Duration,
}

/// Everything a Corefile asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The DNS server's settings.
    pub dns: DnsConfig,
    /// `health`.
    pub health: Option<Health>,
    /// `ready`: where `/ready` is served.
    pub ready: Option<SocketAddr>,
    /// `prometheus`: where `/metrics` is served.
    pub prometheus: Option<SocketAddr>,
    /// `reload`.
    pub reload: Option<Reload>,
    /// `loop`: detect forwarding loops at start.
    pub loop_detect: bool,
    /// `kubernetes`'s `kubeconfig` path, if it names one.
    pub kubeconfig: Option<PathBuf>,
}

/// A listen address as CoreDNS writes it: `:8080`, `localhost:9153`, `10.0.0.1:8181`, `[::1]:53`.
fn listen_addr(s: &str) -> Option<SocketAddr> {
    let s = s.strip_prefix("http://").unwrap_or(s);
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    s.parse().ok()
}

/// Go's duration syntax as far as Corefiles use it: `5s`, `500ms`, `1m`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += Duration::try_from_secs_f64(value * unit).ok()?;
    }
    Some(total)
}

/// A zone as CoreDNS normalises it: lower case, no final dot (the root is `.`).
fn zone(s: &str) -> String {
    let z = s.trim_end_matches('.').to_ascii_lowercase();
    if z.is_empty() { ".".into() } else { z }
}

fn is_reverse(z: &str) -> bool {
    z == "in-addr.arpa" || z == "ip6.arpa" || z.ends_with(".in-addr.arpa") || z.ends_with(".ip6.arpa")
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> CorefileError {
        CorefileError {
            file: self.file.into(),
            line,
            message: message.into(),
        }
    }

    fn no_block(&self, d: &Directive) -> Result<(), CorefileError> {
        match d.block.first() {
            Some(b) => Err(self.err(
                b.line,
                format!("plugin/{}: unknown property '{}'", d.name, b.name),
            )),
            None => Ok(()),
        }
    }

    fn max_args(&self, d: &Directive, n: usize) -> Result<(), CorefileError> {
        if d.args.len() > n {
            return Err(self.err(
                d.line,
                format!("plugin/{}: too many arguments: {:?}", d.name, d.args),
            ));
        }
        Ok(())
    }

    fn number<T: std::str::FromStr>(&self, d: &Directive, s: &str) -> Result<T, CorefileError> {
        s.parse()
            .map_err(|_| self.err(d.line, format!("plugin/{}: not a number: '{s}'", d.name)))
    }

    fn duration(&self, d: &Directive, s: &str) -> Result<Duration, CorefileError> {
        parse_duration(s).ok_or_else(|| self.err(d.line, format!("plugin/{}: not a duration: '{s}'", d.name)))
    }

    fn addr(&self, d: &Directive, s: &str) -> Result<SocketAddr, CorefileError> {
        listen_addr(s).ok_or_else(|| self.err(d.line, format!("plugin/{}: not an address: '{s}'", d.name)))
    }
}

impl Plan {
    /// What `text` (a Corefile called `file`) asks for. `resolv_conf` reads a resolv.conf named by
    /// `forward` (a closure, so tests need no file).
    pub fn from_corefile(
        text: &str,
        file: &str,
        resolv_conf: &dyn Fn(&str) -> std::io::Result<String>,
    ) -> Result<Plan, CorefileError> {
        let cx = Ctx { file };
        let blocks = parse(text, file)?;
        let Some(block) = blocks.first() else {
            return Err(cx.err(0, "no server block"));
        };
        if let Some(extra) = blocks.get(1) {
            return Err(cx.err(
                extra.line,
                format!(
                    "server block {:?}: svcnet dns serves one server block (the root zone `.`); put every \
                     plugin in it",
                    extra.keys
                ),
            ));
        }
        let mut port = 53;
        for key in &block.keys {
            let k = key.strip_prefix("dns://").unwrap_or(key);
            let (z, p) = match k.rsplit_once(':') {
                Some((z, p)) => (z, Some(p)),
                None => (k, None),
            };
            if zone(z) != "." {
                return Err(cx.err(
                    block.line,
                    format!("server block key '{key}': svcnet dns serves only the root zone '.'"),
                ));
            }
            if let Some(p) = p {
                port = p.parse().map_err(|_| {
                    cx.err(block.line, format!("server block key '{key}': not a port: '{p}'"))
                })?;
            }
        }
        let mut plan = Plan {
            dns: DnsConfig {
                listen: Vec::new(),
                // Without `cache`, CoreDNS caches nothing; without `forward`, other names fail.
                cache_size: 0,
                forward: false,
                ..DnsConfig::default()
            },
            health: None,
            ready: None,
            prometheus: None,
            reload: None,
            loop_detect: false,
            kubeconfig: None,
        };
        let mut binds: Vec<IpAddr> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut kubernetes = false;
        for d in &block.directives {
            if !PLUGINS.contains(&d.name.as_str()) {
                return Err(cx.err(
                    d.line,
                    format!(
                        "Unknown directive '{}' (svcnet dns supports: {})",
                        d.name,
                        PLUGINS.join(", ")
                    ),
                ));
            }
            if seen.contains(&d.name.as_str()) && d.name != "bind" {
                return Err(cx.err(
                    d.line,
                    format!(
                        "plugin/{}: this plugin can only be used once per Server Block",
                        d.name
                    ),
                ));
            }
            seen.push(&d.name);
            match d.name.as_str() {
                "bind" => {
                    cx.no_block(d)?;
                    if d.args.is_empty() {
                        return Err(cx.err(d.line, "plugin/bind: at least one address is required"));
                    }
                    for a in &d.args {
                        let ip = a.parse::<IpAddr>().map_err(|_| {
                            cx.err(d.line, format!("plugin/bind: not an IP address: '{a}' (interface names are not supported)"))
                        })?;
                        binds.push(ip);
                    }
                }
                "errors" => {
                    // svcnet logs every failed upstream exchange and internal error already.
                    cx.max_args(d, 0)?;
                    cx.no_block(d)?;
                }
                "health" => {
                    cx.max_args(d, 1)?;
                    let mut h = Health {
                        addr: match d.args.first() {
                            Some(a) => cx.addr(d, a)?,
                            None => SocketAddr::from(([0, 0, 0, 0], 8080)),
                        },
                        lameduck: Duration::ZERO,
                    };
                    for o in &d.block {
                        match (o.name.as_str(), o.args.as_slice()) {
                            ("lameduck", [v]) => h.lameduck = cx.duration(o, v)?,
                            _ => {
                                return Err(
                                    cx.err(o.line, format!("plugin/health: unknown property '{}'", o.name))
                                );
                            }
                        }
                    }
                    plan.health = Some(h);
                }
                "ready" => {
                    cx.max_args(d, 1)?;
                    cx.no_block(d)?;
                    plan.ready = Some(match d.args.first() {
                        Some(a) => cx.addr(d, a)?,
                        None => SocketAddr::from(([0, 0, 0, 0], 8181)),
                    });
                }
                "prometheus" => {
                    cx.max_args(d, 1)?;
                    cx.no_block(d)?;
                    plan.prometheus = Some(match d.args.first() {
                        Some(a) => cx.addr(d, a)?,
                        None => SocketAddr::from(([127, 0, 0, 1], 9153)),
                    });
                }
                "reload" => {
                    cx.max_args(d, 2)?;
                    cx.no_block(d)?;
                    let interval = match d.args.first() {
                        Some(a) => cx.duration(d, a)?,
                        None => Duration::from_secs(30),
                    };
                    let jitter = match d.args.get(1) {
                        Some(a) => cx.duration(d, a)?,
                        None => Duration::from_secs(15),
                    };
                    // CoreDNS's limits.
                    if interval < Duration::from_secs(2) {
                        return Err(cx.err(
                            d.line,
                            "plugin/reload: interval value must be greater or equal to 2s",
                        ));
                    }
                    if jitter < Duration::from_secs(1) || jitter > interval / 2 {
                        return Err(cx.err(
                            d.line,
                            "plugin/reload: jitter value must be greater or equal to 1s and at most half of the interval",
                        ));
                    }
                    plan.reload = Some(Reload { interval, jitter });
                }
                "loop" => {
                    cx.max_args(d, 0)?;
                    cx.no_block(d)?;
                    plan.loop_detect = true;
                }
                "loadbalance" => {
                    cx.no_block(d)?;
                    match d.args.as_slice() {
                        [] => {}
                        [p] if p == "round_robin" => {}
                        _ => {
                            return Err(cx.err(
                                d.line,
                                format!(
                                    "plugin/loadbalance: unknown policy {:?} (supported: round_robin)",
                                    d.args
                                ),
                            ));
                        }
                    }
                    plan.dns.loadbalance = true;
                }
                "cache" => cache(&cx, d, &mut plan.dns)?,
                "kubernetes" => {
                    kubernetes = true;
                    kube(&cx, d, &mut plan)?;
                }
                "forward" => forward(&cx, d, &mut plan.dns, resolv_conf)?,
                _ => unreachable!("every name in PLUGINS is matched"),
            }
        }
        if !kubernetes {
            return Err(cx.err(
                block.line,
                "no kubernetes plugin: svcnet dns is the cluster's DNS and needs `kubernetes cluster.local …`",
            ));
        }
        plan.dns.listen = if binds.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)]
        } else {
            binds.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()
        };
        Ok(plan)
    }
}

fn cache(cx: &Ctx, d: &Directive, dns: &mut DnsConfig) -> Result<(), CorefileError> {
    let mut policy = CachePolicy::default();
    let mut args = d.args.iter();
    if let Some(first) = d.args.first()
        && first.bytes().all(|b| b.is_ascii_digit())
    {
        let ttl: u32 = cx.number(d, first)?;
        policy.max_success_ttl = ttl;
        policy.max_denial_ttl = ttl;
        args.next();
    }
    policy.zones = args.map(|z| zone(z)).filter(|z| z != ".").collect();
    // CoreDNS's default capacity per kind.
    let (mut success_cap, mut denial_cap) = (9984usize, 9984usize);
    for o in &d.block {
        match (o.name.as_str(), o.args.as_slice()) {
            ("success", [cap, rest @ ..]) | ("denial", [cap, rest @ ..]) if rest.len() <= 1 => {
                let cap: usize = cx.number(o, cap)?;
                let ttl: Option<u32> = rest.first().map(|t| cx.number(o, t)).transpose()?;
                if o.name == "success" {
                    success_cap = cap;
                    if let Some(t) = ttl {
                        policy.max_success_ttl = t;
                    }
                } else {
                    denial_cap = cap;
                    if let Some(t) = ttl {
                        policy.max_denial_ttl = t;
                    }
                }
            }
            ("disable", [kind, zones @ ..]) if kind == "success" || kind == "denial" => {
                let zones: Vec<String> = if zones.is_empty() {
                    vec![".".into()]
                } else {
                    zones.iter().map(|z| zone(z)).collect()
                };
                if kind == "success" {
                    policy.no_success.extend(zones);
                } else {
                    policy.no_denial.extend(zones);
                }
            }
            _ => {
                return Err(cx.err(
                    o.line,
                    format!(
                        "plugin/cache: unsupported property '{}' (svcnet supports success, denial, disable)",
                        o.name
                    ),
                ));
            }
        }
    }
    dns.cache_size = success_cap + denial_cap;
    dns.cache = policy;
    Ok(())
}

fn kube(cx: &Ctx, d: &Directive, plan: &mut Plan) -> Result<(), CorefileError> {
    let zones: Vec<String> = d.args.iter().map(|z| zone(z)).collect();
    let forward_zones: Vec<&String> = zones.iter().filter(|z| !is_reverse(z)).collect();
    match forward_zones.as_slice() {
        [] => {
            return Err(cx.err(
                d.line,
                "plugin/kubernetes: name the cluster domain (kubernetes cluster.local in-addr.arpa ip6.arpa)",
            ));
        }
        [z] if *z != "." => plan.dns.cluster_domain = (*z).clone(),
        _ => {
            return Err(cx.err(
                d.line,
                format!("plugin/kubernetes: svcnet serves exactly one cluster domain, not {forward_zones:?}"),
            ));
        }
    }
    plan.dns.reverse = zones.iter().any(|z| is_reverse(z));
    plan.dns.fallthrough = Vec::new();
    for o in &d.block {
        match (o.name.as_str(), o.args.as_slice()) {
            ("pods", [mode]) => {
                plan.dns.pods = mode
                    .parse::<PodsMode>()
                    .map_err(|_| cx.err(o.line, format!("plugin/kubernetes: wrong pod mode: {mode}")))?;
            }
            ("fallthrough", zs) => {
                plan.dns.fallthrough = if zs.is_empty() {
                    zones.clone()
                } else {
                    zs.iter().map(|z| zone(z)).collect()
                };
            }
            ("ttl", [t]) => {
                let ttl: u32 = cx.number(o, t)?;
                if ttl > 3600 {
                    return Err(cx.err(
                        o.line,
                        format!("plugin/kubernetes: ttl must be in range [0, 3600]: {ttl}"),
                    ));
                }
                plan.dns.ttl = ttl;
            }
            ("kubeconfig", [path, ..]) if o.args.len() <= 2 => {
                if o.args.len() == 2 {
                    return Err(cx.err(o.line, "plugin/kubernetes: kubeconfig CONTEXT is not supported: use the file's current context"));
                }
                plan.kubeconfig = Some(PathBuf::from(path));
            }
            ("endpoint", _) => {
                return Err(cx.err(
                    o.line,
                    "plugin/kubernetes: endpoint is not supported: give the API server with --kubeconfig",
                ));
            }
            _ => {
                return Err(cx.err(
                    o.line,
                    format!("plugin/kubernetes: unknown property '{}'", o.name),
                ));
            }
        }
    }
    Ok(())
}

fn forward(
    cx: &Ctx,
    d: &Directive,
    dns: &mut DnsConfig,
    resolv_conf: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<(), CorefileError> {
    let [from, to @ ..] = d.args.as_slice() else {
        return Err(cx.err(
            d.line,
            "plugin/forward: Wrong argument count or unexpected line ending after 'forward'",
        ));
    };
    if zone(from) != "." {
        return Err(cx.err(
            d.line,
            format!("plugin/forward: svcnet forwards every name ('.'), not only '{from}'"),
        ));
    }
    if to.is_empty() {
        return Err(cx.err(
            d.line,
            "plugin/forward: Wrong argument count or unexpected line ending after '.'",
        ));
    }
    let mut upstreams = Vec::new();
    for t in to {
        if t.starts_with('/') {
            let text =
                resolv_conf(t).map_err(|e| cx.err(d.line, format!("plugin/forward: reading {t}: {e}")))?;
            upstreams.extend(crate::resolv_conf_upstreams(&text, &[]));
            continue;
        }
        let a = t.strip_prefix("dns://").unwrap_or(t);
        if a.contains("://") {
            return Err(cx.err(
                d.line,
                format!("plugin/forward: unsupported protocol in '{t}' (only dns://)"),
            ));
        }
        let addr = a
            .parse::<SocketAddr>()
            .or_else(|_| a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                cx.err(
                    d.line,
                    format!("plugin/forward: not an IP address or file: '{t}'"),
                )
            })?;
        upstreams.push(addr);
    }
    if upstreams.is_empty() {
        return Err(cx.err(d.line, "plugin/forward: no nameservers found"));
    }
    for o in &d.block {
        match (o.name.as_str(), o.args.as_slice()) {
            ("max_concurrent", [n]) => {
                let n: usize = cx.number(o, n)?;
                if n == 0 {
                    return Err(cx.err(o.line, "plugin/forward: max_concurrent can't be negative or zero"));
                }
                dns.max_concurrent = Some(n);
            }
            ("policy", [p]) if p == "sequential" => {}
            _ => {
                return Err(cx.err(
                    o.line,
                    format!(
                        "plugin/forward: unsupported property '{}' (svcnet supports max_concurrent and policy \
                         sequential)",
                        o.name
                    ),
                ));
            }
        }
    }
    dns.upstreams = upstreams;
    dns.forward = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubeadm's default Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go), as it is in the
    /// `coredns` ConfigMap of a cluster made by kubeadm; the drop-in e2e test serves the same file.
    const KUBEADM: &str = include_str!("kubeadm.Corefile");

    fn resolv(_: &str) -> std::io::Result<String> {
        Ok("search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n".into())
    }

    fn plan(text: &str) -> Result<Plan, CorefileError> {
        Plan::from_corefile(text, "Corefile", &resolv)
    }

    #[test]
    fn kubeadm_default_corefile() {
        let p = plan(KUBEADM).expect("kubeadm's Corefile");
        assert_eq!(p.dns.listen, vec!["0.0.0.0:53".parse().unwrap()]);
        assert_eq!(p.dns.cluster_domain, "cluster.local");
        assert_eq!(p.dns.ttl, 30);
        assert_eq!(p.dns.pods, PodsMode::Insecure);
        assert!(p.dns.reverse);
        assert_eq!(p.dns.fallthrough, vec!["in-addr.arpa", "ip6.arpa"]);
        assert_eq!(
            p.dns.upstreams,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(p.dns.max_concurrent, Some(1000));
        assert_eq!(p.dns.cache.max_success_ttl, 30);
        assert_eq!(p.dns.cache.max_denial_ttl, 30);
        assert_eq!(p.dns.cache.no_success, vec!["cluster.local"]);
        assert_eq!(p.dns.cache.no_denial, vec!["cluster.local"]);
        assert!(p.dns.cache_size > 0);
        assert!(p.dns.forward && p.dns.loadbalance && p.loop_detect);
        assert_eq!(
            p.health,
            Some(Health {
                addr: "0.0.0.0:8080".parse().unwrap(),
                lameduck: Duration::from_secs(5)
            })
        );
        assert_eq!(p.ready, Some("0.0.0.0:8181".parse().unwrap()));
        assert_eq!(p.prometheus, Some("0.0.0.0:9153".parse().unwrap()));
        assert_eq!(
            p.reload,
            Some(Reload {
                interval: Duration::from_secs(30),
                jitter: Duration::from_secs(15)
            })
        );
    }

    #[test]
    fn an_unknown_plugin_is_named_with_its_line() {
        let text = KUBEADM.replace(
            "    loop\n",
            "    loop\n    rewrite name foo.example.com bar.cluster.local\n",
        );
        let e = plan(&text).unwrap_err();
        assert_eq!(e.line, 21);
        assert!(
            e.to_string()
                .starts_with("Corefile:21 - Error during parsing: Unknown directive 'rewrite'"),
            "{e}"
        );
    }

    #[test]
    fn unknown_properties_are_named() {
        let e = plan(&KUBEADM.replace("ttl 30", "namespaces default")).unwrap_err();
        assert_eq!(e.message, "plugin/kubernetes: unknown property 'namespaces'");
        let e = plan(&KUBEADM.replace("max_concurrent 1000", "force_tcp")).unwrap_err();
        assert!(e.message.contains("'force_tcp'"), "{e}");
        let e = plan(&KUBEADM.replace("lameduck 5s", "lameduck five")).unwrap_err();
        assert!(e.message.contains("not a duration: 'five'"), "{e}");
    }

    #[test]
    fn syntax_errors() {
        assert!(
            plan(".:53 {\n errors\n")
                .unwrap_err()
                .message
                .contains("missing '}'")
        );
        assert!(plan(".:53 errors").unwrap_err().message.contains("expected '{'"));
        let e = plan(".:53 {\n kubernetes cluster.local\n}\nexample.org:53 {\n forward . 1.1.1.1\n}\n")
            .unwrap_err();
        assert_eq!(e.line, 4);
        let e = plan("example.org {\n kubernetes cluster.local\n}\n").unwrap_err();
        assert!(e.message.contains("only the root zone"), "{e}");
        assert!(
            plan(".:53 {\n errors\n}\n")
                .unwrap_err()
                .message
                .contains("no kubernetes plugin")
        );
    }

    #[test]
    fn bind_port_comments_and_quotes() {
        let p = plan(
            "# cluster DNS\n.:5353 {\n bind 127.0.0.1 ::1 # both\n kubernetes \"cluster.local\" {\n  fallthrough\n }\n \
             forward . 192.0.2.1:5300 dns://192.0.2.2\n}\n",
        )
        .unwrap();
        assert_eq!(
            p.dns.listen,
            vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:5353".parse().unwrap()]
        );
        assert!(!p.dns.reverse);
        assert_eq!(p.dns.fallthrough, vec!["cluster.local"]);
        assert_eq!(
            p.dns.upstreams,
            vec!["192.0.2.1:5300".parse().unwrap(), "192.0.2.2:53".parse().unwrap()]
        );
        // No `cache`: nothing cached, as in CoreDNS.
        assert_eq!(p.dns.cache_size, 0);
        assert!(p.health.is_none() && p.ready.is_none() && !p.loop_detect);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
    }
}
