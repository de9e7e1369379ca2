//! A pod's volumes, as the kubelet's volume manager sets them up before any container starts:
//! `configMap`, `secret`, `downwardAPI` (labels, annotations, name, namespace, uid), `projected` (those
//! sources and `serviceAccountToken`, whose tokens `super::sa_token` requests and renews; the
//! `kube-api-access-*` volume is the ServiceAccount directory `super::sa_token` keeps itself) and
//! `emptyDir` (on disk; `medium: Memory` a tmpfs of its `sizeLimit`, which needs root).
//!
//! Each lives in `<root>/pods/<uid>/volumes/<name>/` (as root a tmpfs for all but `configMap` ones, as
//! the kubelet keeps Secrets off the disk), written as the kubelet's `AtomicWriter` writes
//! it: the files in a fresh `..<time>` directory, `..data` a symlink to it swapped in by a rename, and
//! each top-level name a symlink through `..data`, so a reader sees the old or the new content whole.
//! A ConfigMap or Secret that changes is written again (the pod loop calls [`setup`] on the object's
//! change; nothing is written when nothing differs). As root each container's `volumeMounts` are bind
//! mounts in its own mount namespace (`crate::pod_identity::Sandbox`); without root the containers find
//! each volume's directory in `SVCNET_VOLUME_<NAME>`.
//!
//! Any other volume type (hostPath, persistentVolumeClaim, csi, nfs, …), a `clusterTrustBundle` or
//! `podCertificate` projection, a `volumeMount` naming no volume and `subPathExpr` are refused in the kubelet's words: the pod does not
//! start and a Warning Event says why. Nothing runs as if a volume were there.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection, Volume,
};

use super::sa_token::ProjectedTokens;
use crate::pod_identity::BindMount;
use crate::runner::{Lookup, ObjectKind, ObjectSource};

/// The projected volume the API server's ServiceAccount admission adds (token, CA, namespace).
pub(super) const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

/// The environment variables naming each volume's directory on the node: `SVCNET_VOLUME_<NAME>`.
pub const VOLUME_ENV_PREFIX: &str = "SVCNET_VOLUME_";

/// The kubelet's default file mode for ConfigMap, Secret, downward API and projected volumes (0644).
const DEFAULT_MODE: i32 = 0o644;

/// The variable naming volume `name`'s directory: `SVCNET_VOLUME_` + its name upper-cased, `-` as `_`.
pub fn env_name(volume: &str) -> String {
    format!(
        "{VOLUME_ENV_PREFIX}{}",
        volume.to_uppercase().replace(['-', '.'], "_")
    )
}

/// Why a pod's volumes cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum VolumeError {
    /// A volume failed (the kubelet's `FailedMount` event).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp {
        /// The volume.
        volume: String,
        /// Why.
        message: String,
    },
    /// A ConfigMap or Secret is not known yet (its watch has not listed it): no event, the pod waits.
    #[error("volume {0:?} waits for its object to be read")]
    Pending(String),
    /// A container's mounts cannot be made (the kubelet fails the container's config so).
    #[error("Error: {0}")]
    Container(String),
}

impl VolumeError {
    /// The reason of the Warning Event that tells it, if one does.
    pub(super) fn reason(&self) -> Option<&'static str> {
        match self {
            VolumeError::SetUp { .. } => Some("FailedMount"),
            VolumeError::Pending(_) => None,
            VolumeError::Container(_) => Some("Failed"),
        }
    }
}

/// A pod's volumes on the node.
#[derive(Debug, Default)]
pub(super) struct PodVolumes {
    /// Each volume's directory on the node, by name (the token volume excepted: see `sa_token`).
    pub dirs: Vec<(String, PathBuf)>,
    /// Each container's bind mounts, parents first (else in its `volumeMounts` order).
    pub mounts: BTreeMap<String, Vec<BindMount>>,
}

/// One file of a volume: bytes and mode.
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// What a volume is on the node.
enum Content {
    /// Files, written atomically; always mounted read-only.
    Files(Payload),
    /// A writable directory; with `Some`, a tmpfs of that many bytes (`None` inside: no limit given).
    EmptyDir(Option<Option<u64>>),
    /// The ServiceAccount directory.
    Token,
}

fn setup_error(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.into(),
        message: message.into(),
    }
}

