//! The compiled seccomp filters, run in a BPF interpreter against synthetic calls.

use std::collections::BTreeSet;

use super::bpf::{verdict, SeccompData, Verdict, AUDIT_ARCH_I386};
use super::*;

const EPERM: Verdict = Verdict::Errno(libc::EPERM as u32);
const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS as u32);

fn call(nr: i64, args: &[u64]) -> Verdict {
    let programs = programs().expect("filters compile");
    verdict(&programs, &SeccompData::x86_64(nr, args))
}

/// glibc's `pthread_create` flags.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// glibc's `fork()` flags.
const FORK_FLAGS: u64 =
    (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;

#[test]
fn the_policy_is_one_program_shorter_than_the_four_a_linear_search_takes() {
    let programs = programs().expect("compile");
    assert_eq!(programs.len(), 1);
    let linear: usize = super::reference::programs()
        .expect("reference compiles")
        .iter()
        .map(Vec::len)
        .sum();
    assert!(
        programs[0].len() <= 4096,
        "{} instructions",
        programs[0].len()
    );
    assert!(
        programs[0].len() < linear,
        "{} against {linear}",
        programs[0].len()
    );
}

/// Argument values that reach every branch of the checks: flag bits, the listed values and
/// their neighbours, and the same with upper bits set.
fn interesting_args() -> Vec<u64> {
    let mut v: Vec<u64> = vec![0, 1, 2, 3, 5, 7, 8, 10, 16, 17, 33, 41, 132, 255, 256];
    v.extend(PERSONALITIES);
    v.extend(IOCTLS_REFUSED.iter().flat_map(|r| [*r, r + 1, r - 1]));
    v.extend([
        FORK_FLAGS,
        THREAD_FLAGS,
        NS_FLAGS,
        libc::CLONE_NEWNET as u64,
    ]);
    v.extend(
        NETLINK_PROTOCOLS
            .iter()
            .chain(IP_PROTOCOLS)
            .chain(FAMILIES_IP),
    );
    let high: Vec<u64> = v.iter().map(|x| x | 0x1_0000_0000).collect();
    v.extend(high);
    v.extend([u64::MAX, 0xffff_ffff_0000_0000]);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn the_compiled_tree_decides_every_call_as_the_linear_filters_do() {
    let tree = programs().expect("compile");
    let linear = super::reference::programs().expect("reference compiles");
    let checked = [
        libc::SYS_clone,
        libc::SYS_personality,
        libc::SYS_ioctl,
        libc::SYS_socket,
        libc::SYS_socketpair,
    ];
    let args = interesting_args();
    let mut numbers: Vec<i64> = (0..=600).collect();
    numbers.extend([
        0x4000_0000,
        0x4000_0000 | libc::SYS_read,
        0x4000_0000 | libc::SYS_socket,
    ]);
    numbers.extend([i64::from(i32::MAX), -1, 1000, 100_000]);
    let mut compared = 0u64;
    for nr in numbers {
        let mut calls = vec![SeccompData::x86_64(nr, &[])];
        if checked.contains(&nr) {
            calls.clear();
            for a0 in &args {
                for a1 in [0, 0x5412, 0x541c, 0x5413, 0x1_0000_5412] {
                    for a2 in &args {
                        calls.push(SeccompData::x86_64(nr, &[*a0, a1, *a2]));
                    }
                }
            }
        }
        for mut data in calls {
            assert_eq!(
                verdict(&tree, &data),
                verdict(&linear, &data),
                "nr {nr} args {:x?}",
                data.args
            );
            data.arch = AUDIT_ARCH_I386;
            assert_eq!(
                verdict(&tree, &data),
                verdict(&linear, &data),
                "i386 nr {nr}"
            );
            compared += 1;
        }
    }
    assert!(compared > 10_000, "{compared}");
}

#[test]
fn ordinary_program_calls_are_allowed() {
    for nr in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_openat,
        libc::SYS_mmap,
        libc::SYS_execve,
        libc::SYS_futex,
        libc::SYS_epoll_wait,
        libc::SYS_exit_group,
        libc::SYS_ptrace,
        333, // io_pgetevents
    ] {
        assert_eq!(call(nr, &[]), Verdict::Allow, "syscall {nr}");
    }
}

#[test]
fn clone3_answers_enosys_so_libc_falls_back_to_clone() {
    assert_eq!(call(libc::SYS_clone3, &[0, 88]), ENOSYS);
}

#[test]
fn attack_surface_and_escape_calls_are_refused_with_eperm() {
    for (name, nr) in [
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("setns", libc::SYS_setns),
        ("unshare", libc::SYS_unshare),
        ("bpf", libc::SYS_bpf),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("kexec_load", libc::SYS_kexec_load),
        ("reboot", libc::SYS_reboot),
        ("clock_settime", libc::SYS_clock_settime),
        ("settimeofday", libc::SYS_settimeofday),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("fsopen", libc::SYS_fsopen),
        ("move_mount", libc::SYS_move_mount),
        ("swapon", libc::SYS_swapon),
    ] {
        assert_eq!(call(nr, &[]), EPERM, "{name}");
    }
}

#[test]
fn unknown_syscall_numbers_are_refused() {
    assert_eq!(call(1000, &[]), EPERM);
}

#[test]
fn clone_for_threads_and_fork_is_allowed() {
    assert_eq!(call(libc::SYS_clone, &[THREAD_FLAGS]), Verdict::Allow);
    assert_eq!(call(libc::SYS_clone, &[FORK_FLAGS]), Verdict::Allow);
    assert_eq!(
        call(libc::SYS_clone, &[libc::SIGCHLD as u64]),
        Verdict::Allow
    );
}

#[test]
fn clone_with_any_namespace_flag_is_refused() {
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ] {
        assert_eq!(
            call(libc::SYS_clone, &[FORK_FLAGS | flag as u64]),
            EPERM,
            "flag {flag:#x}"
        );
    }
}

