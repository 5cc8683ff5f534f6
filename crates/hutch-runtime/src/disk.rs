//! The sandbox's disk: a sparse ext4 image, loop-mounted, that holds the overlay's
//! writable layer. Its size is the sandbox's disk limit; it costs host disk only for the
//! blocks actually written.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hutch_sys::mount::flags;

use crate::error::{Result, RuntimeError};

/// Returns the path of a freshly formatted, empty ext4 image of `size_mb`, creating it
/// once per size under `cache_dir` so that each sandbox only copies ~0.2 MiB of metadata.
pub fn blank_image(cache_dir: &Path, size_mb: u64) -> Result<PathBuf> {
    let path = cache_dir.join(blank_image_name(size_mb));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(cache_dir).map_err(|e| RuntimeError::io("mkdir", cache_dir, e))?;
    let tmp = cache_dir.join(format!(".blank-{size_mb}m-{}.img", std::process::id()));
    make_sparse(&tmp, image_len(size_mb))?;
    // The overlay's `upper` and `work` are made here, once, and `lost+found` removed: on a
    // freshly mounted filesystem the first directories cost block and inode allocations
    // (the allocator's per-group state is built on first use), 4% of all CPU under
    // `base` create + kill when every create made them.
    let seed = cache_dir.join(format!(".blank-seed-{}", std::process::id()));
    let _ = fs::remove_dir_all(&seed);
    for d in ["upper", "work"] {
        let dir = seed.join(d);
        fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("mkdir", &dir, e))?;
    }
    // No journal: the disk lives and dies with one sandbox, crash consistency buys nothing.
    // No resize inode: a sandbox's disk never grows, and its reserved descriptor blocks
    // were 2 MiB of the 2.2 MiB every sandbox copied (now 0.2 MiB).
    let made = format_ext4(
        &tmp,
        &[
            "-O".as_ref(),
            "^has_journal,^resize_inode".as_ref(),
            "-E".as_ref(),
            "lazy_itable_init=1,nodiscard".as_ref(),
            "-d".as_ref(),
            seed.as_os_str(),
        ],
    );
    let _ = fs::remove_dir_all(&seed);
    made?;
    // Best effort: a `lost+found` left here is removed at each mount instead.
    match Command::new("debugfs")
        .args(["-w", "-R", "rmdir lost+found"])
        .arg(&tmp)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            tracing::debug!(stderr = %String::from_utf8_lossy(&o.stderr), "lost+found stays in the blank disk")
        }
        Err(e) => tracing::debug!(error = %e, "lost+found stays in the blank disk"),
    }
    fs::rename(&tmp, &path).map_err(|e| RuntimeError::io("rename", &tmp, e))?;
    Ok(path)
}

/// Copies `src` to `dst` keeping holes, so the copy of a sparse image stays sparse.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let mut from = File::open(src).map_err(|e| RuntimeError::io("open", src, e))?;
    let len = from
        .metadata()
        .map_err(|e| RuntimeError::io("stat", src, e))?
        .len();
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| RuntimeError::io("create", dst, e))?;
    to.set_len(len)
        .map_err(|e| RuntimeError::io("truncate", dst, e))?;
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 128 << 10];
    while pos < len {
        // No data after pos (ENXIO, or any failure to find it): the rest is a hole.
        let Ok(Some(data)) = hutch_sys::fs::next_data(&from, pos) else {
            break;
        };
        let hole = hutch_sys::fs::next_hole(&from, data).unwrap_or(len);
        from.seek(SeekFrom::Start(data))
            .map_err(|e| RuntimeError::io("seek", src, e))?;
        to.seek(SeekFrom::Start(data))
            .map_err(|e| RuntimeError::io("seek", dst, e))?;
        let mut left = (hole - data) as usize;
        while left > 0 {
            let n = left.min(buf.len());
            from.read_exact(&mut buf[..n])
                .map_err(|e| RuntimeError::io("read", src, e))?;
            to.write_all(&buf[..n])
                .map_err(|e| RuntimeError::io("write", dst, e))?;
            left -= n;
        }
        pos = hole;
    }
    Ok(())
}

/// Serialises finding and binding a free loop device within this process: the kernel
/// offers every concurrent caller the same free device, and all but one would lose it.
static LOOP_ATTACH: Mutex<()> = Mutex::new(());

/// How many times a device offered as free may turn out taken (by another process) before
/// the attach gives up.
const ATTACH_TRIES: u32 = 64;

/// Attaches `image` to a free loop device that detaches itself on the last unmount, and
/// mounts it on `target`. Fails with [`RuntimeError::Exhausted`] when the host has no loop
/// device left to give.
/// The block device (major, minor) of the filesystem mounted at `path`: a sandbox's loop
/// device, for its disk I/O limits.
pub fn device_of(path: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(path)
        .map_err(|e| RuntimeError::io("stat", path, e))?
        .dev();
    Ok(split_dev(dev))
}