/// The name of the volume source `v` uses (`hostPath`, `persistentVolumeClaim`, …).
fn volume_type(v: &Volume) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_object()?.keys().find(|k| k.as_str() != "name").cloned())
        .unwrap_or_else(|| "an unknown".into())
}

/// Sets up every volume of `pod` under `pod_dir/volumes/` (writing what changed) and computes each
/// container's mounts. `sa_dir` is the ServiceAccount directory, if the pod has one; `tokens` the
/// tokens of its projected volumes.
pub(super) fn setup(
    pod: &Pod,
    pod_dir: &Path,
    objects: &dyn ObjectSource,
    sa_dir: Option<&Path>,
    tokens: &ProjectedTokens,
) -> Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    // The kubelet gives volumes to the pod's `fsGroup` (`SetVolumeOwnership`), so that containers
    // running as another user can read them.
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    // Name → (directory, read-only by nature).
    let mut dirs: BTreeMap<&str, (PathBuf, bool)> = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let dir = pod_dir
            .join("volumes")
            .join(crate::runner::safe_component(&v.name));
        match content(pod, v, objects, tokens)? {
            Content::Token => {
                let sa = sa_dir.ok_or_else(|| {
                    setup_error(
                        &v.name,
                        "failed to fetch token: the pod has no service account token",
                    )
                })?;
                dirs.insert(&v.name, (sa.to_path_buf(), true));
                continue;
            }
            Content::EmptyDir(memory) => {
                use std::os::unix::fs::PermissionsExt;
                let made = std::fs::create_dir_all(&dir).and_then(|()| {
                    if let Some(size) = memory {
                        mount_tmpfs(&dir, size, 0o777)?;
                    }
                    // As the kubelet's: writable by whatever user the containers run as; with an
                    // fsGroup, that group's, and new files inherit it (setgid).
                    if let Some(gid) = fs_group {
                        std::os::unix::fs::chown(&dir, None, Some(gid))?;
                    }
                    let setgid = if fs_group.is_some() { 0o2000 } else { 0 };
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777 | setgid))
                });
                made.map_err(|e| setup_error(&v.name, e.to_string()))?;
                dirs.insert(&v.name, (dir.clone(), false));
            }
            Content::Files(payload) => {
                // Secret, downward API and projected volumes live in memory, as the kubelet keeps
                // them (a Secret never touches the node's disk); that needs root, else the disk it is.
                if v.config_map.is_none() && mounts_outlive_the_agent() {
                    let mounted = std::fs::create_dir_all(&dir).and_then(|()| mount_tmpfs(&dir, None, 0o755));
                    if let Err(e) = mounted {
                        tracing::debug!(volume = %v.name, error = %e, "volume kept on disk");
                    }
                }
                write_atomic(&dir, &payload, fs_group).map_err(|e| setup_error(&v.name, e.to_string()))?;
                dirs.insert(&v.name, (dir.clone(), true));
            }
        }
        out.dirs.push((v.name.clone(), dir));
    }
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some((dir, api_data)) = dirs.get(m.name.as_str()) else {
                return Err(VolumeError::Container(format!(
                    "cannot find volume {:?} to mount into container {:?}",
                    m.name, c.name
                )));
            };
            if m.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) {
                return Err(VolumeError::Container(format!(
                    "svcnet's node agent does not support subPathExpr (volume mount {:?} of container {:?}); use subPath",
                    m.name, c.name
                )));
            }
            if let Some(p) = m.mount_propagation.as_deref().filter(|p| *p != "None") {
                return Err(VolumeError::Container(format!(
                    "svcnet's node agent does not support mountPropagation {p} (volume mount {:?} of container {:?})",
                    m.name, c.name
                )));
            }
            // The ServiceAccount directory at Kubernetes' path is mounted for the whole pod already.
            if m.name.starts_with(TOKEN_VOLUME_PREFIX) && m.mount_path == super::SERVICE_ACCOUNT_MOUNT {
                continue;
            }
            let mut source = dir.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let rel = Path::new(sub);
                if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(VolumeError::Container(format!(
                        "subPath {sub:?} of volume mount {:?} must be a relative path without '..'",
                        m.name
                    )));
                }
                source = dir.join(rel);
                if !source.exists() && !*api_data {
                    // The kubelet creates a missing subPath of a writable volume.
                    std::fs::create_dir_all(&source).map_err(|e| VolumeError::Container(e.to_string()))?;
                }
            }
            let target = if m.mount_path.starts_with('/') {
                m.mount_path.clone()
            } else {
                format!("/{}", m.mount_path)
            };
            mounts.push(BindMount {
                source,
                target,
                // API data volumes are always read-only, as the kubelet mounts them.
                read_only: *api_data || m.read_only == Some(true),
            });
        }
        // Parents before what they contain, as container runtimes order mounts (containerd sorts them
        // by depth), so a nested mount is never hidden by its parent's.
        mounts.sort_by_key(|m| Path::new(&m.target).components().count());
        out.mounts.insert(c.name.clone(), mounts);
    }
    Ok(out)
}

