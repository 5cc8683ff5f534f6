//! The spawn helper's pure pieces: id maps, environment entries, flag translation and the
//! request/response it exchanges with the server.

use std::net::Ipv4Addr;

use super::*;
use crate::mounts::plan::MountFlags;

#[test]
fn id_map_maps_root_inside_to_the_base_outside() {
    assert_eq!(id_map_line(100_000, 65_536), "0 100000 65536\n");
}

#[test]
fn env_entries_are_name_equals_value() {
    assert_eq!(env_entry("HUTCH_TOKEN", "a=b"), "HUTCH_TOKEN=a=b");
}

#[test]
fn plan_flags_translate_to_the_kernel_mount_flags() {
    assert_eq!(MountFlags::NONE.bits(), 0);
    assert_eq!(
        (MountFlags::BIND | MountFlags::REC).bits(),
        libc::MS_BIND | libc::MS_REC
    );
    assert_eq!(
        (MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RDONLY).bits(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY
    );
    assert_eq!(
        (MountFlags::REC | MountFlags::PRIVATE).bits(),
        libc::MS_REC | libc::MS_PRIVATE
    );
}

#[test]
fn mount_plan_steps_run_in_a_plain_directory_except_mounts() {
    // Directories, files and links are ordinary file operations: check them on a temp dir.
    let tmp = crate::testutil::TempDir::new("spawn-steps");
    let root = tmp.path();
    run_steps(&[
        Step::Mkdir(root.join("a/b")),
        Step::Touch(root.join("a/b/f")),
        Step::Symlink {
            link: root.join("a/l"),
            to: PathBuf::from("b/f"),
        },
        Step::MaskIfPresent(root.join("absent")),
        Step::ReadOnlyIfPresent(root.join("absent")),
    ])
    .expect("steps");
    assert!(root.join("a/b/f").is_file());
    assert_eq!(
        fs::read_link(root.join("a/l")).expect("link"),
        PathBuf::from("b/f")
    );
}

#[test]
fn touch_leaves_an_existing_file_alone() {
    let tmp = crate::testutil::TempDir::new("spawn-touch");
    let f = tmp.path().join("agent");
    fs::write(&f, b"binary").expect("write");
    run_steps(&[Step::Touch(f.clone())]).expect("touch");
    assert_eq!(fs::read(&f).expect("read"), b"binary");
}

#[test]
fn a_failing_step_reports_what_it_did_and_stops() {
    let tmp = crate::testutil::TempDir::new("spawn-fail");
    let link = tmp.path().join("l");
    fs::write(&link, b"").expect("write");
    let err = run_steps(&[
        Step::Symlink {
            link: link.clone(),
            to: PathBuf::from("x"),
        },
        Step::Mkdir(tmp.path().join("never")),
    ])
    .unwrap_err();
    assert!(
        err.starts_with(&format!("symlink {}: ", link.display())),
        "{err}"
    );
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn spawn_request_round_trips_as_json_with_stable_field_names() {
    let req = SpawnRequest {
        id: "abc".into(),
        rootfs: PathBuf::from("/s/abc/rootfs"),
        agent_bin: PathBuf::from("/usr/lib/hutch/hutch-agent"),
        agent_env: vec![("K".into(), "V".into())],
        id_base: 100_000,
        id_count: 65_536,
        cgroup_procs: vec![PathBuf::from("/cg/hutch/abc/cgroup.procs")],
        cgroup_tasks: vec![PathBuf::from("/cg/memory/hutch/abc/tasks")],
        net: SandboxNet {
            slot: 1,
            host_if: "hv1".into(),
            peer_if: "hp1".into(),
            host_ip: Ipv4Addr::new(10, 201, 0, 5),
            sandbox_ip: Ipv4Addr::new(10, 201, 0, 6),
        },
        seccomp: true,
        no_new_privs: false,
        log_file: None,
        work_cgroup: None,
        parent_userns: None,
        nested_root_id: 1,
        gvisor: None,
    };
    let json = serde_json::to_value(&req).expect("serialize");
    for key in [
        "id",
        "rootfs",
        "agent_bin",
        "agent_env",
        "id_base",
        "id_count",
        "cgroup_procs",
        "cgroup_tasks",
        "net",
        "seccomp",
        "no_new_privs",
        "log_file",
        "work_cgroup",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let back: SpawnRequest = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back.net, req.net);
    assert_eq!(back.agent_env, req.agent_env);
}

#[test]
fn spawn_response_error_parses_without_pid() {
    let resp: SpawnResponse =
        serde_json::from_str(r#"{"pid":null,"start_time":null,"error":"mount /proc: EPERM"}"#)
            .expect("parse");
    assert_eq!(resp.pid, None);
    assert_eq!(resp.error.as_deref(), Some("mount /proc: EPERM"));
}

#[test]
fn long_lived_answers_fit_one_atomic_pipe_write() {
    let ok = SpawnResponse {
        pid: Some(42),
        start_time: Some(7),
        error: None,
        timings: vec![("clone".into(), 500)],
        ready: true,
    };
    let line = answer_line(3, ok);
    assert!(line.ends_with(b"\n"));
    let back: ServeResponse = serde_json::from_slice(&line).expect("json line");
    assert_eq!(
        (back.id, back.resp.pid, back.resp.start_time),
        (3, Some(42), Some(7))
    );
    assert_eq!(back.resp.timings.len(), 1);
    assert!(back.resp.ready);

    let huge = SpawnResponse {
        pid: None,
        start_time: None,
        error: Some("é".repeat(5000)),
        timings: vec![("clone".into(), 500); 100],
        ready: false,
    };
    let line = answer_line(9, huge);
    assert!(line.len() <= 4000, "{} bytes", line.len());
    let back: ServeResponse = serde_json::from_slice(&line).expect("json line");
    assert_eq!(back.id, 9);
    let error = back.resp.error.expect("error kept");
    assert!(
        error.starts_with("éé") && error.ends_with(" [...]"),
        "{error}"
    );
}

#[test]
fn kept_networks_beyond_the_limit_lose_the_least_recently_used() {
    let entries = [(7u32, 5u64), (3, 2), (9, 8)];
    assert_eq!(least_recently_used(entries.into_iter(), 3), None);
    assert_eq!(least_recently_used(entries.into_iter(), 2), Some(3));
    assert_eq!(least_recently_used([(1u32, 1u64)].into_iter(), 0), Some(1));
}

#[test]
fn a_log_pipe_whose_reader_is_gone_fails_the_spawn_at_once_instead_of_hanging() {
    // The server made the FIFO and was killed before the helper opened it: nobody reads.
    let tmp = crate::testutil::TempDir::new("spawn-log-pipe");
    let fifo = tmp.path().join("agent.log.fifo");
    hutch_sys::fs::mkfifo(&fifo, 0o600).expect("mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Stdio::open(Some(&path)).is_err());
    });
    let failed = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("opening a log pipe without a reader hung");
    assert!(failed, "a log pipe without a reader was opened");

    // With its reader there, the child's output is an ordinary blocking pipe end.
    let reader = hutch_sys::fs::open_fifo(&fifo, false).expect("reader");
    let stdio = Stdio::open(Some(&fifo)).expect("open with a reader");
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(stdio.stdout.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0, "flags {flags:#o}");
    (&stdio.stdout).write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    assert_eq!(hutch_sys::fd::read(&reader, &mut byte).expect("read"), 1);
}
