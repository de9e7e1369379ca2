//! Pods and the workloads that template them (apps/v1 Deployments and ReplicaSets): kube-apiserver's
//! defaulting (`SetDefaults_PodSpec`, `SetDefaults_Deployment`, …) and the validation rules users meet
//! first, with Kubernetes' field paths and messages.
//!
//! Works on JSON objects as stored, so a stored object can be defaulted or validated without a typed
//! round trip; the API server has already type-checked it.

use serde_json::{Map, Value, json};

use crate::field::{BadValue, FieldError, Path};
use crate::validation;

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object)
        && let Some(m) = v.as_object_mut()
    {
        m.insert(key.into(), json!({}));
    }
    v.get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("just ensured to be an object")
}

fn default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), v);
    }
}

/// Whether an image reference has no tag or the `latest` tag (kube then defaults `imagePullPolicy` to
/// `Always`).
fn latest_or_untagged(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}

fn default_containers(list: Option<&mut Value>) {
    let Some(Value::Array(cs)) = list else { return };
    for c in cs.iter_mut() {
        let Some(m) = c.as_object_mut() else { continue };
        let policy = if m
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(latest_or_untagged)
        {
            "Always"
        } else {
            "IfNotPresent"
        };
        default(m, "imagePullPolicy", json!(policy));
        default(m, "terminationMessagePath", json!("/dev/termination-log"));
        default(m, "terminationMessagePolicy", json!("File"));
        if let Some(Value::Array(ports)) = m.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                default(p, "protocol", json!("TCP"));
            }
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
                default(p, "timeoutSeconds", json!(1));
                default(p, "periodSeconds", json!(10));
                default(p, "successThreshold", json!(1));
                default(p, "failureThreshold", json!(3));
                if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                    default(h, "path", json!("/"));
                    default(h, "scheme", json!("HTTP"));
                }
            }
        }
    }
}

/// `SetDefaults_PodSpec` and its containers' defaults, on a PodSpec object.
pub fn set_pod_spec_defaults(spec: &mut Value) {
    if let Some(m) = spec.as_object_mut() {
        pod_spec_defaults(m);
    }
}

fn pod_spec_defaults(m: &mut Map<String, Value>) {
    default(m, "restartPolicy", json!("Always"));
    default(m, "dnsPolicy", json!("ClusterFirst"));
    default(m, "terminationGracePeriodSeconds", json!(30));
    default(m, "schedulerName", json!("default-scheduler"));
    default(m, "securityContext", json!({}));
    default(m, "enableServiceLinks", json!(true));
    default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
    default(m, "priority", json!(0));
    default_containers(m.get_mut("containers"));
    default_containers(m.get_mut("initContainers"));
    default_volumes(m.get_mut("volumes"));
}

/// kube's volume source defaults: mode 0644 for the API-data volumes (`SetDefaults_ConfigMapVolumeSource`
/// and its siblings) and an hour for a projected ServiceAccount token (`SetDefaults_ServiceAccountTokenProjection`).
fn default_volumes(list: Option<&mut Value>) {
    let Some(Value::Array(vs)) = list else { return };
    for v in vs.iter_mut().filter_map(Value::as_object_mut) {
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                default(s, "defaultMode", json!(0o644));
            }
        }
        let sources = v
            .get_mut("projected")
            .and_then(|p| p.get_mut("sources"))
            .and_then(Value::as_array_mut);
        for s in sources.into_iter().flatten() {
            if let Some(t) = s.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                default(t, "expirationSeconds", json!(3600));
            }
        }
    }
}

/// Pod defaults (spec defaults).
pub fn set_pod_defaults(pod: &mut Value) {
    pod_spec_defaults(obj_mut(pod, "spec"));
}

