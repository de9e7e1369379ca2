//! A container's environment and `$(VAR)` expansion, computed the way the kubelet does
//! (`pkg/kubelet/kubelet_pods.go` `makeEnvironmentVariables` and `third_party/forked/golang/expansion`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodContext;

/// Why a container cannot be configured: the container stays `waiting` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub reason: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn config(message: String) -> ConfigError {
        ConfigError {
            reason: "CreateContainerConfigError",
            message,
        }
    }
}

/// What to run for one container: program, arguments and the full environment.
#[derive(Clone, Debug)]
pub(crate) struct LaunchSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Expands `$(VAR)` references in `input` exactly as Kubernetes does: `$$` is an escaped `$`, a reference to an
/// unknown variable and an unterminated `$(` are left as written.
pub(crate) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        let name = String::from_utf8_lossy(&rest[1..close]);
                        match lookup(&name) {
                            Some(value) => out.extend_from_slice(value.as_bytes()),
                            None => {
                                out.extend_from_slice(b"$(");
                                out.extend_from_slice(name.as_bytes());
                                out.push(b')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole byte ranges of valid UTF-8 strings were copied, in order, so this never replaces anything.
    String::from_utf8_lossy(&out).into_owned()
}

/// An insertion-ordered map: the environment keeps the order variables were defined in.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: &str, value: String) {
        match self.index.get(name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.to_owned(), self.vars.len());
                self.vars.push((name.to_owned(), value));
            }
        }
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// The value of a downward-API `fieldRef`.
fn field_ref(pod: &Pod, ctx: &PodContext, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted_key = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(key.to_owned())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.clone()),
        // The ServiceAccount admission plugin defaults an unset name to "default".
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        _ => {
            if let Some(key) = quoted_key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = quoted_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(ConfigError::config(format!("unsupported fieldPath: {path}")));
            }
        }
    };
    Ok(value)
}

/// Computes what to run for `container`: its environment (service variables, then svcnet's `POD_IP` and
/// `HOSTNAME`, then `env` in order with expansion and the downward API) and its expanded command line.
pub(crate) fn launch_spec(
    pod: &Pod,
    container: &Container,
    ctx: &PodContext,
) -> Result<LaunchSpec, ConfigError> {
    // Explicit variables are looked up first, then service variables, as in the kubelet's MappingFuncFor.
    let service: HashMap<&str, &str> = ctx
        .service_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut env = OrderedEnv::default();
    // svcnet conventions: every container knows its pod's address, and HOSTNAME is the pod's hostname as
    // a container runtime sets it (`spec.hostname`, else the pod's name). Defined before `env` so that
    // the pod can refer to or override them.
    env.set("POD_IP", ctx.pod_ip.to_string());
    if pod.metadata.name.is_some() {
        env.set(
            "HOSTNAME",
            crate::pod_identity::uts_hostname(pod, crate::netns::CLUSTER_DOMAIN),
        );
    }

    for from in container.env_from.iter().flatten() {
        // svcnet's runner has no access to ConfigMaps and Secrets: optional sources are skipped (as if
        // missing), required ones fail the container as a missing object fails it on a kubelet.
        if let Some(cm) = &from.config_map_ref
            && !cm.optional.unwrap_or(false)
        {
            return Err(ConfigError::config(format!(
                "configmap {:?} not found (svcnet's runner cannot read ConfigMaps)",
                cm.name
            )));
        }
        if let Some(secret) = &from.secret_ref
            && !secret.optional.unwrap_or(false)
        {
            return Err(ConfigError::config(format!(
                "secret {:?} not found (svcnet's runner cannot read Secrets)",
                secret.name
            )));
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                field_ref(pod, ctx, &field.field_path)?
            } else if let Some(cm) = &source.config_map_key_ref {
                if cm.optional.unwrap_or(false) {
                    continue;
                }
                return Err(ConfigError::config(format!(
                    "configmap {:?} not found (svcnet's runner cannot read ConfigMaps)",
                    cm.name
                )));
            } else if let Some(secret) = &source.secret_key_ref {
                if secret.optional.unwrap_or(false) {
                    continue;
                }
                return Err(ConfigError::config(format!(
                    "secret {:?} not found (svcnet's runner cannot read Secrets)",
                    secret.name
                )));
            } else if source.resource_field_ref.is_some() {
                return Err(ConfigError::config(format!(
                    "env {:?}: resourceFieldRef is not supported by svcnet's runner",
                    var.name
                )));
            } else {
                String::new()
            }
        } else {
            let raw = var.value.as_deref().unwrap_or("");
            expand(raw, |name| {
                env.get(name)
                    .or_else(|| service.get(name).copied())
                    .map(str::to_owned)
            })
        };
        env.set(&var.name, value);
    }

    // Service variables come first in the final environment but never override explicit ones.
    let mut all = OrderedEnv::default();
    for (k, v) in &ctx.service_env {
        if env.get(k).is_none() {
            all.set(k, v.clone());
        }
    }
    for (k, v) in env.vars {
        all.set(&k, v);
    }

    let lookup = |name: &str| all.get(name).map(str::to_owned);
    let mut argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .map(|c| expand(c, lookup))
        .collect();
    argv.extend(container.args.iter().flatten().map(|a| expand(a, lookup)));
    if container.command.as_ref().is_none_or(Vec::is_empty) {
        return Err(ConfigError {
            reason: "RunContainerError",
            message: format!(
                "svcnet runs host processes: container {:?} has no command",
                container.name
            ),
        });
    }
    let program = argv.remove(0);
    Ok(LaunchSpec {
        program,
        args: argv,
        env: all.vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "VAR_A" => Some("A".into()),
            "VAR_B" => Some("B".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_matches_kubernetes() {
        // Cases from Kubernetes' expansion_test.go.
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(EMPTY)", ""),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$()", "$()"),
            ("f00__(VAR_A)__", "f00__(VAR_A)__"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("héllo $(VAR_A) ü$ü", "héllo A ü$ü"),
            ("$$", "$"),
            ("$$$$", "$$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, lookup), want, "input {input:?}");
        }
    }
}
