//! Turning a fresh debootstrap tree into a sandbox image: the `user`
//! account, sudo, recipe post-install steps, cleanup and the files the
//! runtime expects.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts;
use crate::process::{describe_status, run_streaming};
use crate::{Progress, Recipe, TemplateError};

/// uid and gid of the unprivileged account every sandbox runs code as.
pub const USER_ID: u32 = 1000;

/// Name of that account (and of its primary group).
pub const USER_NAME: &str = "user";

/// Directory inside the rootfs that belongs to hutch.
pub const HUTCH_DIR: &str = ".hutch";

/// Environment for commands run in the chroot: a clean, predictable one
/// rather than whatever the server process happens to have.
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables passed into the chroot so post-install steps that
/// download (pip, apt) work behind a proxy.
const PASSED_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

const HOSTS: &str = "\
127.0.0.1\tlocalhost
127.0.1.1\tsandbox
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// Character devices made in the temporary /dev while the build runs
/// chroot commands: (name, major, minor).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Fixed steps of [`configure`], excluding the recipe's post-install ones.
const FIXED_STEPS: u64 = 7;

/// Runs every customisation step on the debootstrapped tree at `root`.
///
/// On return (success or error) nothing is mounted below `root` any more,
/// or an error says what is.
pub(crate) fn configure(
    root: &Path,
    recipe: &Recipe,
    chroot_bin: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), TemplateError> {
    let total = FIXED_STEPS + recipe.post_install.len() as u64;
    let mut step = 0u64;
    let report = |step: u64, message: String, progress: &mut dyn FnMut(Progress)| {
        tracing::info!(template = %recipe.name, "{message}");
        progress(Progress::new(
            &recipe.name,
            "configure",
            step,
            total,
            message,
        ));
    };

    report(
        step,
        "preparing /proc and /dev for chroot steps".into(),
        progress,
    );
    // debootstrap normally unmounts its own mounts, but not if it was killed.
    mounts::unmount_all_under(root)?;
    for dir in ["proc", "sys", "dev"] {
        ensure_empty_dir(root, dir)?;
    }
    let guard = ChrootMounts::mount(root)?;
    let chroot = Chroot {
        root,
        chroot_bin,
        template: &recipe.name,
    };
    step += 1;

    let result = (|| -> Result<(), TemplateError> {
        report(
            step,
            format!("creating account {USER_NAME} ({USER_ID})"),
            progress,
        );
        let id = USER_ID.to_string();
        chroot.run(
            &["groupadd", "--gid", &id, USER_NAME],
            progress,
            step,
            total,
        )?;
        chroot.run(
            &[
                "useradd",
                "--create-home",
                "--home-dir",
                "/home/user",
                "--shell",
                "/bin/bash",
                "--uid",
                &id,
                "--gid",
                &id,
                "--groups",
                "sudo",
                USER_NAME,
            ],
            progress,
            step,
            total,
        )?;
        step += 1;

        report(step, "granting passwordless sudo".into(), progress);
        write_tree_file(
            root,
            "etc/sudoers.d/user",
            format!("{USER_NAME} ALL=(ALL:ALL) NOPASSWD: ALL\n").as_bytes(),
            0o440,
        )?;
        // A syntax error in sudoers.d disables sudo entirely; catch it here.
        chroot.run(
            &["visudo", "-c", "-q", "-f", "/etc/sudoers.d/user"],
            progress,
            step,
            total,
        )?;
        step += 1;

        // Post-install steps download over TLS (pip, npm). A host behind a
        // TLS-inspecting proxy trusts that proxy through certificates of its
        // own; the steps need them too. They are taken out again afterwards,
        // so the tree does not depend on the host it was built on.
        let host_cas = if recipe.post_install.is_empty() {
            0
        } else {
            trust_host_cas(
                root,
                Path::new(HOST_LOCAL_CAS),
                &chroot,
                progress,
                step,
                total,
            )?
        };
        for cmd in &recipe.post_install {
            report(step, format!("running `{cmd}`"), progress);
            chroot.run(&["/bin/sh", "-ec", cmd], progress, step, total)?;
            step += 1;
        }
        if host_cas > 0 {
            untrust_host_cas(root, &chroot, progress, step, total)?;
        }

        report(
            step,
            "removing apt caches and package lists".into(),
            progress,
        );
        chroot.run(&["apt-get", "clean"], progress, step, total)?;
        clear_dir_contents(root, "var/lib/apt/lists")?;
        step += 1;
        Ok(())
    })();

    // Unmount before anything else, also when a step failed.
    let unmounted = guard.unmount();
    result?;
    unmounted?;

    report(
        step,
        "writing hostname, hosts and resolv.conf".into(),
        progress,
    );
    write_tree_file(root, "etc/hostname", b"sandbox\n", 0o644)?;
    write_tree_file(root, "etc/hosts", HOSTS.as_bytes(), 0o644)?;
    // The runtime provides DNS configuration per sandbox.
    write_tree_file(root, "etc/resolv.conf", b"", 0o644)?;
    step += 1;

    report(step, "creating /tmp and /.hutch".into(), progress);
    set_mode(root, "tmp", 0o1777)?;
    let hutch = root.join(HUTCH_DIR);
    match std::fs::create_dir(&hutch) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(TemplateError::io("could not create directory", &hutch)(e)),
    }
    set_mode(root, HUTCH_DIR, 0o755)?;
    // An empty file the runtime bind-mounts the agent onto.
    let agent = hutch_contracts::agent::AGENT_PATH.trim_start_matches('/');
    write_tree_file(root, agent, b"", 0o755)?;
    step += 1;

    report(step, "emptying /proc, /sys and /dev".into(), progress);
    // The runtime mounts fresh ones; leftovers (device nodes from
    // debootstrap, files written while our tmpfs was not there) must go.
    for dir in ["proc", "sys", "dev"] {
        ensure_empty_dir(root, dir)?;
    }
    step += 1;
    report(step, "tree configured".into(), progress);
    Ok(())
}