/// How long pods tolerate a NotReady or unreachable node by default (kube-apiserver's
/// `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin: a pod that does not already tolerate the
/// `node.kubernetes.io/not-ready` or `…/unreachable` `NoExecute` taints (a toleration with that key or
/// none, and that effect or none) gets one for each, `Exists`, for [`DEFAULT_TOLERATION_SECONDS`]: its
/// node's death evicts it after 5 minutes rather than at once or never. Pods only, not templates.
pub fn add_default_tolerations(pod: &mut Value) {
    let spec = obj_mut(pod, "spec");
    let tolerated = |key: &str| {
        spec.get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
            })
    };
    let missing: Vec<&str> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .filter(|k| !tolerated(k))
        .collect();
    if missing.is_empty() {
        return;
    }
    if !spec.get("tolerations").is_some_and(Value::is_array) {
        spec.insert("tolerations".into(), json!([]));
    }
    if let Some(list) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for key in missing {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

/// Deployment defaults (`SetDefaults_Deployment`), including its pod template.
pub fn set_deployment_defaults(d: &mut Value) {
    let spec = obj_mut(d, "spec");
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        default(st, "type", json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "maxSurge", json!("25%"));
                default(ru, "maxUnavailable", json!("25%"));
            }
        }
    }
    if let Some(t) = spec.get_mut("template") {
        pod_spec_defaults(obj_mut(t, "spec"));
    }
}

/// DaemonSet defaults (`SetDefaults_DaemonSet`), including its pod template.
pub fn set_daemonset_defaults(ds: &mut Value) {
    let spec = obj_mut(ds, "spec");
    default(spec, "revisionHistoryLimit", json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        default(st, "type", json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "maxUnavailable", json!(1));
                default(ru, "maxSurge", json!(0));
            }
        }
    }
    if let Some(t) = spec.get_mut("template") {
        pod_spec_defaults(obj_mut(t, "spec"));
    }
}

/// ReplicaSet defaults (`SetDefaults_ReplicaSet`), including its pod template.
pub fn set_replicaset_defaults(rs: &mut Value) {
    let spec = obj_mut(rs, "spec");
    default(spec, "replicas", json!(1));
    if let Some(t) = spec.get_mut("template") {
        pod_spec_defaults(obj_mut(t, "spec"));
    }
}

/// Renders a label map as Go's `%#v` renders a `map[string]string`.
fn go_map(v: Option<&Value>) -> BadValue {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        crate::field::go_quote(k),
                        crate::field::go_quote(v.as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    BadValue::Raw(format!("map[string]string{{{}}}", pairs.join(", ")))
}

/// Validates a Pod's PodSpec: [`validate_template_spec`], and what svcnet's process runner cannot give
/// a host process refused (see [`runner_policy`]).
pub fn validate_pod_spec(spec: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_template_spec(spec, path);
    errs.extend(runner_policy(spec, path));
    errs
}

/// What svcnet's process runner cannot give a host process, as errors at `path` of a PodSpec:
/// `privileged` (kube-apiserver's own words when privileged containers are disallowed), added
/// capabilities and a read-only root filesystem. Pods are refused with them; workload templates only
/// warn, as Pod Security admission warns about a template and enforces on its pods.
pub fn runner_policy(spec: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (list, c) in ["initContainers", "containers"].into_iter().flat_map(|list| {
        spec.and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| ((list, i), c))
    }) {
        container_policy(c, &path.child(list.0).index(list.1), &mut errs);
    }
    errs
}

/// [`runner_policy`] and [`not_applied`] as the warnings a workload's write answers with.
pub fn runner_policy_warnings(obj: &Value) -> Vec<String> {
    let path = Path::new("spec").child("template").child("spec");
    let spec = obj.pointer("/spec/template/spec");
    let mut warnings: Vec<String> = runner_policy(spec, &path)
        .into_iter()
        .map(|e| format!("svcnet's process runner would refuse this template's pods: {e}"))
        .collect();
    warnings.extend(not_applied(spec, &path));
    warnings
}

/// The warnings a Pod's write answers with: [`not_applied`].
pub fn pod_warnings(pod: &Value) -> Vec<String> {
    not_applied(pod.get("spec"), &Path::new("spec"))
}

/// Confinement settings a PodSpec asks for that svcnet's process runner accepts but cannot apply to a
/// host process (no seccomp filter, AppArmor or SELinux label, namespaced sysctls or user namespace of
/// its own): each named in a warning, so that a manifest written for a real node, where they are
/// common (Pod Security's `restricted` profile requires a seccomp profile), still runs and nobody
/// believes it is confined.
pub fn not_applied(spec: Option<&Value>, path: &Path) -> Vec<String> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let psc = spec.get("securityContext");
    confinement(psc, &path.child("securityContext"), &mut out);
    if psc
        .and_then(|s| s.get("sysctls"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        out.push(format!(
            "{}: not applied: svcnet's pods share the node's kernel settings",
            path.child("securityContext").child("sysctls")
        ));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            confinement(
                c.get("securityContext"),
                &path.child(list).index(i).child("securityContext"),
                &mut out,
            );
        }
    }
    if spec.get("hostUsers").and_then(Value::as_bool) == Some(false) {
        out.push(format!(
            "{}: not applied: svcnet's process runner has no user namespaces",
            path.child("hostUsers")
        ));
    }
    out
}

