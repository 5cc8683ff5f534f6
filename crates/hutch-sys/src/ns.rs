//! Namespaces: creating a child in new ones, entering and leaving them, and what a new
//! root filesystem needs (hostname, pivot_root).

use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::{Errno, Result};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::error::{SysError, SysResult};

/// The `CLONE_NEW*` namespace flags.
pub type Namespaces = UnshareFlags;

/// Which side of a fork the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// In the new child.
    Child,
    /// In the parent; the child has this pid.
    Parent(i32),
}

/// Forks the caller into the new `namespaces` (`clone(2)` without a new stack, so the child
/// continues on a copy of the caller's memory like after `fork`). The child gets `SIGCHLD`
/// as exit signal.
///
/// Refused with `EBUSY` unless the caller has exactly one thread: only then may the child go
/// on running ordinary code (allocating, taking locks) safely.
pub fn fork_into_namespaces(namespaces: Namespaces) -> SysResult<Fork> {
    clone_like_fork(namespaces, 0)
}

/// Like [`fork_into_namespaces`] (which must include a new user namespace), with the new
/// user namespace owned by host uid `owner` rather than by the caller (root).
///
/// The kernel charges a user namespace's per-user limits (its "ucounts": inotify instances
/// and watches, user, mount and network namespaces, and more) at every level up to the
/// initial namespace, where they land on the namespace's owner. Owned by root, every
/// sandbox's would count against root's own (128 inotify instances by default), and one
/// sandbox could exhaust them for the whole host, `hutch serve` and the init system
/// included.
///
/// Only for the clone, the caller's effective uid is `owner`: its capabilities are kept
/// (`SECBIT_NO_SETUID_FIXUP`) and its filesystem uid stays 0 (its real uid), so the child
/// keeps root's access to the host's files until it switches identities itself. The
/// caller gets uid 0 and its secure bits back; the child starts with its secure bits
/// cleared (exiting at once if it cannot), so nothing it runs inherits them.
pub fn fork_into_namespaces_owned_by(namespaces: Namespaces, owner: u32) -> SysResult<Fork> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    let unchanged = u32::MAX as libc::c_long;
    // The caller must be single-threaded (checked by clone_like_fork too, but before
    // anything changes here): this thread's credentials are then the process's.
    single_threaded()?;
    // SAFETY: prctl and the id calls below take integers and touch no memory of ours.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
    if bits < 0 {
        return Err(SysError::call(
            "prctl",
            "PR_GET_SECUREBITS",
            std::io::Error::last_os_error(),
        ));
    }
    let bits = bits as libc::c_ulong;
    let restore = || {
        // SAFETY: as above.
        unsafe {
            libc::syscall(libc::SYS_setresuid, unchanged, 0 as libc::c_long, unchanged);
            libc::prctl(libc::PR_SET_SECUREBITS, bits);
        }
    };
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits | SECBIT_NO_SETUID_FIXUP) } != 0 {
        return Err(SysError::call(
            "prctl",
            "PR_SET_SECUREBITS",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above.
    if unsafe {
        libc::syscall(
            libc::SYS_setresuid,
            unchanged,
            owner as libc::c_long,
            unchanged,
        )
    } != 0
    {
        let err = std::io::Error::last_os_error();
        restore();
        return Err(SysError::call("setresuid", format!("euid {owner}"), err));
    }
    // SAFETY: as above; setfsuid reports no error (checked by reading it back).
    unsafe {
        libc::syscall(libc::SYS_setfsuid, 0 as libc::c_long);
    }
    let fork = clone_like_fork(namespaces, 0);
    match fork {
        Ok(Fork::Child) => {
            // SAFETY: as above. In the new user namespace the child holds every capability
            // (CAP_SETPCAP included), whatever its ids are mapped to.
            if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits) } != 0 {
                crate::process::exit_now(126);
            }
            Ok(Fork::Child)
        }
        other => {
            restore();
            other
        }
    }
}

/// Like [`fork_into_namespaces`], but the child becomes a child of the caller's parent
/// (`CLONE_PARENT`), which can wait for it as for its own; the caller gets its pid.
pub fn fork_sibling_into_namespaces(namespaces: Namespaces) -> SysResult<Fork> {
    clone_like_fork(namespaces, libc::CLONE_PARENT as u64)
}

/// Refuses (`EBUSY`) a caller with more than one thread.
fn single_threaded() -> SysResult<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|e| SysError::path("read_dir", "/proc/self/task", e))?
        .count();
    if threads != 1 {
        return Err(SysError::call(
            "clone",
            format!("{threads} threads"),
            Errno::BUSY,
        ));
    }
    Ok(())
}

fn clone_like_fork(namespaces: Namespaces, extra: u64) -> SysResult<Fork> {
    single_threaded()?;
    let flags = u64::from(namespaces.bits()) | extra | libc::SIGCHLD as u64;
    // SAFETY: a raw clone with a null stack behaves like fork(): the child runs on a copy of
    // our address space. The caller is single-threaded (checked above), so no lock can be
    // held by a thread that does not exist in the child; the other arguments are null.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        -1 => Err(SysError::call(
            "clone",
            format!("{namespaces:?}"),
            std::io::Error::last_os_error(),
        )),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as i32)),
    }
}

