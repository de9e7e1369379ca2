//! `svcnet backup`, `svcnet restore` and `svcnet migrate` for the embedded store.
//!
//! A backup is consistent while `svcnet up` runs: the running process owns the store file (redb locks
//! it), so `backup` asks it over the owner-only Unix socket `DIR/backup.sock`, and the process writes a
//! snapshot taken at one revision ([`svcnet_store::backup`]). With no process running, `backup` reads the
//! file itself. `restore` refuses while `svcnet up` runs on the directory, checks the backup whole, keeps
//! the current store beside it (`store.redb.before-restore-<time>`) and puts the backup in its place.
//! A cluster on etcd is backed up with etcd's own `etcdctl snapshot save`; `svcnet migrate` moves a
//! stopped one-node cluster from its embedded store into etcd.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use svcnet_store::{Store, backup};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// `svcnet backup` / `svcnet restore` arguments.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// The data directory of the cluster (`svcnet up --data-dir`).
    #[arg(long, default_value = "./svcnet-data")]
    data_dir: PathBuf,
    /// The backup file (written by `backup`, which refuses to overwrite one; read by `restore`).
    file: PathBuf,
}

const SOCKET: &str = "backup.sock";
const STORE: &str = "store.redb";

/// Serves backups of `store` on `DIR/backup.sock` for as long as `svcnet up` runs.
pub async fn serve(data_dir: &Path, store: Arc<dyn Store>) -> Result<()> {
    let path = data_dir.join(SOCKET);
    // A socket file left by a process that died; the data directory is ours alone (0700).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let dir = data_dir.to_path_buf();
    loop {
        let (mut conn, _) = listener.accept().await?;
        let (store, dir) = (store.clone(), dir.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(&mut conn, store.as_ref(), &dir).await {
                warn!(error = %e, "backup failed");
                let _ = conn.write_all(format!("error: {e:#}\n").as_bytes()).await;
            }
        });
    }
}

/// One backup: a snapshot written to a scratch file in the data directory, then sent as `ok\n` and
/// the file's bytes.
async fn answer(conn: &mut UnixStream, store: &dyn Store, dir: &Path) -> Result<()> {
    let (snapshot, feed) = store.snapshot_and_watch("/").await?;
    drop(feed);
    let scratch = dir.join(format!(".backup-{:016x}", rand::random::<u64>()));
    let written = {
        let (scratch, snapshot) = (scratch.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || backup::write(&scratch, &snapshot)).await?
    };
    let bytes = written
        .and_then(|()| std::fs::read(&scratch).map_err(|e| svcnet_store::StoreError::Backend(e.to_string())));
    let _ = std::fs::remove_file(&scratch);
    let bytes = bytes?;
    conn.write_all(b"ok\n").await?;
    conn.write_all(&bytes).await?;
    conn.shutdown().await?;
    info!(
        revision = snapshot.revision,
        objects = snapshot.items.len(),
        "backup sent"
    );
    Ok(())
}

/// Asks the `svcnet up` running on `dir` for a backup; `None` when none runs there.
async fn from_running(dir: &Path) -> Result<Option<Vec<u8>>> {
    let Ok(mut conn) = UnixStream::connect(dir.join(SOCKET)).await else {
        return Ok(None);
    };
    let mut all = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut all).await?;
    match all.strip_prefix(b"ok\n") {
        Some(file) => Ok(Some(file.to_vec())),
        None => bail!("{}", String::from_utf8_lossy(&all).trim()),
    }
}

/// `svcnet backup`.
pub async fn run_backup(args: BackupArgs) -> Result<()> {
    if args.file.exists() {
        bail!("{} exists; give a new file name", args.file.display());
    }
    let tmp = args.file.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    match from_running(&args.data_dir).await? {
        Some(bytes) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
        }
        None => {
            let store = args.data_dir.join(STORE);
            if !store.is_file() {
                bail!(
                    "no store in {} (no {STORE}, and no svcnet up running there)",
                    args.data_dir.display()
                );
            }
            let snapshot = backup::read(&store)?;
            backup::write(&tmp, &snapshot)?;
        }
    }
    // Checked whole before it gets its name: a backup that cannot be restored is worse than none.
    let snapshot = match backup::read(&tmp) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, &args.file)?;
    println!(
        "backed up {} objects at revision {} to {}",
        snapshot.items.len(),
        snapshot.revision,
        args.file.display()
    );
    Ok(())
}

