//! End-to-end build of the `code-interpreter-v1` template (debootstrap, then
//! apt, pip and npm in the build jail), then every kernel started inside the
//! built tree the way a sandbox runs it: as `user` in a user namespace with
//! the sandboxes' id mapping, over a throwaway overlay.
//!
//! Needs root, util-linux's `unshare`, a release build of `hutch` (its
//! build jail; or `HUTCH_BIN`), and network access to Debian's archive, PyPI
//! and npm; takes several minutes cold, hence `#[ignore]`:
//!
//! ```text
//! HUTCH_TEST_TEMPLATE_CACHE=/var/cache/hutch-test-template \
//!     cargo test -p hutch-template --test code_interpreter -- --ignored --nocapture
//! ```
//!
//! With `HUTCH_TEST_TEMPLATE_CACHE` set the cache is kept (re-runs then only
//! run the kernel checks); otherwise a temporary cache is used and deleted.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use hutch_template::{default_recipes, ensure_built, Progress, SANDBOX_ID_BASE, USER_ID};

const KERNELS: &[&str] = &["python3", "bash", "deno", "r", "java"];

mod common;
use common::{jail, meta, mounts_below};

/// `inside` (an absolute path in the tree) resolved within `root`, following
/// symlinks as the sandbox would see them.
fn resolve_in_tree(root: &Path, inside: &str) -> PathBuf {
    // Components still to walk, last one first; `None` stands for the root.
    fn parts(p: &Path) -> Vec<Option<OsString>> {
        p.components()
            .rev()
            .filter_map(|c| match c {
                Component::RootDir => Some(None),
                Component::ParentDir => Some(Some(OsString::from(".."))),
                Component::Normal(n) => Some(Some(n.to_os_string())),
                _ => None,
            })
            .collect()
    }
    let mut resolved = PathBuf::from("/");
    let mut todo = parts(Path::new(inside));
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part {
            None => resolved = PathBuf::from("/"),
            Some(name) if name == ".." => {
                resolved.pop();
            }
            Some(name) => {
                let next = resolved.join(&name);
                let on_host = root.join(next.strip_prefix("/").expect("absolute"));
                match std::fs::read_link(&on_host) {
                    Ok(target) => {
                        hops += 1;
                        assert!(hops < 40, "symlink loop at {inside}");
                        // A relative target resolves against `resolved`.
                        todo.extend(parts(&target));
                    }
                    Err(_) => resolved = next,
                }
            }
        }
    }
    root.join(resolved.strip_prefix("/").expect("absolute"))
}

/// Bytes of regular files under `dir`, hard links counted once.
fn tree_size(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = meta(&p);
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("list") {
                stack.push(e.expect("entry").path());
            }
        } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
            total += m.blocks() * 512;
        }
    }
    total
}

