//! Where audit events go: JSON lines on stdout or in a file rotated as kube-apiserver's log backend
//! rotates it (lumberjack: by size, backups named `NAME-<UTC time>.EXT`, pruned by count and age).
//!
//! One writer thread owns the output, so request tasks never touch the disk. Two modes, as kube's
//! `--audit-log-mode`: `blocking` (kube's default for the log backend) makes a request wait until its
//! event is written — but at most [`BLOCKING_WAIT`]: a writer stuck longer (a hung disk) turns the
//! following events into non-waiting ones until it writes again, so the API never hangs on its audit
//! log; `batch` never waits and drops events while the buffer is full. A failing output (full disk,
//! removed directory) logs one error when it starts failing and one line when it recovers, with the
//! number of events lost, instead of one line per event; every lost event is counted in
//! `apiserver_audit_error_total{plugin="log"}`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// The longest a request waits for its event in `blocking` mode.
pub const BLOCKING_WAIT: Duration = Duration::from_secs(5);
/// Events queued for the writer at most (kube's batch buffer size).
pub const BUFFER: usize = 10_000;
/// lumberjack's size limit when none is given (`--audit-log-maxsize 0`), in MiB.
const DEFAULT_MAX_SIZE_MB: u64 = 100;
/// Most events written in one go.
const MAX_BATCH: usize = 400;

/// How requests wait for their events (`--audit-log-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait until the event is written (bounded by [`BLOCKING_WAIT`]).
    Blocking,
    /// Queue and go on; drop when the queue is full.
    Batch,
}

/// Where events are written (`--audit-log-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-`: standard output.
    Stdout,
    /// A file, rotated.
    File {
        /// The file.
        path: PathBuf,
        /// Rotate before the file would grow past this many MiB (0: lumberjack's 100).
        max_size_mb: u64,
        /// Keep at most this many rotated files (0: all).
        max_backups: usize,
        /// Remove rotated files older than this many days (0: never).
        max_age_days: u64,
    },
}

/// Why the audit log cannot be opened at start-up.
#[derive(Debug, thiserror::Error)]
#[error("opening the audit log {path}: {source}")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

struct Msg {
    line: Vec<u8>,
    ack: Option<oneshot::Sender<()>>,
}

/// Counters the sink keeps (registered by [`crate::audit::Auditor::register_metrics`]).
#[derive(Default, Clone)]
pub struct SinkMetrics {
    /// `apiserver_audit_event_total`: events generated and sent to the backend.
    pub events: Counter,
    /// `apiserver_audit_error_total{plugin="log"}`: events that could not be written.
    pub errors: Counter,
}

struct Shared {
    /// The writer has not finished a batch since a blocking wait timed out.
    stalled: AtomicBool,
    /// When a full queue was last reported (Unix seconds), so a flood of drops logs once a minute.
    last_drop_log: AtomicI64,
    metrics: SinkMetrics,
}

/// The writing end of the audit log.
pub struct Sink {
    tx: mpsc::Sender<Msg>,
    mode: Mode,
    shared: Arc<Shared>,
}