/// Where Debian and Ubuntu hosts keep locally added CA certificates.
const HOST_LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

/// Folder (inside the tree's own local-CA folder) that holds the host's
/// certificates while post-install steps run.
const BUILD_CAS: &str = "usr/local/share/ca-certificates/hutch-build-host";

/// Copies the host's locally added CA certificates (`*.crt` directly in
/// `host_dir`) into the tree and makes the tree trust them, if the tree has
/// `update-ca-certificates`. Returns how many were added.
fn trust_host_cas(
    root: &Path,
    host_dir: &Path,
    chroot: &Chroot<'_>,
    progress: &mut dyn FnMut(Progress),
    step: u64,
    total: u64,
) -> Result<usize, TemplateError> {
    let Ok(entries) = std::fs::read_dir(host_dir) else {
        return Ok(0);
    };
    let mut certs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt") && p.is_file())
        .collect();
    if certs.is_empty() || !root.join("usr/sbin/update-ca-certificates").exists() {
        return Ok(0);
    }
    certs.sort();
    let dir = root.join(BUILD_CAS);
    std::fs::create_dir_all(&dir).map_err(TemplateError::io("could not create directory", &dir))?;
    for cert in &certs {
        let name = cert.file_name().unwrap_or_default();
        let contents = std::fs::read(cert).map_err(TemplateError::io("could not read", cert))?;
        let rel = Path::new(BUILD_CAS).join(name);
        write_tree_file(root, &rel.to_string_lossy(), &contents, 0o644)?;
    }
    tracing::info!(
        count = certs.len(),
        from = %host_dir.display(),
        "trusting the host's local CA certificates during post-install steps"
    );
    chroot.run(&["update-ca-certificates"], progress, step, total)?;
    Ok(certs.len())
}

/// Undoes [`trust_host_cas`].
fn untrust_host_cas(
    root: &Path,
    chroot: &Chroot<'_>,
    progress: &mut dyn FnMut(Progress),
    step: u64,
    total: u64,
) -> Result<(), TemplateError> {
    mounts::remove_tree(&root.join(BUILD_CAS))?;
    chroot.run(
        &["update-ca-certificates", "--fresh"],
        progress,
        step,
        total,
    )
}

/// Runs commands inside the tree with chroot(8).
struct Chroot<'a> {
    root: &'a Path,
    chroot_bin: &'a Path,
    template: &'a str,
}

