//! A container's environment and `$(VAR)` expansion, computed the way the kubelet does
//! (`pkg/kubelet/kubelet_pods.go` `makeEnvironmentVariables` and `third_party/forked/golang/expansion`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodContext;
use super::sources::{Lookup, ObjectData, ObjectKind, ObjectSource};

/// Why a container cannot be configured: the container stays `waiting` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub reason: &'static str,
    /// Empty for a container that is only waiting (`ContainerCreating` has no message).
    pub message: String,
    /// The cause is an object that may yet appear or change (a missing ConfigMap, a key it lacks): the
    /// container is tried again when the object source changes, as the kubelet's sync loop retries it.
    pub retry: bool,
}

impl ConfigError {
    pub(crate) fn config(message: String) -> ConfigError {
        ConfigError {
            reason: "CreateContainerConfigError",
            message,
            retry: false,
        }
    }

    /// A configuration error that the object source's next change may cure.
    fn object(message: String) -> ConfigError {
        ConfigError {
            retry: true,
            ..ConfigError::config(message)
        }
    }
}

/// Whether `name` may name an environment variable: Kubernetes 1.33's rule (`RelaxedEnvironmentVariableValidation`,
/// on by default): printable ASCII other than `=`, not empty.
pub(crate) fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The object a container refers to, or `None` when it is missing and `optional`. A missing required
/// object fails the container in the kubelet's words (`configmap "cm" not found`); one not listed yet
/// keeps it `ContainerCreating`.
fn object(
    objects: &dyn ObjectSource,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<std::sync::Arc<ObjectData>>, ConfigError> {
    match objects.get(kind, namespace, name) {
        Lookup::Found(data) => Ok(Some(data)),
        Lookup::Missing if optional => Ok(None),
        Lookup::Missing => Err(ConfigError::object(format!("{} {name:?} not found", kind.word()))),
        Lookup::Failed(e) => Err(ConfigError::object(format!(
            "failed to sync {} cache: {e}",
            kind.word()
        ))),
        Lookup::Pending => Err(ConfigError {
            reason: "ContainerCreating",
            message: String::new(),
            retry: true,
        }),
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
    objects: &dyn ObjectSource,
) -> Result<LaunchSpec, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
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

    // `envFrom` first, in order (later sources override earlier ones), then `env`, as the kubelet's
    // makeEnvironmentVariables: its values are not expanded, but `env` can refer to them.
    for from in container.env_from.iter().flatten() {
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(cm), _) => (ObjectKind::ConfigMap, &cm.name, cm.optional),
            (None, Some(s)) => (ObjectKind::Secret, &s.name, s.optional),
            (None, None) => continue,
        };
        let Some(data) = object(objects, kind, namespace, name, optional.unwrap_or(false))? else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        for (key, value) in data.env(kind) {
            let var = format!("{prefix}{key}");
            if valid_env_name(&var) {
                env.set(&var, value);
            } else {
                invalid.push(var);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            let word = match kind {
                ObjectKind::ConfigMap => "configMap",
                ObjectKind::Secret => "secret",
            };
            objects.warn(
                pod,
                "InvalidEnvironmentVariableNames",
                format!(
                    "Keys [{}] from the EnvFrom {word} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            );
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                field_ref(pod, ctx, &field.field_path)?
            } else if let Some(sel) = &source.config_map_key_ref {
                let optional = sel.optional.unwrap_or(false);
                let kind = ObjectKind::ConfigMap;
                let Some(data) = object(objects, kind, namespace, &sel.name, optional)? else {
                    continue;
                };
                match data.text.get(&sel.key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(ConfigError::object(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            sel.key, sel.name
                        )));
                    }
                }
            } else if let Some(sel) = &source.secret_key_ref {
                let optional = sel.optional.unwrap_or(false);
                let kind = ObjectKind::Secret;
                let Some(data) = object(objects, kind, namespace, &sel.name, optional)? else {
                    continue;
                };
                match data.binary.get(&sel.key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(ConfigError::object(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            sel.key, sel.name
                        )));
                    }
                }
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
            retry: false,
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
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::runner::sources::NoObjects;

    /// A fixed set of objects, recording the warnings it is told.
    #[derive(Default)]
    struct Fixed {
        objects: Vec<(ObjectKind, &'static str, ObjectData)>,
        pending: Vec<&'static str>,
        warnings: Mutex<Vec<String>>,
        none: NoObjects,
    }

    impl ObjectSource for Fixed {
        fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Lookup {
            assert_eq!(namespace, "app");
            if self.pending.contains(&name) {
                return Lookup::Pending;
            }
            self.objects
                .iter()
                .find(|(k, n, _)| *k == kind && *n == name)
                .map_or(Lookup::Missing, |(_, _, d)| Lookup::Found(Arc::new(d.clone())))
        }
        fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
            self.none.changes()
        }
        fn warn(&self, _: &Pod, reason: &str, message: String) {
            self.warnings.lock().unwrap().push(format!("{reason}: {message}"));
        }
    }

    fn spec(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "app"},
            "spec": {"containers": [container]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    fn ctx() -> PodContext {
        PodContext {
            pod_ip: "127.0.0.9".parse().unwrap(),
            host_ip: "127.0.0.1".parse().unwrap(),
            node_name: "n".into(),
            service_env: vec![],
            exec_prefix: vec![],
            container_prefix: Default::default(),
        }
    }

    #[test]
    fn config_maps_and_secrets_fill_the_environment_as_on_the_kubelet() {
        let source = Fixed {
            objects: vec![
                (
                    ObjectKind::ConfigMap,
                    "cm",
                    ObjectData {
                        text: [("mode".into(), "fast".into()), ("a=b".into(), "x".into())].into(),
                        binary: [("bin".into(), vec![1])].into(),
                    },
                ),
                (
                    ObjectKind::Secret,
                    "s",
                    ObjectData {
                        text: Default::default(),
                        binary: [("pw".into(), b"hunter2".to_vec())].into(),
                    },
                ),
            ],
            pending: vec!["later"],
            ..Default::default()
        };
        let (pod, c) = spec(serde_json::json!({"name": "c", "command": ["true"],
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "gone", "optional": true}}],
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}},
            {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "BOTH", "value": "$(CM_mode)-$(PW)"}
        ]}));
        let launched = launch_spec(&pod, &c, &ctx(), &source).unwrap();
        let env: std::collections::BTreeMap<_, _> = launched.env.into_iter().collect();
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["PW"], "hunter2");
        assert_eq!(env["CM_mode"], "fast");
        assert_eq!(env["BOTH"], "fast-hunter2");
        assert!(!env.contains_key("OPT") && !env.contains_key("OPT2") && !env.contains_key("CM_bin"));
        assert_eq!(
            source.warnings.lock().unwrap().as_slice(),
            [
                "InvalidEnvironmentVariableNames: Keys [CM_a=b] from the EnvFrom configMap app/cm were skipped since they are considered invalid environment variable names."
            ]
        );

        let fails = |container: serde_json::Value| {
            let (pod, c) = spec(container);
            launch_spec(&pod, &c, &ctx(), &source).unwrap_err()
        };
        let e = fails(serde_json::json!({"name": "c", "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]}));
        assert_eq!(
            (e.reason, e.message.as_str(), e.retry),
            (
                "CreateContainerConfigError",
                "configmap \"missing\" not found",
                true
            )
        );
        let e = fails(serde_json::json!({"name": "c", "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}));
        assert_eq!(e.message, "couldn't find key k in ConfigMap app/cm");
        let e = fails(serde_json::json!({"name": "c", "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}));
        assert_eq!(e.message, "couldn't find key k in Secret app/s");
        let e = fails(
            serde_json::json!({"name": "c", "command": ["true"], "envFrom": [{"secretRef": {"name": "gone"}}]}),
        );
        assert_eq!(e.message, "secret \"gone\" not found");
        let e = fails(
            serde_json::json!({"name": "c", "command": ["true"], "envFrom": [{"configMapRef": {"name": "later"}}]}),
        );
        assert_eq!(
            (e.reason, e.message.as_str(), e.retry),
            ("ContainerCreating", "", true)
        );
    }

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