#[test]
fn personality_allows_only_the_harmless_values() {
    for ok in [0x0u64, 0x8, 0x0002_0000, 0x0004_0000, 0xffff_ffff] {
        assert_eq!(
            call(libc::SYS_personality, &[ok]),
            Verdict::Allow,
            "{ok:#x}"
        );
    }
    // READ_IMPLIES_EXEC makes every readable mapping executable.
    assert_eq!(call(libc::SYS_personality, &[0x0040_0000]), EPERM);
    // The comparison covers all 64 bits: junk above an allowed value is refused.
    assert_eq!(call(libc::SYS_personality, &[0x1_0000_0008]), EPERM);
}

#[test]
fn calls_from_the_32_bit_abi_kill_the_process() {
    let mut data = SeccompData::x86_64(libc::SYS_read, &[]);
    data.arch = AUDIT_ARCH_I386;
    let programs = programs().expect("compile");
    assert_eq!(verdict(&programs, &data), Verdict::KillProcess);
}

#[test]
fn x32_abi_numbers_are_refused() {
    const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    assert_eq!(call(X32_SYSCALL_BIT | libc::SYS_read, &[]), EPERM);
}

#[test]
fn allowlist_has_no_duplicates_and_no_conditional_or_refused_calls() {
    let unique: BTreeSet<_> = ALLOWED.iter().collect();
    assert_eq!(unique.len(), ALLOWED.len(), "duplicate entries");
    for refused in [
        libc::SYS_clone,
        libc::SYS_personality,
        libc::SYS_ioctl,
        libc::SYS_mount,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_io_uring_setup,
    ] {
        assert!(
            !ALLOWED.contains(&refused),
            "{refused} must not be unconditional"
        );
    }
}

#[test]
fn install_of_no_programs_is_a_no_op() {
    install(&[]).expect("nothing to install");
}