impl Chroot<'_> {
    fn run(
        &self,
        args: &[&str],
        progress: &mut dyn FnMut(Progress),
        step: u64,
        total: u64,
    ) -> Result<(), TemplateError> {
        let mut cmd = Command::new(self.chroot_bin);
        cmd.arg(self.root)
            .args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", CHROOT_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "dumb")
            .env("DEBIAN_FRONTEND", "noninteractive");
        for var in PASSED_ENV {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let shown = args.join(" ");
        tracing::debug!(root = %self.root.display(), command = %shown, "chroot");
        let template = self.template;
        let finished = run_streaming(&mut cmd, &mut |line| {
            tracing::debug!(template, "{line}");
            progress(Progress::new(
                template,
                "configure",
                step,
                total,
                line.to_string(),
            ));
        })
        .map_err(TemplateError::io("could not run chroot", self.chroot_bin))?;
        if finished.status.success() {
            return Ok(());
        }
        Err(TemplateError::Chroot {
            template: template.to_string(),
            command: shown,
            root: self.root.to_path_buf(),
            status: describe_status(&finished.status),
            output: finished.tail.joined(),
        })
    }
}

/// /proc and a minimal /dev mounted into the tree while chroot steps run.
/// Dropping it unmounts them too, so an early return cannot leak mounts.
struct ChrootMounts {
    root: PathBuf,
    active: bool,
}

impl ChrootMounts {
    fn mount(root: &Path) -> Result<ChrootMounts, TemplateError> {
        let guard = ChrootMounts {
            root: root.to_path_buf(),
            active: true,
        };
        let proc_dir = root.join("proc");
        mounts::mount(
            "proc",
            &proc_dir,
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(TemplateError::io("could not mount proc on", &proc_dir))?;

        // A private tmpfs rather than a bind of the host's /dev: chroot steps
        // then cannot touch host devices, and nothing they create there
        // survives into the image.
        let dev = root.join("dev");
        mounts::mount(
            "tmpfs",
            &dev,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=755,size=1m"),
        )
        .map_err(TemplateError::io("could not mount tmpfs on", &dev))?;
        for (name, major, minor) in DEVICES {
            make_device(
                &dev.join(name),
                Path::new("/dev").join(name),
                *major,
                *minor,
            )?;
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = dev.join(name);
            std::os::unix::fs::symlink(target, &link)
                .map_err(TemplateError::io("could not create symlink", &link))?;
        }
        for (name, mode) in [("shm", 0o1777), ("pts", 0o755)] {
            let d = dev.join(name);
            std::fs::create_dir(&d).map_err(TemplateError::io("could not create directory", &d))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                .map_err(TemplateError::io("could not set mode of", &d))?;
        }
        Ok(guard)
    }

    fn unmount(mut self) -> Result<(), TemplateError> {
        self.active = false;
        mounts::unmount_all_under(&self.root)
    }
}

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = mounts::unmount_all_under(&self.root) {
                tracing::error!(error = %e, "could not unmount chroot mounts");
            }
        }
    }
}

/// Creates character device `path`; where mknod is not allowed (some
/// containers), bind-mounts the host's node onto an empty file instead.
fn make_device(path: &Path, host: PathBuf, major: u32, minor: u32) -> Result<(), TemplateError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        TemplateError::io("invalid path", path)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e,
        ))
    })?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        // mknod honours the umask; the nodes must be world-usable.
        return std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(TemplateError::io("could not set mode of", path));
    }
    let err = std::io::Error::last_os_error();
    tracing::debug!(path = %path.display(), error = %err, "mknod failed, bind-mounting host node");
    std::fs::File::create(path).map_err(TemplateError::io("could not create", path))?;
    let host_str = host.to_string_lossy();
    mounts::mount(&host_str, path, "", libc::MS_BIND, None)
        .map_err(TemplateError::io("could not bind-mount device onto", path))
}

/// Makes `root/rel` an empty directory on the tree's filesystem: creates it
/// if missing, deletes whatever is inside. Refuses if it is a mount point,
/// which would mean deleting another filesystem's contents.
fn ensure_empty_dir(root: &Path, rel: &str) -> Result<(), TemplateError> {
    let dir = root.join(rel);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            std::fs::remove_file(&dir).map_err(TemplateError::io("could not remove", &dir))?;
            std::fs::create_dir(&dir)
                .map_err(TemplateError::io("could not create directory", &dir))?;
        }
        Err(_) => {
            std::fs::create_dir(&dir)
                .map_err(TemplateError::io("could not create directory", &dir))?;
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(TemplateError::io("could not set mode of", &dir))?;
    clear_dir_contents(root, rel)
}