/// A quantity (`64Mi`, `1G`, `1048576`) in bytes, rounded up; `None` for what is not one.
fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (number * scale).ceil();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// Mounts a tmpfs (of `size` bytes, else the kernel's default) on `dir` unless one is there: a
/// memory-backed emptyDir, as the kubelet's. Needs root; the runner detaches it with the pod.
fn mount_tmpfs(dir: &Path, size: Option<u64>, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(dir);
    if std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev() {
        return Ok(());
    }
    let mut options = format!("mode={mode:o}");
    if let Some(bytes) = size {
        options.push_str(&format!(",size={bytes}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mounting tmpfs: {e}")))
}

/// Whether a mount this agent makes stays visible to the next agent: whether it runs in the mount
/// namespace of its PID 1 (not, say, in the private one `ip netns exec` gives every process it starts).
/// Only then do volumes the agent keeps rewriting live in a tmpfs; a pod that outlives this agent would
/// otherwise keep a tmpfs the next one could no longer write to.
fn mounts_outlive_the_agent() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| {
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        // PID 1's may be out of reach (another user namespace): then nothing says otherwise.
        let same = match (ns("self"), ns("1")) {
            (Some(mine), Some(init)) => mine == init,
            _ => true,
        };
        if !same {
            tracing::info!("the agent runs in a mount namespace of its own: Secret, downward API and projected volumes stay on disk");
        }
        same
    })
}

/// Makes each mount's target exist where the container's mount namespace will look for it (a bind
/// mount needs one): on the node, or, for a target inside an earlier mount of the same container
/// (`/data/cfg` after `/data`), inside that mount's source, as a container runtime makes it. An empty
/// directory, or an empty file for a file source. What exists is left as it is.
pub(super) fn make_mount_points(mounts: &[BindMount]) -> io::Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let wanted = Path::new(&m.target);
        // The last earlier mount that covers this target decides where it is seen.
        let target = mounts[..i]
            .iter()
            .rev()
            .find_map(|outer| {
                let rest = wanted.strip_prefix(&outer.target).ok()?;
                (outer.source.is_dir() && !rest.as_os_str().is_empty()).then(|| outer.source.join(rest))
            })
            .unwrap_or_else(|| wanted.to_path_buf());
        if target.exists() || target.is_symlink() {
            continue;
        }
        if m.source.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&target)?;
        }
    }
    Ok(())
}

