//! The seccomp allowlist every sandbox process runs under.
//!
//! In the spirit of Docker's default profile: ordinary programs (shells, Python, Node,
//! compilers, Jupyter kernels) run unchanged, while the calls that widen the kernel's attack
//! surface or escape the namespaces are refused with EPERM — new namespaces, mounts,
//! keyrings, BPF, perf, kernel modules, clocks, reboot, userfaultfd, io_uring, socket
//! families and protocols beyond local, IP and netlink, and the terminal ioctls that inject
//! input.
//! `clone3` answers ENOSYS rather than EPERM: its flags live in memory a filter cannot read,
//! and ENOSYS makes glibc fall back to `clone`, whose flags the filter can check.

use hutch_sys::seccomp::{install_filter, Instruction};

use crate::error::{Result, RuntimeError};

#[cfg(test)]
mod bpf;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
mod tree;

/// Syscalls allowed without conditions.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_access,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_chroot,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fork,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_get_mempolicy,
    libc::SYS_get_robust_list,
    libc::SYS_get_thread_area,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    333,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_lstat,
    libc::SYS_madvise,
    libc::SYS_mbind,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_set_mempolicy,
    libc::SYS_set_robust_list,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    // Allowed here; their families and protocols are checked by the filters that follow.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_stat,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
    // clone3 is "allowed" here and answered with ENOSYS by the second filter.
    libc::SYS_clone3,
];

/// `clone` flags that create namespaces: refused.
const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `ioctl(2)` requests refused on every descriptor: pushing bytes into a terminal's input
/// (`TIOCSTI`, which lets a process type commands into a shell that reads the same
/// terminal) and the virtual console's multiplexer (`TIOCLINUX`, which can do the same).
const IOCTLS_REFUSED: &[u64] = &[0x5412, 0x541c];

/// Socket families a sandbox may open: local sockets, IPv4, IPv6, netlink. Everything else
/// (AF_PACKET, AF_VSOCK, AF_ALG, AF_RDS, AF_TIPC, AF_BLUETOOTH, AF_XDP, …) is kernel code no
/// sandboxed program needs, much of it loaded as a module on first use.
const FAMILY_UNIX: u64 = libc::AF_UNIX as u64;
const FAMILY_NETLINK: u64 = libc::AF_NETLINK as u64;
const FAMILIES_IP: &[u64] = &[libc::AF_INET as u64, libc::AF_INET6 as u64];

/// Protocols of IPv4 and IPv6 sockets: the default for the type, ICMP (unprivileged ping),
/// TCP, UDP and ICMPv6. Not SCTP, DCCP, UDP-Lite, MPTCP or raw protocols.
const IP_PROTOCOLS: &[u64] = &[
    0,
    libc::IPPROTO_ICMP as u64,
    libc::IPPROTO_TCP as u64,
    libc::IPPROTO_UDP as u64,
    libc::IPPROTO_ICMPV6 as u64,
];

/// Netlink protocols: routing (`ip`, `getifaddrs`), socket diagnostics (`ss`), audit (sudo
/// and PAM open it and carry on when the kernel refuses their messages, which it does
/// outside the host's namespaces), netfilter (`nft`, `iptables`), device events (udev
/// clients) and generic netlink.
const NETLINK_PROTOCOLS: &[u64] = &[0, 4, 9, 12, 15, 16];

/// `personality(2)` values that are harmless (query, Linux, 32-bit compat, no-ASLR as used
/// by debuggers and `setarch`).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x0002_0000, 0x0004_0000, 0xffff_ffff];

/// The filters, in installation order: one program (see [`tree`]) that refuses what is
/// not allowed with EPERM, answers `clone3` with ENOSYS, socket families other than
/// [`FAMILY_UNIX`], [`FAMILIES_IP`] and [`FAMILY_NETLINK`] with EAFNOSUPPORT (the kernel's
/// own answer for a family it lacks, which programs that probe for one expect: sudo and PAM
/// take EPERM from the audit socket for an error) and protocols outside [`IP_PROTOCOLS`]
/// and [`NETLINK_PROTOCOLS`] with EPROTONOSUPPORT, as a kernel without them would.
pub fn programs() -> Result<Vec<Vec<Instruction>>> {
    Ok(vec![policy()?])
}

// Checked by the `clone` filter on the argument's low 32 bits only.
const _: () = assert!(NS_FLAGS >> 32 == 0);

