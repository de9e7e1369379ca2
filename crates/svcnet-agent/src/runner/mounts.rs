//! Mounts the agent made inside a pod's directory (memory-backed `emptyDir` volumes are tmpfs mounts on
//! the node): found in `/proc/self/mountinfo` and detached before the directory is removed, so that no
//! tmpfs outlives its pod and a removal never stops at a busy mount point.

use std::path::{Path, PathBuf};

/// Undoes `/proc/self/mountinfo`'s octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points strictly inside `dir`, deepest first.
pub(crate) fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Detaches every mount inside `dir` (lazily: a process still using one keeps it until it lets go).
pub(crate) fn unmount_under(dir: &Path) {
    for point in mount_points_under(dir) {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => tracing::debug!(path = %point.display(), "unmounted"),
            Err(e) => tracing::warn!(path = %point.display(), error = %e, "could not unmount a pod's volume"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b/c\\134d"), "/a b/c\\d");
        assert_eq!(unescape("/plain"), "/plain");
        // Nothing is mounted inside a fresh directory.
        let tmp = tempfile::tempdir().unwrap();
        assert!(mount_points_under(tmp.path()).is_empty());
    }
}
