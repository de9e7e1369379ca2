//! A container's `securityContext`, as far as a host process can honour it.
//!
//! Honoured: `runAsUser`, `runAsGroup`, `supplementalGroups` and `fsGroup` (the process's uid, gid and
//! groups), `runAsNonRoot` (checked as the kubelet's `verifyRunAsNonRoot` does, with its messages; the
//! "image user" of a host process is the agent's own user), `allowPrivilegeEscalation: false` (no new
//! privileges) and `capabilities.drop` (removed from the bounding set). Refused, because a host process
//! cannot have them: `privileged: true`, `capabilities.add` and `readOnlyRootFilesystem: true` (the API
//! server refuses them at admission already; the runner refuses them too when it runs against another
//! API server). Nothing is silently ignored for these fields.
//!
//! The identity is applied by util-linux's `setpriv`, put between the pod's exec prefix (which may need
//! root, e.g. `ip netns exec`) and the program, so containers, exec probes and hooks all get it. The
//! working directory is entered before the identity is dropped, so it may lie under the agent's
//! owner-only data directory.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

use super::env::ConfigError;

/// The Linux capabilities by their Kubernetes names (`CAP_` dropped), for `capabilities.drop`.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What a container's processes run as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The user to switch to (`None`: the agent's own).
    pub uid: Option<u32>,
    /// The primary group to switch to (`None`: the agent's own, unless `uid` is set).
    pub gid: Option<u32>,
    /// Supplementary groups (replacing the agent's when `uid` or `gid` is set).
    pub groups: Vec<u32>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// Capabilities removed from the bounding set (lower-case names, or `all`).
    pub drop: Vec<String>,
}

impl Identity {
    /// Whether the process runs as root (uid 0).
    pub fn runs_as_root(&self) -> bool {
        self.uid
            .map_or_else(|| nix::unistd::geteuid().is_root(), |u| u == 0)
    }

    /// The `setpriv …` words that apply this identity and then exec the program; empty when there is
    /// nothing to change.
    pub fn setpriv_prefix(&self) -> Vec<String> {
        if *self == Identity::default() {
            return Vec::new();
        }
        let mut words = vec!["setpriv".to_string()];
        let switches = self.uid.is_some() || self.gid.is_some();
        if let Some(uid) = self.uid {
            words.push(format!("--reuid={uid}"));
        }
        // A uid without a gid gets the user's primary group, as a container runtime gives it.
        if let Some(gid) = self.gid.or_else(|| self.uid.map(primary_group)) {
            words.push(format!("--regid={gid}"));
        }
        if switches {
            if self.groups.is_empty() {
                words.push("--clear-groups".into());
            } else {
                let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                words.push(format!("--groups={}", list.join(",")));
            }
        }
        if self.no_new_privs {
            words.push("--no-new-privs".into());
        }
        if !self.drop.is_empty() {
            let list: Vec<String> = self.drop.iter().map(|c| format!("-{c}")).collect();
            words.push(format!("--bounding-set={}", list.join(",")));
        }
        words.push("--".into());
        words
    }
}

/// The primary group of `uid` in the host's user database; 0 for a user it does not know (what
/// container runtimes do for a uid missing from the image's `/etc/passwd`).
fn primary_group(uid: u32) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// `format.Pod` of the kubelet: `name_namespace(uid)`.
fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn id(field: &str, v: i64) -> Result<u32, ConfigError> {
    u32::try_from(v).map_err(|_| ConfigError {
        reason: "CreateContainerConfigError",
        retry: false,
        message: format!("{field} {v} is not a valid id"),
    })
}

