//! The cells of each kind's row, as kube-apiserver's printers (`pkg/printers/internalversion`)
//! compute them.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Printers.
// ---------------------------------------------------------------------------------------------------

pub(super) fn default_cells(obj: &Value) -> Vec<Value> {
    // Go formats the zero time too, so an unset creationTimestamp prints as year 1. `{:.0}` is RFC 3339
    // in UTC without fractional seconds, Go's `time.RFC3339` layout.
    let created = time_at(obj, &["metadata", "creationTimestamp"])
        .unwrap_or_else(|| Timestamp::from_second(GO_ZERO_TIME_SECONDS).unwrap_or(Timestamp::UNIX_EPOCH));
    vec![name(obj), Value::String(format!("{created:.0}"))]
}

pub(super) fn namespace_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset phase to Active.
    let phase = or_placeholder(str_at(obj, &["status", "phase"]), "Active");
    vec![name(obj), Value::String(phase), age(obj, now)]
}

pub(super) fn service_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset type to ClusterIP.
    let svc_type = or_placeholder(str_at(obj, &["spec", "type"]), "ClusterIP");
    // kube reads spec.clusterIPs[0]; storage keeps clusterIP and clusterIPs in step, so fall back to
    // clusterIP for objects written without the plural field.
    let cluster_ip = arr_at(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(obj, &["spec", "clusterIP"]));
    let ports: Vec<String> = arr_at(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = or_placeholder(str_at(p, &["protocol"]), "TCP");
            match int_at(p, &["nodePort"]).unwrap_or(0) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        name(obj),
        Value::String(svc_type.clone()),
        Value::String(or_placeholder(cluster_ip, "<none>")),
        Value::String(service_external_ip(obj, &svc_type)),
        Value::String(or_placeholder(&ports.join(","), "<none>")),
        age(obj, now),
        Value::String(format_labels(at(obj, &["spec", "selector"]))),
    ]
}

/// `getServiceExternalIP` for wide output (the server always prints wide, so nothing is clipped).
pub(super) fn service_external_ip(obj: &Value, svc_type: &str) -> String {
    let external_ips: Vec<&str> = arr_at(obj, &["spec", "externalIPs"])
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // loadBalancerStatusStringer: the set of ingress IPs (or hostnames), sorted.
            let ingress: BTreeSet<&str> = arr_at(obj, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, &["ip"]);
                    let hostname = str_at(i, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !hostname.is_empty() {
                        Some(hostname)
                    } else {
                        None
                    }
                })
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

pub(super) fn endpoints_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), Value::String(format_endpoints(obj)), age(obj, now)]
}

/// `formatEndpoints` with all ports: up to three `ip:port`s, then "+ N more...".
pub(super) fn format_endpoints(obj: &Value) -> String {
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    pub(super) const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = arr_at(subset, &["addresses"]);
        let ports = arr_at(subset, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports: list bare IPs.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, &["port"]).unwrap_or(0);
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(address, &["ip"]), port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

pub(super) fn endpoint_slice_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    pub(super) const MAX: usize = 3;
    // formatDiscoveryPorts: the port number, else its name, else "*" (all ports).
    let ports = arr_at(obj, &["ports"]);
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| match (int_at(p, &["port"]), at(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.as_str().unwrap_or("").to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let ports_text = list_with_more(&port_list, ports.len() > MAX, ports.len(), MAX);
    // formatDiscoveryEndpoints: all addresses of all endpoints.
    let addresses: Vec<&Value> = arr_at(obj, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]))
        .collect();
    let address_list: Vec<String> = addresses
        .iter()
        .take(MAX)
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let endpoints_text = list_with_more(&address_list, addresses.len() > MAX, addresses.len(), MAX);
    vec![
        name(obj),
        Value::String(str_at(obj, &["addressType"]).to_string()),
        Value::String(ports_text),
        Value::String(endpoints_text),
        age(obj, now),
    ]
}

pub(super) fn lease_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::String(str_at(obj, &["spec", "holderIdentity"]).to_string()),
        age(obj, now),
    ]
}