/// Runs `args` inside the tree like a sandbox (see `code_interpreter/sandbox.sh`).
fn in_sandbox(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/code_interpreter/sandbox.sh");
    let mut child = Command::new("/bin/sh")
        .arg(&script)
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sandbox.sh");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
#[ignore = "needs root, unshare and network (Debian, PyPI, npm); takes minutes"]
fn code_interpreter_kernels_start_and_run_as_user() {
    let (cache, keep): (PathBuf, bool) = match std::env::var_os("HUTCH_TEST_TEMPLATE_CACHE") {
        Some(dir) => (PathBuf::from(dir), true),
        None => (
            std::env::temp_dir().join(format!("hutch-template-ci-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&cache).expect("create cache dir");
    let cache = cache.canonicalize().expect("canonical cache dir");
    let recipe = default_recipes()
        .into_iter()
        .find(|r| r.name == "code-interpreter-v1")
        .expect("code-interpreter-v1 recipe");

    // Build, timing each phase and each post-install step (named by its
    // first line, a comment).
    let started = Instant::now();
    let mut marks: Vec<(f64, String)> = Vec::new();
    let mut on_progress = |p: Progress| {
        let label = if p.phase == "configure" && p.message.starts_with("running `") {
            let first = p.message.trim_start_matches("running `").lines().next();
            format!("step: {}", first.unwrap_or_default())
        } else if p.phase == "configure" {
            return;
        } else {
            p.phase.clone()
        };
        if marks.last().map(|(_, l)| l != &label).unwrap_or(true) {
            let now = started.elapsed().as_secs_f64();
            eprintln!("[{now:>6.1}s] {label}");
            marks.push((now, label));
        }
    };
    let built = ensure_built(&cache, &recipe, &jail(), &mut on_progress)
        .expect("build code-interpreter-v1");
    let total = started.elapsed().as_secs_f64();
    if marks.len() > 1 {
        eprintln!("build took {total:.1} s:");
        for (i, (at, label)) in marks.iter().enumerate() {
            let end = marks.get(i + 1).map_or(total, |(t, _)| *t);
            eprintln!("  {:>6.1} s  {label}", end - at);
        }
    }
    let root = &built.rootfs;
    assert!(
        mounts_below(&cache).is_empty(),
        "{:?}",
        mounts_below(&cache)
    );
    eprintln!(
        "tree: {:.0} MiB at {}",
        tree_size(root) as f64 / 1048576.0,
        root.display()
    );

    // What the agent relies on: a spec per kernel, readable by everyone, whose
    // program exists in the tree.
    let user = SANDBOX_ID_BASE + USER_ID;
    for kernel in KERNELS {
        let spec_path = root.join(format!(
            "usr/local/share/jupyter/kernels/{kernel}/kernel.json"
        ));
        assert_eq!(meta(&spec_path).mode() & 0o004, 0o004, "{kernel}: readable");
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&spec_path).expect("read spec"))
                .expect("kernel.json is JSON");
        let argv0 = spec["argv"][0].as_str().expect("argv[0]");
        let program = resolve_in_tree(root, argv0);
        let m = std::fs::metadata(&program)
            .unwrap_or_else(|e| panic!("{kernel}: {argv0} ({}): {e}", program.display()));
        assert!(
            m.is_file() && m.mode() & 0o001 != 0,
            "{kernel}: {argv0} runnable"
        );
    }
    let jar = meta(&root.join("usr/local/share/jupyter/kernels/java/jjava.jar"));
    assert!(jar.len() > 1_000_000 && jar.mode() & 0o004 != 0);
    let cds = meta(&root.join("usr/local/share/jupyter/kernels/java/jjava.jsa"));
    assert!(cds.len() > 1_000_000 && cds.mode() & 0o004 != 0);
    let env = meta(&root.join("opt/hutch/python"));
    assert_eq!(env.uid(), user, "the Python environment belongs to user");
    let site = root.join("opt/hutch/python/lib/python3.11/site-packages");
    assert_eq!(meta(&site).uid(), user);
    assert!(site.join("hutch_kernel_ext.py").is_file());
    assert!(site.join("hutch_bash_kernel.py").is_file());
    assert!(root
        .join("opt/hutch/python/etc/ipython/ipython_kernel_config.py")
        .is_file());
    assert_eq!(meta(&root.join("home/user/.cache/matplotlib")).uid(), user);
    assert!(
        !root
            .join("usr/local/share/ca-certificates/hutch-build-host")
            .exists(),
        "the build host's CA certificates are removed again"
    );

    // Interpreters and tools as user.
    let (ok, out) = in_sandbox(
        root,
        &[
            "/bin/sh",
            "-ec",
            "id -un; \
             python3 -c 'import numpy, pandas, matplotlib, PIL, scipy, seaborn, orjson, e2b_charts, hutch_kernel_ext, sys; print(sys.prefix)'; \
             pip --version; \
             Rscript -e 'library(IRkernel); cat(R.version.string, \"\\n\")'; \
             node -e 'console.log(\"node\", process.version)'; npm --version; \
             deno eval 'import { readFileSync } from \"node:fs\"; console.log(\"deno\", Deno.version.deno, typeof readFileSync)'; \
             java -version 2>&1 | head -1",
        ],
        None,
    );
    eprintln!("{out}");
    assert!(ok, "interpreters in the sandbox");
    assert!(out.starts_with("user\n/opt/hutch/python\n"), "{out}");
    assert!(out.contains("deno 2.9.6 function"), "{out}");

    // Every kernel from its kernel.json, as the agent will start them.
    let check = include_bytes!("code_interpreter/kernels_check.py");
    let (ok, out) = in_sandbox(root, &["/opt/hutch/python/bin/python", "-"], Some(check));
    eprintln!("{out}");
    assert!(ok, "kernels in the sandbox");
    for kernel in KERNELS {
        assert!(out.contains(&format!("kernel {kernel}: ok")), "{out}");
    }

    assert!(
        mounts_below(&cache).is_empty(),
        "{:?}",
        mounts_below(&cache)
    );
    if !keep {
        std::fs::remove_dir_all(&cache).expect("remove temp cache");
    }
}
