//! The build jail: how a template's build steps run without host root.
//!
//! debootstrap (Debian's signed packages) runs on the host; every later step — the
//! recipe's post-install commands with the code they download (wheels, npm tarballs),
//! `useradd`, `visudo`, `update-ca-certificates`, `apt-get` — runs in a jail made by a
//! short-lived helper process (`hutch __template-jail <rootfs> <command...>`):
//!
//! - a new **user namespace** whose ids `0..`[`SANDBOX_ID_COUNT`] are host ids
//!   [`SANDBOX_ID_BASE`]`..`, the range the finished tree is owned by: root of a step is an
//!   unprivileged host user, its capabilities count only inside the jail, and host files
//!   (owned by host ids outside the range) are "others" to it;
//! - new **mount**, **PID**, IPC and UTS namespaces: the tree becomes `/` with
//!   `pivot_root` and the host's mount tree is detached, `/proc` is the jail's own (a
//!   step sees its own processes only and can signal or trace nothing of the host's);
//! - `no_new_privs`, and the jail's init dies with the helper (`PR_SET_PDEATHSIG`), which
//!   ends every process of the step;
//! - whatever confinement the caller adds last, before the step starts (`hutch` installs
//!   the sandboxes' seccomp filter: no new namespaces, mounts, keyrings, BPF, modules,
//!   exotic socket families).
//!
//! The jail keeps the host's network namespace: steps download (apt, pip, npm). That is
//! the part it does not confine: a step can reach what the host's network reaches,
//! loopback services included. What runs there is pinned: Debian's signed archive, and
//! wheels and tarballs checked against hashes in the recipe.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use hutch_sys::creds::Credentials;
use hutch_sys::mount::flags;
use hutch_sys::ns::{Fork, Namespaces};

use crate::{SANDBOX_ID_BASE, SANDBOX_ID_COUNT};

/// The program (and leading arguments) that run the jail helper: `hutch __template-jail`.
/// The build appends the tree and the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailHelper {
    /// The executable, normally the `hutch` binary itself.
    pub program: PathBuf,
    /// Arguments before the tree, normally `["__template-jail"]`.
    pub args: Vec<String>,
}

/// Exit status of the helper when the jail could not be set up (the step never ran).
pub const SETUP_FAILED: i32 = 125;

/// Entry point of the jail helper: `args` are the tree and the command with its
/// arguments. Returns the exit code to exit with: the command's, `128 + n` when signal
/// `n` ended it, [`SETUP_FAILED`] when the jail could not be made (with the reason on
/// stderr). Must run in a fresh, single-threaded process, as root.
///
/// `confine` runs in the jail's init once the jail is made (after `no_new_privs`), right
/// before the step starts: whatever it installs (a seccomp filter) binds the step and
/// everything it starts.
pub fn helper_main(args: Vec<OsString>, confine: fn() -> Result<(), String>) -> i32 {
    match run(args, confine) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("template build jail: {msg}");
            SETUP_FAILED
        }
    }
}

fn run(args: Vec<OsString>, confine: fn() -> Result<(), String>) -> Result<i32, String> {
    let mut args = args.into_iter();
    let root = PathBuf::from(args.next().ok_or("no tree given")?);
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err("no command given".into());
    }
    if !root.is_absolute() || !root.is_dir() {
        return Err(format!("{} is not an absolute directory", root.display()));
    }
    let (mut go_r, mut go_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let namespaces = Namespaces::NEWUSER
        | Namespaces::NEWNS
        | Namespaces::NEWPID
        | Namespaces::NEWIPC
        | Namespaces::NEWUTS;
    // Owned by the range's first id rather than root: the namespace's per-user counts
    // (inotify, namespaces) are then charged to that id, not to the host's root.
    match hutch_sys::ns::fork_into_namespaces_owned_by(namespaces, SANDBOX_ID_BASE)
        .map_err(|e| e.to_string())?
    {
        Fork::Child => {
            drop(go_w);
            let err = match jail_init(&root, &command, &mut go_r, confine) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("template build jail: {err}");
            hutch_sys::process::exit_now(SETUP_FAILED)
        }
        Fork::Parent(pid) => {
            drop(go_r);
            let map = format!("0 {SANDBOX_ID_BASE} {SANDBOX_ID_COUNT}\n");
            let mapped = ["uid_map", "gid_map"].iter().try_for_each(|f| {
                let p = format!("/proc/{pid}/{f}");
                std::fs::write(&p, &map).map_err(|e| format!("writing {p}: {e}"))
            });
            if let Err(e) = mapped {
                let _ = hutch_sys::signal::kill(pid, hutch_sys::signal::Signal::KILL);
                let _ = hutch_sys::process::wait_for(pid);
                return Err(e);
            }
            // The child goes on only once its ids are mapped; a failed write (it died)
            // shows in its status below.
            let _ = go_w.write_all(b"g");
            drop(go_w);
            let raw = hutch_sys::process::wait_for(pid).map_err(|e| format!("wait: {e}"))?;
            Ok(exit_code(std::process::ExitStatus::from_raw(raw)))
        }
    }
}