/// One securityContext's part of [`not_applied`].
fn confinement(sc: Option<&Value>, path: &Path, out: &mut Vec<String>) {
    let Some(sc) = sc else { return };
    for field in ["seccompProfile", "appArmorProfile"] {
        if let Some(kind) = sc.pointer(&format!("/{field}/type")).and_then(Value::as_str)
            && kind != "Unconfined"
        {
            out.push(format!(
                "{}: {kind} is not applied: svcnet's process runner runs containers as host processes \
                 without one",
                path.child(field).child("type")
            ));
        }
    }
    if sc
        .get("seLinuxOptions")
        .is_some_and(|o| o.as_object().is_some_and(|m| !m.is_empty()))
    {
        out.push(format!(
            "{}: not applied: svcnet's process runner sets no SELinux label",
            path.child("seLinuxOptions")
        ));
    }
}

/// Validates a PodSpec's containers (the rules a hand-written manifest trips over first), as for a
/// workload's template.
pub fn validate_template_spec(spec: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        errs.push(FieldError::required(path.child("containers"), ""));
        return errs;
    };
    let mut names = Vec::new();
    if let Some(sc) = spec.and_then(|s| s.get("securityContext")) {
        validate_ids(sc, &path.child("securityContext"), &mut errs);
    }
    for (i, c) in spec
        .and_then(|s| s.get("initContainers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        validate_container_security(c, &path.child("initContainers").index(i), &mut errs);
    }
    for (i, c) in containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        validate_container_security(c, &p, &mut errs);
        match c.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            None => errs.push(FieldError::required(p.child("name"), "")),
            Some(n) => {
                for msg in validation::is_dns1123_label(n) {
                    errs.push(FieldError::invalid(p.child("name"), n, msg));
                }
                if names.contains(&n) {
                    errs.push(FieldError::duplicate(p.child("name"), n));
                }
                names.push(n);
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            errs.push(FieldError::required(p.child("image"), ""));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, port) in ports.iter().enumerate() {
                let pp = p.child("ports").index(j);
                let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                for msg in validation::is_valid_port_num(n) {
                    errs.push(FieldError::invalid(pp.child("containerPort"), n, msg));
                }
                if let Some(name) = port.get("name").and_then(Value::as_str) {
                    for msg in validation::is_valid_port_name(name) {
                        errs.push(FieldError::invalid(pp.child("name"), name, msg));
                    }
                }
            }
        }
    }
    validate_volumes(spec, path, &mut errs);
    if let Some(rp) = spec.and_then(|s| s.get("restartPolicy")).and_then(Value::as_str)
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError::not_supported(
            path.child("restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    errs
}

/// kube's checks of projected ServiceAccount token sources (`validateProjectionSources`): a path, and
/// a lifetime from ten minutes to 2^32 seconds.
fn validate_volumes(spec: Option<&Value>, path: &Path, errs: &mut Vec<FieldError>) {
    let volumes = spec.and_then(|s| s.get("volumes")).and_then(Value::as_array);
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        let sources = v
            .get("projected")
            .and_then(|p| p.get("sources"))
            .and_then(Value::as_array);
        for (j, s) in sources.into_iter().flatten().enumerate() {
            let Some(t) = s.get("serviceAccountToken") else {
                continue;
            };
            let p = path
                .child("volumes")
                .index(i)
                .child("projected")
                .child("sources")
                .index(j)
                .child("serviceAccountToken");
            if let Some(secs) = t.get("expirationSeconds").and_then(Value::as_i64) {
                if secs < 600 {
                    errs.push(FieldError::invalid(
                        p.child("expirationSeconds"),
                        secs,
                        "may not specify a duration less than 10 minutes",
                    ));
                } else if secs > 1 << 32 {
                    errs.push(FieldError::invalid(
                        p.child("expirationSeconds"),
                        secs,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            if t.get("path").and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(p.child("path"), ""));
            }
        }
    }
}

/// kube-apiserver's range check of user and group ids (`ValidateSecurityContext`'s runAsUser/runAsGroup).
fn validate_ids(sc: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    for field in ["runAsUser", "runAsGroup", "fsGroup"] {
        if let Some(v) = sc.get(field).and_then(Value::as_i64)
            && !(0..=i64::from(i32::MAX)).contains(&v)
        {
            errs.push(FieldError::invalid(
                path.child(field),
                v,
                "must be between 0 and 2147483647, inclusive",
            ));
        }
    }
    for (i, g) in sc
        .get("supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(v) = g.as_i64()
            && !(0..=i64::from(i32::MAX)).contains(&v)
        {
            errs.push(FieldError::invalid(
                path.child("supplementalGroups").index(i),
                v,
                "must be between 0 and 2147483647, inclusive",
            ));
        }
    }
}

/// A container's `securityContext` ids in range.
fn validate_container_security(c: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(sc) = c.get("securityContext") {
        validate_ids(sc, &path.child("securityContext"), errs);
    }
}

/// One container's part of [`runner_policy`].
fn container_policy(c: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let Some(sc) = c.get("securityContext") else {
        return;
    };
    let path = path.child("securityContext");
    if sc.get("privileged").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            path.child("privileged"),
            "disallowed by cluster policy",
        ));
    }
    if sc
        .pointer("/capabilities/add")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        errs.push(FieldError::forbidden(
            path.child("capabilities").child("add"),
            "svcnet's process runner cannot add capabilities to a host process",
        ));
    }
    if sc.get("readOnlyRootFilesystem").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            path.child("readOnlyRootFilesystem"),
            "svcnet's process runner runs containers as host processes, which have no root filesystem of their own",
        ));
    }
}