#[test]
fn sockets_of_ordinary_families_and_protocols_are_allowed() {
    let stream = libc::SOCK_STREAM as u64 | libc::SOCK_CLOEXEC as u64;
    let dgram = libc::SOCK_DGRAM as u64;
    for args in [
        [libc::AF_UNIX as u64, stream, 0],
        [libc::AF_INET as u64, stream, 0],
        [libc::AF_INET as u64, stream, libc::IPPROTO_TCP as u64],
        [libc::AF_INET6 as u64, dgram, libc::IPPROTO_UDP as u64],
        [libc::AF_INET as u64, dgram, libc::IPPROTO_ICMP as u64],
        [libc::AF_INET6 as u64, dgram, libc::IPPROTO_ICMPV6 as u64],
        [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0],
        [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 15],
        [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 9],
    ] {
        assert_eq!(call(libc::SYS_socket, &args), Verdict::Allow, "{args:?}");
    }
    assert_eq!(
        call(libc::SYS_socketpair, &[libc::AF_UNIX as u64, stream, 0]),
        Verdict::Allow
    );
}

const EAFNOSUPPORT: Verdict = Verdict::Errno(libc::EAFNOSUPPORT as u32);
const EPROTONOSUPPORT: Verdict = Verdict::Errno(libc::EPROTONOSUPPORT as u32);

#[test]
fn other_socket_families_and_protocols_are_refused() {
    let stream = libc::SOCK_STREAM as u64;
    for args in [
        [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0x0300],
        [libc::AF_VSOCK as u64, stream, 0],
        [libc::AF_ALG as u64, libc::SOCK_SEQPACKET as u64, 0],
        [libc::AF_RDS as u64, libc::SOCK_SEQPACKET as u64, 0],
        [libc::AF_TIPC as u64, libc::SOCK_RDM as u64, 0],
        [libc::AF_BLUETOOTH as u64, stream, 0],
        // Upper bits the kernel ignores do not smuggle a family past the filter.
        [(1 << 32) | libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0],
    ] {
        assert_eq!(call(libc::SYS_socket, &args), EAFNOSUPPORT, "{args:?}");
    }
    for args in [
        [libc::AF_INET as u64, stream, libc::IPPROTO_SCTP as u64],
        [
            libc::AF_INET6 as u64,
            libc::SOCK_DCCP as u64,
            libc::IPPROTO_DCCP as u64,
        ],
        [
            libc::AF_INET as u64,
            libc::SOCK_RAW as u64,
            libc::IPPROTO_RAW as u64,
        ],
        [libc::AF_INET as u64, stream, libc::IPPROTO_MPTCP as u64],
        [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 2],
        [
            libc::AF_INET as u64,
            stream,
            (1 << 32) | libc::IPPROTO_SCTP as u64,
        ],
    ] {
        assert_eq!(call(libc::SYS_socket, &args), EPROTONOSUPPORT, "{args:?}");
    }
    assert_eq!(
        call(libc::SYS_socketpair, &[libc::AF_INET as u64, stream, 0]),
        EAFNOSUPPORT
    );
}

#[test]
fn terminal_input_injection_is_refused_and_other_ioctls_are_not() {
    assert_eq!(call(libc::SYS_ioctl, &[0, 0x5412, 0]), EPERM);
    assert_eq!(call(libc::SYS_ioctl, &[0, 0x541c, 0]), EPERM);
    // The kernel reads the request as 32 bits: upper bits do not get TIOCSTI through.
    assert_eq!(call(libc::SYS_ioctl, &[0, (7 << 32) | 0x5412, 0]), EPERM);
    for request in [
        libc::TIOCGWINSZ,
        libc::TIOCSWINSZ,
        libc::FIONREAD,
        libc::TCGETS,
    ] {
        assert_eq!(
            call(libc::SYS_ioctl, &[1, request, 0]),
            Verdict::Allow,
            "{request:#x}"
        );
    }
}
