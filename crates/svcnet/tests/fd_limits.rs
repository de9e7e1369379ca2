//! Running out of file descriptors, through a real `svcnet up` (userspace proxy) started under a low
//! open-file limit (`prlimit`): the soft limit is raised to the hard one, every Service is either served
//! or carries a Warning Event, the log stays small, the API keeps answering, and the Services left out
//! are served once others are deleted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use svcnet_testsupport::net::connect_from;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");
/// The hard limit: half of it is kept for connections, so the listeners get 800 descriptors (two per
/// TCP Service port), about 400 Services.
const HARD: u64 = 1600;
const SERVICES: usize = 500;
/// Deleted to make room.
const DELETED: usize = 150;

fn services_yaml() -> String {
    (0..SERVICES)
        .map(|i| {
            let group = if i < DELETED { "spare" } else { "kept" };
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: s-{i:03}\n  labels: {{group: {group}}}\n\
                 spec:\n  selector: {{app: fd}}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\n"
            )
        })
        .collect()
}

/// ClusterIP:80 of every Service named `s-…`.
fn addresses(c: &Cluster) -> Vec<(String, SocketAddr)> {
    c.get_json(&["services"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| {
            let name = s["metadata"]["name"].as_str()?;
            let ip = s["spec"]["clusterIP"].as_str()?;
            name.starts_with("s-")
                .then(|| (name.to_string(), format!("{ip}:80").parse().expect("address")))
        })
        .collect()
}

/// Whether something listens on `addr` (the proxy accepts, whatever the endpoint then does; without a
/// listener the connection is refused).
fn listening(addr: SocketAddr) -> bool {
    connect_from(None, addr).is_ok()
}

/// Services with a `FailedToListen` Warning Event.
fn warned(c: &Cluster) -> BTreeSet<String> {
    c.get_json(&["events"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["reason"] == "FailedToListen" && e["type"] == "Warning")
        .filter_map(|e| e["involvedObject"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn descriptor_exhaustion_is_loud_bounded_and_heals() {
    let soft_arg = format!("--nofile=1024:{HARD}");
    let mut c = Cluster::start_behind(SVCNET.as_ref(), &["prlimit", &soft_arg, "--"], &[]);
    // The soft limit was raised to the hard one, and the log says what it allows.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", c.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line")
        .to_string();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        [HARD.to_string(), HARD.to_string()],
        "{open_files}"
    );
    assert!(
        c.log()
            .contains("the userspace proxy can listen for about 400 TCP service ports"),
        "{}",
        c.log()
    );

    // One ready pod behind every Service: a frontend without endpoints has no listener at all.
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: backend\n  labels: {app: fd}\nspec:\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    \
             command: [sleep, \"1000\"]\n",
        ),
    );
    assert!(
        eventually(
            Duration::from_secs(30),
            || c.get_json(&["pod", "backend"])["status"]["phase"] == "Running"
        ),
        "{}",
        c.log()
    );
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["create", "-f", "-"],
        Some(&services_yaml()),
    );
    let all = addresses(&c);
    assert_eq!(all.len(), SERVICES);

    // Every Service is served or warned about; some of each.
    let mut unserved = BTreeSet::new();
    let mut events = BTreeSet::new();
    let ok = eventually(Duration::from_secs(90), || {
        unserved = all
            .iter()
            .filter(|(_, a)| !listening(*a))
            .map(|(n, _)| n.clone())
            .collect();
        events = warned(&c);
        !unserved.is_empty() && unserved.is_subset(&events)
    });
    assert!(
        ok,
        "unserved without an Event: {:?}\n{}",
        unserved.difference(&events).collect::<Vec<_>>(),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    assert!(unserved.len() < SERVICES / 2, "{} unserved", unserved.len());
    let sample = unserved.iter().next().unwrap().clone();
    let described = c.ok(&["describe", "service", &sample]);
    assert!(
        described.contains("FailedToListen") && described.contains("out of file descriptors"),
        "{described}"
    );

    // The API stays quick meanwhile (its descriptors were kept aside).
    let start = Instant::now();
    c.ok(&["get", "service", &sample]);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());

    // Room is made: the Services left out are served without anything else happening.
    c.ok(&["delete", "services", "-l", "group=spare", "--wait=false"]);
    let kept: Vec<(String, SocketAddr)> = all
        .iter()
        .filter(|(n, _)| n.as_str() >= "s-150")
        .cloned()
        .collect();
    assert_eq!(kept.len(), SERVICES - DELETED);
    let mut still = Vec::new();
    let ok = eventually(Duration::from_secs(60), || {
        still = kept
            .iter()
            .filter(|(_, a)| !listening(*a))
            .map(|(n, _)| n.clone())
            .collect();
        still.is_empty()
    });
    assert!(
        ok,
        "still unserved: {still:?}\n{}",
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );

    // No log flood: a port is named once when it starts failing (not per retry, and the runner retried
    // many times), and only a few ports per sync at that.
    let log = c.log();
    let mut named: std::collections::BTreeMap<&str, usize> = Default::default();
    for l in log
        .lines()
        .filter(|l| l.contains("cannot listen; retried until it binds"))
    {
        let service = l
            .split("service=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?");
        *named.entry(service).or_default() += 1;
    }
    assert!(!named.is_empty());
    assert!(named.values().all(|n| *n == 1), "{named:?}");
    assert!(named.len() <= SERVICES / 4, "{} ports named", named.len());
    assert!(log.len() < 512 * 1024, "log of {} bytes", log.len());
    c.stop("TERM");
}
