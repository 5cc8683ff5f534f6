//! Disk images without root: naming, sizing, the blank-image cache and sparse copies.

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use super::*;
use crate::testutil::TempDir;

#[test]
fn blank_images_are_cached_per_size() {
    assert_eq!(blank_image_name(1024), "blank-ext4-v3-1024m.img");
    assert_eq!(image_len(2), 2 * 1024 * 1024);
}

#[test]
fn an_existing_blank_image_is_reused_without_formatting() {
    let tmp = TempDir::new("disk-cache");
    let cached = tmp.path().join("blank-ext4-v3-10m.img");
    fs::write(&cached, b"formatted earlier").expect("write");
    assert_eq!(blank_image(tmp.path(), 10).expect("cached"), cached);
    assert_eq!(fs::read(&cached).expect("read"), b"formatted earlier");
}

#[test]
fn sparse_copy_keeps_content_and_length() {
    let tmp = TempDir::new("disk-sparse");
    let src = tmp.path().join("src.img");
    let mut f = fs::File::create(&src).expect("create");
    f.set_len(8 << 20).expect("truncate");
    f.write_all(b"superblock").expect("write");
    f.seek(SeekFrom::Start(5 << 20)).expect("seek");
    f.write_all(b"inode table").expect("write");
    drop(f);
    let dst = tmp.path().join("dst.img");
    copy_sparse(&src, &dst).expect("copy");
    assert_eq!(
        fs::read(&dst).expect("read dst"),
        fs::read(&src).expect("read src")
    );
}

#[test]
fn sparse_copy_never_overwrites_an_existing_file() {
    let tmp = TempDir::new("disk-exists");
    let src = tmp.path().join("src.img");
    let dst = tmp.path().join("dst.img");
    fs::write(&src, b"new").expect("write");
    fs::write(&dst, b"old").expect("write");
    let err = copy_sparse(&src, &dst).unwrap_err();
    assert!(err.to_string().starts_with("create "), "{err}");
    assert_eq!(fs::read(&dst).expect("read"), b"old");
}

#[test]
fn usage_of_a_real_directory_and_of_a_missing_one() {
    let tmp = TempDir::new("disk-usage");
    let (used, total) = usage(tmp.path()).expect("statvfs");
    assert!(total > 0 && used <= total);
    let err = usage(&tmp.path().join("missing")).unwrap_err();
    assert!(err.to_string().starts_with("statvfs "), "{err}");
}

/// Whether this test may attach loop devices (root, and a loop-control node); says so if not.
fn loop_devices() -> bool {
    let ok = hutch_sys::creds::is_root() && Path::new("/dev/loop-control").exists();
    if !ok {
        eprintln!("skipped: needs root and /dev/loop-control");
    }
    ok
}

/// A copy of `blank` named after `i` below `dir`, and an empty mount point for it.
fn copy_and_mount_point(dir: &Path, blank: &Path, i: usize) -> (PathBuf, PathBuf) {
    let img = dir.join(format!("d{i}.img"));
    copy_sparse(blank, &img).expect("copy");
    let target = dir.join(format!("m{i}"));
    fs::create_dir(&target).expect("mkdir");
    (img, target)
}

