//! The mount plan as values: order, flags, options and targets.

use super::*;
use crate::mounts::SandboxPaths;

const AGENT: &str = "/.hutch/hutch-agent";

fn tree() -> Vec<Step> {
    sandbox_tree(Path::new("."), Path::new("/proc/self/fd/7"), AGENT, true)
}

fn mounts(steps: &[Step]) -> Vec<&Mount> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount(m) | Step::TryMount(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn mount_at<'a>(steps: &'a [Step], target: &str) -> &'a Mount {
    mounts(steps)
        .into_iter()
        .find(|m| m.target == Path::new(target))
        .unwrap_or_else(|| panic!("no mount at {target}"))
}

#[test]
fn overlay_options_list_layers_topmost_first_then_upper_and_work() {
    let layers = [PathBuf::from("/t/custom"), PathBuf::from("/t/base")];
    assert_eq!(
        overlay_options(&layers, Path::new("/d/upper"), Path::new("/d/work")),
        "lowerdir=/t/custom:/t/base,upperdir=/d/upper,workdir=/d/work"
    );
}

#[test]
fn sandbox_paths_keep_the_disk_link_and_rootfs_in_the_sandbox_dir() {
    let p = SandboxPaths::new(Path::new("/var/lib/hutch/sandboxes"), "abc");
    assert_eq!(p.dir, Path::new("/var/lib/hutch/sandboxes/abc"));
    assert_eq!(p.disk, p.dir.join("disk"));
    assert_eq!(p.rootfs, p.dir.join("rootfs"));
}

#[test]
fn entering_the_rootfs_makes_mounts_private_before_binding_it_onto_itself() {
    let steps = enter_rootfs(Path::new("/s/rootfs"));
    let m = mounts(&steps);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].target, Path::new("/"));
    assert_eq!(m[0].source, None);
    assert_eq!(m[0].flags, MountFlags::REC | MountFlags::PRIVATE);
    assert_eq!(m[1].source.as_deref(), Some(Path::new("/s/rootfs")));
    assert_eq!(m[1].target, Path::new("/s/rootfs"));
    assert_eq!(m[1].flags, MountFlags::BIND | MountFlags::REC);
}

#[test]
fn every_mount_point_is_created_before_it_is_mounted_on() {
    let steps = tree();
    for (i, step) in steps.iter().enumerate() {
        let target = match step {
            Step::Mount(m) | Step::TryMount(m) => &m.target,
            Step::BindReadOnly { target, .. } => target,
            _ => continue,
        };
        let created = steps[..i].iter().any(|s| match s {
            Step::Mkdir(p) | Step::Touch(p) => p == target,
            _ => false,
        });
        assert!(created, "{} mounted before it exists", target.display());
    }
}

#[test]
fn everything_is_built_below_the_given_root() {
    for step in tree() {
        let path = match &step {
            Step::Mkdir(p) | Step::Touch(p) => p.clone(),
            Step::Symlink { link, .. } => link.clone(),
            Step::Mount(m) | Step::TryMount(m) => m.target.clone(),
            Step::BindReadOnly { target, .. } => target.clone(),
            other => panic!("unexpected step {other:?}"),
        };
        assert!(path.starts_with("."), "{} escapes the root", path.display());
    }
}

#[test]
fn proc_is_mounted_first_without_suid_devices_or_exec() {
    let steps = tree();
    let first = mounts(&steps)[0];
    assert_eq!(first.target, Path::new("./proc"));
    assert_eq!(first.fstype, Some("proc"));
    assert_eq!(
        first.flags,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC
    );
}

#[test]
fn dev_is_a_small_tmpfs_that_still_allows_device_nodes() {
    let steps = tree();
    let dev = mount_at(&steps, "./dev");
    assert_eq!(dev.fstype, Some("tmpfs"));
    assert_eq!(dev.data, Some("mode=755,size=64k"));
    assert!(dev.flags.contains(MountFlags::NOSUID | MountFlags::NOEXEC));
    assert!(!dev.flags.contains(MountFlags::NODEV));
}

