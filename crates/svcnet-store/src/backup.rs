//! Backups of the embedded store: a [`Snapshot`] (every key at one revision, from
//! [`Store::snapshot_and_watch`](crate::Store::snapshot_and_watch), so it is consistent while the store
//! takes writes) written as a redb file in the store's own format. Restoring is putting that file in the
//! store's place: it opens as it is, every key keeps its create and modification revisions, and the
//! revision goes on from the snapshot's, so resourceVersions after a restore never repeat one a client saw
//! before the backup.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::redb::{META, OBJECTS, REVISION_KEY};
use crate::{KeyValue, Snapshot, StoreError};

fn backend<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{}: {e}", path.display()))
}

/// Writes `snapshot` as a new store file at `path` (owner-only; an existing file is refused), durably.
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(backend(path))?;
    let db = Database::create(path).map_err(backend(path))?;
    let txn = db.begin_write().map_err(backend(path))?;
    {
        let mut objects = txn.open_table(OBJECTS).map_err(backend(path))?;
        for kv in &snapshot.items {
            objects
                .insert(
                    kv.key.as_str(),
                    (kv.create_revision, kv.mod_revision, kv.value.as_ref()),
                )
                .map_err(backend(path))?;
        }
        let mut meta = txn.open_table(META).map_err(backend(path))?;
        meta.insert(REVISION_KEY, snapshot.revision)
            .map_err(backend(path))?;
    }
    txn.commit().map_err(backend(path))?;
    Ok(())
}

/// Reads a backup (or a stopped store's file) whole: to check it before it replaces a store.
pub fn read(path: &Path) -> Result<Snapshot, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Backend(format!("{}: no such file", path.display())));
    }
    let db = Database::open(path).map_err(backend(path))?;
    let txn = db.begin_read().map_err(backend(path))?;
    let meta = txn.open_table(META).map_err(backend(path))?;
    let revision = meta
        .get(REVISION_KEY)
        .map_err(backend(path))?
        .map(|v| v.value())
        .ok_or_else(|| {
            StoreError::Backend(format!("{}: not a svcnet store (no revision)", path.display()))
        })?;
    let objects = txn.open_table(OBJECTS).map_err(backend(path))?;
    let mut items = Vec::new();
    for entry in objects.iter().map_err(backend(path))? {
        let (k, v) = entry.map_err(backend(path))?;
        let (create_revision, mod_revision, value) = v.value();
        if mod_revision > revision {
            return Err(StoreError::Backend(format!(
                "{}: key {} was modified at revision {mod_revision}, after the file's revision {revision}",
                path.display(),
                k.value()
            )));
        }
        items.push(KeyValue {
            key: k.value().to_string(),
            value: Bytes::copy_from_slice(value),
            create_revision,
            mod_revision,
        });
    }
    Ok(Snapshot { revision, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redb::RedbStore;
    use crate::{Precondition, Store, Write};

    #[tokio::test]
    async fn a_backup_taken_under_writes_restores_to_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        for i in 0..50 {
            store
                .write(Write::Put {
                    key: format!("/k/{i:02}"),
                    value: Bytes::from(format!("v{i}")),
                    precondition: Precondition::None,
                })
                .await
                .unwrap();
        }
        let (snap, _) = store.snapshot_and_watch("/").await.unwrap();
        // Writes after the snapshot are not in the backup.
        store
            .write(Write::Delete {
                key: "/k/00".into(),
                precondition: Precondition::None,
            })
            .await
            .unwrap();
        let file = dir.path().join("backup");
        write(&file, &snap).unwrap();
        assert!(
            write(&file, &snap).is_err(),
            "an existing file is not overwritten"
        );
        assert_eq!(read(&file).unwrap(), snap);
        drop(store);

        // The backup opens as a store, at the snapshot's revision, and goes on from there.
        let restored = loop {
            if let Ok(s) = RedbStore::open(&file) {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let (again, _) = restored.snapshot_and_watch("/").await.unwrap();
        assert_eq!(again, snap);
        let next = restored
            .write(Write::Put {
                key: "/k/new".into(),
                value: Bytes::from_static(b"x"),
                precondition: Precondition::Absent,
            })
            .await
            .unwrap();
        assert!(
            matches!(next, crate::WriteOutcome::Committed { revision, .. } if revision == snap.revision + 1)
        );
        assert!(read(&dir.path().join("missing")).is_err());
        std::fs::write(dir.path().join("garbage"), b"not a database").unwrap();
        assert!(read(&dir.path().join("garbage")).is_err());
    }
}
