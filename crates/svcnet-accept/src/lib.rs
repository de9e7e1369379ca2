//! Accepting connections without spinning or flooding the log when the process runs out of file
//! descriptors (EMFILE/ENFILE) or memory.
//!
//! `accept(2)` fails at once, again and again, while the descriptor table is full, and the pending
//! connection stays in the backlog: a loop that just logs and retries turns into a busy loop writing
//! millions of lines. [`Acceptor`] wraps every accept loop of svcnet (the API server, the userspace
//! proxy's frontends, the health and metrics servers, the agent's log endpoint, DNS over TCP): on such
//! an error it sleeps (5 ms doubling to 1 s, reset by the next success) and logs at most one line per
//! [`LOG_INTERVAL`], counting the failures it did not log.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// At most one log line per accept loop per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);

use nix::libc as errno;

/// Whether `e` means the process or the system is out of descriptors or memory: the next accept fails
/// the same way until something is closed, so the loop must wait.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(errno::EMFILE | errno::ENFILE | errno::ENOBUFS | errno::ENOMEM)
    )
}

/// What an accept loop does after a failed accept: the pause and whether to log (pure; time is passed in).
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
    last_log: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            pause: Duration::ZERO,
            last_log: None,
            unlogged: 0,
        }
    }
}

impl Backoff {
    /// Records a failed accept at `now`: how long to sleep, and `Some(failures)` (this one and the
    /// ones not logged since the last line) if a line is due.
    pub fn failed(&mut self, exhausted: bool, now: Instant) -> (Duration, Option<u64>) {
        let pause = if exhausted {
            self.pause = if self.pause.is_zero() {
                FIRST_PAUSE
            } else {
                (self.pause * 2).min(MAX_PAUSE)
            };
            self.pause
        } else {
            // Errors of one connection (e.g. ECONNABORTED): the next accept may well work.
            Duration::ZERO
        };
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if due {
            self.last_log = Some(now);
            let n = std::mem::take(&mut self.unlogged);
            return (pause, Some(n));
        }
        (pause, None)
    }

    /// Records a successful accept: the next failure starts with a short pause again.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// A listener's accept loop with [`Backoff`]; `what` names the loop in its log lines.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    what: &'static str,
    backoff: Backoff,
}

impl Acceptor {
    /// Wraps `listener`; `what` (e.g. `"API server"`) names it in log lines.
    pub fn new(listener: TcpListener, what: &'static str) -> Self {
        Acceptor {
            listener,
            what,
            backoff: Backoff::default(),
        }
    }

    /// The listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Failures are retried here, with back-off when descriptors or memory ran out;
    /// only `EINVAL` (the listening socket was shut down) is returned, ending the loop.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            match self.listener.accept().await {
                Ok(conn) => {
                    self.backoff.succeeded();
                    return Ok(conn);
                }
                Err(e) if e.raw_os_error() == Some(errno::EINVAL) => return Err(e),
                Err(e) => {
                    let exhausted = is_exhaustion(&e);
                    let (pause, log) = self.backoff.failed(exhausted, Instant::now());
                    if let Some(failures) = log {
                        warn!(
                            listener = self.what,
                            error = %e,
                            failures,
                            pause_ms = pause.as_millis() as u64,
                            "accept failed; backing off (logged at most every {}s)",
                            LOG_INTERVAL.as_secs()
                        );
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }
}

/// The process's open-file limit now: `(soft, hard)`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(io::Error::from)
}

/// The process's open-file limit after raising the soft limit to the hard one: `(soft, hard)`. The
/// default soft limit (often 1024) is far below what a node serving thousands of Services needs, and
/// raising it up to the hard limit needs no privilege.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    nofile_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_backs_off_and_logs_once_per_interval() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let (p1, l1) = b.failed(true, t0);
        assert_eq!((p1, l1), (FIRST_PAUSE, Some(1)));
        let mut pause = p1;
        let mut logged = 0;
        // A second's worth of failures: the pause grows to the cap, nothing more is logged.
        for i in 1..100 {
            let (p, l) = b.failed(true, t0 + Duration::from_millis(i * 10));
            assert!(p >= pause && p <= MAX_PAUSE);
            pause = p;
            logged += u64::from(l.is_some());
        }
        assert_eq!(pause, MAX_PAUSE);
        assert_eq!(logged, 0);
        // The next line after the interval counts everything not logged.
        let (_, l) = b.failed(true, t0 + LOG_INTERVAL);
        assert_eq!(l, Some(100));
        b.succeeded();
        assert_eq!(b.failed(true, t0 + LOG_INTERVAL).0, FIRST_PAUSE);
        // A one-connection error is retried at once.
        assert_eq!(b.failed(false, t0 + LOG_INTERVAL).0, Duration::ZERO);
    }

    #[test]
    fn soft_limit_is_raised_to_hard() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }

    #[tokio::test]
    async fn accepts_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut a = Acceptor::new(l, "test");
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (_s, peer) = a.accept().await.unwrap();
        let c = client.await.unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
    }
}