#[test]
fn concurrent_mounts_each_get_their_own_loop_device_when_root() {
    if !loop_devices() {
        return;
    }
    let tmp = TempDir::new("disk-loop-race");
    let blank = blank_image(tmp.path(), 16).expect("mkfs.ext4");
    let n = 12;
    let targets: Vec<PathBuf> = (0..n)
        .map(|i| copy_and_mount_point(tmp.path(), &blank, i).1)
        .collect();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let img = tmp.path().join(format!("d{i}.img"));
                s.spawn(move || mount_image(&img, t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mounted: Vec<&PathBuf> = targets
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t)
        .collect();
    for t in &mounted {
        hutch_sys::mount::detach(t).expect("umount");
    }
    for r in results {
        match r {
            Ok(()) => {}
            // A host without enough loop devices says so with the retryable error.
            Err(RuntimeError::Exhausted(_)) => {}
            Err(e) => panic!("mount failed: {e}"),
        }
    }
    assert!(!mounted.is_empty(), "no image could be mounted");
}

#[test]
fn device_numbers_split_as_the_kernel_encodes_them() {
    // /dev/loop3 (7:3), and a large minor: 259:1048575.
    assert_eq!(super::split_dev(0x703), (7, 3));
    let big = (259u64 & 0xfff) << 8 | (0xf_ffff_u64 & 0xff) | ((0xf_ffff_u64 & !0xff) << 12);
    assert_eq!(super::split_dev(big), (259, 0xf_ffff));
}

/// Whether the loop device holding the filesystem at `mounted` does direct I/O.
fn direct_io_of(mounted: &Path) -> bool {
    let (major, minor) = device_of(mounted).expect("stat");
    let dev = fs::read_link(format!("/sys/dev/block/{major}:{minor}")).expect("sysfs link");
    let name = dev.file_name().expect("device name").to_owned();
    let flag = Path::new("/sys/block").join(name).join("loop/dio");
    fs::read_to_string(flag).expect("dio flag").trim() == "1"
}

#[test]
fn a_new_disk_switches_to_direct_io_a_moment_after_its_mount_or_at_once_on_demand_when_root() {
    if !loop_devices() {
        return;
    }
    let tmp = TempDir::new("disk-direct-io");
    let blank = blank_image(tmp.path(), 16).expect("mkfs.ext4");
    let mut targets = Vec::new();
    for i in 0..2 {
        let (img, target) = copy_and_mount_point(tmp.path(), &blank, i);
        mount_image(&img, &target).expect("mount");
        targets.push(target);
    }
    // A filesystem that cannot do direct I/O (tmpfs) keeps the page cache: nothing to check.
    let supported = ensure_direct_io(&targets[1]).is_ok();
    let first_at_once = direct_io_of(&targets[0]);
    let deadline = std::time::Instant::now() + DIRECT_IO_AFTER * 10;
    while supported && !direct_io_of(&targets[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let first_later = direct_io_of(&targets[0]);
    let second = direct_io_of(&targets[1]);
    for t in &targets {
        hutch_sys::mount::detach(t).expect("umount");
    }
    if supported {
        assert!(!first_at_once, "switched at mount");
        assert!(first_later, "never switched");
        assert!(second, "not switched on demand");
    }
}

/// Names of the entries of directory `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_blank_disk_holds_the_overlays_directories_and_no_lost_and_found_when_root() {
    if !loop_devices() {
        return;
    }
    let tmp = TempDir::new("disk-blank-dirs");
    let blank = blank_image(tmp.path(), 16).expect("mkfs.ext4");
    let (img, target) = copy_and_mount_point(tmp.path(), &blank, 0);
    mount_image(&img, &target).expect("mount");
    let names = names_in(&target);
    hutch_sys::mount::detach(&target).expect("umount");
    assert_eq!(names, ["upper", "work"]);
}

#[test]
fn a_disk_given_back_is_emptied_and_handed_to_the_next_sandbox_of_its_size_when_root() {
    if !loop_devices() {
        return;
    }
    let tmp = TempDir::new("disk-kept");
    let blank = blank_image(tmp.path(), 16).expect("mkfs.ext4");
    let trash = crate::trash::Trash::new(tmp.path().join("trash")).expect("trash");
    let disks = kept::Disks::new(tmp.path().join("disks")).expect("disks");
    let mut steps = crate::timing::Steps::start();
    let first = disks.take("a", &blank, 16, &mut steps).expect("new disk");
    assert_eq!(first, tmp.path().join("disks/a/mnt"));
    fs::create_dir_all(first.join("upper/home/user")).expect("mkdir");
    fs::write(first.join("upper/home/user/secret"), "tenant a").expect("write");
    fs::create_dir_all(first.join("work/work")).expect("mkdir");
    disks.give_back(&first, &trash);
    disks.give_back(&first, &trash);
    assert_eq!(disks.kept(), 1, "kept once, however often it is given back");
    // Another size makes a disk of its own.
    let other = disks.take(
        "b",
        &blank_image(tmp.path(), 8).expect("mkfs"),
        8,
        &mut steps,
    );
    let other = other.expect("disk of another size");
    assert_eq!(other, tmp.path().join("disks/b/mnt"));
    let again = disks.take("c", &blank, 16, &mut steps).expect("kept disk");
    assert_eq!(again, first, "the kept disk is handed out");
    assert_eq!(names_in(&again), ["upper", "work"]);
    assert!(names_in(&again.join("upper")).is_empty(), "emptied");
    assert!(names_in(&again.join("work")).is_empty(), "emptied");
    assert_eq!(disks.kept(), 0);

    // Too many files to delete quickly: thrown away, not kept.
    for i in 0..600 {
        fs::write(again.join(format!("upper/f{i}")), "x").expect("write");
    }
    disks.give_back(&again, &trash);
    assert_eq!(disks.kept(), 0);
    assert!(!tmp.path().join("disks/a").exists(), "thrown away");
    assert!(crate::mounts::mounts_below(&tmp.path().join("disks/a")).is_empty());

    // A start sweeps every disk no sandbox names; the released store holds nothing.
    disks.give_back(&other, &trash);
    assert_eq!(disks.kept(), 1);
    let in_use = disks.take("d", &blank, 16, &mut steps).expect("new disk");
    disks.sweep(&std::iter::once(in_use.clone()).collect(), &trash);
    assert_eq!(disks.kept(), 0);
    assert_eq!(names_in(&tmp.path().join("disks")), ["d"]);
    disks.give_back(&in_use, &trash);
    assert_eq!(disks.kept(), 1);
    disks.release(&trash);
    assert_eq!(disks.kept(), 0);
    assert!(names_in(&tmp.path().join("disks")).is_empty());
    assert!(crate::mounts::mounts_below(tmp.path()).is_empty());
}
