//! End-to-end build of the `base` template with real debootstrap
//! (`code_interpreter.rs` builds and checks `code-interpreter-v1`).
//!
//! Needs root, the `debootstrap` package, a release build of `hutch` (its
//! build jail; or `HUTCH_BIN`) and network access to deb.debian.org, and
//! takes a minute or more, hence `#[ignore]`:
//!
//! ```text
//! cargo test -p hutch-template -- --ignored
//! HUTCH_TEST_TEMPLATE_CACHE=/var/cache/hutch-test-template cargo test -p hutch-template -- --ignored
//! ```
//!
//! With `HUTCH_TEST_TEMPLATE_CACHE` set the cache is kept (re-runs are then
//! instant); otherwise a temporary cache is used and deleted afterwards.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use hutch_template::{default_recipes, ensure_built, Progress, SANDBOX_ID_BASE, USER_ID};

mod common;
use common::{jail, meta, mounts_below};

#[test]
#[ignore = "needs root, debootstrap and network; takes minutes"]
fn builds_base() {
    let (cache, keep): (PathBuf, bool) = match std::env::var_os("HUTCH_TEST_TEMPLATE_CACHE") {
        Some(dir) => (PathBuf::from(dir), true),
        None => (
            std::env::temp_dir().join(format!("hutch-template-full-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&cache).expect("create cache dir");
    let cache = cache.canonicalize().expect("canonical cache dir");

    let recipes = default_recipes();
    let started = Instant::now();
    let mut last_phase = String::new();
    let mut reports = 0usize;
    let mut on_progress = |p: Progress| {
        assert!(p.done <= p.total, "{p:?}");
        reports += 1;
        if p.phase != last_phase {
            eprintln!(
                "[{:>6.1}s] {} {}/{} {}",
                started.elapsed().as_secs_f64(),
                p.phase,
                p.done,
                p.total,
                p.message
            );
            last_phase = p.phase.clone();
        }
    };
    let base = ensure_built(&cache, &recipes[0], &jail(), &mut on_progress).expect("build base");
    let build_time = started.elapsed();
    eprintln!(
        "base built in {:.1} s with {reports} progress reports",
        build_time.as_secs_f64()
    );

    let t = Instant::now();
    let again = ensure_built(&cache, &recipes[0], &jail(), &mut |_| {}).expect("base again");
    assert!(
        t.elapsed().as_millis() < 500,
        "a second request must come from the cache"
    );
    assert_eq!(again.rootfs, base.rootfs);

    let root = &base.rootfs;
    let shifted = SANDBOX_ID_BASE;
    let user = SANDBOX_ID_BASE + USER_ID;

    let python = root.join("usr/bin/python3");
    assert!(python.exists(), "python3 installed");
    let m = meta(root);
    assert_eq!((m.uid(), m.gid()), (shifted, shifted), "root dir shifted");

    let home = meta(&root.join("home/user"));
    assert!(home.is_dir());
    assert_eq!(
        (home.uid(), home.gid()),
        (user, user),
        "/home/user owned by user"
    );

    let sudoers = meta(&root.join("etc/sudoers.d/user"));
    assert_eq!(sudoers.mode() & 0o7777, 0o440);
    assert_eq!(sudoers.uid(), shifted);
    let text = std::fs::read_to_string(root.join("etc/sudoers.d/user")).expect("sudoers");
    assert_eq!(text, "user ALL=(ALL:ALL) NOPASSWD: ALL\n");

    let sudo = meta(&root.join("usr/bin/sudo"));
    assert_eq!(sudo.uid(), shifted);
    assert_eq!(sudo.mode() & 0o4000, 0o4000, "sudo keeps its setuid bit");

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd.contains("user:x:1000:1000::/home/user:/bin/bash"),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.ends_with("user")),
        "{group}"
    );

    let tmp = meta(&root.join("tmp"));
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    let agent = meta(&root.join(".hutch/hutch-agent"));
    assert!(agent.is_file());
    assert_eq!((agent.len(), agent.mode() & 0o7777), (0, 0o755));
    assert_eq!(meta(&root.join(".hutch")).mode() & 0o7777, 0o755);

    for d in ["dev", "proc", "sys"] {
        let n = std::fs::read_dir(root.join(d)).expect("list").count();
        assert_eq!(n, 0, "/{d} is empty");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).expect("hostname"),
        "sandbox\n"
    );
    assert_eq!(meta(&root.join("etc/resolv.conf")).len(), 0);
    let lists = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .expect("lists")
        .count();
    assert_eq!(lists, 0, "apt lists removed");

    assert!(
        mounts_below(&cache).is_empty(),
        "{:?}",
        mounts_below(&cache)
    );

    // Every entry, symlinks included, is owned by a shifted id.
    let mut stack = vec![root.clone()];
    let mut count = 0usize;
    while let Some(p) = stack.pop() {
        let m = meta(&p);
        count += 1;
        assert!(
            m.uid() >= shifted && m.gid() >= shifted,
            "unshifted: {}",
            p.display()
        );
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("list") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    eprintln!("{count} entries, all shifted");

    if !keep {
        std::fs::remove_dir_all(&cache).expect("remove temp cache");
    }
}
