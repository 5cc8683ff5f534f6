//! What gets mounted, as data: the overlay options of a sandbox's rootfs and the steps the
//! spawn helper's child takes to build the sandbox's filesystem view. The helper executes
//! these steps (see `spawn`); building them touches nothing, so they are tested as values.

use std::ops::BitOr;
use std::path::{Path, PathBuf};

use hutch_sys::mount::flags;

/// Mount flags: the kernel's `MS_*` bits (from [`hutch_sys::mount::flags`]), typed so that a
/// plan cannot mix them up with other integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags(u64);

impl MountFlags {
    /// No flags.
    pub const NONE: Self = MountFlags(0);
    /// `MS_BIND`.
    pub const BIND: Self = MountFlags(flags::BIND);
    /// `MS_REC`.
    pub const REC: Self = MountFlags(flags::REC);
    /// `MS_PRIVATE`.
    pub const PRIVATE: Self = MountFlags(flags::PRIVATE);
    /// `MS_RDONLY`.
    pub const RDONLY: Self = MountFlags(flags::RDONLY);
    /// `MS_NOSUID`.
    pub const NOSUID: Self = MountFlags(flags::NOSUID);
    /// `MS_NODEV`.
    pub const NODEV: Self = MountFlags(flags::NODEV);
    /// `MS_NOEXEC`.
    pub const NOEXEC: Self = MountFlags(flags::NOEXEC);

    /// True when every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The `MS_*` bits, as `mount(2)` takes them.
    pub fn bits(self) -> u64 {
        self.0
    }
}

impl BitOr for MountFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        MountFlags(self.0 | rhs.0)
    }
}

/// One `mount(2)` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source (a path for binds, a name for pseudo filesystems).
    pub source: Option<PathBuf>,
    /// Mount point.
    pub target: PathBuf,
    /// Filesystem type; None for binds and propagation changes.
    pub fstype: Option<&'static str>,
    /// Flags.
    pub flags: MountFlags,
    /// Filesystem options.
    pub data: Option<&'static str>,
}

/// One step of building the sandbox's filesystem view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a directory and its parents.
    Mkdir(PathBuf),
    /// Create an empty file to mount over, unless something is already there.
    Touch(PathBuf),
    /// Create symlink `link` pointing to `to`.
    Symlink {
        /// The link.
        link: PathBuf,
        /// What it points to.
        to: PathBuf,
    },
    /// Mount; failure aborts the sandbox.
    Mount(Mount),
    /// Mount; failure is tolerated (the filesystem is informative only).
    TryMount(Mount),
    /// Bind `source` on `target` and make the bind read-only.
    BindReadOnly {
        /// What is bound.
        source: PathBuf,
        /// Where.
        target: PathBuf,
    },
    /// Hide the file by binding `/dev/null` over it, if it exists.
    MaskIfPresent(PathBuf),
    /// Make the path read-only by binding it onto itself, if it exists.
    ReadOnlyIfPresent(PathBuf),
}

/// Host devices bound into every sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` files that would show host kernel details.
pub const PROC_MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/kallsyms",
];

/// `/proc` trees whose tunables must not be writable.
pub const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// The overlay mount options: `layers` topmost first, then the writable `upper` and its `work`.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

fn mount(
    source: Option<&str>,
    target: PathBuf,
    fstype: Option<&'static str>,
    flags: MountFlags,
    data: Option<&'static str>,
) -> Mount {
    Mount {
        source: source.map(PathBuf::from),
        target,
        fstype,
        flags,
        data,
    }
}

/// Makes the whole (copied) mount tree private, so nothing propagates back to the host,
/// and binds `rootfs` onto itself: `pivot_root` refuses a new root whose mount was made
/// outside the child's user namespace, and a bind made inside it is the child's own.
pub fn enter_rootfs(rootfs: &Path) -> Vec<Step> {
    let mut steps = private_tree();
    steps.push(Step::Mount(Mount {
        source: Some(rootfs.to_path_buf()),
        target: rootfs.to_path_buf(),
        fstype: None,
        flags: MountFlags::BIND | MountFlags::REC,
        data: None,
    }));
    steps
}