impl Sink {
    /// Opens `target` (creating the file, mode 0600, as kube-apiserver does at start-up, so that a
    /// path that cannot be written is an error now rather than lost events later) and starts the writer.
    pub fn start(target: Target, mode: Mode) -> Result<Sink, OpenError> {
        let out = match target {
            Target::Stdout => Output::Stdout,
            Target::File {
                path,
                max_size_mb,
                max_backups,
                max_age_days,
            } => {
                let mut f = FileOut {
                    path,
                    file: None,
                    size: 0,
                    rotatable: false,
                    max_size: if max_size_mb == 0 {
                        DEFAULT_MAX_SIZE_MB
                    } else {
                        max_size_mb
                    } * 1024
                        * 1024,
                    max_backups,
                    max_age: Duration::from_secs(max_age_days * 24 * 3600),
                };
                f.open().map_err(|source| OpenError {
                    path: f.path.display().to_string(),
                    source,
                })?;
                Output::File(f)
            }
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        let shared = Arc::new(Shared {
            stalled: AtomicBool::new(false),
            last_drop_log: AtomicI64::new(0),
            metrics: SinkMetrics::default(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(rx, out, &s))
            .map_err(|source| OpenError {
                path: "(writer thread)".into(),
                source,
            })?;
        Ok(Sink { tx, mode, shared })
    }

    /// The sink's counters.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.shared.metrics
    }

    /// Sends one event line (with its newline); in `blocking` mode waits until it is written, bounded.
    pub async fn emit(&self, line: Vec<u8>) {
        self.shared.metrics.events.inc();
        if self.mode == Mode::Batch || self.shared.stalled.load(Ordering::Relaxed) {
            self.queue(line);
            return;
        }
        let deadline = tokio::time::Instant::now() + BLOCKING_WAIT;
        let (ack, done) = oneshot::channel();
        let msg = Msg { line, ack: Some(ack) };
        match tokio::time::timeout_at(deadline, self.tx.send(msg)).await {
            Ok(Ok(())) => {}
            // The writer is gone (it never stops while we exist) or the queue stayed full.
            Ok(Err(_)) | Err(_) => {
                self.lost(1);
                self.stall();
                return;
            }
        }
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            self.stall();
        }
    }

    /// Sends one event line without waiting (from places that cannot wait, such as a dropped body).
    pub fn emit_now(&self, line: Vec<u8>) {
        self.shared.metrics.events.inc();
        self.queue(line);
    }

    fn queue(&self, line: Vec<u8>) {
        if self.tx.try_send(Msg { line, ack: None }).is_err() {
            self.lost(1);
            let now = jiff::Timestamp::now().as_second();
            let last = self.shared.last_drop_log.load(Ordering::Relaxed);
            if now - last >= 60
                && self
                    .shared
                    .last_drop_log
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(
                    buffer = BUFFER,
                    "audit log: the event buffer is full, dropping events (counted in apiserver_audit_error_total)"
                );
            }
        }
    }

    fn stall(&self) {
        if !self.shared.stalled.swap(true, Ordering::Relaxed) {
            warn!(
                wait_s = BLOCKING_WAIT.as_secs(),
                "audit log: the writer did not keep up; requests stop waiting for their events until it writes again"
            );
        }
    }

    fn lost(&self, n: u64) {
        self.shared.metrics.errors.inc_by(n);
    }
}

fn write_loop(mut rx: mpsc::Receiver<Msg>, mut out: Output, shared: &Shared) {
    // Events lost since the output started failing; `None` while it works.
    let mut failing: Option<u64> = None;
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        buf.clear();
        for m in &batch {
            buf.extend_from_slice(&m.line);
        }
        match out.write(&buf) {
            Ok(()) => {
                if let Some(lost) = failing.take() {
                    info!(lost_events = lost, "audit log is writable again");
                }
            }
            Err(e) => {
                shared.metrics.errors.inc_by(batch.len() as u64);
                match &mut failing {
                    Some(lost) => *lost += batch.len() as u64,
                    None => {
                        error!(error = %e, target = %out.name(), "audit log: cannot write events; they are lost until it works again (counted in apiserver_audit_error_total)");
                        failing = Some(batch.len() as u64);
                    }
                }
            }
        }
        shared.stalled.store(false, Ordering::Relaxed);
        for m in batch {
            if let Some(ack) = m.ack {
                let _ = ack.send(());
            }
        }
    }
}

enum Output {
    Stdout,
    File(FileOut),
}

impl Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Output::File(f) => f.write(buf),
        }
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout => "stdout".into(),
            Output::File(f) => f.path.display().to_string(),
        }
    }
}

/// A file rotated as lumberjack rotates kube-apiserver's audit log.
struct FileOut {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    /// Whether the path is a regular file: a device (`/dev/null`) or a pipe is never renamed away.
    rotatable: bool,
    max_size: u64,
    max_backups: usize,
    max_age: Duration,
}

