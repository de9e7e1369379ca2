//! One `kubectl exec` (or `attach`) session, whatever carries it (WebSocket or SPDY): starts the command in the
//! container (pipes, or a terminal with `-t`), pumps stdin, stdout, stderr and resizes through
//! [`ExecIo`], and ends with the Status the remote-command protocol (v4 and later) puts on its error
//! stream: `Success`, or `NonZeroExitCode` with the code as the `ExitCode` cause, which kubectl turns
//! into its own exit code (`command terminated with exit code N`).
//!
//! A client that goes away (the transport drops its receiver) kills the command's whole process group:
//! nothing exec'd outlives its session.

use std::process::Stdio;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::runner::{ExecTarget, LogStream, kill_exec_group};

/// What the session asked for (the exec request's query).
#[derive(Clone, Debug, Default)]
pub(crate) struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Output of a session, in the order the transport must send it.
#[derive(Debug)]
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The final Status (JSON), sent on the error stream; nothing follows.
    Status(Bytes),
}

/// The session's side of a transport.
pub(crate) struct ExecIo {
    /// Client stdin; the channel closing is EOF.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal sizes (columns, rows).
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Everything sent back; the transport drops its receiver when the client is gone.
    pub out: mpsc::Sender<Output>,
}

/// Client stdin on its way to the process, with back-pressure: a chunk the process has not taken yet is
/// held here, and while it is, the transport does not read its client (output still flows), so a client
/// that sends faster than the process reads is slowed down instead of buffered without bound. Both
/// transports (WebSocket and SPDY) drive it from their `select!` loops: [`StdinFeed::room`] is a future
/// that owns what it needs, so it can wait beside the branches that change the feed.
pub(crate) struct StdinFeed {
    tx: Option<mpsc::Sender<Bytes>>,
    pending: Option<Bytes>,
}

impl StdinFeed {
    /// A feed into the process's stdin channel.
    pub(crate) fn new(tx: mpsc::Sender<Bytes>) -> Self {
        StdinFeed {
            tx: Some(tx),
            pending: None,
        }
    }

    /// Whether a chunk waits for the process (the client is not read meanwhile).
    pub(crate) fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Room for one chunk in the process's channel; `None` when stdin is closed or the process is gone.
    pub(crate) fn room(&self) -> impl std::future::Future<Output = Option<mpsc::OwnedPermit<Bytes>>> + use<> {
        let tx = self.tx.clone();
        async move {
            match tx {
                Some(tx) => tx.reserve_owned().await.ok(),
                None => None,
            }
        }
    }

    /// Hands the waiting chunk over through the room [`StdinFeed::room`] found (none: the process no
    /// longer reads, and stdin is closed).
    pub(crate) fn hand_over(&mut self, room: Option<mpsc::OwnedPermit<Bytes>>) {
        match room {
            Some(p) => {
                p.send(self.pending.take().unwrap_or_default());
            }
            None => {
                self.pending = None;
                self.tx = None;
            }
        }
    }

    /// Takes a chunk the client sent (ignored once stdin is closed).
    pub(crate) fn push(&mut self, data: Bytes) {
        if !data.is_empty() && self.tx.is_some() {
            self.pending = Some(data);
        }
    }

    /// Ends stdin, after what is waiting is delivered (for at most 5 s: the process may never read it,
    /// and it must not hold the session).
    pub(crate) async fn end(&mut self) {
        if let (Some(tx), Some(b)) = (self.tx.take(), self.pending.take()) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tx.send(b)).await;
        }
    }
}

/// The Status for an exit code, as the kubelet writes it.
pub(crate) fn exit_status(command: &[String], code: i32) -> Bytes {
    let v = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    Bytes::from(v.to_string())
}

/// A Status for a failure that is not the command's exit (`InternalError`).
pub(crate) fn failure_status(message: &str) -> Bytes {
    Bytes::from(
        json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
            .to_string(),
    )
}

