//! Pods take ConfigMaps and Secrets as on a kubelet, through the real binary and kubectl, with the node
//! agent reading them as the node (the Node authorizer lets it watch exactly the objects its pods use):
//!
//! - environment: `configMapKeyRef`, `secretKeyRef`, `envFrom` with a prefix; an optional missing key is
//!   unset; a missing required ConfigMap or key leaves the container `CreateContainerConfigError` with
//!   the kubelet's message, and the container starts once the object (or key) exists; a restarted
//!   container reads the values again;
//! - volumes: `configMap`, `secret` (items, defaultMode), `downwardAPI`, `emptyDir` and a `subPath`,
//!   read by the pod at their `mountPath`s (a non-root container through the pod's `fsGroup`) (as root; the host directory is in `SVCNET_VOLUME_<NAME>`
//!   either way), read-only where the kubelet makes them so; a ConfigMap update reaches the mounted
//!   file;
//! - a hostPath volume is refused with a `FailedMount` event, and the pod does not run.

use std::time::Duration;

use svcnet_testsupport::netns::{Namespaces, POD_NETWORK_FLAGS, can_run, is_root};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// Where the test pods mount their volumes. A bind mount needs its target, so the agent makes these
/// (empty) directories on the node; the test removes them at the end.
const MOUNTS: &str = "/tmp/svcnet-pod-config-test";

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team-b}
data: {mode: fast, level: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: team-b}
stringData: {password: hunter2, user: admin}
"#;

const ENV_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: env, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "mode=$MODE pw=$PW pre=$CFG_level user=$user opt=${OPT-unset}"; sleep 600']
    envFrom:
    - {configMapRef: {name: settings}, prefix: CFG_}
    - {secretRef: {name: creds}}
    - {configMapRef: {name: absent, optional: true}}
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: OPT, valueFrom: {configMapKeyRef: {name: settings, key: nothing, optional: true}}}
---
apiVersion: v1
kind: Pod
metadata: {name: restarts, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "mode=$MODE"; sleep 1']
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
---
apiVersion: v1
kind: Pod
metadata: {name: waits, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "color=$COLOR"; sleep 600']
    env:
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: later, key: color}}}
---
apiVersion: v1
kind: Pod
metadata: {name: nokey, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "speed=$SPEED"; sleep 600']
    env:
    - {name: SPEED, valueFrom: {configMapKeyRef: {name: settings, key: speed}}}
"#;

/// The volume pod; as root with a memory-backed emptyDir too (a tmpfs needs root).
fn volume_pod(root: bool) -> String {
    let (shm_mount, shm_volume) = if root {
        (
            format!("    - {{name: shm, mountPath: {MOUNTS}/shm}}\n"),
            "  - {name: shm, emptyDir: {medium: Memory, sizeLimit: 16Mi}}\n",
        )
    } else {
        (String::new(), "")
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: vols, namespace: team-b, labels: {{app: vols, tier: "1"}}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000}}
  containers:
  - name: nonroot
    image: busybox
    securityContext: {{runAsUser: 1000}}
    command: [sh, -c, 'echo "id=$(id -u) pw=$(cat {MOUNTS}/sec/pw)"; echo x > {MOUNTS}/scratch/g && echo scratch=rw; sleep 600']
    volumeMounts:
    - {{name: sec, mountPath: {MOUNTS}/sec}}
    - {{name: scratch, mountPath: {MOUNTS}/scratch}}
  - name: main
    image: busybox
    command:
    - sh
    - -c
    - |
      echo "host=$SVCNET_VOLUME_CFG"
      if touch {MOUNTS}/cfg/new 2>/dev/null; then echo cfg=rw; else echo cfg=ro; fi
      if echo hi > {MOUNTS}/scratch/f && test "$(cat {MOUNTS}/scratch/f)" = hi; then echo scratch=rw; fi
      echo "pw=$(cat {MOUNTS}/sec/pw) mode=$(stat -L -c %a {MOUNTS}/sec/pw) sub=$(cat {MOUNTS}/mode-file) in=$(stat -f -c %T {MOUNTS}/sec)"
      echo "labels=$(tr '\n' ' ' < {MOUNTS}/info/labels)"
      echo "nested=$(cat {MOUNTS}/scratch/nested/level)"
      test -d {MOUNTS}/shm && echo "shm=$(stat -f -c %T {MOUNTS}/shm) $(df -k {MOUNTS}/shm | tail -1 | awk '{{print $2}}')"
      for i in $(seq 1 2000); do echo "mode=$(cat {MOUNTS}/cfg/mode)"; sleep 0.3; done
    volumeMounts:
    - {{name: cfg, mountPath: {MOUNTS}/cfg}}
    - {{name: cfg, mountPath: {MOUNTS}/mode-file, subPath: mode}}
    - {{name: sec, mountPath: {MOUNTS}/sec}}
    - {{name: info, mountPath: {MOUNTS}/info}}
    - {{name: cfg, mountPath: {MOUNTS}/scratch/nested}}
    - {{name: scratch, mountPath: {MOUNTS}/scratch}}
{shm_mount}  volumes:
{shm_volume}  - {{name: cfg, configMap: {{name: settings}}}}
  - {{name: sec, secret: {{secretName: creds, defaultMode: 0400, items: [{{key: password, path: pw}}]}}}}
  - {{name: info, downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}
  - {{name: scratch, emptyDir: {{}}}}
"#
    )
}

