//! Which kubectl binaries the tests run, and where they are: `kubectl.<version>` beside the `kubectl` on
//! PATH (the CI image installs the oldest and newest supported), or that `kubectl` itself.

use std::path::PathBuf;

/// The kubectl versions to test with: the oldest and newest supported.
pub const KUBECTLS: &[&str] = &["1.27", "1.33"];

/// The version [`crate::Cluster::ok`] and friends use when a test names none: the newest.
pub const NEWEST: &str = "1.33";

/// Path of `kubectl.<version>` beside the kubectl on PATH, or that kubectl when there is no such file.
pub fn kubectl_path(version: &str) -> PathBuf {
    let on_path = which("kubectl").expect("kubectl on PATH");
    let real = std::fs::canonicalize(&on_path).unwrap_or(on_path);
    let versioned = real
        .parent()
        .expect("kubectl has a directory")
        .join(format!("kubectl.{version}"));
    if versioned.exists() { versioned } else { real }
}

/// The first file called `name` in a PATH directory.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