/// `svcnet restore`.
pub async fn run_restore(args: BackupArgs) -> Result<()> {
    let snapshot = backup::read(&args.file).context("reading the backup")?;
    if UnixStream::connect(args.data_dir.join(SOCKET)).await.is_ok() {
        bail!(
            "svcnet up is running on {}; stop it before restoring",
            args.data_dir.display()
        );
    }
    crate::private_dir(&args.data_dir)?;
    let store = args.data_dir.join(STORE);
    if store.exists() {
        // Also refuses a store file another process still holds open (redb's lock).
        backup::read(&store).context("the current store (is svcnet up still running?)")?;
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let kept = args.data_dir.join(format!("{STORE}.before-restore-{stamp}"));
        std::fs::rename(&store, &kept)?;
        println!("kept the previous store as {}", kept.display());
    }
    let tmp = args.data_dir.join(format!("{STORE}.restoring"));
    let _ = std::fs::remove_file(&tmp);
    backup::write(&tmp, &snapshot)?;
    std::fs::rename(&tmp, &store)?;
    println!(
        "restored {} objects at revision {} into {}; start it with svcnet up --data-dir {}",
        snapshot.items.len(),
        snapshot.revision,
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// `svcnet migrate` arguments.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the one-node cluster (`svcnet up --data-dir`); it must not be running.
    #[arg(long, default_value = "./svcnet-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: crate::store_args::StoreArgs,
}

/// `svcnet migrate`: copies a stopped cluster's embedded store into etcd, oldest write first, so the
/// objects keep their UIDs and allocations (both live in the objects) and their resourceVersions keep
/// their order (the numbers become etcd's revisions; keys written together keep one revision).
pub async fn run_migrate(args: MigrateArgs) -> Result<()> {
    if !args.store.etcd() {
        bail!("svcnet migrate needs --etcd-servers: the etcd to move the cluster into");
    }
    if UnixStream::connect(args.data_dir.join(SOCKET)).await.is_ok() {
        bail!(
            "svcnet up is running on {}; stop it before migrating",
            args.data_dir.display()
        );
    }
    let path = args.data_dir.join(STORE);
    let mut snapshot = backup::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let etcd = args.store.open(&args.data_dir).await?;
    let (existing, _) = etcd.snapshot_and_watch("/").await?;
    if !existing.items.is_empty() {
        bail!(
            "etcd already holds {} objects under the prefix; migrate only into an empty one",
            existing.items.len()
        );
    }
    snapshot.items.sort_by_key(|kv| kv.mod_revision);
    // The keys one transaction wrote (a Service and its IPAddress) share a revision: they go into etcd
    // as one transaction again, so they share one there too.
    for group in snapshot.items.chunk_by(|a, b| a.mod_revision == b.mod_revision) {
        let writes = group
            .iter()
            .map(|kv| svcnet_store::Write::Put {
                key: kv.key.clone(),
                value: kv.value.clone(),
                precondition: svcnet_store::Precondition::Absent,
            })
            .collect();
        if let svcnet_store::TxnOutcome::PreconditionFailed { index, .. } = etcd.write_all(writes).await? {
            bail!(
                "{} appeared in etcd while migrating; is another server writing there?",
                group[index].key
            );
        }
    }
    println!(
        "migrated {} objects into etcd {}; start the cluster with svcnet up --data-dir {} --etcd-servers {}",
        snapshot.items.len(),
        args.store.etcd_servers.join(","),
        args.data_dir.display(),
        args.store.etcd_servers.join(",")
    );
    Ok(())
}