fn policy() -> Result<Vec<Instruction>> {
    use tree::{arg_hi, arg_lo, ret_errno, Asm, Check, Leaf, To, RET_ALLOW};
    let eperm = ret_errno(libc::EPERM);
    let no_family = ret_errno(libc::EAFNOSUPPORT);
    let no_protocol = ret_errno(libc::EPROTONOSUPPORT);
    let nr = |n: libc::c_long| n as u32;

    // Falling through allows; `deny` answers EPERM.
    let allow_or_deny = |a: &mut Asm, deny: usize| {
        a.ret(RET_ALLOW);
        a.place(deny);
        a.ret(eperm);
    };
    let clone = |a: &mut Asm| {
        let deny = a.label();
        a.load(arg_lo(0));
        a.jset(NS_FLAGS as u32, To::Label(deny), To::Next);
        allow_or_deny(a, deny);
    };
    let personality = |a: &mut Asm| {
        let (deny, ok) = (a.label(), a.label());
        a.load(arg_hi(0));
        a.jeq(0, To::Next, To::Label(deny));
        a.load(arg_lo(0));
        for v in PERSONALITIES {
            a.jeq(*v as u32, To::Label(ok), To::Next);
        }
        a.place(deny);
        a.ret(eperm);
        a.place(ok);
        a.ret(RET_ALLOW);
    };
    let ioctl = |a: &mut Asm| {
        let deny = a.label();
        a.load(arg_lo(1));
        for r in IOCTLS_REFUSED {
            a.jeq(*r as u32, To::Label(deny), To::Next);
        }
        allow_or_deny(a, deny);
    };
    let protocols = |a: &mut Asm, allowed: &[u64], ok: usize| {
        a.load(arg_lo(2));
        for p in allowed {
            a.jeq(*p as u32, To::Label(ok), To::Next);
        }
        a.ret(no_protocol);
    };
    let socket = |a: &mut Asm| {
        let (ok, ip, netlink) = (a.label(), a.label(), a.label());
        a.load(arg_lo(0));
        a.jeq(FAMILY_UNIX as u32, To::Label(ok), To::Next);
        a.jeq(FAMILY_NETLINK as u32, To::Label(netlink), To::Next);
        for f in FAMILIES_IP {
            a.jeq(*f as u32, To::Label(ip), To::Next);
        }
        a.ret(no_family);
        a.place(ip);
        protocols(a, IP_PROTOCOLS, ok);
        a.place(netlink);
        protocols(a, NETLINK_PROTOCOLS, ok);
        a.place(ok);
        a.ret(RET_ALLOW);
    };
    let socketpair = |a: &mut Asm| {
        let ok = a.label();
        a.load(arg_lo(0));
        a.jeq(FAMILY_UNIX as u32, To::Label(ok), To::Next);
        a.ret(no_family);
        a.place(ok);
        a.ret(RET_ALLOW);
    };
    let checked: [(libc::c_long, Check<'_>); 5] = [
        (libc::SYS_clone, &clone),
        (libc::SYS_personality, &personality),
        (libc::SYS_ioctl, &ioctl),
        (libc::SYS_socket, &socket),
        (libc::SYS_socketpair, &socketpair),
    ];
    let mut leaves: Vec<(u32, Leaf)> = ALLOWED
        .iter()
        .filter(|n| **n != libc::SYS_clone3 && !checked.iter().any(|(c, _)| c == *n))
        .map(|n| (nr(*n), Leaf::Ret(RET_ALLOW)))
        .collect();
    leaves.push((nr(libc::SYS_clone3), Leaf::Ret(ret_errno(libc::ENOSYS))));
    leaves.extend(
        checked
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (nr(*n), Leaf::Check(i))),
    );
    let emitters: Vec<Check<'_>> = checked.iter().map(|(_, e)| *e).collect();
    tree::compile(&leaves, eperm, &emitters).map_err(RuntimeError::Seccomp)
}

/// Installs already compiled filters on the calling thread (and so its future children).
/// Compile before forking: this only runs syscalls.
///
/// Unlike `seccompiler::apply_filter`, this does not set `no_new_privs` (the caller decides,
/// see `SpawnRequest::no_new_privs`): without it the kernel requires CAP_SYS_ADMIN in the
/// caller's user namespace, which the sandbox's init holds until it execs the agent. Leaving
/// `no_new_privs` off is what lets Debian's setuid `sudo` work inside (docs/design.md).
pub fn install(programs: &[Vec<Instruction>]) -> Result<()> {
    for p in programs {
        install_filter(p)
            .map_err(|e| RuntimeError::Seccomp(format!("seccomp(SECCOMP_SET_MODE_FILTER): {e}")))?;
    }
    Ok(())
}