/// A projected volume (ConfigMap items, Secret, downward API), an optional ConfigMap that does not
/// exist, and a required one that does not exist yet.
const PROJECTED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: proj, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'cd "$SVCNET_VOLUME_ALL_IN_ONE" && echo "lvl=$(cat lvl) user=$(cat creds/user) name=$(cat name) opt=$(ls "$SVCNET_VOLUME_OPT" | wc -l) late=$(cat "$SVCNET_VOLUME_LATE/greeting")"; sleep 600']
  volumes:
  - name: all-in-one
    projected:
      sources:
      - configMap: {name: settings, items: [{key: level, path: lvl}]}
      - secret: {name: creds, items: [{key: user, path: creds/user}]}
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
  - {name: opt, configMap: {name: nothing, optional: true}}
  - {name: late, configMap: {name: late-cm}}
"#;

const HOST_PATH_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hostpath, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo started; sleep 600']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, hostPath: {path: /srv}}
"#;

fn logs(c: &Cluster, pod: &str) -> String {
    logs_of(c, pod, "main")
}

fn logs_of(c: &Cluster, pod: &str, container: &str) -> String {
    let out = c.kubectl_v("", &["logs", "-n", "team-b", pod, "-c", container], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The waiting reason and message of the pod's first container (empty strings when it has none).
fn waiting(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "pod",
        pod,
        "-n",
        "team-b",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
    ])
}

fn events_of(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "-n",
        "team-b",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.type} {.reason} {.message}{\"\\n\"}{end}",
    ])
}