/// Validates a Pod's spec.
pub fn validate_pod(pod: &Value) -> Vec<FieldError> {
    validate_pod_spec(pod.get("spec"), &Path::new("spec"))
}

/// Validates a Deployment or ReplicaSet: selector present and matching the template's labels,
/// replicas not negative, the template's pod spec valid; on update the selector is immutable.
pub fn validate_workload(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec");
    let path = Path::new("spec");
    if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            path.child("replicas"),
            r,
            "must be greater than or equal to 0",
        ));
    }
    let selector = spec.and_then(|s| s.get("selector"));
    let template_labels = spec.and_then(|s| s.pointer("/template/metadata/labels"));
    match selector.filter(|s| !s.is_null()) {
        None => errs.push(FieldError::required(path.child("selector"), "")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
            if empty {
                errs.push(FieldError::invalid(
                    path.child("selector"),
                    BadValue::Raw("\"null\"".into()),
                    "empty selector is invalid for deployment",
                ));
            } else if !selector_matches(sel, template_labels) {
                errs.push(FieldError::invalid(
                    path.child("template").child("metadata").child("labels"),
                    go_map(template_labels),
                    "`selector` does not match template `labels`",
                ));
            }
            if let Some(old_sel) = old.and_then(|o| o.pointer("/spec/selector"))
                && old_sel != sel
            {
                errs.push(FieldError::invalid(
                    path.child("selector"),
                    BadValue::Raw(sel.to_string()),
                    "field is immutable",
                ));
            }
        }
    }
    errs.extend(validate_template_spec(
        spec.and_then(|s| s.pointer("/template/spec")),
        &path.child("template").child("spec"),
    ));
    errs
}

