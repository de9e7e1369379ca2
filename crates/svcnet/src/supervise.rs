//! Supervised tasks: every long-running loop of `svcnet up` and `svcnet agent` runs under a
//! [`Supervisor`], so that a loop that stops is noticed instead of dying silently inside a process that
//! still looks healthy.
//!
//! A task is a named future that should run until the process stops. Its end, for whatever reason (it
//! returned `Ok`, returned an error, or panicked), is a failure: [`Supervisor::failed`] hands it to the
//! command, which logs it, turns its health endpoints red and shuts down with a non-zero exit, the way
//! Kubernetes components crash-loop loudly rather than limp.
//!
//! Test hook: the environment variable [`FAIL_TASK_ENV`] (`SVCNET_TEST_FAIL_TASK=<task name>`, or
//! `<task name>:panic`) makes that task fail (or panic) a moment after it starts. Only the supervisor
//! reads it; the integration tests use it to check that a failure is noticed.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Test hook: names a task to fail on purpose shortly after it starts (see the module docs).
pub(crate) const FAIL_TASK_ENV: &str = "SVCNET_TEST_FAIL_TASK";

/// How long after its start the task named by [`FAIL_TASK_ENV`] fails.
const TEST_FAIL_AFTER: Duration = Duration::from_secs(1);

/// A supervised task that stopped.
pub(crate) struct Stopped {
    /// The task's name.
    pub name: &'static str,
    /// Why it stopped: its error, its panic, or that it returned at all.
    pub error: anyhow::Error,
}

impl Stopped {
    /// The error on one line (its whole chain), for logs and health checks.
    pub fn reason(&self) -> String {
        format!("{:#}", self.error).replace('\n', " ")
    }
}

/// Runs named tasks and reports the first one that stops.
pub(crate) struct Supervisor {
    tx: mpsc::UnboundedSender<Stopped>,
    rx: mpsc::UnboundedReceiver<Stopped>,
    /// The test hook's task, and whether it panics rather than returns an error.
    fail: Option<(String, bool)>,
}

impl Supervisor {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let fail = std::env::var(FAIL_TASK_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| match v.strip_suffix(":panic") {
                Some(name) => (name.to_string(), true),
                None => (v, false),
            });
        Self { tx, rx, fail }
    }

    /// Runs `task` as the supervised task `name`.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let handle = match &self.fail {
            Some((fail, panic)) if fail == name => {
                let panic = *panic;
                tokio::spawn(async move {
                    tokio::select! {
                        r = task => r,
                        _ = tokio::time::sleep(TEST_FAIL_AFTER) => {
                            if panic {
                                panic!("{name} panicked on purpose ({FAIL_TASK_ENV})");
                            }
                            Err(anyhow!("failed on purpose ({FAIL_TASK_ENV})"))
                        }
                    }
                })
            }
            _ => tokio::spawn(task),
        };
        self.watch(name, handle);
    }

    /// Supervises a task spawned elsewhere (by code that hands back its handle) as `name`.
    pub fn watch_spawned<T: Send + 'static>(&self, name: &'static str, handle: JoinHandle<T>) {
        self.spawn(name, async move {
            handle.await?;
            Ok(())
        });
    }

    /// Reports `handle`'s end as the task `name` stopping, unless it was cancelled (the runtime going
    /// away at shutdown).
    fn watch(&self, name: &'static str, handle: JoinHandle<Result<()>>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let error = match handle.await {
                Ok(Ok(())) => anyhow!("returned; it should run until the process stops"),
                Ok(Err(e)) => e,
                Err(e) if e.is_cancelled() => return,
                Err(e) => anyhow!("{e}"),
            };
            let _ = tx.send(Stopped { name, error });
        });
    }

    /// Waits for the first supervised task to stop and logs it at error level.
    pub async fn failed(&mut self) -> Stopped {
        // The supervisor holds a sender itself, so the channel never closes.
        let Some(stopped) = self.rx.recv().await else {
            return std::future::pending().await;
        };
        tracing::error!(task = stopped.name, error = %stopped.reason(), "a supervised task stopped");
        stopped
    }
}