/// The content of one volume.
fn content(
    pod: &Pod,
    v: &Volume,
    objects: &dyn ObjectSource,
    tokens: &ProjectedTokens,
) -> Result<Content, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = v.name.as_str();
    if let Some(e) = &v.empty_dir {
        return match e.medium.as_deref().unwrap_or_default() {
            "" => Ok(Content::EmptyDir(None)),
            "Memory" => {
                let limit = e.size_limit.as_ref().map(|q| q.0.as_str());
                match limit.map(quantity_bytes) {
                    None => Ok(Content::EmptyDir(Some(None))),
                    Some(Some(bytes)) => Ok(Content::EmptyDir(Some(Some(bytes)))),
                    Some(None) => Err(setup_error(
                        name,
                        format!("invalid sizeLimit {:?}", limit.unwrap_or_default()),
                    )),
                }
            }
            medium => Err(setup_error(
                name,
                format!(
                    "svcnet's node agent does not support emptyDir medium {medium:?} (only the node's disk and Memory)"
                ),
            )),
        };
    }
    let mut files = Payload::new();
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        let source = ConfigMapProjection {
            name: cm.name.clone(),
            items: cm.items.clone(),
            optional: cm.optional,
        };
        config_map(&mut files, name, ns, &source, mode, objects)?;
    } else if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        let source = SecretProjection {
            name: s.secret_name.clone().unwrap_or_default(),
            items: s.items.clone(),
            optional: s.optional,
        };
        secret(&mut files, name, ns, &source, mode, objects)?;
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        downward(&mut files, name, pod, d.items.iter().flatten(), mode)?;
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let sources = p.sources.iter().flatten();
        if name.starts_with(TOKEN_VOLUME_PREFIX) && sources.clone().any(|s| s.service_account_token.is_some())
        {
            return Ok(Content::Token);
        }
        for s in sources {
            if let Some(t) = &s.service_account_token {
                let token = tokens
                    .get(&(name.to_string(), t.path.clone()))
                    .ok_or_else(|| setup_error(name, "failed to fetch token: none was requested"))?;
                files.insert(t.path.clone(), (token.as_bytes().to_vec(), (mode as u32) & 0o777));
            } else if let Some(cm) = &s.config_map {
                config_map(&mut files, name, ns, cm, mode, objects)?;
            } else if let Some(sec) = &s.secret {
                secret(&mut files, name, ns, sec, mode, objects)?;
            } else if let Some(d) = &s.downward_api {
                downward(&mut files, name, pod, d.items.iter().flatten(), mode)?;
            } else {
                let kind = serde_json::to_value(s)
                    .ok()
                    .and_then(|j| j.as_object()?.keys().next().cloned())
                    .unwrap_or_default();
                return Err(setup_error(
                    name,
                    format!("svcnet's node agent does not support {kind} projected volume sources"),
                ));
            }
        }
    } else {
        return Err(setup_error(
            name,
            format!(
                "svcnet's node agent does not support {} volumes (it supports configMap, secret, downwardAPI, projected and emptyDir)",
                volume_type(v)
            ),
        ));
    }
    Ok(Content::Files(files))
}

/// The object a volume shows, or `None` when missing and optional.
fn lookup(
    volume: &str,
    objects: &dyn ObjectSource,
    kind: ObjectKind,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<std::sync::Arc<crate::runner::ObjectData>>, VolumeError> {
    match objects.get(kind, ns, name) {
        Lookup::Found(d) => Ok(Some(d)),
        Lookup::Missing if optional => Ok(None),
        Lookup::Missing => Err(setup_error(volume, format!("{} {name:?} not found", kind.word()))),
        Lookup::Failed(e) => Err(setup_error(
            volume,
            format!("failed to sync {} cache: {e}", kind.word()),
        )),
        Lookup::Pending => Err(VolumeError::Pending(volume.into())),
    }
}

/// The files of a ConfigMap or Secret (the kubelet's `MakePayload`): every key, or the `items` asked
/// for, each with its mode or the default one.
fn keyed(
    files: &mut Payload,
    volume: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    mode: i32,
    missing_key: &str,
) -> Result<(), VolumeError> {
    let Some(data) = data else { return Ok(()) };
    let mode = |m: Option<i32>| (m.unwrap_or(mode) as u32) & 0o777;
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone(), mode(None)));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        files.insert(item.path.clone(), (v.clone(), mode(item.mode)));
                    }
                    None if optional => {}
                    None => return Err(setup_error(volume, format!("{missing_key}: {}", item.key))),
                }
            }
        }
    }
    Ok(())
}

fn config_map(
    files: &mut Payload,
    volume: &str,
    ns: &str,
    src: &ConfigMapProjection,
    mode: i32,
    objects: &dyn ObjectSource,
) -> Result<(), VolumeError> {
    let optional = src.optional.unwrap_or(false);
    let obj = lookup(volume, objects, ObjectKind::ConfigMap, ns, &src.name, optional)?;
    let data = obj.map(|o| o.files());
    keyed(
        files,
        volume,
        data.as_ref(),
        src.items.as_ref(),
        optional,
        mode,
        "configmap references non-existent config key",
    )
}

fn secret(
    files: &mut Payload,
    volume: &str,
    ns: &str,
    src: &SecretProjection,
    mode: i32,
    objects: &dyn ObjectSource,
) -> Result<(), VolumeError> {
    let optional = src.optional.unwrap_or(false);
    let obj = lookup(volume, objects, ObjectKind::Secret, ns, &src.name, optional)?;
    let data = obj.map(|o| o.files());
    keyed(
        files,
        volume,
        data.as_ref(),
        src.items.as_ref(),
        optional,
        mode,
        "references non-existent secret key",
    )
}

/// A map as the kubelet's `fieldpath.FormatMap` writes labels and annotations: `key="value"` lines,
/// sorted by key, the value quoted.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