/// A new user namespace, owned by the caller, whose uid and gid maps are both `map` (lines
/// of `inside outside count`), held only by the returned descriptor. Unlike the `fork_*`
/// calls it works in a multi-threaded process: the short-lived child that carries the
/// namespace only waits to be killed.
pub fn user_namespace_with_maps(map: &str) -> SysResult<std::os::fd::OwnedFd> {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: a raw clone with a null stack behaves like fork(). The caller may have other
    // threads, so the child makes no call that could take a lock or allocate: it only
    // pauses (async-signal-safe) until the SIGKILL below.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // It holds a copy of every descriptor of the caller (a server's listening socket,
        // say): should the caller die before the SIGKILL below (`kill -9` of the server), it
        // must not live on. SAFETY: prctl and getppid take integers; _exit ends at once.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        loop {
            // SAFETY: pause takes nothing and is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(SysError::call(
            "clone",
            "CLONE_NEWUSER",
            std::io::Error::last_os_error(),
        ));
    }
    let pid = pid as i32;
    let result = (|| {
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{pid}/{f}");
            std::fs::write(&p, map).map_err(|e| SysError::path("write", &p, e))?;
        }
        let p = format!("/proc/{pid}/ns/user");
        std::fs::File::open(&p)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| SysError::path("open", &p, e))
    })();
    let _ = crate::signal::kill(pid, crate::signal::Signal::KILL);
    let _ = crate::process::wait_for(pid);
    result
}

/// Moves the calling thread into the network namespace `ns` (an open `/proc/<pid>/ns/net`).
///
/// Only the calling thread moves: callers use a dedicated thread, or a single-threaded process.
pub fn enter_net_namespace(ns: impl AsFd) -> Result<()> {
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
}

/// The calling thread's network namespace, held open.
pub fn own_net_namespace() -> std::io::Result<std::os::fd::OwnedFd> {
    std::fs::File::open("/proc/thread-self/ns/net").map(std::os::fd::OwnedFd::from)
}

/// Moves the calling thread into a new network namespace (owned by its user namespace).
pub fn unshare_net_namespace() -> Result<()> {
    // SAFETY: only CLONE_NEWNET: no file descriptor table or filesystem state is unshared
    // behind the back of code that holds references into them.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
}

/// Moves the calling thread into the user namespace `ns` (an open `/proc/<pid>/ns/user`),
/// with every capability there. Refused (`EINVAL`) for a multi-threaded process.
pub fn enter_user_namespace(ns: impl AsFd) -> Result<()> {
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::User))
}

/// Binds the working directory onto itself with a mount of the caller's own (a copy made
/// by `open_tree`, attached by `move_mount`) and moves into that new mount. A process that
/// can no longer walk the path to its working directory (the host's parent directories are
/// closed to it) can still make it a root for `pivot_root` this way.
pub fn bind_cwd_onto_itself() -> Result<()> {
    use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
    let tree = open_tree(
        rustix::fs::CWD,
        ".",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )?;
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        ".",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    rustix::process::fchdir(&tree)
}

/// Marks the caller dumpable or not (`PR_SET_DUMPABLE`): who may read its `/proc` files,
/// attach to it, and who owns those files.
pub fn set_dumpable(dumpable: bool) -> Result<()> {
    use rustix::process::DumpableBehavior;
    rustix::process::set_dumpable_behavior(if dumpable {
        DumpableBehavior::Dumpable
    } else {
        DumpableBehavior::NotDumpable
    })
}

/// Moves the caller into a new cgroup namespace rooted at its current cgroup.
pub fn unshare_cgroup_namespace() -> Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe only for CLONE_FILES (a descriptor table no longer
    // shared with other threads); a new cgroup namespace changes nothing any thread relies on.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWCGROUP) }
}

/// Sets the hostname of the caller's UTS namespace.
pub fn set_hostname(name: &[u8]) -> Result<()> {
    rustix::system::sethostname(name)
}

/// `pivot_root(2)`: makes `new_root` the root and puts the old one on `put_old`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    rustix::process::pivot_root(new_root, put_old)
}

/// Changes the caller's working directory.
pub fn chdir(dir: &Path) -> Result<()> {
    rustix::process::chdir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_the_own_network_namespace_succeeds_as_root() {
        if !crate::creds::is_root() {
            return;
        }
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", std::process::id())).unwrap();
        // On a dedicated thread: only it moves.
        std::thread::spawn(move || enter_net_namespace(&ns))
            .join()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn forking_from_a_multi_threaded_process_is_refused() {
        // The test harness runs tests on threads, so this process has more than one.
        let _other = std::thread::spawn(std::thread::park);
        let err = fork_into_namespaces(Namespaces::empty()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::BUSY.raw_os_error()));
    }
}