impl FileOut {
    fn open(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let meta = file.metadata()?;
        self.size = meta.len();
        self.rotatable = meta.file_type().is_file();
        self.file = Some(file);
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            // Reopened after an error: the file may have been removed or its disk replaced.
            self.open()?;
        }
        if self.rotatable && self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let file = self.file.as_mut().expect("opened above");
        if let Err(e) = file.write_all(buf) {
            self.file = None;
            return Err(e);
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let (prefix, ext) = name_parts(&self.path);
        let now = jiff::Timestamp::now();
        let stamp = format!(
            "{}.{:03}",
            now.strftime("%Y-%m-%dT%H-%M-%S"),
            now.subsec_millisecond()
        );
        let backup = self.path.with_file_name(format!("{prefix}-{stamp}{ext}"));
        std::fs::rename(&self.path, &backup)?;
        self.open()?;
        if let Err(e) = self.prune(now) {
            warn!(error = %e, "audit log: removing old rotated files");
        }
        Ok(())
    }

    /// Removes rotated files beyond `max_backups` and older than `max_age` (lumberjack's `millRunOnce`).
    fn prune(&self, now: jiff::Timestamp) -> std::io::Result<()> {
        if self.max_backups == 0 && self.max_age.is_zero() {
            return Ok(());
        }
        let (prefix, ext) = name_parts(&self.path);
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // (time stamp, path); the stamp's fixed-width format sorts as time does.
        let mut backups: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stamp = name.strip_prefix(&format!("{prefix}-"))?.strip_suffix(&ext)?;
                backup_time(stamp)?;
                Some((stamp.to_string(), e.path()))
            })
            .collect();
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        for (i, (stamp, path)) in backups.iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = !self.max_age.is_zero()
                && backup_time(stamp)
                    .is_some_and(|t| now.as_second() - t.as_second() > self.max_age.as_secs() as i64);
            if too_many || too_old {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// A file name's stem and extension (with its dot), as Go's `filepath.Ext` splits it.
fn name_parts(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) => (name[..i].to_string(), name[i..].to_string()),
        None => (name, String::new()),
    }
}

/// The time a rotated file's stamp (`2006-01-02T15-04-05.000`, UTC) names.
fn backup_time(stamp: &str) -> Option<jiff::Timestamp> {
    let (secs, millis) = stamp.split_once('.')?;
    if millis.len() != 3 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dt = jiff::civil::DateTime::strptime("%Y-%m-%dT%H-%M-%S", secs).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_prunes_like_lumberjack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = FileOut {
            path: path.clone(),
            file: None,
            size: 0,
            rotatable: false,
            max_size: 100,
            max_backups: 2,
            max_age: Duration::ZERO,
        };
        f.open().unwrap();
        // Old backups: one past the count limit, and a file that is not a backup.
        for stamp in ["2001-01-01T00-00-00.000", "2002-01-01T00-00-00.000"] {
            std::fs::write(dir.path().join(format!("audit-{stamp}.log")), "x").unwrap();
        }
        std::fs::write(dir.path().join("audit-notes.log"), "x").unwrap();
        let line = [b'a'; 60];
        f.write(&line).unwrap();
        f.write(&line).unwrap(); // 120 > 100: the first line is rotated away
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 60);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // The new backup and the newest old one are kept; the notes file is not a backup.
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"audit-2002-01-01T00-00-00.000.log".to_string()));
        assert!(names.contains(&"audit-notes.log".to_string()));
        assert!(!names.contains(&"audit-2001-01-01T00-00-00.000.log".to_string()));

        // By age: everything older than a day goes.
        f.max_backups = 0;
        f.max_age = Duration::from_secs(24 * 3600);
        // A rotation in the same millisecond would reuse the first one's name.
        std::thread::sleep(Duration::from_millis(5));
        f.write(&line).unwrap();
        let backups = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name().into_string().unwrap();
                n.starts_with("audit-2") && n.ends_with(".log")
            })
            .count();
        assert_eq!(backups, 2, "the two rotated just now");
    }

    #[test]
    fn stamps() {
        assert!(backup_time("2024-05-01T10-11-12.345").is_some());
        assert!(backup_time("2024-05-01T10-11-12").is_none());
        assert!(backup_time("notes").is_none());
        assert_eq!(
            name_parts(Path::new("/x/audit.log")),
            ("audit".into(), ".log".into())
        );
        assert_eq!(name_parts(Path::new("audit")), ("audit".into(), String::new()));
    }
}
