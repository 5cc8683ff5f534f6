//! Which cgroup hierarchies a host has, decided from its mount table alone.
//!
//! The decision is a pure function of the mountinfo text and of what each cgroup2 mount
//! says its controllers are, so hosts of every kind (v1, v2, hybrid) can be described in a
//! test without being one.

use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};
use crate::mountinfo;

/// The v1 controllers a sandbox is placed in.
pub const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer"];

/// v1 controllers a sandbox is placed in when the host mounts them (disk I/O limits need
/// blkio; without it they are not applied).
pub const V1_OPTIONAL_CONTROLLERS: &[&str] = &["blkio"];

/// The host's cgroup hierarchies that hutch will use, before hutch's parent exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v1: (controller, mount point) for each of [`V1_CONTROLLERS`], in mount-table
    /// order; co-mounted controllers share a mount point.
    V1 {
        /// (controller, mount point) pairs.
        controllers: Vec<(String, PathBuf)>,
    },
    /// cgroup v2: the unified hierarchy's mount point.
    V2 {
        /// Mount point of the cgroup2 filesystem with the memory controller.
        root: PathBuf,
    },
}

impl CgroupLayout {
    /// Decides the layout from `mountinfo` (the text of `/proc/self/mountinfo`).
    /// `controllers_of` returns the contents of `cgroup.controllers` at a cgroup2 mount point
    /// (empty when unreadable).
    ///
    /// v1 is used when the memory controller is mounted as v1: hybrid hosts keep their
    /// controllers there and their cgroup2 mount holds few or none. Otherwise the unified
    /// hierarchy that offers the memory controller is used.
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers_of: impl Fn(&Path) -> String,
    ) -> Result<Self> {
        let mut v1: Vec<(String, PathBuf)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for entry in mountinfo::parse(mountinfo) {
            match entry.fstype.as_str() {
                "cgroup" => {
                    for opt in entry.options() {
                        if V1_CONTROLLERS.contains(&opt) || V1_OPTIONAL_CONTROLLERS.contains(&opt) {
                            v1.push((opt.to_string(), entry.mount_point.clone()));
                        }
                    }
                }
                "cgroup2" => {
                    let has_memory = controllers_of(&entry.mount_point)
                        .split_whitespace()
                        .any(|c| c == "memory");
                    if has_memory {
                        v2 = Some(entry.mount_point);
                    }
                }
                _ => {}
            }
        }
        if v1.iter().any(|(c, _)| c == "memory") {
            if let Some(missing) = V1_CONTROLLERS
                .iter()
                .find(|c| !v1.iter().any(|(have, _)| have == *c))
            {
                return Err(RuntimeError::Cgroup(format!(
                    "cgroup v1 host without the {missing} controller mounted"
                )));
            }
            return Ok(CgroupLayout::V1 { controllers: v1 });
        }
        if let Some(root) = v2 {
            return Ok(CgroupLayout::V2 { root });
        }
        Err(RuntimeError::Cgroup(
            "neither a v1 memory hierarchy nor a v2 hierarchy with the memory controller is mounted"
                .into(),
        ))
    }
}

/// Whether the cgroup2 hierarchy mounted at `root` is mounted with `favordynmods` (moving
/// processes between cgroups then takes no global lock that waits for RCU).
pub(crate) fn favors_dynmods(mountinfo: &str, root: &Path) -> bool {
    mountinfo::parse(mountinfo)
        .iter()
        .filter(|e| e.fstype == "cgroup2" && e.mount_point == root)
        .any(|e| e.options().any(|o| o == "favordynmods"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: every controller on v1, cgroup2 at `unified` with hugetlb only.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd-era v1 host: cpu and cpuacct co-mounted.
    const V1_COMOUNTED: &str = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
28 24 0:25 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";

    const V2_ONLY: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn controllers(hugetlb_only_at: &'static str) -> impl Fn(&Path) -> String {
        move |p: &Path| {
            if p == Path::new(hugetlb_only_at) {
                "hugetlb".into()
            } else {
                "cpuset cpu io memory hugetlb pids rdma misc".into()
            }
        }
    }

    #[test]
    fn hybrid_host_uses_v1_and_ignores_the_hugetlb_only_unified_mount() {
        let layout = CgroupLayout::from_mountinfo(HYBRID, controllers("/sys/fs/cgroup/unified"))
            .expect("layout");
        let CgroupLayout::V1 { controllers } = layout else {
            panic!("expected v1, got {layout:?}");
        };
        let names: Vec<&str> = controllers.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "freezer", "pids"]);
        assert!(controllers
            .iter()
            .all(|(c, m)| m == &Path::new("/sys/fs/cgroup").join(c)));
    }

    #[test]
    fn hybrid_host_still_uses_v1_when_unified_offers_memory() {
        // v1 memory wins: a controller can only be active in one hierarchy at a time.
        let layout =
            CgroupLayout::from_mountinfo(HYBRID, |_| "memory pids".into()).expect("layout");
        assert!(matches!(layout, CgroupLayout::V1 { .. }));
    }

    #[test]
    fn comounted_v1_controllers_share_one_mount_point() {
        let layout = CgroupLayout::from_mountinfo(V1_COMOUNTED, |_| String::new()).expect("layout");
        let CgroupLayout::V1 { controllers } = layout else {
            panic!("expected v1");
        };
        let cpu = controllers.iter().find(|(c, _)| c == "cpu").expect("cpu");
        let cpuacct = controllers
            .iter()
            .find(|(c, _)| c == "cpuacct")
            .expect("cpuacct");
        assert_eq!(cpu.1, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.1, cpuacct.1);
    }

    #[test]
    fn unified_host_uses_v2_root() {
        let layout =
            CgroupLayout::from_mountinfo(V2_ONLY, controllers("/nowhere")).expect("layout");
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
    }

    #[test]
    fn v1_host_missing_a_controller_is_refused_by_name() {
        let without_freezer: String = V1_COMOUNTED
            .lines()
            .filter(|l| !l.contains("freezer"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = CgroupLayout::from_mountinfo(&without_freezer, |_| String::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no usable cgroup hierarchy: cgroup v1 host without the freezer controller mounted"
        );
    }

    #[test]
    fn v2_without_memory_controller_and_no_v1_is_refused() {
        let err = CgroupLayout::from_mountinfo(V2_ONLY, |_| "cpu pids".into()).unwrap_err();
        assert!(matches!(err, RuntimeError::Cgroup(_)), "{err}");
        assert!(err.to_string().contains("neither a v1 memory hierarchy"));
    }

    #[test]
    fn named_v1_hierarchies_are_not_controllers() {
        // `name=systemd` must not be mistaken for a controller; with nothing else mounted
        // there is no usable layout.
        let only_systemd =
            "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert!(CgroupLayout::from_mountinfo(only_systemd, |_| String::new()).is_err());
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "30 23 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        let layout = CgroupLayout::from_mountinfo(text, |_| "memory".into()).expect("layout");
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                root: PathBuf::from("/mnt/cg two")
            }
        );
    }
}
