//! Facts about host processes: identity (pid + start time survives pid reuse), liveness,
//! reaping.

use std::fs;

pub use hutch_sys::signal::Signal;

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// None if there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The fields of a `/proc/<pid>/stat` line after the command name, which may itself
/// contain spaces and parentheses: they start after the last ')'.
fn after_comm(stat: &str) -> Option<&str> {
    stat.get(stat.rfind(')')? + 2..)
}

/// Field 22 (start time) of a `/proc/<pid>/stat` line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    after_comm(stat)?.split(' ').nth(19)?.parse().ok()
}

/// Field 3 (state letter) of a `/proc/<pid>/stat` line.
pub fn parse_state(stat: &str) -> Option<char> {
    after_comm(stat)?.chars().next()
}

/// The state letter of `pid` (field 3): 'Z' for a zombie.
pub fn state(pid: i32) -> Option<char> {
    parse_state(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True when `pid` is the process that started at `start` and has not exited.
pub fn is_alive(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start) && state(pid) != Some('Z')
}

/// Whether the open file `fd` is on a mount of the mount namespace process `pid` is in: the
/// descriptor's mount id (`/proc/self/fdinfo`) is one of those in `/proc/<pid>/mountinfo`.
/// A descriptor a sandbox's process holds on a host file (opened before it entered its own
/// root) fails this; everything of the sandbox's own filesystem passes.
pub fn fd_is_in_mounts_of(fd: &impl std::os::fd::AsRawFd, pid: i32) -> bool {
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
    let Some(id) = fdinfo.ok().as_deref().and_then(parse_fdinfo_mount_id) else {
        return false;
    };
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .is_ok_and(|text| crate::mountinfo::mount_ids(&text).any(|m| m == id))
}

/// The `mnt_id:` line of a `/proc/<pid>/fdinfo/<fd>` text.
pub fn parse_fdinfo_mount_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()
}

/// What `waitpid(pid, WNOHANG)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// It was our child and has now been reaped.
    Reaped,
    /// It is our child and has not finished exiting (a multi-threaded leader stays a
    /// zombie that cannot be reaped until its last thread is gone).
    Running,
    /// It is not our child (adopted after a server restart): its parent reaps it.
    NotOurs,
}

/// Reaps `pid` if it is our exited child.
pub fn try_reap(pid: i32) -> Reap {
    match hutch_sys::process::try_reap(pid) {
        Ok(None) => Reap::Running,
        Ok(Some(_)) => Reap::Reaped,
        Err(_) => Reap::NotOurs,
    }
}

/// Sends `sig` to `pid` if it is still the process that started at `start`.
pub fn signal(pid: i32, start: u64, sig: Signal) -> bool {
    if start_time(pid) != Some(start) {
        return false;
    }
    hutch_sys::signal::kill(pid, sig).is_ok()
}

/// Makes the calling process a child subreaper: sandbox init processes, orphaned when
/// their short-lived spawn helper exits, become our children so we can reap them.
pub fn become_subreaper() {
    if let Err(e) = hutch_sys::process::set_child_subreaper() {
        // Sandboxes still start; their inits are then reaped by the host's init instead.
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real stat line whose command name holds spaces and parentheses.
    const STAT: &str = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 1201 0 0 0 7 3 0 0 20 0 1 0 987654 15138816 2301 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        assert_eq!(parse_start_time(STAT), Some(987_654));
    }

    #[test]
    fn state_is_the_letter_after_the_name() {
        assert_eq!(parse_state(STAT), Some('S'));
        assert_eq!(parse_state("1 (init) Z 0"), Some('Z'));
    }

    #[test]
    fn truncated_stat_lines_give_nothing() {
        assert_eq!(parse_start_time("1 (init) S 0 1"), None);
        assert_eq!(parse_state("1 (init)"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn fdinfo_names_the_mount() {
        let text = "pos:\t0\nflags:\t02100000\nmnt_id:\t1234\nino:\t77\n";
        assert_eq!(parse_fdinfo_mount_id(text), Some(1234));
        assert_eq!(parse_fdinfo_mount_id("pos:\t0\n"), None);
    }

    #[test]
    fn a_file_is_in_its_own_process_mounts_and_not_in_those_of_another_namespace() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(fd_is_in_mounts_of(&f, std::process::id() as i32));
        assert!(!fd_is_in_mounts_of(&f, i32::MAX));
    }

    #[test]
    fn this_process_is_alive_with_its_own_start_time() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("own start time");
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
    }
}
