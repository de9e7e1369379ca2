//! A real EMFILE: the test process's descriptor table is filled while a connection waits in the backlog.
//! The acceptor neither spins nor floods the log, and takes the connection once a descriptor is free.
//! (One test in its own binary: it lowers this process's open-file limit.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svcnet_accept::Acceptor;

/// Log lines, captured.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let d = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

#[test]
fn exhausted_descriptors_back_off_and_recover() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, "test");
        // The connection completes in the kernel's backlog; accepting it needs one more descriptor.
        let _client = std::net::TcpStream::connect(addr).unwrap();

        // Fill the table: a low soft limit, then descriptors up to it.
        let (_, hard) = svcnet_accept::nofile_limit().unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, open + 16, hard).unwrap();
        let mut filler = Vec::new();
        // Bounded: the limit is a few descriptors away.
        for _ in 0..64 {
            match std::fs::File::open("/dev/null") {
                Ok(f) => filler.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(nix::libc::EMFILE), "{e}");
                    break;
                }
            }
        }
        assert!(std::fs::File::open("/dev/null").is_err(), "the table is full");

        // For 1.5 s nothing can be accepted: the loop backs off (5 ms doubling to 1 s) instead of spinning.
        let cpu_before = cpu_time();
        let r = tokio::time::timeout(Duration::from_millis(1500), acceptor.accept()).await;
        assert!(r.is_err(), "accepted with a full table?");
        // A spinning loop would burn the whole 1.5 s of CPU.
        let cpu = cpu_time() - cpu_before;
        assert!(cpu < Duration::from_millis(300), "{cpu:?} of CPU in 1.5 s");

        // Free a descriptor: the waiting connection is taken within the longest pause.
        filler.pop();
        let started = Instant::now();
        let (_conn, _) = tokio::time::timeout(Duration::from_secs(3), acceptor.accept())
            .await
            .expect("accepted once a descriptor is free")
            .unwrap();
        assert!(
            started.elapsed() <= Duration::from_millis(1100),
            "{:?}",
            started.elapsed()
        );
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("accept failed")).collect();
    // One line for the whole episode (the next is due only after 10 s), saying what failed.
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("Too many open files") && failed[0].contains("listener=\"test\""),
        "{text}"
    );
}