fn downward<'a>(
    files: &mut Payload,
    volume: &str,
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: i32,
) -> Result<(), VolumeError> {
    let meta = &pod.metadata;
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(setup_error(
                volume,
                format!(
                    "svcnet's node agent does not support resourceFieldRef (downward API file {:?})",
                    item.path
                ),
            ));
        };
        let path = field.field_path.as_str();
        let quoted = |prefix: &str| path.strip_prefix(prefix)?.strip_suffix("']").map(str::to_owned);
        let value = match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "metadata.labels" => format_map(meta.labels.as_ref()),
            "metadata.annotations" => format_map(meta.annotations.as_ref()),
            _ => match (quoted("metadata.labels['"), quoted("metadata.annotations['")) {
                (Some(k), _) => meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default(),
                (_, Some(k)) => meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(&k).cloned())
                    .unwrap_or_default(),
                _ => {
                    return Err(setup_error(volume, format!("unsupported fieldPath: {path}")));
                }
            },
        };
        let m = (item.mode.unwrap_or(mode) as u32) & 0o777;
        files.insert(item.path.clone(), (value.into_bytes(), m));
    }
    Ok(())
}

/// Whether `p` is a path a volume may hold: relative, no `..`, not starting with `..` (the writer's own
/// names).
fn valid_path(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && !p.starts_with("..")
        && !path.is_absolute()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Gives `dir` and the directories under it to group `gid`, group-readable and setgid.
fn own_dirs(dir: &Path, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2755))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            own_dirs(&entry.path(), gid)?;
        }
    }
    Ok(())
}

/// What `dir/..data` holds now: every file under it with its mode.
fn current(dir: &Path) -> Option<Payload> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(base: &Path, rel: &Path, out: &mut Payload) -> io::Result<()> {
        for entry in std::fs::read_dir(base.join(rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(base, &rel, out)?;
            } else {
                let bytes = std::fs::read(base.join(&rel))?;
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    (bytes, meta.permissions().mode() & 0o777),
                );
            }
        }
        Ok(())
    }
    let data = dir.join("..data");
    std::fs::read_link(&data).ok()?;
    let mut out = Payload::new();
    walk(&data, Path::new(""), &mut out).ok()?;
    Some(out)
}