#[test]
fn host_devices_are_plain_binds_of_the_host_nodes() {
    let steps = tree();
    for name in DEVICES {
        let m = mount_at(&steps, &format!("./dev/{name}"));
        assert_eq!(
            m.source.as_deref(),
            Some(Path::new("/dev").join(name).as_path())
        );
        assert_eq!(m.flags, MountFlags::BIND);
    }
    let sources: Vec<_> = mounts(&steps)
        .into_iter()
        .filter_map(|m| m.source.as_ref())
        .filter(|s| s.starts_with("/dev"))
        .collect();
    assert_eq!(
        sources.len(),
        DEVICES.len(),
        "no other host device leaks in"
    );
}

#[test]
fn ptys_come_from_a_private_devpts_instance_and_shm_is_bounded() {
    let steps = tree();
    let pts = mount_at(&steps, "./dev/pts");
    assert_eq!(pts.fstype, Some("devpts"));
    assert!(pts.data.unwrap_or_default().starts_with("newinstance,"));
    let shm = mount_at(&steps, "./dev/shm");
    assert_eq!(shm.data, Some("mode=1777,size=65536k"));
    assert!(shm.flags.contains(MountFlags::NODEV));
    assert!(steps.contains(&Step::Symlink {
        link: PathBuf::from("./dev/ptmx"),
        to: PathBuf::from("pts/ptmx"),
    }));
}

#[test]
fn sysfs_is_read_only_and_the_only_mount_allowed_to_fail() {
    let steps = tree();
    let optional: Vec<&Step> = steps
        .iter()
        .filter(|s| matches!(s, Step::TryMount(_)))
        .collect();
    assert_eq!(optional.len(), 1);
    let Step::TryMount(sys) = optional[0] else {
        unreachable!()
    };
    assert_eq!(sys.target, Path::new("./sys"));
    assert_eq!(sys.fstype, Some("sysfs"));
    assert!(sys.flags.contains(MountFlags::RDONLY | MountFlags::NOSUID));
}

#[test]
fn the_agent_is_bound_read_only_from_its_descriptor_last() {
    let steps = tree();
    assert_eq!(
        steps.last(),
        Some(&Step::BindReadOnly {
            source: PathBuf::from("/proc/self/fd/7"),
            target: PathBuf::from("./.hutch/hutch-agent"),
        })
    );
    assert!(steps.contains(&Step::Mkdir(PathBuf::from("./.hutch"))));
}

#[test]
fn proc_masks_hide_kernel_details_and_freeze_tunables() {
    let steps = proc_masks();
    assert!(steps.contains(&Step::MaskIfPresent(PathBuf::from("/proc/kcore"))));
    assert!(steps.contains(&Step::MaskIfPresent(PathBuf::from("/proc/kallsyms"))));
    assert!(steps.contains(&Step::ReadOnlyIfPresent(PathBuf::from("/proc/sys"))));
    assert!(steps.contains(&Step::ReadOnlyIfPresent(PathBuf::from(
        "/proc/sysrq-trigger"
    ))));
    assert_eq!(steps.len(), PROC_MASKED.len() + PROC_READ_ONLY.len());
}

#[test]
fn mount_flags_combine_and_test_membership() {
    let f = MountFlags::BIND | MountFlags::RDONLY;
    assert!(f.contains(MountFlags::BIND));
    assert!(f.contains(MountFlags::BIND | MountFlags::RDONLY));
    assert!(!f.contains(MountFlags::REC));
    assert!(f.contains(MountFlags::NONE));
    assert_eq!(MountFlags::default(), MountFlags::NONE);
}

#[test]
fn a_sysfs_made_by_the_helper_leaves_only_its_mount_point() {
    let steps = sandbox_tree(Path::new("."), Path::new("/proc/self/fd/7"), AGENT, false);
    assert!(mounts(&steps).iter().all(|m| m.fstype != Some("sysfs")));
    assert!(steps
        .iter()
        .any(|s| matches!(s, Step::Mkdir(p) if p == Path::new("./sys"))));
}