pub(super) fn deployment_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset replicas to 1.
    let desired = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let updated = int_at(obj, &["status", "updatedReplicas"]).unwrap_or(0);
    let available = int_at(obj, &["status", "availableReplicas"]).unwrap_or(0);
    let (containers, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    // Unlike ReplicaSet, the Deployment printer shows an empty selector as "" and an invalid one as
    // "<invalid>".
    let selector =
        label_selector_string(at(obj, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".into());
    vec![
        name(obj),
        Value::String(format!("{ready}/{desired}")),
        json!(updated),
        json!(available),
        age(obj, now),
        Value::String(containers),
        Value::String(images),
        Value::String(selector),
    ]
}

pub(super) fn replica_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset replicas to 1.
    let desired = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let current = int_at(obj, &["status", "replicas"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let (containers, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name(obj),
        json!(desired),
        json!(current),
        json!(ready),
        age(obj, now),
        Value::String(containers),
        Value::String(images),
        Value::String(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

pub(super) fn node_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition counts; with several, the last one wins (kube builds a map).
    let ready = arr_at(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
        .map(|c| str_at(c, &["status"]) == "True");
    let mut status = vec![match ready {
        Some(true) => "Ready",
        Some(false) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(obj, &["spec", "unschedulable"]).unwrap_or(false) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                let value = value.as_str().unwrap_or("");
                if !value.is_empty() {
                    roles.insert(value.to_string());
                }
            }
        }
    }
    let roles = or_placeholder(&roles.into_iter().collect::<Vec<_>>().join(","), "<none>");
    let address = |kind: &str| {
        arr_at(obj, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map(|a| str_at(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| or_placeholder(str_at(obj, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name(obj),
        Value::String(status.join(",")),
        Value::String(roles),
        age(obj, now),
        Value::String(str_at(obj, &["status", "nodeInfo", "kubeletVersion"]).to_string()),
        Value::String(address("InternalIP")),
        Value::String(address("ExternalIP")),
        Value::String(info("osImage")),
        Value::String(info("kernelVersion")),
        Value::String(info("containerRuntimeVersion")),
    ]
}

/// Where the Event printer's inputs live: core/v1 and events.k8s.io/v1 name them differently.
pub(super) struct EventFields {
    pub(super) involved_object: &'static str,
    pub(super) message: &'static str,
    pub(super) source: &'static str,
    pub(super) first_timestamp: &'static str,
    pub(super) last_timestamp: &'static str,
    pub(super) count: &'static str,
}

impl EventFields {
    pub(super) const CORE: EventFields = EventFields {
        involved_object: "involvedObject",
        message: "message",
        source: "source",
        first_timestamp: "firstTimestamp",
        last_timestamp: "lastTimestamp",
        count: "count",
    };
    pub(super) const EVENTS_V1: EventFields = EventFields {
        involved_object: "regarding",
        message: "note",
        source: "deprecatedSource",
        first_timestamp: "deprecatedFirstTimestamp",
        last_timestamp: "deprecatedLastTimestamp",
        count: "deprecatedCount",
    };
}

pub(super) fn event_cells(f: &EventFields, obj: &Value, now: Timestamp) -> Vec<Value> {
    let first_seen = match time_at(obj, &[f.first_timestamp]) {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => translate_timestamp_since(time_at(obj, &["eventTime"]), now),
    };
    let mut last_seen = match time_at(obj, &[f.last_timestamp]) {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(obj, &[f.count]).unwrap_or(0);
    if at(obj, &["series"]).is_some() {
        last_seen = translate_timestamp_since(time_at(obj, &["series", "lastObservedTime"]), now);
        count = int_at(obj, &["series", "count"]).unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let kind = str_at(obj, &[f.involved_object, "kind"]).to_lowercase();
    let involved_name = str_at(obj, &[f.involved_object, "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    // formatEventSource: component (or reportingController), then ", host" (or reportingInstance).
    let first_non_empty = |a: &'static str, b: &'static str| {
        let v = str_at(obj, &[f.source, a]);
        if v.is_empty() { str_at(obj, &[b]) } else { v }
    };
    let component = first_non_empty("component", "reportingController");
    let instance = first_non_empty("host", "reportingInstance");
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::String(last_seen),
        Value::String(str_at(obj, &["type"]).to_string()),
        Value::String(str_at(obj, &["reason"]).to_string()),
        Value::String(target),
        Value::String(str_at(obj, &[f.involved_object, "fieldPath"]).to_string()),
        Value::String(source),
        Value::String(str_at(obj, &[f.message]).trim().to_string()),
        Value::String(first_seen),
        json!(count),
        name(obj),
    ]
}

/// True when a container state (`state`/`lastState`) has the given member set, e.g. `terminated`.
pub(super) fn state<'a>(container: &'a Value, which: &str, member: &str) -> Option<&'a Value> {
    at(container, &[which, member]).filter(|v| v.is_object())
}

pub(super) fn pod_condition_true(pod: &Value, condition_type: &str) -> bool {
    arr_at(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == condition_type && str_at(c, &["status"]) == "True")
}

pub(super) fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let mut total_containers = arr_at(pod, &["spec", "containers"]).len();
    let mut ready_containers = 0usize;
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    // None stands for Go's zero time, which every real time is after.
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };

    let conditions = arr_at(pod, &["status", "conditions"]);
    if conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    // Sidecars (init containers with restartPolicy Always) count as regular containers. By name, the
    // last spec entry wins, as in kube's map.
    let mut restartable: HashMap<&str, bool> = HashMap::new();
    for spec in init_specs {
        let always = str_at(spec, &["restartPolicy"]) == "Always";
        restartable.insert(str_at(spec, &["name"]), always);
        if always {
            total_containers += 1;
        }
    }

    let mut initializing = false;
    for (i, container) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restart_count = int_at(container, &["restartCount"]).unwrap_or(0);
        restarts += restart_count;
        let finished = state(container, "lastState", "terminated").and_then(|t| time_at(t, &["finishedAt"]));
        last_restart = last_restart.max(finished);
        let is_restartable = restartable
            .get(str_at(container, &["name"]))
            .copied()
            .unwrap_or(false);
        if is_restartable {
            restartable_init_restarts += restart_count;
            last_restartable_init_restart = last_restartable_init_restart.max(finished);
        }
        let terminated = state(container, "state", "terminated");
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]).unwrap_or(0) == 0) {
            continue;
        }
        if is_restartable && bool_at(container, &["started"]) == Some(true) {
            if bool_at(container, &["ready"]).unwrap_or(false) {
                ready_containers += 1;
            }
            continue;
        }
        let waiting_reason = state(container, "state", "waiting")
            .map(|w| str_at(w, &["reason"]))
            .unwrap_or("");
        reason = if let Some(t) = terminated {
            // Initialization failed.
            let term_reason = str_at(t, &["reason"]);
            if !term_reason.is_empty() {
                format!("Init:{term_reason}")
            } else if int_at(t, &["signal"]).unwrap_or(0) != 0 {
                format!("Init:Signal:{}", int_at(t, &["signal"]).unwrap_or(0))
            } else {
                format!("Init:ExitCode:{}", int_at(t, &["exitCode"]).unwrap_or(0))
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    // kube's isPodInitializedConditionTrue looks at the first Initialized condition only.
    let initialized = conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == "Initialized")
        .is_some_and(|c| str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        // Walk backwards so that the first container's reason is the one left standing.
        for container in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(container, &["restartCount"]).unwrap_or(0);
            let finished =
                state(container, "lastState", "terminated").and_then(|t| time_at(t, &["finishedAt"]));
            last_restart = last_restart.max(finished);
            let waiting_reason = state(container, "state", "waiting")
                .map(|w| str_at(w, &["reason"]))
                .unwrap_or("");
            let terminated = state(container, "state", "terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let term_reason = str_at(t, &["reason"]);
                reason = if !term_reason.is_empty() {
                    term_reason.to_string()
                } else if int_at(t, &["signal"]).unwrap_or(0) != 0 {
                    format!("Signal:{}", int_at(t, &["signal"]).unwrap_or(0))
                } else {
                    format!("ExitCode:{}", int_at(t, &["exitCode"]).unwrap_or(0))
                };
            } else if bool_at(container, &["ready"]).unwrap_or(false)
                && state(container, "state", "running").is_some()
            {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod whose main container completed while a sidecar still runs is not "Completed".
        if reason == "Completed" && has_running {
            reason = if pod_condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if at(pod, &["metadata", "deletionTimestamp"]).is_some() {
        if status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", translate_timestamp_since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // The v1 -> internal conversion makes status.podIP authoritative over status.podIPs.
    let pod_ip = str_at(pod, &["status", "podIP"]);
    let pod_ip = if pod_ip.is_empty() {
        arr_at(pod, &["status", "podIPs"])
            .first()
            .map(|p| str_at(p, &["ip"]))
            .unwrap_or("")
    } else {
        pod_ip
    };
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, &["conditionType"]);
                // Only the first condition of that type counts.
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod),
        Value::String(format!("{ready_containers}/{total_containers}")),
        Value::String(reason),
        Value::String(restarts_text),
        age(pod, now),
        Value::String(or_placeholder(pod_ip, "<none>")),
        Value::String(or_placeholder(str_at(pod, &["spec", "nodeName"]), "<none>")),
        Value::String(or_placeholder(
            str_at(pod, &["status", "nominatedNodeName"]),
            "<none>",
        )),
        Value::String(readiness_gates),
    ]
}

/// A pod row's `conditions`: a `Completed` condition once the pod Succeeded or Failed, which clients
/// may use to de-emphasize the row.
pub(super) fn pod_conditions(obj: &Value) -> Vec<Value> {
    let (reason, message) = match str_at(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}

/// A core/v1 Event's cells.
pub(super) fn core_event_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(&EventFields::CORE, obj, now)
}

pub(super) fn config_map_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let count = |k: &str| at(obj, &[k]).and_then(Value::as_object).map_or(0, |m| m.len());
    vec![
        name(obj),
        json!(count("data") + count("binaryData")),
        age(obj, now),
    ]
}

/// kube's `printSecret`: the type and how many keys.
pub(super) fn secret_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let count = at(obj, &["data"])
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    let ty = at(obj, &["type"]).and_then(Value::as_str).unwrap_or_default();
    vec![name(obj), json!(ty), json!(count), age(obj, now)]
}

pub(super) fn service_account_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), json!(arr_at(obj, &["secrets"]).len()), age(obj, now)]
}

/// kube's `printRoleBinding` and `printClusterRoleBinding`: `Kind/name` of the role; wide, the subjects
/// by kind (service accounts as `namespace/name`).
pub(super) fn role_binding_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(obj, &["roleRef", "kind"]),
        str_at(obj, &["roleRef", "name"])
    );
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in arr_at(obj, &["subjects"]) {
        let n = str_at(s, &["name"]).to_string();
        match str_at(s, &["kind"]) {
            "User" => users.push(n),
            "Group" => groups.push(n),
            "ServiceAccount" => sas.push(format!("{}/{n}", str_at(s, &["namespace"]))),
            _ => {}
        }
    }
    vec![
        name(obj),
        Value::String(role),
        age(obj, now),
        Value::String(users.join(", ")),
        Value::String(groups.join(", ")),
        Value::String(sas.join(", ")),
    ]
}

pub(super) fn daemon_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let status = |k: &str| json!(int_at(obj, &["status", k]).unwrap_or(0));
    let (containers, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name(obj),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        Value::String(format_labels(at(
            obj,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age(obj, now),
        Value::String(containers),
        Value::String(images),
        Value::String(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

/// kube's `printCertificateSigningRequest`: signer, requesting user, requested duration and the
/// condition summary (`extractCSRStatus`: Denied over Approved over Pending, then Failed and Issued).
pub(super) fn csr_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let duration = match at(obj, &["spec", "expirationSeconds"]).and_then(Value::as_i64) {
        Some(s) => human_duration(SignedDuration::from_secs(s)),
        None => "<none>".to_string(),
    };
    let (mut approved, mut denied, mut failed) = (false, false, false);
    for c in arr_at(obj, &["status", "conditions"]) {
        match str_at(c, &["type"]) {
            "Approved" => approved = true,
            "Denied" => denied = true,
            "Failed" => failed = true,
            _ => {}
        }
    }
    let mut condition = if denied {
        "Denied"
    } else if approved {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if failed {
        condition.push_str(",Failed");
    }
    if !str_at(obj, &["status", "certificate"]).is_empty() {
        condition.push_str(",Issued");
    }
    vec![
        name(obj),
        age(obj, now),
        json!(or_placeholder(str_at(obj, &["spec", "signerName"]), "<none>")),
        json!(str_at(obj, &["spec", "username"])),
        json!(duration),
        json!(condition),
    ]
}

/// kube's `printServiceCIDR`: the CIDRs joined with commas.
pub(super) fn service_cidr_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let cidrs: Vec<&str> = arr_at(obj, &["spec", "cidrs"])
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    vec![name(obj), Value::String(cidrs.join(",")), age(obj, now)]
}

/// kube's `printIPAddress`: the parent as `resource.group/namespace/name` (`services/default/web`).
pub(super) fn ip_address_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let parent = match at(obj, &["spec", "parentRef"]) {
        Some(p) if p.is_object() => {
            let group = str_at(p, &["group"]);
            let resource = str_at(p, &["resource"]);
            // Go's `schema.GroupResource.String()`, lower-cased.
            let mut s = if group.is_empty() {
                resource.to_lowercase()
            } else {
                format!("{resource}.{group}").to_lowercase()
            };
            let ns = str_at(p, &["namespace"]);
            if !ns.is_empty() {
                s.push('/');
                s.push_str(ns);
            }
            s.push('/');
            s.push_str(str_at(p, &["name"]));
            s
        }
        _ => "<none>".to_string(),
    };
    vec![name(obj), Value::String(parent)]
}