enum Never {}

/// PID 1 of the jail: waits for its id maps, builds its view of the filesystem, starts the
/// command and reaps until it is done. Returns only on a setup failure.
fn jail_init(
    root: &Path,
    command: &[OsString],
    go: &mut impl Read,
    confine: fn() -> Result<(), String>,
) -> Result<Never, String> {
    let errno = |what: &str| {
        let what = what.to_string();
        move |e: hutch_sys::Errno| format!("{what}: {e}")
    };
    hutch_sys::process::die_with_parent().map_err(errno("PR_SET_PDEATHSIG"))?;
    let mut byte = [0u8; 1];
    if go
        .read(&mut byte)
        .map_err(|e| format!("waiting for id maps: {e}"))?
        != 1
    {
        return Err("the helper went away before mapping ids".into());
    }
    // Still the host's root for path walks (the filesystem uid is 0 until the switch
    // below): enter the tree now, its parents may be private to root.
    hutch_sys::ns::chdir(root).map_err(errno("chdir to the tree"))?;
    let private = flags::REC | flags::PRIVATE;
    hutch_sys::mount::mount(None, Path::new("/"), None, private, None)
        .map_err(errno("making the mount tree private"))?;
    // A bind of the tree onto itself made here (with what the build mounted below it,
    // /dev) is ours to pivot into.
    hutch_sys::ns::bind_cwd_onto_itself().map_err(errno("binding the tree"))?;
    // Our own /proc, mounted while the host's is still in view (the kernel lets a user
    // namespace mount proc only where a full one is already visible).
    hutch_sys::mount::mount(
        Some(Path::new("proc")),
        Path::new("proc"),
        Some("proc"),
        flags::NOSUID | flags::NODEV | flags::NOEXEC,
        None,
    )
    .map_err(errno("mounting /proc"))?;
    Credentials::root()
        .apply()
        .map_err(errno("switching to the jail's root"))?;
    hutch_sys::ns::set_hostname(b"sandbox").map_err(errno("sethostname"))?;
    let dot = Path::new(".");
    hutch_sys::ns::pivot_root(dot, dot).map_err(errno("pivot_root"))?;
    hutch_sys::mount::detach(dot).map_err(errno("detaching the host's tree"))?;
    hutch_sys::ns::chdir(Path::new("/")).map_err(errno("chdir /"))?;
    hutch_sys::caps::set_no_new_privs().map_err(errno("no_new_privs"))?;
    confine()?;

    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", command[0]))?;
    let child_pid = child.id() as i32;
    // PID 1 reaps every orphan of the step until the command itself is done; returning
    // then ends the PID namespace and whatever the step left running.
    loop {
        match hutch_sys::process::wait_any() {
            Ok((pid, raw)) if pid == child_pid => {
                let code = exit_code(std::process::ExitStatus::from_raw(raw));
                hutch_sys::process::exit_now(code)
            }
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
    }
}

/// A shell's view of a status: the exit code, or `128 + n` after signal `n`.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(SETUP_FAILED)
}