/// Whether a `LabelSelector` (matchLabels + matchExpressions) selects a label set.
pub fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let labels: std::collections::BTreeMap<String, String> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = labels.get(key).map(String::as_str);
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_like_kubernetes() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
        set_deployment_defaults(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
        set_pod_defaults(&mut p);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    }

    #[test]
    fn default_tolerations_are_added_as_the_admission_plugin_adds_them() {
        let mut p = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut p);
        assert_eq!(
            p["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ])
        );
        // Idempotent (it runs on every update).
        let once = p.clone();
        add_default_tolerations(&mut p);
        assert_eq!(p, once);
        // A pod's own toleration for one taint stays and only the other is added; one without a key or
        // an effect covers both.
        let mine = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2});
        let mut p = json!({"spec": {"tolerations": [mine]}});
        add_default_tolerations(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(p["spec"]["tolerations"][0], mine);
        assert_eq!(p["spec"]["tolerations"][1]["key"], "node.kubernetes.io/not-ready");
        let mut p = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut p = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]}});
        add_default_tolerations(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn confinement_that_is_not_applied_is_named() {
        let pod = json!({"spec": {"hostUsers": false, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]},
            "containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Unconfined"},
            "seLinuxOptions": {"level": "s0:c1"}, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}]}});
        assert_eq!(
            pod_warnings(&pod),
            [
                "spec.securityContext.seccompProfile.type: RuntimeDefault is not applied: svcnet's process runner runs containers as host processes without one",
                "spec.securityContext.sysctls: not applied: svcnet's pods share the node's kernel settings",
                "spec.containers[0].securityContext.seccompProfile.type: Localhost is not applied: svcnet's process runner runs containers as host processes without one",
                "spec.containers[0].securityContext.seLinuxOptions: not applied: svcnet's process runner sets no SELinux label",
                "spec.hostUsers: not applied: svcnet's process runner has no user namespaces",
            ]
        );
        let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "c",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}]}}}});
        assert_eq!(
            runner_policy_warnings(&template),
            [
                "spec.template.spec.containers[0].securityContext.seccompProfile.type: RuntimeDefault is not applied: svcnet's process runner runs containers as host processes without one"
            ]
        );
        assert!(pod_warnings(&json!({"spec": {"containers": [{"name": "c"}]}})).is_empty());
    }

    #[test]
    fn security_context_admission() {
        let pod = json!({"spec": {"securityContext": {"runAsUser": -1}, "containers": [{"name": "c", "image": "i",
            "securityContext": {"privileged": true, "readOnlyRootFilesystem": true, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "runAsUser": 65534}}]}});
        let errs: Vec<String> = validate_pod(&pod).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
                "spec.containers[0].securityContext.privileged: Forbidden: disallowed by cluster policy",
                "spec.containers[0].securityContext.capabilities.add: Forbidden: svcnet's process runner cannot add capabilities to a host process",
                "spec.containers[0].securityContext.readOnlyRootFilesystem: Forbidden: svcnet's process runner runs containers as host processes, which have no root filesystem of their own",
            ]
        );
        let ok = json!({"spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "supplementalGroups": [5]}, "containers": [{"name": "c", "image": "i",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        assert!(validate_pod(&ok).is_empty());
    }

    #[test]
    fn workload_validation_messages() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let errs: Vec<String> = validate_workload(&d, None)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errs.contains(&"spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"y\"}: `selector` does not match template `labels`".to_string()), "{errs:?}");
        assert!(
            errs.contains(&"spec.template.spec.containers[0].image: Required value".to_string()),
            "{errs:?}"
        );
        let none = json!({"spec": {"template": {"spec": {}}}});
        let errs: Vec<String> = validate_workload(&none, None)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errs.contains(&"spec.selector: Required value".to_string()));
        assert!(errs.contains(&"spec.template.spec.containers: Required value".to_string()));
        let pod = json!({"spec": {"containers": [{"name": "Bad_Name", "image": "x"}, {"name": "Bad_Name", "image": "y"}]}});
        let errs = validate_pod(&pod);
        assert!(errs.iter().any(|e| e.kind == crate::field::ErrorType::Duplicate));
    }

    #[test]
    fn projected_token_sources_are_defaulted_and_validated() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x"}], "volumes": [
            {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}},
            {"name": "cm", "configMap": {"name": "settings"}}]}});
        set_pod_defaults(&mut pod);
        assert_eq!(pod["spec"]["volumes"][0]["projected"]["defaultMode"], 420);
        assert_eq!(
            pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(pod["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
        assert!(validate_pod(&pod).is_empty(), "{:?}", validate_pod(&pod));
        let short = json!({"spec": {"containers": [{"name": "c", "image": "x"}], "volumes": [
            {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 300}}]}}]}});
        let errs: Vec<String> = validate_pod(&short).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errs,
            [
                "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes",
                "spec.volumes[0].projected.sources[0].serviceAccountToken.path: Required value",
            ]
        );
    }

    #[test]
    fn selectors_with_expressions() {
        let sel = json!({"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert!(selector_matches(&sel, Some(&json!({"app": "x", "tier": "b"}))));
        assert!(!selector_matches(&sel, Some(&json!({"app": "x", "tier": "c"}))));
        assert!(!selector_matches(&sel, None));
    }
}
