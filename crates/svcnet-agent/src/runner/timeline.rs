//! When container log lines were written, for `kubectl logs --timestamps/--since/--since-time`.
//!
//! A container writes its log file itself (so that its output does not depend on the agent), so nothing
//! stamps its lines as a container runtime's log driver does. Instead the agent notes, every
//! [`INTERVAL`], how far each running instance's log has grown and when: `<instance>.times` beside the
//! log holds one `<offset> <unix nanoseconds>` line per growth, meaning "the bytes from `offset` on were
//! there at that time". A line's time is that of the last note at or before its first byte: at most one
//! interval late while the agent runs; what a container wrote while the agent was down gets the time the
//! agent next looked, and a log with no note at all (written before this existed) its file's mtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often a running instance's log is looked at.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The notes file of a log file.
pub(crate) fn times_path(log: &Path) -> PathBuf {
    log.with_extension("times")
}

/// Notes the growth of one instance's log while it runs.
pub(crate) struct Recorder {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts noting `log` (must be called within a Tokio runtime).
    pub(crate) fn start(log: PathBuf) -> Recorder {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let times = times_path(&log);
            let mut noted = last_noted(&log, &times);
            loop {
                let last = tokio::select! {
                    _ = &mut stopped => true,
                    () = tokio::time::sleep(INTERVAL) => false,
                };
                note(&log, &times, &mut noted);
                if last {
                    return;
                }
            }
        });
        Recorder {
            stop: Some(stop),
            task,
        }
    }

    /// Takes a last look (the instance has exited) and stops.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where noting starts: the log's start for a new log; for a log that has notes already (an instance
/// number used again after the agent restarted appends to its file), its current end, so that the new
/// bytes are noted as new.
fn last_noted(log: &Path, times: &Path) -> u64 {
    if read(times).is_empty() {
        0
    } else {
        std::fs::metadata(log).map_or(0, |m| m.len())
    }
}

/// Appends a note if `log` grew past `noted`.
fn note(log: &Path, times: &Path, noted: &mut u64) {
    let Ok(len) = std::fs::metadata(log).map(|m| m.len()) else {
        return;
    };
    if len <= *noted {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(times);
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{} {}", *noted, Timestamp::now().as_nanosecond());
    }
    *noted = len;
}

/// The notes of a log: `(offset, time)`, in order.
fn read(times: &Path) -> Vec<(u64, Timestamp)> {
    std::fs::read_to_string(times)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (offset, nanos) = l.split_once(' ')?;
            let t = Timestamp::from_nanosecond(nanos.parse().ok()?).ok()?;
            Some((offset.parse().ok()?, t))
        })
        .collect()
}

/// What to show of a log, as `PodLogOptions` says.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// The previous instance's log.
    pub previous: bool,
    /// The last lines only.
    pub tail: Option<usize>,
    /// Lines written at or after this time only.
    pub since: Option<Timestamp>,
    /// Each line prefixed with its time (RFC 3339, nanoseconds) and a space.
    pub timestamps: bool,
}

impl LogOptions {
    /// Whether the times of lines matter (the notes must be read).
    pub(crate) fn timed(&self) -> bool {
        self.timestamps || self.since.is_some()
    }
}

/// `bytes` (the log `log` from its start) filtered and stamped as `opts` say; the tail is counted after
/// the `since` filter, as the kubelet does.
pub(crate) fn render(log: &Path, bytes: &[u8], opts: &LogOptions) -> Vec<u8> {
    let notes = read(&times_path(log));
    let fallback = std::fs::metadata(log)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| Timestamp::try_from(t).ok())
        .unwrap_or_else(Timestamp::now);
    let mut lines: Vec<(Timestamp, &[u8])> = Vec::new();
    let mut offset = 0u64;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let at = notes
            .iter()
            .rev()
            .find(|(o, _)| *o <= offset)
            .map_or(fallback, |(_, t)| *t);
        offset += line.len() as u64;
        if opts.since.is_some_and(|since| at < since) {
            continue;
        }
        lines.push((at, line));
    }
    if let Some(n) = opts.tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let mut out = Vec::with_capacity(bytes.len());
    for (at, line) in lines {
        if opts.timestamps {
            out.extend_from_slice(format!("{at} ").as_bytes());
        }
        out.extend_from_slice(line);
    }
    out
}

/// Prefixes every line that starts in the chunks of a followed log with the time it was read (which is
/// when it was written, within the follow interval).
#[derive(Debug)]
pub(crate) struct Stamper {
    at_line_start: bool,
}

impl Stamper {
    /// A stamper for a stream that starts at the beginning of a line, or in the middle of one.
    pub(crate) fn new(at_line_start: bool) -> Stamper {
        Stamper { at_line_start }
    }

    /// `chunk`, stamped with `now`.
    pub(crate) fn stamp(&mut self, chunk: &[u8], now: Timestamp) -> Bytes {
        let prefix = format!("{now} ");
        let mut out = Vec::with_capacity(chunk.len() + prefix.len());
        for line in chunk.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                out.extend_from_slice(prefix.as_bytes());
            }
            out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_the_time_of_the_note_covering_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, "a\nb\nc\nd").unwrap();
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        std::fs::write(
            times_path(&log),
            format!("0 {}\n4 {}\n", t(0).as_nanosecond(), t(10).as_nanosecond()),
        )
        .unwrap();
        let bytes = std::fs::read(&log).unwrap();
        let render = |opts: LogOptions| String::from_utf8(render(&log, &bytes, &opts)).unwrap();
        assert_eq!(
            render(LogOptions {
                timestamps: true,
                ..Default::default()
            }),
            "2023-11-14T22:13:20Z a\n2023-11-14T22:13:20Z b\n2023-11-14T22:13:30Z c\n2023-11-14T22:13:30Z d"
        );
        assert_eq!(
            render(LogOptions {
                since: Some(t(5)),
                ..Default::default()
            }),
            "c\nd"
        );
        // The tail counts what the since filter left.
        assert_eq!(
            render(LogOptions {
                since: Some(t(0)),
                tail: Some(1),
                ..Default::default()
            }),
            "d"
        );
        assert_eq!(
            render(LogOptions {
                since: Some(t(11)),
                ..Default::default()
            }),
            ""
        );
    }

    #[test]
    fn a_followed_stream_is_stamped_at_line_starts() {
        let mut s = Stamper::new(true);
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(
            &s.stamp(b"ab\ncd", t)[..],
            b"2023-11-14T22:13:20Z ab\n2023-11-14T22:13:20Z cd"
        );
        assert_eq!(&s.stamp(b"e\nf\n", t)[..], b"e\n2023-11-14T22:13:20Z f\n");
    }

    #[tokio::test]
    async fn the_recorder_notes_growth() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, "a\n").unwrap();
        let r = Recorder::start(log.clone());
        tokio::time::sleep(INTERVAL * 3).await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"b\n")
            .unwrap();
        r.finish().await;
        let notes = read(&times_path(&log));
        assert_eq!(notes.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 2]);
        assert!(notes[0].1 < notes[1].1);
    }
}