/// Writes `payload` into `dir` as the kubelet's `AtomicWriter`: nothing when it holds exactly that;
/// else a fresh `..<time>` directory, `..data` swapped to it by a rename, a symlink per top-level name,
/// stale names and the old directory removed. With `fs_group` every file and directory is that group's
/// and group-readable, directories setgid (the kubelet's `SetVolumeOwnership` for a read-only volume),
/// before the swap. Whether it wrote.
pub(super) fn write_atomic(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let owned;
    let payload = match fs_group {
        None => payload,
        Some(_) => {
            owned = payload
                .iter()
                .map(|(p, (b, m))| (p.clone(), (b.clone(), m | 0o440)))
                .collect::<Payload>();
            &owned
        }
    };
    if let Some(bad) = payload.keys().find(|p| !valid_path(p)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path {bad:?}: must be relative and may not contain '..'"),
        ));
    }
    if current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    let now = jiff::Timestamp::now();
    let stamp = format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    for (path, (bytes, mode)) in payload {
        let file = fresh.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        if let Some(gid) = fs_group {
            std::os::unix::fs::lchown(&file, None, Some(gid))?;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    if let Some(gid) = fs_group {
        own_dirs(&fresh, gid)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let top: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();
    for name in &top {
        let link = dir.join(name);
        let want = Path::new("..data").join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(want.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&want, &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let path = dir.join(&name);
            if path.is_symlink() || path.is_file() {
                std::fs::remove_file(&path)?;
            } else {
                std::fs::remove_dir_all(&path)?;
            }
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, c, m)| (p.to_string(), (c.as_bytes().to_vec(), *m)))
            .collect()
    }

    #[test]
    fn volumes_are_swapped_whole_and_stale_names_go() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        assert!(write_atomic(&dir, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]), None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::metadata(dir.join("sub/b")).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        // The same content writes nothing.
        assert!(!write_atomic(&dir, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]), None).unwrap());
        assert!(write_atomic(&dir, &payload(&[("a", "3", 0o644)]), None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(first).exists(), "the old version is removed");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2"))
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["..data", "a"]);
        assert!(write_atomic(&dir, &payload(&[("../x", "1", 0o644)]), None).is_err());

        // With an fsGroup (as root: only root may give files away), the group reads everything.
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::MetadataExt;
            let owned = tmp.path().join("owned");
            let files = payload(&[("sub/pw", "s", 0o400)]);
            assert!(write_atomic(&owned, &files, Some(4321)).unwrap());
            let meta = std::fs::metadata(owned.join("sub/pw")).unwrap();
            assert_eq!((meta.gid(), meta.mode() & 0o777), (4321, 0o440));
            let sub = std::fs::metadata(owned.join("sub")).unwrap();
            assert_eq!((sub.gid(), sub.mode() & 0o2000), (4321, 0o2000));
            // Written once: the modes it gave are what it compares with.
            assert!(!write_atomic(&owned, &files, Some(4321)).unwrap());
        }
    }

    #[test]
    fn nested_mount_points_are_made_inside_the_outer_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let outer_src = tmp.path().join("scratch");
        let inner_src = tmp.path().join("cfg");
        std::fs::create_dir_all(&outer_src).unwrap();
        std::fs::create_dir_all(&inner_src).unwrap();
        let node = tmp.path().join("node");
        let outer = BindMount::new(&outer_src, node.join("data").to_str().unwrap());
        let inner = BindMount::new(&inner_src, node.join("data/cfg").to_str().unwrap());
        make_mount_points(&[outer, inner]).unwrap();
        assert!(node.join("data").is_dir());
        assert!(outer_src.join("cfg").is_dir(), "made where the container sees it");
        assert!(
            !node.join("data/cfg").exists(),
            "not on the node, hidden under the outer mount"
        );
    }

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("100"), Some(100));
        assert_eq!(quantity_bytes("lots"), None);
        assert_eq!(quantity_bytes("1Qi"), None);
    }

    #[test]
    fn downward_api_files_and_unsupported_volumes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "app", "uid": "u1",
                "labels": {"b": "2", "a": "x\"y"}, "annotations": {"note": "hi"}},
            "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "info", "mountPath": "/etc/info"}]}],
                "volumes": [{"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}, "mode": 256}
                ]}}]}
        }))
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        // As root the downward API volume is a tmpfs: detached however the test ends, as the runner
        // detaches it with the pod.
        struct Detach<'a>(&'a Path);
        impl Drop for Detach<'_> {
            fn drop(&mut self) {
                crate::runner::unmount_under(self.0);
            }
        }
        let _detach = Detach(tmp.path());
        let objects = crate::runner::NoObjects::default();
        let vols = setup(&pod, tmp.path(), &objects, None, &ProjectedTokens::new()).unwrap();
        let dir = &vols.dirs[0].1;
        assert_eq!(
            std::fs::read_to_string(dir.join("labels")).unwrap(),
            "a=\"x\\\"y\"\nb=\"2\"\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("name")).unwrap(), "p");
        assert_eq!(std::fs::read_to_string(dir.join("note")).unwrap(), "hi");
        let m = &vols.mounts["c"][0];
        assert_eq!((m.target.as_str(), m.read_only), ("/etc/info", true));
        assert_eq!(env_name("my-data"), "SVCNET_VOLUME_MY_DATA");

        let mut host = pod.clone();
        host.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "info", "hostPath": {"path": "/srv"}}))
                .unwrap(),
        ]);
        assert_eq!(
            setup(&host, tmp.path(), &objects, None, &ProjectedTokens::new())
                .unwrap_err()
                .to_string(),
            "MountVolume.SetUp failed for volume \"info\" : svcnet's node agent does not support hostPath volumes (it supports configMap, secret, downwardAPI, projected and emptyDir)"
        );
        let mut cm = pod.clone();
        cm.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "info", "configMap": {"name": "cfg"}}))
                .unwrap(),
        ]);
        assert_eq!(
            setup(&cm, tmp.path(), &objects, None, &ProjectedTokens::new())
                .unwrap_err()
                .to_string(),
            "MountVolume.SetUp failed for volume \"info\" : configmap \"cfg\" not found"
        );
        let mut none = pod.clone();
        none.spec.as_mut().unwrap().volumes = None;
        assert_eq!(
            setup(&none, tmp.path(), &objects, None, &ProjectedTokens::new())
                .unwrap_err()
                .to_string(),
            "Error: cannot find volume \"info\" to mount into container \"c\""
        );
    }
}
