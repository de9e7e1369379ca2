//! What every benchmark shares: a `svcnet up` child process in a temporary data directory ([`Session`],
//! [`Server`]), an HTTPS/HTTP2 client with the kubeconfig's token ([`Client`]), process CPU and memory
//! readings, and the table and percentile helpers the reports print with.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Clone, Copy)]
pub(crate) struct Mem {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

/// A started `svcnet up` in its own temporary data directory, and the deadline of the whole run.
pub(crate) struct Session {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: Server,
    pub(crate) deadline: Instant,
}

impl Session {
    /// Starts `svcnet up` (the binary `svcnet`, with `extra_args`) in a fresh temporary directory; the run
    /// ends `timeout_s` seconds from now.
    pub(crate) async fn start(svcnet: &Path, timeout_s: u64, extra_args: &[&str]) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        let dir = tempfile::Builder::new().prefix("svcnet-bench-").tempdir()?;
        let start_limit = Duration::from_secs(30).min(Duration::from_secs(timeout_s));
        let server = tokio::time::timeout(start_limit, Server::start(svcnet, dir.path(), extra_args))
            .await
            .map_err(|_| anyhow!("svcnet up did not get ready within {start_limit:?}"))??;
        println!(
            "server: pid {} at https://{} (data dir {})",
            server.pid,
            server.client.addr,
            dir.path().display()
        );
        Ok(Self {
            dir,
            server,
            deadline,
        })
    }

    /// Stops the server and deletes its data directory.
    pub(crate) async fn finish(mut self) -> Result<()> {
        self.server.stop().await;
        // The server has exited, so the directory can go.
        self.dir.close().context("removing the temporary data directory")
    }
}

/// The result of phases run under the session's deadline, with a timeout turned into an error.
pub(crate) fn timed_out(
    outcome: Result<Result<()>, tokio::time::error::Elapsed>,
    timeout_s: u64,
) -> Result<()> {
    match outcome {
        Ok(r) => r,
        Err(_) => bail!("stopped by --timeout {timeout_s} s before all phases finished"),
    }
}

/// An HTTPS client for the benchmarked server: the address, CA and token from its kubeconfig.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: tokio_rustls::TlsConnector,
    pub(crate) bearer: http::HeaderValue,
}

impl Client {
    pub(crate) fn from_data_dir(dir: &Path) -> Result<Self> {
        let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig")).context("reading the kubeconfig")?;
        let server = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("the kubeconfig has no server")?;
        let addr: SocketAddr = server
            .trim()
            .strip_prefix("https://")
            .context("the server is not https://")?
            .parse()
            .context("the kubeconfig's server is not ADDRESS:PORT")?;
        // The benchmark talks to the loopback server it started and to nothing else.
        if !addr.ip().is_loopback() {
            bail!("refusing to benchmark a non-loopback server {addr}");
        }
        let ca = std::fs::read(dir.join("pki/ca.crt")).context("reading pki/ca.crt")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.context("parsing pki/ca.crt")?)?;
        }
        let token = std::fs::read_to_string(dir.join("pki/token")).context("reading pki/token")?;
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            bearer: format!("Bearer {}", token.trim()).parse()?,
        })
    }

    /// A new HTTP/2 connection (TLS with ALPN h2); its requests share it as streams.
    pub(crate) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(ServerName::from(self.addr.ip()), tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not negotiate HTTP/2");
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.addr))
            .header(header::AUTHORIZATION, self.bearer.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Full::new(body)).expect("a well-formed request")
    }

    /// Sends the requests `make(self, 0..n)`, `concurrency` in flight at once spread over `conns`, and
    /// returns the latencies of those answered `expect` (to the last byte) and a description of each
    /// failure.
    pub(crate) async fn concurrently<F>(
        &self,
        conns: &[SendRequest<Full<Bytes>>],
        concurrency: usize,
        n: usize,
        expect: StatusCode,
        make: F,
    ) -> Result<(Vec<Duration>, Vec<String>)>
    where
        F: Fn(&Client, usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let mut send = conns[w % conns.len()].clone();
            let (next, make, c) = (next.clone(), make.clone(), self.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failed = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let req = make(&c, i);
                    let t = Instant::now();
                    match c.send(&mut send, req).await {
                        Ok((code, _)) if code == expect => lat.push(t.elapsed()),
                        Ok((code, body)) => {
                            failed.push(format!("{code}: {}", String::from_utf8_lossy(&body)))
                        }
                        Err(e) => failed.push(format!("{e:#}")),
                    }
                }
                (lat, failed)
            }));
        }
        let mut lat = Vec::with_capacity(n);
        let mut failed = Vec::new();
        for t in tasks {
            let (l, f) = t.await?;
            lat.extend(l);
            failed.extend(f);
        }
        Ok((lat, failed))
    }

    /// Opens a watch (`path` with `watch=true`) on its own connection and returns once it has its response
    /// headers, i.e. is registered with the server. The connection's sender is returned with the body and
    /// must be kept alive with it, or the connection would close.
    pub(crate) async fn open_watch(
        &self,
        path: &str,
    ) -> Result<(SendRequest<Full<Bytes>>, hyper::body::Incoming)> {
        let mut send = self.connect().await?;
        let req = self.request(Method::GET, path, None, Bytes::new());
        send.ready().await?;
        let resp = send.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            bail!("watch answered {}", resp.status());
        }
        Ok((send, resp.into_body()))
    }

    /// Sends a request and reads the whole response body.
    pub(crate) async fn send(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes)> {
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let code = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, body))
    }
}

/// The `svcnet up` child process.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) client: Client,
}

impl Server {
    pub(crate) async fn start(svcnet: &Path, dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let log = std::fs::File::create(dir.join("svcnet.log"))?;
        let mut child = Command::new(svcnet)
            .arg("up")
            .arg("--data-dir")
            .arg(dir)
            .args(["--api-listen", "127.0.0.1:0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // A safety net for early returns; the normal path stops it with SIGTERM.
            .kill_on_drop(true)
            .spawn()
            .context("starting svcnet up")?;
        let pid = child.id().context("the child has no pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await? {
                Some(l) if l.starts_with("svcnet is up") => break,
                Some(_) => {}
                None => {
                    let log = std::fs::read_to_string(dir.join("svcnet.log")).unwrap_or_default();
                    bail!("svcnet up exited before it was ready; its log:\n{log}");
                }
            }
        }
        // Keep draining stdout so that the child can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            client: Client::from_data_dir(dir)?,
        })
    }

    pub(crate) fn mem(&self) -> Option<Mem> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| -> Option<u64> {
            let l = status.lines().find(|l| l.starts_with(name))?;
            l[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
        };
        Some(Mem {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid.to_string())
    }

    /// SIGTERM by PID, then wait (bounded); SIGKILL if it does not exit in time.
    pub(crate) async fn stop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) => println!("server stopped: {status}"),
            _ => {
                println!("server did not stop within 10 s of SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// User + system CPU seconds of a process (`self` or a PID), from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name, which may itself contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// Nearest-rank percentile of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn median_of(v: &[Duration]) -> Duration {
    let mut sorted = v.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl Mem {
    pub(crate) fn show(&self) -> String {
        format!(
            "VmRSS {:.0} MiB, VmHWM {:.0} MiB",
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        )
    }
}

/// Prints the header of a results table (measurement, measured, target).
pub(crate) fn table_header() {
    println!("| measurement | measured | target |");
    println!("|---|---|---|");
}

/// Prints one row of a results table.
pub(crate) fn row(measurement: &str, measured: &str, target: &str) {
    println!("| {measurement} | {measured} | {target} |");
}
