//! A pod's own name, as the kubelet gives it: its hostname (`spec.hostname`, else the pod's name cut to 63
//! characters), its domain (`<subdomain>.<namespace>.svc.<cluster domain>` with `spec.subdomain`), the
//! `/etc/hosts` that names its address so (plus `spec.hostAliases`), and the words that run a container
//! process with that hostname (a UTS namespace of its own) and, where the pod network has no other way,
//! that hosts file (and the pod's ServiceAccount token directory and volumes) bind-mounted where
//! Kubernetes puts them (a mount namespace of its own).
//!
//! The kubelet asks the container runtime for both; svcnet runs processes on the host, so it wraps each
//! container (and exec probe) in util-linux's `unshare`, whose `sh -c` sets the hostname, mounts the file
//! and execs the container's command (its PID stays the one the runner started). This needs root
//! (`CAP_SYS_ADMIN`); without it [`Sandbox::detect`] says so once and pods see the node's name, with
//! `HOSTNAME` still set in their environment.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{HostAlias, Pod};

/// The kubelet's limit on a hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// The hostname the pod's containers see, and the domain its hosts entry adds (`spec.subdomain`), as the
/// kubelet's `GeneratePodHostNameAndDomain`. With `spec.setHostnameAsFQDN` and a domain, the hostname is
/// the full name.
pub fn hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = match spec.and_then(|s| s.hostname.as_deref()).filter(|h| !h.is_empty()) {
        Some(h) => h.to_string(),
        None => {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            // Cut to a DNS label; the cut must not end in '-' or '.'.
            let cut = &name[..name.len().min(MAX_HOSTNAME)];
            cut.trim_end_matches(['-', '.']).to_string()
        }
    };
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|d| !d.is_empty())
        .map(|sub| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{sub}.{ns}.svc.{cluster_domain}")
        });
    (name, domain)
}

/// The hostname set in the pod's UTS namespace: [`hostname`], or its full name with
/// `spec.setHostnameAsFQDN`.
pub fn uts_hostname(pod: &Pod, cluster_domain: &str) -> String {
    let (name, domain) = hostname(pod, cluster_domain);
    let fqdn = pod.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn) == Some(true);
    match domain {
        Some(d) if fqdn => format!("{name}.{d}"),
        _ => name,
    }
}

/// The pod's `/etc/hosts`, byte for byte as the kubelet's `managedHostsFileContent` writes it: the
/// loopback boilerplate, a line per pod IP naming the pod (`<ip>\t<hostname>.<domain>\t<hostname>`, or
/// `<ip>\t<hostname>` without a domain), then the `hostAliases`, one line per entry.
pub fn hosts_file(pod_ips: &[IpAddr], name: &str, domain: Option<&str>, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match domain {
            Some(d) => out.push_str(&format!("{ip}\t{name}.{d}\t{name}\n")),
            None => out.push_str(&format!("{ip}\t{name}\n")),
        }
    }
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// Whether this agent can give pods their own hostname (and hosts file), found once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    tools: Option<Tools>,
}

/// Absolute paths of the tools the prefix runs: a container's own `PATH` must not change them.
#[derive(Debug, Clone)]
struct Tools {
    unshare: String,
    sh: String,
    hostname: String,
    mount: String,
}

/// `tool` in the usual system directories.
fn find(tool: &str) -> Option<String> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        // The paths go into a shell script in single quotes.
        .filter(|p| !p.contains('\''))
}

