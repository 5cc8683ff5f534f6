//! Host-side mounts of a sandbox: its disk and the overlay rootfs built on it, plus the
//! mount-table scan used to find and remove leftovers.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};
use crate::mountinfo;
use crate::timing::Steps;

pub mod plan;

/// The paths that make up one sandbox's storage under its state directory.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    /// `<data>/sandboxes/<id>`.
    pub dir: PathBuf,
    /// A symbolic link to where the sandbox's disk (a sparse ext4 image) is mounted, in the
    /// store of disks (see `disk::kept`).
    pub disk: PathBuf,
    /// The merged overlay: the sandbox's `/`.
    pub rootfs: PathBuf,
}

impl SandboxPaths {
    /// The layout for sandbox `id` below `sandboxes_dir`.
    pub fn new(sandboxes_dir: &Path, id: &str) -> Self {
        let dir = sandboxes_dir.join(id);
        SandboxPaths {
            disk: dir.join("disk"),
            rootfs: dir.join("rootfs"),
            dir,
        }
    }
}

/// Makes the sandbox's directory (mode 0700) and its rootfs mount point.
pub(crate) fn make_dirs(paths: &SandboxPaths) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(&paths.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::set_permissions(&paths.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| RuntimeError::io("chmod", &paths.dir, e))?;
        }
        Err(e) => return Err(RuntimeError::io("mkdir", &paths.dir, e)),
    }
    match fs::create_dir(&paths.rootfs) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(RuntimeError::io("mkdir", &paths.rootfs, e))
        }
        _ => Ok(()),
    }
}

/// Mounts the overlay rootfs on the sandbox's disk (already mounted, see `disk::kept`,
/// and linked from `paths.disk`): the template's layers below, topmost first, the disk's
/// `upper` above. `root_uid` is the host uid of root inside the sandbox: the upper
/// layer's top directory belongs to it so that root inside owns `/`; it is also the first id
/// of the sandbox's range, through which it sees the template's layers (see
/// [`crate::idmap`]).
pub(crate) fn setup(
    paths: &SandboxPaths,
    layers: &[PathBuf],
    root_uid: u32,
    ids: &crate::idmap::IdRanges,
    steps: &mut Steps,
) -> Result<()> {
    if layers.is_empty() {
        return Err(RuntimeError::Spawn(
            "a template needs at least one layer".into(),
        ));
    }
    let upper = paths.disk.join("upper");
    let work = paths.disk.join("work");
    // `upper` and `work` come with the blank image (see `disk::blank_image`).
    chown(&upper, Some(root_uid), Some(root_uid))
        .map_err(|e| RuntimeError::io("chown", &upper, e))?;
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .map_err(|e| RuntimeError::io("chmod", &upper, e))?;
    let lost = paths.disk.join("lost+found");
    if lost.exists() {
        let _ = fs::remove_dir_all(lost);
    }
    steps.mark("upper");
    let mapped = ids.map_layers(root_uid, layers, &paths.dir)?;
    let layers = mapped.as_ref().map_or(layers, |m| &m.paths[..]);
    steps.mark("idmap");
    let opts = plan::overlay_options(layers, &upper, &work);
    let res = hutch_sys::mount::mount(
        Some(Path::new("overlay")),
        &paths.rootfs,
        Some("overlay"),
        0,
        Some(&opts),
    )
    .map_err(|e| RuntimeError::Sys {
        op: format!("mount overlay ({opts}) on {}", paths.rootfs.display()),
        source: e.into(),
    });
    if let Some(m) = mapped {
        m.detach();
    }
    steps.mark("overlay");
    res
}

/// Mounts the volume mounted on the host at `source` on `target` inside the sandbox whose
/// rootfs is `rootfs` and whose ids start at `root_uid`, making the directory (owned by
/// root inside) when missing. `target` is resolved inside the rootfs only: a link the
/// sandbox left there (its files after a pause without memory) cannot point the mount
/// elsewhere on the host.
pub(crate) fn attach_volume(
    rootfs: &Path,
    source: &Path,
    target: &str,
    root_uid: u32,
    ids: &crate::idmap::IdRanges,
) -> Result<()> {
    use hutch_sys::rooted::{Owner, Rooted};
    use std::os::fd::AsFd;
    let sys = |op: String| move |e: hutch_sys::Errno| RuntimeError::sys(op, e);
    let root = Rooted::open(rootfs).map_err(sys(format!("open {}", rootfs.display())))?;
    let owner = Owner {
        uid: root_uid,
        gid: root_uid,
        mode: 0o755,
    };
    root.mkdir(target, true, owner)
        .map_err(sys(format!("mkdir {target} in the sandbox")))?;
    let dir = root
        .open_dir(target)
        .map_err(sys(format!("open {target} in the sandbox")))?;
    let tree = ids.map_volume(root_uid, source)?;
    hutch_sys::mount::attach_at(tree.as_fd(), dir.as_fd())
        .map_err(sys(format!("mount the volume on {target}")))
}

/// Unmounts everything at or below `dir`, deepest first. Idempotent: missing pieces are
/// skipped.
pub(crate) fn unmount_below(dir: &Path, steps: &mut Steps) -> Result<()> {
    let mounts = mounts_below(dir);
    steps.mark("mountinfo");
    for m in mounts.into_iter().rev() {
        if let Err(e) = hutch_sys::mount::detach(&m) {
            if e != hutch_sys::Errno::INVAL && e != hutch_sys::Errno::NOENT {
                return Err(RuntimeError::Sys {
                    op: format!("umount {}", m.display()),
                    source: e.into(),
                });
            }
        }
    }
    steps.mark("umount");
    Ok(())
}

/// Mount points at or below `dir`, in mount-table order (parents before children).
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo::mounts_below(&info, dir)
}