/// Deletes everything inside `root/rel` (missing is fine), refusing to work
/// on a directory that is a mount point.
fn clear_dir_contents(root: &Path, rel: &str) -> Result<(), TemplateError> {
    let dir = root.join(rel);
    let root_dev = std::fs::symlink_metadata(root)
        .map_err(TemplateError::io("could not stat", root))?
        .dev();
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TemplateError::io("could not stat", &dir)(e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    if meta.dev() != root_dev {
        return Err(TemplateError::MountsRemain {
            path: dir.clone(),
            mounts: dir.display().to_string(),
        });
    }
    let entries = std::fs::read_dir(&dir).map_err(TemplateError::io("could not list", &dir))?;
    for entry in entries {
        let entry = entry.map_err(TemplateError::io("could not list", &dir))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(TemplateError::io("could not stat", &path))?
            .is_dir();
        if is_dir {
            mounts::remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(TemplateError::io("could not remove", &path))?;
        }
    }
    Ok(())
}

/// Replaces `root/rel` with a new regular file holding `contents` with
/// `mode`. An existing file or symlink there is removed first, never
/// written through: a symlink in the image may point at a host path.
fn write_tree_file(
    root: &Path,
    rel: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), TemplateError> {
    let path = root.join(rel);
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path).map_err(TemplateError::io("could not replace", &path))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(TemplateError::io("could not create", &path))?;
    f.write_all(contents)
        .map_err(TemplateError::io("could not write", &path))?;
    // The umask may have masked bits off `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(TemplateError::io("could not set mode of", &path))
}

/// Sets the mode of directory `root/rel`, refusing to follow a symlink.
fn set_mode(root: &Path, rel: &str, mode: u32) -> Result<(), TemplateError> {
    let path = root.join(rel);
    let meta =
        std::fs::symlink_metadata(&path).map_err(TemplateError::io("could not stat", &path))?;
    if meta.file_type().is_symlink() {
        return Err(TemplateError::io("refusing to chmod symlink", &path)(
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a symlink"),
        ));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(TemplateError::io("could not set mode of", &path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn write_tree_file_replaces_symlinks_instead_of_following() {
        let tmp = TempDir::new("setup-write");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"host").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf")).expect("symlink");

        write_tree_file(&root, "etc/resolv.conf", b"", 0o644).expect("write");
        assert_eq!(std::fs::read(&outside).expect("read"), b"host");
        let m = std::fs::symlink_metadata(root.join("etc/resolv.conf")).expect("stat");
        assert!(m.is_file());
        assert_eq!(m.len(), 0);
        assert_eq!(m.mode() & 0o7777, 0o644);
    }

    #[test]
    fn host_cas_are_skipped_without_certificates_or_update_tool() {
        let tmp = TempDir::new("setup-cas");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        let chroot = Chroot {
            root: &root,
            chroot_bin: Path::new("/nonexistent/chroot"),
            template: "t",
        };
        let mut progress = |_: Progress| {};
        let missing = tmp.path().join("no-such-dir");
        let n = trust_host_cas(&root, &missing, &chroot, &mut progress, 0, 1).expect("no dir");
        assert_eq!(n, 0);

        // Certificates, but a tree without update-ca-certificates.
        let host = tmp.path().join("host-cas");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(host.join("proxy.crt"), b"cert").expect("write");
        let n = trust_host_cas(&root, &host, &chroot, &mut progress, 0, 1).expect("no tool");
        assert_eq!(n, 0);
        assert!(!root.join(BUILD_CAS).exists());
    }

    #[test]
    fn ensure_empty_dir_clears_contents() {
        let tmp = TempDir::new("setup-empty");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("dev/pts")).expect("mkdir");
        std::fs::write(root.join("dev/null"), b"").expect("write");
        std::os::unix::fs::symlink("/proc/self/fd", root.join("dev/fd")).expect("symlink");
        ensure_empty_dir(root, "dev").expect("clear");
        ensure_empty_dir(root, "sys").expect("create");
        for d in ["dev", "sys"] {
            let n = std::fs::read_dir(root.join(d)).expect("list").count();
            assert_eq!(n, 0, "{d} is empty");
        }
    }
}