/// Linux's `dev_t` as (major, minor): 12 + 20 bits of major, 20 + 12 of minor, interleaved.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
    (major as u32, minor as u32)
}

/// Attaches `image` to a loop device and mounts it on `target`.
pub fn mount_image(image: &Path, target: &Path) -> Result<()> {
    mount_with(image, target, Some("nobarrier"))
}

/// Makes a volume's image at `path`: a sparse ext4 filesystem of `size_mb` (its quota),
/// with a journal (it outlives every sandbox and every crash). Its root is root's; the
/// caller gives it its owner once mounted.
pub fn volume_image(path: &Path, size_mb: u64) -> Result<()> {
    make_sparse(path, size_mb << 20)?;
    format_ext4(
        path,
        &[
            "-E".as_ref(),
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard".as_ref(),
        ],
    )
}

/// Creates the sparse file `path` of `len` bytes.
fn make_sparse(path: &Path, len: u64) -> Result<()> {
    let f = File::create(path).map_err(|e| RuntimeError::io("create", path, e))?;
    f.set_len(len)
        .map_err(|e| RuntimeError::io("truncate", path, e))
}

/// Makes an ext4 filesystem in the image `image`, with no blocks reserved for root and
/// `options` besides; on failure the image is removed.
fn format_ext4(image: &Path, options: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .args(options)
        .arg(image)
        .output()
        .map_err(|e| RuntimeError::io("run mkfs.ext4 on", image, e));
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let _ = fs::remove_file(image);
            Err(RuntimeError::Command {
                cmd: format!("mkfs.ext4 {}", image.display()),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            })
        }
        Err(e) => {
            let _ = fs::remove_file(image);
            Err(e)
        }
    }
}

/// Mounts a volume's image on `target`: no set-id programs or devices, barriers kept.
pub fn mount_volume(image: &Path, target: &Path) -> Result<()> {
    mount_with(image, target, None)
}

fn mount_with(image: &Path, target: &Path, data: Option<&str>) -> Result<()> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| RuntimeError::io("open", image, e))?;
    let (dev, loopf) = attach(&backing)?;
    // A sandbox's disk has no barriers (volumes keep theirs): a sync of it (at unmount, or
    // a sandbox's fsync) would otherwise flush the loop device, which fsyncs the image on
    // the host disk. Like the journal, that buys nothing for a disk that does not outlive
    // its sandbox's processes.
    let res = hutch_sys::mount::mount(
        Some(&dev),
        target,
        Some("ext4"),
        flags::NOSUID | flags::NODEV | flags::NOATIME,
        data,
    );
    // With AUTOCLEAR the device detaches once unmounted and closed; on a failed mount
    // closing `loopf` alone detaches it.
    drop(loopf);
    if res.is_ok() {
        DirectIo::get().later(&dev, image);
    }
    res.map_err(|e| RuntimeError::Sys {
        op: format!("mount {} on {}", dev.display(), target.display()),
        source: e.into(),
    })
}

/// How long a new disk stays on the host's page cache before its loop device is switched
/// to direct I/O.
const DIRECT_IO_AFTER: Duration = Duration::from_secs(1);

/// Switches sandbox disks to direct I/O, a while after they were mounted.
///
/// Without direct I/O everything a sandbox writes is copied a second time, by the loop
/// worker into the host's cache of the image, which halved the rate of a download that
/// follows a large upload (docs/performance.md). But the switch writes back what the
/// host's cache holds of the image (its freshly copied metadata) and waits for the disk,
/// with the device's queue frozen: done at mount, the sandbox's first directory operations
/// waited for it (11 ms of a 19 ms create). A sandbox that lives less than
/// [`DIRECT_IO_AFTER`] never pays it, and its image's pages are dropped, never written,
/// when it goes. Large uploads switch their sandbox's disk at once ([`ensure_direct_io`]).
struct DirectIo {
    due: Mutex<VecDeque<(Instant, PathBuf, PathBuf)>>,
    wake: Condvar,
}

