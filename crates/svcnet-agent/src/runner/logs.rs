//! Container logs: one file per container instance (`<restart count>.log`, stdout and stderr interleaved as the
//! process wrote them, plain as `kubectl logs` shows them), tails, and following a running instance.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// A path component made from a name that comes from the API (uids and container names are validated there,
/// but the runner must not trust them with the file system).
pub(crate) fn safe_component(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("_{cleaned}"),
        _ => cleaned,
    }
}

/// The directory holding one container's log files.
pub(crate) fn container_log_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(safe_component(container))
}

/// The log file of one instance of a container.
pub(crate) fn instance_log(pod_dir: &Path, container: &str, instance: u32) -> PathBuf {
    container_log_dir(pod_dir, container).join(format!("{instance}.log"))
}

/// The last `lines` lines of `path` (all of it for `None`), reading backwards so that a large log is not read
/// whole for a short tail.
/// Reads up to byte `end` (the whole file for `None`).
pub(crate) fn read_tail(path: &Path, lines: Option<usize>, end: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        // An instance that never wrote (or failed to start) has an empty log.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.seek(SeekFrom::End(0))?;
    let len = end.map_or(len, |e| e.min(len));
    let Some(lines) = lines else {
        let mut all = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.take(len).read_to_end(&mut all)?;
        return Ok(all);
    };
    if lines == 0 {
        return Ok(Vec::new());
    }
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        // A final line without a newline still counts as a line, so skip a trailing newline when counting.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let newlines: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if newlines.len() >= lines {
            let start = newlines[newlines.len() - lines] + 1;
            return Ok(buf[start..].to_vec());
        }
        if pos == 0 {
            return Ok(buf);
        }
        let read = CHUNK.min(pos);
        pos -= read;
        file.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; usize::try_from(read).unwrap_or(0)];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
}

/// A stream of log bytes of a running container instance; ends when the instance has exited and its log has
/// been read to the end. Dropping it stops the reader task.
pub struct LogStream {
    rx: mpsc::Receiver<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for LogStream {
    type Item = Bytes;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}

/// How often a followed log is checked for new bytes: the process writes the file directly (so that it
/// outlives the agent), which leaves no event to wait for.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Follows `path` from `offset`, sending what gets appended while `alive()` says the instance runs.
pub(crate) fn follow(
    runtime: &tokio::runtime::Handle,
    path: PathBuf,
    initial: Vec<u8>,
    offset: u64,
    alive: impl Fn() -> bool + Send + 'static,
    mut stamper: Option<super::timeline::Stamper>,
) -> LogStream {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let task = runtime.spawn(async move {
        if !initial.is_empty() && tx.send(Bytes::from(initial)).await.is_err() {
            return;
        }
        let mut offset = offset;
        loop {
            // Check liveness before reading so that the last bytes written before exit are still sent.
            let running = alive();
            let path2 = path.clone();
            let chunk = tokio::task::spawn_blocking(move || read_from(&path2, offset)).await;
            let chunk = match chunk {
                Ok(Ok(c)) => c,
                _ => return,
            };
            if !chunk.is_empty() {
                offset += chunk.len() as u64;
                let chunk = match stamper.as_mut() {
                    Some(s) => s.stamp(&chunk, jiff::Timestamp::now()),
                    None => Bytes::from(chunk),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
                continue;
            }
            if !running {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    LogStream { rx, task }
}

/// Up to 64 KiB of `path` from `offset`.
fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(64 * 1024).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_like_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail(&p, Some(2), None).unwrap(), b"b\nc\n");
        assert_eq!(read_tail(&p, Some(5), None).unwrap(), b"a\nb\nc\n");
        assert_eq!(read_tail(&p, Some(0), None).unwrap(), b"");
        assert_eq!(read_tail(&p, None, None).unwrap(), b"a\nb\nc\n");
        std::fs::write(&p, "a\nb\nc").unwrap();
        assert_eq!(read_tail(&p, Some(1), None).unwrap(), b"c");
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &big).unwrap();
        assert_eq!(read_tail(&p, Some(2), None).unwrap(), b"line 49998\nline 49999\n");
        assert_eq!(
            read_tail(&dir.path().join("missing"), Some(2), None).unwrap(),
            b""
        );
        assert_eq!(safe_component("../x"), ".._x");
        assert_eq!(safe_component(".."), "_..");
    }
}
