//! The build jail of the default templates (`hutch __template-jail`), attacked from inside:
//! a build step's code (a package's script, a wheel's code) tries what host root in a
//! chroot could do — write host-owned files, signal host processes, see them, leave the
//! tree — and the host checks that nothing happened.
//!
//! Needs root (skipped otherwise). The tree is the host's `/usr`, bound read-only into a
//! temporary directory with the usual merged-/usr links.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hutch_sys::mount::flags;

/// Host uid of root inside the jail (`hutch_template::SANDBOX_ID_BASE`).
const JAIL_ROOT_ON_HOST: u32 = 1_000_000;

/// A temporary tree; unmounts and deletes itself, also when a test fails.
struct Tree {
    dir: PathBuf,
}

impl Tree {
    fn new(name: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("hutch-jail-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = Tree { dir };
        for d in ["usr", "proc", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(tree.dir.join(d)).expect("mkdir");
        }
        for l in ["bin", "sbin", "lib", "lib64"] {
            if Path::new("/usr").join(l).exists() {
                std::os::unix::fs::symlink(format!("usr/{l}"), tree.dir.join(l)).expect("symlink");
            }
        }
        let usr = tree.dir.join("usr");
        hutch_sys::mount::mount(
            Some(Path::new("/usr")),
            &usr,
            None,
            flags::BIND | flags::REC,
            None,
        )
        .expect("bind /usr");
        hutch_sys::mount::mount(
            None,
            &usr,
            None,
            flags::BIND | flags::REMOUNT | flags::RDONLY,
            None,
        )
        .expect("read-only /usr");
        // The jail's root owns /tmp, as it owns a built tree.
        std::os::unix::fs::lchown(
            tree.dir.join("tmp"),
            Some(JAIL_ROOT_ON_HOST),
            Some(JAIL_ROOT_ON_HOST),
        )
        .expect("chown tmp");
        tree
    }

    fn run(&self, script: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hutch"))
            .arg("__template-jail")
            .arg(&self.dir)
            .args(["/bin/sh", "-c", script])
            .output()
            .expect("run the jail")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = hutch_sys::mount::detach(&self.dir.join("usr"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a test can run here (saying why not): the jail needs root, and `python` (what
/// the test uses the host's python3 for) needs it in the tree's `/usr`.
fn can_run(python: Option<&str>) -> bool {
    if !hutch_sys::creds::is_root() {
        eprintln!("skipping: the jail needs root");
        return false;
    }
    if let Some(what) = python {
        if !Path::new("/usr/bin/python3").exists() {
            eprintln!("skipping: no python3 for {what}");
            return false;
        }
    }
    true
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_build_step_is_root_only_inside_its_jail() {
    if !can_run(None) {
        return;
    }
    let tree = Tree::new("root");
    let host_file = tree.dir.join("etc/host-owned");
    std::fs::write(&host_file, b"host\n").expect("write");
    let mut victim = Command::new("sleep").arg("300").spawn().expect("sleep");
    let victim_pid = victim.id();

    let out = tree.run(&format!(
        "id -u; \
         echo pwned >> /etc/host-owned && echo wrote-host-file; \
         kill -9 {victim_pid} && echo killed-host-process; \
         ls /proc | grep -qx {victim_pid} && echo sees-host-process; \
         touch /tmp/made; \
         grep -q ' /usr ' /proc/self/mountinfo && echo mounts-ok; \
         exit 7"
    ));
    let stdout = text(&out.stdout);
    let alive = victim.try_wait().expect("try_wait").is_none();
    let _ = victim.kill();
    let _ = victim.wait();

    // The step ran, as root of its namespace, and its exit code came back.
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("0\n"), "{stdout}");
    assert!(stdout.contains("mounts-ok"), "{stdout}");
    // Nothing of the host's was touched or seen.
    assert_eq!(std::fs::read(&host_file).expect("read"), b"host\n");
    assert!(!stdout.contains("wrote-host-file"), "{stdout}");
    assert!(alive, "the host process was killed from the jail");
    assert!(!stdout.contains("killed-host-process"), "{stdout}");
    assert!(!stdout.contains("sees-host-process"), "{stdout}");
    // What root inside makes belongs to the unprivileged host id it maps to.
    let made = std::fs::symlink_metadata(tree.dir.join("tmp/made")).expect("made");
    assert_eq!(
        (made.uid(), made.gid()),
        (JAIL_ROOT_ON_HOST, JAIL_ROOT_ON_HOST)
    );
}

#[test]
fn a_build_step_cannot_leave_the_tree() {
    if !can_run(Some("the chroot escape")) {
        return;
    }
    let tree = Tree::new("escape");
    let marker = format!("hutch-jail-marker-{}", std::process::id());
    let host_marker = std::env::temp_dir().join(&marker);
    std::fs::write(&host_marker, b"x").expect("marker");
    // The classic escape of a chroot: chroot into a subdirectory, walk up past the root
    // with `..`, chroot there. In the jail the old root is gone (pivot_root and detach),
    // so the walk ends at the tree's own root.
    let out = tree.run(&format!(
        "python3 -c '
import os
os.makedirs(\"/tmp/x\", exist_ok=True)
os.chroot(\"/tmp/x\")
for _ in range(64):
    os.chdir(\"..\")
os.chroot(\".\")
print(\"escaped\" if os.path.exists(\"/tmp/{marker}\") else \"contained\", sorted(os.listdir(\"/\")))
'"
    ));
    let _ = std::fs::remove_file(&host_marker);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("contained"), "{stdout}");
}

#[test]
fn a_build_step_runs_under_the_sandboxes_seccomp_filter() {
    if !can_run(Some("the system calls")) {
        return;
    }
    let tree = Tree::new("seccomp");
    // Root of the jail's user namespace holds every capability there: without the filter,
    // each of these works (a mount namespace and a tmpfs of its own, the kernel's crypto
    // sockets, where the kernel has them), and each widens what a package's script can
    // reach of the kernel.
    let out = tree.run(
        "python3 -c '
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
print(\"unshare\", \"ok\" if libc.unshare(0x20000) == 0 else \"refused\")
print(\"mount\", \"ok\" if libc.mount(b\"none\", b\"/tmp\", b\"tmpfs\", 0, None) == 0 else \"refused\")
try:
    socket.socket(38, socket.SOCK_SEQPACKET, 0).close()
    print(\"af_alg ok\")
except OSError:
    print(\"af_alg refused\")
'",
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout,
        "unshare refused\nmount refused\naf_alg refused\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_jail_that_cannot_be_made_says_so() {
    if !can_run(None) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["__template-jail", "/nonexistent/tree", "/bin/true"])
        .output()
        .expect("run the jail");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("/nonexistent/tree"),
        "{}",
        text(&out.stderr)
    );
}