/// The identity container `container` of `pod` runs as, or why it cannot start (the kubelet's
/// `CreateContainerConfigError`).
pub(crate) fn identity(pod: &Pod, container: &Container) -> Result<Identity, ConfigError> {
    let empty_pod = PodSecurityContext::default();
    let empty = SecurityContext::default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .unwrap_or(&empty_pod);
    let sc = container.security_context.as_ref().unwrap_or(&empty);
    let refuse = |what: &str| {
        Err(ConfigError {
            reason: "CreateContainerConfigError",
            retry: false,
            message: format!(
                "{what} is not supported by svcnet's process runner (pod: {:?}, container: {})",
                format_pod(pod),
                container.name
            ),
        })
    };
    if sc.privileged == Some(true) {
        return refuse("privileged");
    }
    if sc.read_only_root_filesystem == Some(true) {
        return refuse("readOnlyRootFilesystem");
    }
    let caps = sc.capabilities.as_ref();
    if caps.and_then(|c| c.add.as_ref()).is_some_and(|a| !a.is_empty()) {
        return refuse("capabilities.add");
    }
    // The container's settings win over the pod's (the kubelet's DetermineEffectiveSecurityContext).
    let uid = sc.run_as_user.or(psc.run_as_user);
    let gid = sc.run_as_group.or(psc.run_as_group);
    let non_root = sc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
    let mut identity = Identity {
        uid: uid.map(|u| id("runAsUser", u)).transpose()?,
        gid: gid.map(|g| id("runAsGroup", g)).transpose()?,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Identity::default()
    };
    for g in psc
        .supplemental_groups
        .iter()
        .flatten()
        .chain(psc.fs_group.as_ref())
    {
        let g = id("supplementalGroups", *g)?;
        if !identity.groups.contains(&g) {
            identity.groups.push(g);
        }
    }
    for cap in caps.and_then(|c| c.drop.as_ref()).into_iter().flatten() {
        let name = cap.trim_start_matches("CAP_").to_ascii_uppercase();
        if name != "ALL" && !CAPABILITIES.contains(&name.as_str()) {
            return Err(ConfigError {
                reason: "CreateContainerConfigError",
                retry: false,
                message: format!("unknown capability {cap:?} in capabilities.drop"),
            });
        }
        identity.drop.push(name.to_ascii_lowercase());
    }
    if non_root {
        let pod_name = format_pod(pod);
        match identity.uid {
            Some(0) => {
                return Err(ConfigError {
                    reason: "CreateContainerConfigError",
                    retry: false,
                    message: format!(
                        "container's runAsUser breaks non-root policy (pod: {pod_name:?}, container: {})",
                        container.name
                    ),
                });
            }
            Some(_) => {}
            None if identity.runs_as_root() => {
                return Err(ConfigError {
                    reason: "CreateContainerConfigError",
                    retry: false,
                    message: format!(
                        "container has runAsNonRoot and image will run as root (pod: {pod_name:?}, container: {})",
                        container.name
                    ),
                });
            }
            None => {}
        }
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(pod_sc: serde_json::Value, sc: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"securityContext": pod_sc, "containers": [{"name": "c", "securityContext": sc}]},
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn container_settings_win_and_become_setpriv_words() {
        let (p, c) = pod(
            json!({"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000}),
            json!({"runAsUser": 65534, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
        );
        let id = identity(&p, &c).unwrap();
        assert_eq!(
            id.setpriv_prefix(),
            [
                "setpriv",
                "--reuid=65534",
                "--regid=3000",
                "--groups=4000,2000",
                "--no-new-privs",
                "--bounding-set=-all",
                "--"
            ]
        );
        let (p, c) = pod(json!({}), json!({}));
        assert!(identity(&p, &c).unwrap().setpriv_prefix().is_empty());
    }

    #[test]
    fn run_as_non_root_as_the_kubelet_words_it() {
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({"runAsUser": 0}));
        assert_eq!(
            identity(&p, &c).unwrap_err().message,
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u-1)\", container: c)"
        );
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({}));
        let r = identity(&p, &c);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                r.unwrap_err().message,
                "container has runAsNonRoot and image will run as root (pod: \"p_ns(u-1)\", container: c)"
            );
        } else {
            assert!(r.is_ok());
        }
        let (p, c) = pod(json!({"runAsNonRoot": true, "runAsUser": 1000}), json!({}));
        assert_eq!(identity(&p, &c).unwrap().uid, Some(1000));
    }

    #[test]
    fn what_a_host_process_cannot_have_is_refused() {
        for sc in [
            json!({"privileged": true}),
            json!({"readOnlyRootFilesystem": true}),
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            json!({"capabilities": {"drop": ["NOT_A_CAP"]}}),
        ] {
            let (p, c) = pod(json!({}), sc.clone());
            let e = identity(&p, &c).unwrap_err();
            assert_eq!(e.reason, "CreateContainerConfigError", "{sc}");
        }
    }
}