#[test]
fn pods_take_config_maps_and_secrets_as_env_and_volumes() {
    let root = is_root();
    if !root {
        eprintln!(
            "NOTE: not root: volumes are checked through SVCNET_VOLUME_<NAME> only, not at their mountPath"
        );
    }
    let _ = std::fs::remove_dir_all(MOUNTS);
    let c = Cluster::start(SVCNET);
    c.ok_v("", &["apply", "-f", "-"], Some(OBJECTS));
    c.ok_v("", &["apply", "-f", "-"], Some(ENV_POD));

    // Environment from both kinds, with envFrom's prefix; optional absent things stay unset.
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "env").contains("mode=")),
        "{}\n{}",
        waiting(&c, "env"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    assert_eq!(
        logs(&c, "env").lines().next(),
        Some("mode=fast pw=hunter2 pre=3 user=admin opt=unset")
    );
    // `kubectl exec` runs with the environment the container got.
    assert_eq!(
        c.ok(&["exec", "-n", "team-b", "env", "--", "sh", "-c", "echo $MODE $PW"])
            .trim(),
        "fast hunter2"
    );

    // A missing required ConfigMap, and a missing key: the kubelet's reason and messages.
    assert!(
        eventually(Duration::from_secs(30), || waiting(&c, "waits")
            == "CreateContainerConfigError: configmap \"later\" not found"),
        "{}",
        waiting(&c, "waits")
    );
    assert!(
        eventually(Duration::from_secs(30), || waiting(&c, "nokey")
            == "CreateContainerConfigError: couldn't find key speed in ConfigMap team-b/settings"),
        "{}",
        waiting(&c, "nokey")
    );
    // They start as soon as what they wait for exists (no pod event: the object's watch wakes them).
    c.ok(&[
        "create",
        "configmap",
        "later",
        "-n",
        "team-b",
        "--from-literal=color=blue",
    ]);
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "waits")
            .contains("color=blue")),
        "{}",
        waiting(&c, "waits")
    );

    // Volumes.
    c.ok_v("", &["apply", "-f", "-"], Some(&volume_pod(root)));
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "vols").contains("mode=fast")),
        "{}\n{}\n{}",
        logs(&c, "vols"),
        events_of(&c, "vols"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    let log = logs(&c, "vols");
    let host = log
        .lines()
        .find_map(|l| l.strip_prefix("host="))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| panic!("no SVCNET_VOLUME_CFG: {log}"))
        .to_string();
    let host = std::path::Path::new(&host);
    // Written as the kubelet writes it: the files behind `..data`.
    assert_eq!(std::fs::read_to_string(host.join("mode")).unwrap(), "fast");
    assert_eq!(
        std::fs::read_link(host.join("mode")).unwrap(),
        std::path::Path::new("..data/mode")
    );
    if root {
        assert!(log.contains("cfg=ro\n"), "{log}");
        assert!(log.contains("scratch=rw\n"), "{log}");
        // 0400 as asked, plus the group's read bit the fsGroup adds.
        // The Secret is in memory, never on the node's disk (where the agent's mounts outlive it: in
        // the mount namespace of PID 1, or where that one cannot be read).
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let lasting = match (ns("self"), ns("1")) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if lasting {
            assert!(log.contains("pw=hunter2 mode=440 sub=fast in=tmpfs\n"), "{log}");
        } else {
            assert!(log.contains("pw=hunter2 mode=440 sub=fast in="), "{log}");
        }
        assert!(log.contains("labels=app=\"vols\" tier=\"1\" \n"), "{log}");
        // A mount inside another (listed before it) is made after it, inside it, as runtimes order them.
        assert!(log.contains("nested=3\n"), "{log}");
        // Medium Memory: a tmpfs of the sizeLimit (16Mi = 16384 KiB).
        assert!(log.contains("shm=tmpfs 16384\n"), "{log}");
        // A container running as another user reads the 0400 Secret through the pod's fsGroup, and
        // writes to the shared emptyDir, as on a kubelet.
        assert!(
            eventually(Duration::from_secs(30), || logs_of(&c, "vols", "nonroot")
                == "id=1000 pw=hunter2\nscratch=rw\n"),
            "{}",
            logs_of(&c, "vols", "nonroot")
        );
    }

    // An update of the ConfigMap reaches the file (kubectl's merge patch; the watch, not a poll).
    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "team-b",
        "-p",
        r#"{"data":{"mode":"slow","speed":"9"}}"#,
    ]);
    assert_eq!(std::fs::read_to_string(host.join("level")).unwrap(), "3");
    assert!(
        eventually(Duration::from_secs(30), || std::fs::read_to_string(
            host.join("mode")
        )
        .is_ok_and(|m| m == "slow")),
        "the host file did not follow the ConfigMap"
    );
    if root {
        assert!(
            eventually(Duration::from_secs(30), || logs(&c, "vols").contains("mode=slow")),
            "{}",
            logs(&c, "vols")
        );
    }
    // A container that restarts reads its environment again, as the kubelet computes it per start.
    assert!(
        eventually(Duration::from_secs(40), || logs(&c, "restarts")
            .contains("mode=slow")),
        "{}",
        logs(&c, "restarts")
    );
    // The key the other pod waited for came with the same update.
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "nokey").contains("speed=9")),
        "{}",
        waiting(&c, "nokey")
    );

    // A volume whose ConfigMap does not exist yet: FailedMount in the kubelet's words, then the pod
    // starts once it exists. Projected sources and an optional missing ConfigMap (an empty volume) work.
    c.ok_v("", &["apply", "-f", "-"], Some(PROJECTED_POD));
    let want =
        "Warning FailedMount MountVolume.SetUp failed for volume \"late\" : configmap \"late-cm\" not found";
    assert!(
        eventually(Duration::from_secs(30), || events_of(&c, "proj").contains(want)),
        "{}",
        events_of(&c, "proj")
    );
    assert_eq!(logs(&c, "proj"), "");
    // Shown as the kubelet shows it meanwhile: its container waiting in ContainerCreating.
    assert!(
        eventually(Duration::from_secs(30), || waiting(&c, "proj")
            == "ContainerCreating: "),
        "{}",
        waiting(&c, "proj")
    );
    c.ok(&[
        "create",
        "configmap",
        "late-cm",
        "-n",
        "team-b",
        "--from-literal=greeting=hello",
    ]);
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "proj").contains("late=")),
        "{}",
        events_of(&c, "proj")
    );
    assert_eq!(
        logs(&c, "proj").trim_end(),
        "lvl=3 user=admin name=proj opt=0 late=hello"
    );

    // An unsupported volume: refused with the kubelet's FailedMount wording, and nothing runs.
    c.ok_v("", &["apply", "-f", "-"], Some(HOST_PATH_POD));
    let want = "Warning FailedMount MountVolume.SetUp failed for volume \"data\" : svcnet's node agent does not support hostPath volumes (it supports configMap, secret, downwardAPI, projected and emptyDir)";
    assert!(
        eventually(Duration::from_secs(30), || events_of(&c, "hostpath")
            .contains(want)),
        "{}",
        events_of(&c, "hostpath")
    );
    assert!(
        eventually(Duration::from_secs(30), || waiting(&c, "hostpath")
            == "ContainerCreating: "),
        "{}",
        waiting(&c, "hostpath")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "hostpath",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Pending"
    );
    assert_eq!(logs(&c, "hostpath"), "");

    // A volumeMount naming no volume: the container waits with the kubelet's config error.
    let ghost = "apiVersion: v1\nkind: Pod\nmetadata: {name: ghost, namespace: team-b}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: busybox, command: [sh, -c, 'echo started; sleep 600'], volumeMounts: [{name: ghost, mountPath: /ghost}]}\n";
    c.ok_v("", &["apply", "-f", "-"], Some(ghost));
    let want = "CreateContainerConfigError: cannot find volume \"ghost\" to mount into container \"main\"";
    assert!(
        eventually(Duration::from_secs(30), || waiting(&c, "ghost") == want),
        "{}",
        waiting(&c, "ghost")
    );
    assert!(
        events_of(&c, "ghost")
            .contains("Warning Failed Error: cannot find volume \"ghost\" to mount into container \"main\""),
        "{}",
        events_of(&c, "ghost")
    );
    assert_eq!(logs(&c, "ghost"), "");

    let data_dir = c.dir.to_string_lossy().into_owned();
    drop(c);
    // The pods' memory-backed volumes went with them.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&data_dir), "{mounts}");
    let _ = std::fs::remove_dir_all(MOUNTS);
}