/// Reads `r` to its end, sending each chunk through `wrap`; a terminal's EIO (all its slaves closed)
/// is its end too.
async fn pump<R: AsyncRead + Unpin>(mut r: R, out: mpsc::Sender<Output>, wrap: fn(Bytes) -> Output) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies client stdin into the process until either ends.
async fn feed<W: tokio::io::AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            return;
        }
        let _ = w.flush().await;
    }
    // EOF from the client: the process sees its stdin end (dropping `w` closes it).
    let _ = w.shutdown().await;
}

/// What a session does: run a command, or follow the container's own output (`kubectl attach`).
pub(crate) enum Action {
    Exec(ExecTarget),
    Attach(LogStream),
}

/// The transport's side of a running session: stdin to feed, terminal sizes to pass on, output to send.
pub(crate) struct Session {
    pub stdin: StdinFeed,
    pub resize: mpsc::Sender<(u16, u16)>,
    pub out: mpsc::Receiver<Output>,
}

/// Starts the session's work, and returns the transport's side of it.
pub(crate) fn start(action: Action, opts: ExecOptions) -> Session {
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(8);
    let (out_tx, out_rx) = mpsc::channel::<Output>(64);
    let io = ExecIo {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
        out: out_tx,
    };
    match action {
        Action::Exec(target) => tokio::spawn(run(target, opts, io)),
        Action::Attach(logs) => tokio::spawn(attach(logs, io)),
    };
    Session {
        stdin: StdinFeed::new(stdin_tx),
        resize: resize_tx,
        out: out_rx,
    }
}