impl DirectIo {
    fn get() -> &'static DirectIo {
        static ONE: OnceLock<&'static DirectIo> = OnceLock::new();
        ONE.get_or_init(|| {
            let q: &'static DirectIo = Box::leak(Box::new(DirectIo {
                due: Mutex::new(VecDeque::new()),
                wake: Condvar::new(),
            }));
            let spawned = std::thread::Builder::new()
                .name("loop-direct-io".into())
                .spawn(move || q.run());
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "sandbox disks stay on the page cache");
            }
            q
        })
    }

    /// Switches `device` (bound to `image`) in [`DIRECT_IO_AFTER`].
    fn later(&self, device: &Path, image: &Path) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.push_back((
            Instant::now() + DIRECT_IO_AFTER,
            device.to_path_buf(),
            image.to_path_buf(),
        ));
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match due.front() {
                None => due = self.wake.wait(due).unwrap_or_else(|e| e.into_inner()),
                Some((at, _, _)) if *at > now => {
                    let wait = *at - now;
                    due = self
                        .wake
                        .wait_timeout(due, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Some(_) => {
                    let Some((_, device, image)) = due.pop_front() else {
                        continue;
                    };
                    drop(due);
                    switch_if_bound(&device, &image);
                    due = self.due.lock().unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// Switches loop `device` to direct I/O if it is still bound to `image` (its sandbox may be
/// gone, and the device bound to another's image, which has its own turn).
fn switch_if_bound(device: &Path, image: &Path) {
    let Some(name) = device.file_name() else {
        return;
    };
    let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
    let (Ok(bound), Ok(image)) = (fs::read_to_string(&backing), fs::canonicalize(image)) else {
        return;
    };
    if Path::new(bound.trim_end()) != image {
        return;
    }
    let Ok(f) = OpenOptions::new().read(true).open(device) else {
        return;
    };
    if let Err(e) = hutch_sys::loopdev::set_direct_io(&f, true) {
        tracing::debug!(device = %device.display(), error = %e, "the sandbox disk stays on the page cache");
    }
}

/// Switches the disk mounted at `disk` (a sandbox's) to direct I/O now, if it is not yet:
/// before a large transfer, which would otherwise fill the host's cache of the image and
/// then wait for all of it to be written back when the switch comes. Idempotent and cheap
/// once switched.
pub fn ensure_direct_io(disk: &Path) -> Result<()> {
    let (major, minor) = device_of(disk)?;
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let target = fs::read_link(&link).map_err(|e| RuntimeError::io("readlink", &link, e))?;
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    if !name.starts_with("loop") {
        return Ok(());
    }
    let device = Path::new("/dev").join(name);
    let f = OpenOptions::new()
        .read(true)
        .open(&device)
        .map_err(|e| RuntimeError::io("open", &device, e))?;
    hutch_sys::loopdev::set_direct_io(&f, true).map_err(|e| RuntimeError::Sys {
        op: format!("LOOP_SET_DIRECT_IO {}", device.display()),
        source: e.into(),
    })
}

/// Binds `backing` to a free loop device (autoclear); returns its path and an open handle.
fn attach(backing: &File) -> Result<(PathBuf, File)> {
    let _one_at_a_time = LOOP_ATTACH.lock().unwrap_or_else(|e| e.into_inner());
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| RuntimeError::io("open", "/dev/loop-control", e))?;
    for attempt in 0..ATTACH_TRIES {
        let n = hutch_sys::loopdev::free_device(&ctl).map_err(|e| {
            let e = io::Error::from(e);
            RuntimeError::Exhausted(format!("loop devices (LOOP_CTL_GET_FREE: {e})"))
        })?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopf = match OpenOptions::new().read(true).write(true).open(&dev) {
            Ok(f) => f,
            // The kernel made a device that has no node here (a /dev without devtmpfs):
            // it would offer the same one again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::Exhausted(format!(
                    "loop devices ({} has no device node)",
                    dev.display()
                )))
            }
            Err(e) => return Err(RuntimeError::io("open", &dev, e)),
        };
        match hutch_sys::loopdev::attach_autoclear(&loopf, backing) {
            Ok(()) => return Ok((dev, loopf)),
            // Another process took it between the offer and our bind: ask again, giving it
            // a moment to finish.
            Err(err) if err == hutch_sys::Errno::BUSY => {
                if attempt > 4 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            Err(err) => {
                return Err(RuntimeError::Sys {
                    op: format!("LOOP_CONFIGURE {}", dev.display()),
                    source: err.into(),
                })
            }
        }
    }
    Err(RuntimeError::Exhausted(format!(
        "loop devices (every device offered as free was taken by another process, {ATTACH_TRIES} times)"
    )))
}

/// Used and total bytes of the filesystem mounted at `path`.
pub fn usage(path: &Path) -> Result<(u64, u64)> {
    hutch_sys::mount::usage(path).map_err(|e| RuntimeError::io("statvfs", path, e.into()))
}

/// The cache file name of the blank image of `size_mb`.
fn blank_image_name(size_mb: u64) -> String {
    // v2: formatted without a resize inode; v3: with the overlay's directories, without
    // `lost+found` (images of earlier formats stay unused).
    format!("blank-ext4-v3-{size_mb}m.img")
}

/// The size in bytes of a disk of `size_mb` MiB.
fn image_len(size_mb: u64) -> u64 {
    size_mb * 1024 * 1024
}

pub(crate) mod kept;

#[cfg(test)]
mod tests;