/// Where the netns test's pod mounts its volume.
const NETNS_MOUNTS: &str = "/tmp/svcnet-pod-config-netns-test";

/// In the netns pod network a container runs behind `ip netns exec` (which makes a mount namespace of its
/// own for the pod's resolv.conf) and then the sandbox: its volumes are mounted there too, next to
/// Kubernetes' resolv.conf, and follow their ConfigMap.
#[test]
fn volumes_are_mounted_in_the_netns_pod_network() {
    if let Err(why) = can_run() {
        println!("skipped: {why} (the netns pod network creates network namespaces)");
        return;
    }
    let _ = std::fs::remove_dir_all(NETNS_MOUNTS);
    let ns = Namespaces::create();
    // Declared after `ns`, so dropped first: svcnet stops its pods before the namespaces go.
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &POD_NETWORK_FLAGS);
    c.ok_v("", &["apply", "-f", "-"], Some(OBJECTS));
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: netvol, namespace: team-b}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'grep -c "^search team-b.svc" /etc/resolv.conf; for i in $(seq 1 2000); do echo "mode=$(cat {NETNS_MOUNTS}/cfg/mode)"; sleep 0.3; done']
    volumeMounts: [{{name: cfg, mountPath: {NETNS_MOUNTS}/cfg}}]
  volumes:
  - {{name: cfg, configMap: {{name: settings}}}}
"#
    );
    c.ok_v("", &["apply", "-f", "-"], Some(&pod));
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "netvol")
            .contains("mode=fast")),
        "{}\n{}",
        logs(&c, "netvol"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    assert!(logs(&c, "netvol").starts_with("1\n"), "{}", logs(&c, "netvol"));
    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "team-b",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "netvol")
            .contains("mode=slow")),
        "{}",
        logs(&c, "netvol")
    );
    drop(c);
    let _ = std::fs::remove_dir_all(NETNS_MOUNTS);
}

/// A pod adopted by the next agent (svcnet restarted on the same data directory) keeps its process and
/// environment, and its volume still follows its ConfigMap: the new agent watches what adopted pods use.
#[test]
fn adopted_pods_keep_following_their_config_maps() {
    let mut c = Cluster::start_keeping_pods(SVCNET, &[]);
    c.ok_v("", &["apply", "-f", "-"], Some(OBJECTS));
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: kept, namespace: team-b}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'for i in $(seq 1 2000); do echo "env=$MODE file=$(cat "$SVCNET_VOLUME_CFG/mode")"; sleep 0.3; done']
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
  volumes:
  - {name: cfg, configMap: {name: settings}}
"#;
    c.ok_v("", &["apply", "-f", "-"], Some(pod));
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "kept")
            .contains("env=fast file=fast")),
        "{}\n{}",
        logs(&c, "kept"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    let id = |c: &Cluster| {
        c.ok(&[
            "get",
            "pod",
            "kept",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ])
    };
    let before = id(&c);
    c.restart("TERM");
    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "team-b",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "kept")
            .contains("env=fast file=slow")),
        "{}\n{}",
        logs(&c, "kept"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    assert_eq!(id(&c), before, "the process was adopted, not restarted");
}