/// Makes the whole (copied) mount tree private, so nothing propagates back to the host.
pub fn private_tree() -> Vec<Step> {
    vec![Step::Mount(mount(
        None,
        PathBuf::from("/"),
        None,
        MountFlags::REC | MountFlags::PRIVATE,
        None,
    ))]
}

/// A zygote's filesystems below `root` (its template's read-only root, as the current
/// directory): a private `/tmp` and a minimal `/dev`. No `/proc`: a zygote lives in the
/// host's pid namespace and has no business looking at it.
pub fn zygote_tree(root: &Path) -> Vec<Step> {
    let mut steps = vec![Step::Mount(mount(
        Some("tmpfs"),
        root.join("tmp"),
        Some("tmpfs"),
        MountFlags::NOSUID | MountFlags::NODEV,
        Some("mode=1777,size=16m"),
    ))];
    steps.extend(dev(root));
    steps
}

/// The sandbox's own filesystems below `root` (the rootfs, as the current directory):
/// `/proc`, a minimal `/dev`, a read-only `/sys` (mounted here when `mount_sysfs`, else
/// only its mount point), and the agent binary bound read-only from `agent_source` at
/// `agent_inside` (an absolute path inside the sandbox).
pub fn sandbox_tree(
    root: &Path,
    agent_source: &Path,
    agent_inside: &str,
    mount_sysfs: bool,
) -> Vec<Step> {
    let nosuid = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc = root.join("proc");
    let mut steps = vec![
        Step::Mkdir(proc.clone()),
        Step::Mount(mount(Some("proc"), proc, Some("proc"), nosuid, None)),
    ];
    steps.extend(dev(root));
    let sys = root.join("sys");
    steps.push(Step::Mkdir(sys.clone()));
    if mount_sysfs {
        steps.push(Step::TryMount(mount(
            Some("sysfs"),
            sys,
            Some("sysfs"),
            nosuid | MountFlags::RDONLY,
            None,
        )));
    }
    let agent = root.join(agent_inside.trim_start_matches('/'));
    if let Some(parent) = agent.parent() {
        steps.push(Step::Mkdir(parent.to_path_buf()));
    }
    steps.push(Step::Touch(agent.clone()));
    steps.push(Step::BindReadOnly {
        source: agent_source.to_path_buf(),
        target: agent,
    });
    steps
}

/// A minimal `/dev`: the usual character devices bound from the host, a private devpts
/// instance for PTYs, and a small `/dev/shm`.
fn dev(root: &Path) -> Vec<Step> {
    let dev = root.join("dev");
    let mut steps = vec![
        Step::Mkdir(dev.clone()),
        Step::Mount(mount(
            Some("tmpfs"),
            dev.clone(),
            Some("tmpfs"),
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some("mode=755,size=64k"),
        )),
    ];
    for name in DEVICES {
        let target = dev.join(name);
        steps.push(Step::Touch(target.clone()));
        steps.push(Step::Mount(Mount {
            source: Some(Path::new("/dev").join(name)),
            target,
            fstype: None,
            flags: MountFlags::BIND,
            data: None,
        }));
    }
    steps.push(Step::Mkdir(dev.join("pts")));
    steps.push(Step::Mount(mount(
        Some("devpts"),
        dev.join("pts"),
        Some("devpts"),
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )));
    steps.push(Step::Mkdir(dev.join("shm")));
    steps.push(Step::Mount(mount(
        Some("shm"),
        dev.join("shm"),
        Some("tmpfs"),
        MountFlags::NOSUID | MountFlags::NODEV,
        Some("mode=1777,size=65536k"),
    )));
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            link: dev.join(link),
            to: PathBuf::from(to),
        });
    }
    steps
}

/// After `pivot_root`: hides host kernel details in `/proc` and makes its tunables read-only.
pub fn proc_masks() -> Vec<Step> {
    PROC_MASKED
        .iter()
        .map(|p| Step::MaskIfPresent(PathBuf::from(p)))
        .chain(
            PROC_READ_ONLY
                .iter()
                .map(|p| Step::ReadOnlyIfPresent(PathBuf::from(p))),
        )
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