impl Sandbox {
    /// Finds `unshare`, `sh`, `hostname` and `mount` and tries `unshare --uts --mount true`: root and
    /// util-linux are there, or pods keep the node's name (logged once).
    pub fn detect() -> Sandbox {
        let tools = (|| {
            let tools = Tools {
                unshare: find("unshare")?,
                sh: find("sh")?,
                hostname: find("hostname")?,
                mount: find("mount")?,
            };
            let ok = Command::new(&tools.unshare)
                .args(["--uts", "--mount", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(tools)
        })();
        if tools.is_none() {
            tracing::info!(
                "`unshare --uts --mount` does not work here (needs root, util-linux, sh, hostname and mount): pods see the node's hostname and /etc/hosts"
            );
        }
        Sandbox { tools }
    }

    /// Whether containers get their own hostname and mounts here.
    pub fn works(&self) -> bool {
        self.tools.is_some()
    }

    /// A sandbox that does nothing (pods keep the node's name).
    pub fn none() -> Sandbox {
        Sandbox { tools: None }
    }

    /// The words put before a container's command: set the hostname in a new UTS namespace and, with
    /// `mounts`, bind-mount each source over its target in a new (private) mount namespace, in order —
    /// the pod's hosts file over `/etc/hosts`, its ServiceAccount directory over
    /// [`crate::agent::SERVICE_ACCOUNT_MOUNT`], the container's volumes at their `mountPath`s (read-only
    /// ones remounted so); then exec the command. Empty when the sandbox does not work here.
    pub fn prefix(&self, hostname: &str, mounts: &[BindMount]) -> Vec<String> {
        let Some(t) = &self.tools else {
            return Vec::new();
        };
        let mut words = vec![t.unshare.clone(), "--uts".into()];
        let mut script = format!("'{}' \"$0\"", t.hostname);
        if !mounts.is_empty() {
            words.extend(["--mount".into(), "--propagation".into(), "private".into()]);
            for (i, m) in mounts.iter().enumerate() {
                // Sources and targets (the pod's own paths) travel as arguments, never inside the script.
                let (src, dst) = (2 * i + 1, 2 * i + 2);
                script.push_str(&format!(" && '{}' --bind \"${{{src}}}\" \"${{{dst}}}\"", t.mount));
                if m.read_only {
                    script.push_str(&format!(" && '{}' -o remount,bind,ro \"${{{dst}}}\"", t.mount));
                }
            }
            script.push_str(&format!(" && shift {}", 2 * mounts.len()));
        }
        script.push_str(" && exec \"$@\"");
        words.extend(["--".into(), t.sh.clone(), "-c".into(), script, hostname.into()]);
        for m in mounts {
            words.push(m.source.to_string_lossy().into_owned());
            words.push(m.target.clone());
        }
        words
    }
}

/// One bind mount in a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// What is mounted (a file or directory on the node).
    pub source: std::path::PathBuf,
    /// Where the container sees it (it must exist on the node: a mount needs its target).
    pub target: String,
    /// Remounted read-only.
    pub read_only: bool,
}

impl BindMount {
    /// A read-write bind mount of `source` at `target`.
    pub fn new(source: &Path, target: &str) -> BindMount {
        BindMount {
            source: source.to_path_buf(),
            target: target.to_string(),
            read_only: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(name: &str, hostname: Option<&str>, subdomain: Option<&str>) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                hostname: hostname.map(Into::into),
                subdomain: subdomain.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn hostname_and_domain_as_the_kubelet_makes_them() {
        assert_eq!(
            hostname(&pod("api-0", None, None), "cluster.local"),
            ("api-0".into(), None)
        );
        assert_eq!(
            hostname(&pod("api-0", Some("db"), Some("set")), "cluster.local"),
            ("db".into(), Some("set.web.svc.cluster.local".into()))
        );
        // Long pod names are cut to 63 characters, without a trailing '-' or '.'.
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(
            hostname(&pod(&long, None, None), "cluster.local").0,
            "a".repeat(62)
        );
        let mut fqdn = pod("api-0", None, Some("set"));
        fqdn.spec.as_mut().unwrap().set_hostname_as_fqdn = Some(true);
        assert_eq!(
            uts_hostname(&fqdn, "cluster.local"),
            "api-0.set.web.svc.cluster.local"
        );
        assert_eq!(
            uts_hostname(&pod("api-0", None, Some("set")), "cluster.local"),
            "api-0"
        );
    }

    #[test]
    fn hosts_file_matches_the_kubelets_bytes() {
        let ip: IpAddr = "10.244.0.5".parse().unwrap();
        let aliases = vec![
            HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            },
            HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.remote".into()]),
            },
        ];
        let text = hosts_file(&[ip], "db", Some("set.web.svc.cluster.local"), &aliases);
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             10.244.0.5\tdb.set.web.svc.cluster.local\tdb\n\n# Entries added by HostAliases.\n\
             127.0.0.1\tfoo.local\tbar.local\n10.1.2.3\tfoo.remote\n"
        );
        assert!(
            hosts_file(&[ip], "nginx", None, &[]).ends_with("fe00::2\tip6-allrouters\n10.244.0.5\tnginx\n")
        );
    }

    #[test]
    fn the_prefix_execs_the_command_after_naming_the_host() {
        let s = Sandbox {
            tools: Some(Tools {
                unshare: "/bin/unshare".into(),
                sh: "/bin/sh".into(),
                hostname: "/bin/hostname".into(),
                mount: "/bin/mount".into(),
            }),
        };
        let p = s.prefix("db", &[]);
        assert_eq!(p[..4], ["/bin/unshare", "--uts", "--", "/bin/sh"]);
        assert_eq!(p.last().map(String::as_str), Some("db"));
        let sa = BindMount {
            read_only: true,
            ..BindMount::new(
                Path::new("/x/sa"),
                "/var/run/secrets/kubernetes.io/serviceaccount",
            )
        };
        let p = s.prefix(
            "db",
            &[BindMount::new(Path::new("/x/etc-hosts"), "/etc/hosts"), sa],
        );
        assert!(p.contains(&"--mount".to_string()));
        assert_eq!(
            p[p.len() - 5..],
            [
                "db",
                "/x/etc-hosts",
                "/etc/hosts",
                "/x/sa",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        let script = &p[p.len() - 6];
        assert!(
            script.ends_with(
                "--bind \"${3}\" \"${4}\" && '/bin/mount' -o remount,bind,ro \"${4}\" && shift 4 && exec \"$@\""
            ),
            "{script}"
        );
        assert!(Sandbox::none().prefix("db", &[]).is_empty());
    }
}
