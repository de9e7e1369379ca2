//! A real etcd (Debian's `etcd-server`) for a test: one member on free loopback ports with a temporary
//! data directory, stopped by PID when the handle drops. It can be stopped and started again on the same
//! ports and data (an etcd outage), started on a port chosen before (a server that comes up late), or
//! serve TLS only and require client certificates ([`Etcd::start_tls`], certificates made by rcgen).
//! [`EtcdCluster`] is several such members forming one etcd cluster, for tests that kill one of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::net::{free_port, http_get};

/// A running single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    peer_port: u16,
    /// The member's name and the `--initial-cluster` it starts with.
    member: String,
    initial_cluster: Option<String>,
    /// With TLS: the files the member and its clients use.
    pub tls: Option<EtcdTls>,
}

/// PEM files for an etcd member that serves TLS and requires client certificates: a CA, the member's
/// certificate for 127.0.0.1, and a client certificate, all signed by the CA.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA certificate (`--etcd-cafile`).
    pub ca: PathBuf,
    /// The member's serving certificate and key.
    pub server_cert: PathBuf,
    /// See [`Self::server_cert`].
    pub server_key: PathBuf,
    /// A client certificate and key the member accepts (`--etcd-certfile`, `--etcd-keyfile`).
    pub client_cert: PathBuf,
    /// See [`Self::client_cert`].
    pub client_key: PathBuf,
}

impl EtcdTls {
    /// Makes the CA, the server and the client certificate in `dir`.
    pub fn generate(dir: &Path) -> EtcdTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let ca_params = || {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, "test etcd CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params().self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params(), ca_key);
        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![purpose];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf("etcd", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_pem, client_key_pem) = leaf("svcnet", ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        EtcdTls {
            ca: write("ca.crt", &ca_cert.pem()),
            server_cert: write("server.crt", &server_pem),
            server_key: write("server.key", &server_key_pem),
            client_cert: write("client.crt", &client_pem),
            client_key: write("client.key", &client_key_pem),
        }
    }
}

impl Etcd {
    /// Starts a fresh etcd on free ports and waits until it is healthy.
    pub fn start() -> Etcd {
        Self::start_on(free_port("127.0.0.1"))
    }

    /// Starts a fresh etcd whose clients reach it on `client_port`.
    pub fn start_on(client_port: u16) -> Etcd {
        Self::fresh(client_port, false)
    }

    /// Starts a fresh etcd that serves only TLS and requires a client certificate signed by its CA
    /// ([`Self::tls`]).
    pub fn start_tls() -> Etcd {
        Self::fresh(free_port("127.0.0.1"), true)
    }

    fn fresh(client_port: u16, tls: bool) -> Etcd {
        assert!(
            which("etcd"),
            "etcd is not installed: apt-get install etcd-server (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = tls.then(|| EtcdTls::generate(dir.path()));
        let mut e = Etcd {
            child: None,
            dir,
            client_port,
            peer_port: free_port("127.0.0.1"),
            member: "m0".to_string(),
            initial_cluster: None,
            tls,
        };
        e.start_again();
        e
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The client URL, for `--etcd-servers`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Its PID (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// (Re)starts the member on its ports and data directory and waits until it answers `/health`.
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        let peer = self.peer_url();
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.member));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &self.member, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    fn wait_healthy(&self) {
        let addr = format!("127.0.0.1:{}", self.client_port).parse().unwrap();
        let healthy = crate::eventually(Duration::from_secs(20), || match self.tls {
            None => http_get(addr, "/health").is_ok_and(|(code, body)| code == 200 && body.contains("true")),
            Some(_) => self
                .etcdctl(&["endpoint", "health", "--command-timeout=1s"])
                .status
                .success(),
        });
        assert!(healthy, "etcd did not become healthy:\n{}", self.log());
    }

    /// Kills the member (SIGKILL by PID) and waits for it; its data stays for [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `etcdctl` against it (API v3).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.url());
        if let Some(t) = &self.tls {
            cmd.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key);
        }
        cmd.args(args).output().expect("run etcdctl")
    }
}

/// Several etcd members on loopback forming one cluster (`--initial-cluster` naming all of them), each
/// an [`Etcd`] that a test can kill and start again.
pub struct EtcdCluster {
    /// The members, `m0`, `m1`, …
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts `n` fresh members and waits until each is healthy (which needs a quorum).
    pub fn start(n: usize) -> EtcdCluster {
        assert!(
            which("etcd"),
            "etcd is not installed: apt-get install etcd-server (scripts/test.sh does)"
        );
        let mut members: Vec<Etcd> = (0..n)
            .map(|i| Etcd {
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
                client_port: free_port("127.0.0.1"),
                peer_port: free_port("127.0.0.1"),
                member: format!("m{i}"),
                initial_cluster: None,
                tls: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.member, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        // All spawned first: none becomes healthy before a quorum runs.
        for m in &mut members {
            m.initial_cluster = Some(initial.clone());
            m.spawn();
        }
        for m in &members {
            m.wait_healthy();
        }
        EtcdCluster { members }
    }

    /// Every member's client URL, comma-separated (`--etcd-servers`).
    pub fn urls(&self) -> String {
        self.members.iter().map(Etcd::url).collect::<Vec<_>>().join(",")
    }

    /// Runs `etcdctl` against every member (API v3).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.urls())
            .args(args);
        cmd.output().expect("run etcdctl")
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `svcnet up` flags for leader election fast enough that a test sees a controller Lease move within
/// seconds of its holder dying (kube's defaults: 15 s / 10 s / 2 s).
pub const FAST_LEADER_ELECTION: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "500ms",
];
