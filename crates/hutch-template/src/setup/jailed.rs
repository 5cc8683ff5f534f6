//! Running commands inside the tree, in the build jail ([`crate::jail`]), with a minimal
//! /dev mounted while they run (the jail mounts its own /proc).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts;
use crate::process::{describe_status, run_streaming, Finished};
use crate::{JailHelper, Progress, TemplateError, SANDBOX_ID_BASE};
use hutch_sys::mount::flags;

/// Environment for commands run in the jail: a clean, predictable one
/// rather than whatever the server process happens to have.
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables passed into the jail so post-install steps that
/// download (pip, apt) work behind a proxy.
const PASSED_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Character devices made in the temporary /dev while the build runs
/// commands in the jail: (name, major, minor).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Runs commands inside the tree, in the build jail.
pub(super) struct Jailed<'a> {
    pub(super) root: &'a Path,
    pub(super) helper: &'a JailHelper,
    pub(super) template: &'a str,
}

impl Jailed<'_> {
    pub(super) fn run(
        &self,
        args: &[&str],
        progress: &mut dyn FnMut(Progress),
        step: u64,
        total: u64,
    ) -> Result<(), TemplateError> {
        let template = self.template;
        let finished = self.run_lines(args, &[], &mut |line| {
            progress(Progress::new(
                template,
                "configure",
                step,
                total,
                line.to_string(),
            ));
        })?;
        if finished.status.success() {
            return Ok(());
        }
        Err(TemplateError::Step {
            template: template.to_string(),
            command: args.join(" "),
            root: self.root.to_path_buf(),
            status: describe_status(&finished.status),
            output: finished.tail.joined(),
        })
    }

    /// Runs `args` with `env` on top of the jail's clean environment, handing every
    /// output line to `on_line`; the caller judges the exit status.
    pub(super) fn run_lines(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Finished, TemplateError> {
        let mut cmd = Command::new(&self.helper.program);
        cmd.args(&self.helper.args)
            .arg(self.root)
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
        cmd.envs(env.iter().copied());
        let shown = args.join(" ");
        tracing::debug!(root = %self.root.display(), command = %shown, "build step in the jail");
        let template = self.template;
        run_streaming(&mut cmd, &mut |line| {
            tracing::debug!(template, "{line}");
            on_line(line);
        })
        .map_err(TemplateError::io(
            "could not run the build jail",
            &self.helper.program,
        ))
    }
}

/// A minimal /dev mounted into the tree while build steps run. Dropping it
/// unmounts it too, so an early return cannot leak mounts.
pub(super) struct StepMounts {
    root: PathBuf,
    active: bool,
}

impl StepMounts {
    pub(super) fn mount(root: &Path) -> Result<StepMounts, TemplateError> {
        let guard = StepMounts {
            root: root.to_path_buf(),
            active: true,
        };
        // A private tmpfs rather than a bind of the host's /dev: build steps
        // then cannot touch host devices, and nothing they create there
        // survives into the image.
        let dev = root.join("dev");
        mounts::mount(
            "tmpfs",
            &dev,
            "tmpfs",
            flags::NOSUID | flags::NOEXEC,
            // Owned by the jail's root, as a sandbox's /dev is.
            Some(&format!(
                "mode=755,size=1m,uid={SANDBOX_ID_BASE},gid={SANDBOX_ID_BASE}"
            )),
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

    pub(super) fn unmount(mut self) -> Result<(), TemplateError> {
        self.active = false;
        mounts::unmount_all_under(&self.root)
    }
}

impl Drop for StepMounts {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = mounts::unmount_all_under(&self.root) {
                tracing::error!(error = %e, "could not unmount the build's /dev");
            }
        }
    }
}

/// Creates character device `path`; where mknod is not allowed (some
/// containers), bind-mounts the host's node onto an empty file instead.
fn make_device(path: &Path, host: PathBuf, major: u32, minor: u32) -> Result<(), TemplateError> {
    let made = hutch_sys::fs::mknod_char(path, 0o666, major, minor);
    if made.is_ok() {
        // mknod honours the umask; the nodes must be world-usable.
        return std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(TemplateError::io("could not set mode of", path));
    }
    if let Err(err) = made {
        tracing::debug!(path = %path.display(), error = %err, "mknod failed, bind-mounting host node");
    }
    std::fs::File::create(path).map_err(TemplateError::io("could not create", path))?;
    let host_str = host.to_string_lossy();
    mounts::mount(&host_str, path, "", flags::BIND, None)
        .map_err(TemplateError::io("could not bind-mount device onto", path))
}
