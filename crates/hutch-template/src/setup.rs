//! Turning a fresh debootstrap tree into a sandbox image: the `user`
//! account, sudo, recipe post-install steps, cleanup and the files the
//! runtime expects.

mod host_cas;
mod jailed;
mod tree;

use std::path::Path;

use crate::progress::DebootstrapTracker;
use crate::{debootstrap, mounts};
use crate::{JailHelper, Progress, Recipe, TemplateError, SANDBOX_ID_BASE};
use host_cas::{trust_host_cas, untrust_host_cas, HOST_LOCAL_CAS};
use jailed::{Jailed, StepMounts};
use tree::{clear_dir_contents, ensure_empty_dir, set_mode, write_tree_file};

/// uid and gid of the unprivileged account every sandbox runs code as.
pub const USER_ID: u32 = 1000;

/// Name of that account (and of its primary group).
pub const USER_NAME: &str = "user";

/// Directory inside the rootfs that belongs to hutch.
pub const HUTCH_DIR: &str = ".hutch";

const HOSTS: &str = "\
127.0.0.1\tlocalhost
127.0.1.1\tsandbox
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// Fixed steps of [`configure`], excluding the recipe's post-install ones.
const FIXED_STEPS: u64 = 7;

/// debootstrap's second stage, in the build jail: unpacks and configures every package the
/// first stage put into the tree (already re-owned for the sandbox range), running their
/// maintainer scripts as the jail's root. Its lines go on through `tracker`.
pub(crate) fn second_stage(
    root: &Path,
    recipe: &Recipe,
    helper: &JailHelper,
    tracker: &mut DebootstrapTracker,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), TemplateError> {
    mounts::unmount_all_under(root)?;
    // The first stage made device nodes as the host's root; the jail's /dev replaces them.
    ensure_empty_dir(root, "dev")?;
    // Later steps download; the tree resolves names as the host does until `configure`
    // empties the file at the end.
    if let Ok(host) = std::fs::read("/etc/resolv.conf") {
        write_tree_file(root, "etc/resolv.conf", &host, 0o644)?;
    }
    let guard = StepMounts::mount(root)?;
    let jail = Jailed {
        root,
        helper,
        template: &recipe.name,
    };
    // `container=lxc` makes debootstrap skip its test `mknod` (refused in a user namespace;
    // the jail's /dev has the nodes) and leave /dev alone. English messages for the tracker.
    let finished = jail.run_lines(
        &["/debootstrap/debootstrap", "--second-stage"],
        &[("container", "lxc"), ("LC_ALL", "C"), ("LANG", "C")],
        &mut |line| {
            for p in tracker.on_line(line) {
                progress(p);
            }
        },
    );
    let unmounted = guard.unmount();
    debootstrap::check(&finished?, recipe, root)?;
    unmounted
}

/// Runs every customisation step on the debootstrapped tree at `root`, already
/// re-owned for the sandbox user namespace: commands run in the build jail
/// (`helper`) as its root, which is the range's first id on the host.
///
/// On return (success or error) nothing is mounted below `root` any more,
/// or an error says what is.
pub(crate) fn configure(
    root: &Path,
    recipe: &Recipe,
    helper: &JailHelper,
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

    report(step, "preparing /dev for the build steps".into(), progress);
    // debootstrap normally unmounts its own mounts, but not if it was killed.
    mounts::unmount_all_under(root)?;
    for dir in ["proc", "sys", "dev"] {
        ensure_empty_dir(root, dir)?;
    }
    let guard = StepMounts::mount(root)?;
    let jail = Jailed {
        root,
        helper,
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
        jail.run(
            &["groupadd", "--gid", &id, USER_NAME],
            progress,
            step,
            total,
        )?;
        jail.run(
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
        // visudo (in the jail) wants it owned by root there.
        let sudoers = root.join("etc/sudoers.d/user");
        std::os::unix::fs::lchown(&sudoers, Some(SANDBOX_ID_BASE), Some(SANDBOX_ID_BASE))
            .map_err(TemplateError::io("could not change owner of", &sudoers))?;
        // A syntax error in sudoers.d disables sudo entirely; catch it here.
        jail.run(
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
                &jail,
                progress,
                step,
                total,
            )?
        };
        for cmd in &recipe.post_install {
            report(step, format!("running `{cmd}`"), progress);
            jail.run(&["/bin/sh", "-ec", cmd], progress, step, total)?;
            step += 1;
        }
        if host_cas > 0 {
            untrust_host_cas(root, &jail, progress, step, total)?;
        }

        report(
            step,
            "removing apt caches and package lists".into(),
            progress,
        );
        jail.run(&["apt-get", "clean"], progress, step, total)?;
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