/// `kubectl attach`: the container's output from now on (its stdout and stderr go to one log, sent as
/// stdout), until the container stops or the client goes away.
async fn attach(mut logs: LogStream, io: ExecIo) {
    use futures::StreamExt;
    let out = io.out;
    loop {
        tokio::select! {
            chunk = logs.next() => match chunk {
                Some(b) => {
                    if out.send(Output::Stdout(b)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            _ = out.closed() => return,
        }
    }
    let _ = out.send(Output::Status(exit_status(&[], 0))).await;
}

/// Runs the session to its end.
async fn run(target: ExecTarget, opts: ExecOptions, io: ExecIo) {
    let ExecIo { stdin, resize, out } = io;
    let Some(program) = opts.command.first().cloned() else {
        let _ = out
            .send(Output::Status(failure_status(
                "you must specify at least one command for the container",
            )))
            .await;
        return;
    };
    // A missing or non-executable program is the command's failure, with a shell's exit codes (127,
    // 126) and a message on stderr, where a container runtime answers `OCI runtime exec failed`.
    if let Err(e) = target.resolve(&program) {
        let (code, what) = match e.raw_os_error() {
            Some(13) => (126, "permission denied"),
            _ => (127, "executable file not found in $PATH"),
        };
        let msg = format!("exec failed: unable to start container process: exec: {program:?}: {what}\n");
        if opts.stderr || opts.tty {
            let which = if opts.tty { Output::Stdout } else { Output::Stderr };
            let _ = out.send(which(Bytes::from(msg))).await;
        }
        let _ = out.send(Output::Status(exit_status(&opts.command, code))).await;
        return;
    }
    if opts.tty {
        run_tty(target, opts, stdin, resize, out).await
    } else {
        run_pipes(target, opts, stdin, out).await
    }
}

async fn run_pipes(
    target: ExecTarget,
    opts: ExecOptions,
    stdin: Option<mpsc::Receiver<Bytes>>,
    out: mpsc::Sender<Output>,
) {
    let mut cmd = target.command(&opts.command, false);
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(piped(stdin.is_some()))
        .stdout(piped(opts.stdout))
        .stderr(piped(opts.stderr));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = out
                .send(Output::Status(failure_status(&format!(
                    "cannot start {:?}: {e}",
                    opts.command
                ))))
                .await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let mut tasks = tokio::task::JoinSet::new();
    if let (Some(w), Some(rx)) = (child.stdin.take(), stdin) {
        // Not joined: a command that never reads its stdin must not hold the session open.
        tokio::spawn(feed(w, rx));
    }
    if let Some(r) = child.stdout.take() {
        tasks.spawn(pump(r, out.clone(), Output::Stdout));
    }
    if let Some(r) = child.stderr.take() {
        tasks.spawn(pump(r, out.clone(), Output::Stderr));
    }
    let finished = async {
        let status = child.wait().await;
        while tasks.join_next().await.is_some() {}
        status
    };
    tokio::select! {
        status = finished => {
            let code = crate::runner::exec_exit_code(status.ok());
            let _ = out.send(Output::Status(exit_status(&opts.command, code))).await;
        }
        _ = out.closed() => {
            // The client is gone: the command and whatever it started go with it.
            kill_exec_group(pid, nix::sys::signal::Signal::SIGKILL);
            tracing::debug!(command = ?opts.command, "exec client went away; command killed");
        }
    }
}

/// How long a terminal session waits for the client's first terminal size before starting its command.
const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn run_tty(
    target: ExecTarget,
    opts: ExecOptions,
    stdin: Option<mpsc::Receiver<Bytes>>,
    mut resize: Option<mpsc::Receiver<(u16, u16)>>,
    out: mpsc::Sender<Output>,
) {
    let fail =
        |e: std::io::Error| Output::Status(failure_status(&format!("cannot allocate a terminal: {e}")));
    // kubectl sends the client's terminal size as the session opens: the terminal gets it before the
    // command starts (a command that asks at once, `stty size`, must not see 0 0), as a runtime does.
    // A client that sends none within a moment gets the default.
    let first = match resize.as_mut() {
        Some(rx) => tokio::time::timeout(FIRST_SIZE_WAIT, rx.recv())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let size = first.map(|(cols, rows)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = match nix::pty::openpty(size.as_ref(), None) {
        Ok(p) => p,
        Err(e) => {
            let _ = out.send(fail(e.into())).await;
            return;
        }
    };
    let master = std::fs::File::from(pty.master);
    let slave = std::fs::File::from(pty.slave);
    let stdio = || slave.try_clone().map(Stdio::from);
    let mut cmd = target.command(&opts.command, true);
    let spawned = (|| {
        cmd.stdin(stdio()?).stdout(stdio()?).stderr(stdio()?);
        cmd.spawn()
    })();
    // Only the child keeps the terminal's slave side: its end (EIO on the master) is the output's end.
    drop(slave);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(fail(e)).await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let (reader, writer) = match master.try_clone() {
        Ok(w) => (tokio::fs::File::from_std(master), tokio::fs::File::from_std(w)),
        Err(e) => {
            kill_exec_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = out.send(fail(e)).await;
            return;
        }
    };
    let sizer = writer.try_clone().await.ok();
    if let Some(rx) = stdin {
        tokio::spawn(feed(writer, rx));
    }
    if let (Some(mut rx), Some(sizer)) = (resize.take(), sizer) {
        tokio::spawn(async move {
            while let Some((cols, rows)) = rx.recv().await {
                let ws = rustix::termios::Winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let _ = rustix::termios::tcsetwinsize(&sizer, ws);
            }
        });
    }
    let output = tokio::spawn(pump(reader, out.clone(), Output::Stdout));
    let finished = async {
        let status = child.wait().await;
        // What the command wrote before it ended is still in the terminal: read it out, briefly.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), output).await;
        status
    };
    tokio::select! {
        status = finished => {
            let code = crate::runner::exec_exit_code(status.ok());
            let _ = out.send(Output::Status(exit_status(&opts.command, code))).await;
        }
        _ = out.closed() => {
            kill_exec_group(pid, nix::sys::signal::Signal::SIGKILL);
            tracing::debug!(command = ?opts.command, "exec client went away; command killed");
        }
    }
}
