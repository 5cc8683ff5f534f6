//! The `code-interpreter-v1` template: `base` plus the Jupyter kernels that
//! E2B's code interpreter offers (python3, bash, JavaScript/TypeScript, R,
//! Java) and hutch's IPython extension. `docs/kernels.md` says what each kernel
//! is, why, and how to start it.
//!
//! Everything comes from Debian's archive (signed; at whatever bookworm
//! serves), PyPI and npm at pinned versions, each file from PyPI and npm
//! checked against a pinned SHA (python-lock.txt, made by
//! `scripts/pin-python.py`), so the recipe's content — and with it the cache
//! key — changes whenever what it installs does. The files it
//! needs (kernel specs, the extension, pins) are written into the tree by a
//! post-install step that carries them, which also puts them into the key.

use super::Recipe;

/// Template name as E2B clients ask for it.
pub(crate) const NAME: &str = "code-interpreter-v1";

/// Ends every here-document of [`write_files_step`]; no file may contain
/// it as a line of its own (a unit test checks).
const HEREDOC_END: &str = "HUTCH_FILE_END";

/// Files written into the tree before the install steps run:
/// (absolute path, mode, contents).
const FILES: &[(&str, u32, &str)] = &[
    (
        "/opt/hutch/python-lock.txt",
        0o644,
        include_str!("../../assets/code-interpreter/python-lock.txt"),
    ),
    // hutch's Python modules, moved into the environment's site-packages
    // once it exists.
    (
        "/opt/hutch/build/hutch_kernel_ext.py",
        0o644,
        include_str!("../../../../python-kernel-ext/hutch_kernel_ext.py"),
    ),
    (
        "/opt/hutch/build/hutch_bash_kernel.py",
        0o644,
        include_str!("../../../../python-kernel-ext/hutch_bash_kernel.py"),
    ),
    // Run once by the java step to make the java kernel's class-data archive.
    (
        "/opt/hutch/build/java_cds.py",
        0o644,
        include_str!("../../assets/code-interpreter/java_cds.py"),
    ),
    // IPython reads <sys.prefix>/etc/ipython/ for every kernel of the
    // environment, whoever runs it.
    (
        "/opt/hutch/python/etc/ipython/ipython_kernel_config.py",
        0o644,
        include_str!("../../assets/code-interpreter/ipython_kernel_config.py"),
    ),
    (
        "/etc/profile.d/hutch-python.sh",
        0o644,
        include_str!("../../assets/code-interpreter/profile.sh"),
    ),
    (
        "/usr/local/share/jupyter/kernels/python3/kernel.json",
        0o644,
        include_str!("../../assets/code-interpreter/kernels/python3/kernel.json"),
    ),
    (
        "/usr/local/share/jupyter/kernels/bash/kernel.json",
        0o644,
        include_str!("../../assets/code-interpreter/kernels/bash/kernel.json"),
    ),
    (
        "/usr/local/share/jupyter/kernels/deno/kernel.json",
        0o644,
        include_str!("../../assets/code-interpreter/kernels/deno/kernel.json"),
    ),
    (
        "/usr/local/share/jupyter/kernels/r/kernel.json",
        0o644,
        include_str!("../../assets/code-interpreter/kernels/r/kernel.json"),
    ),
    (
        "/usr/local/share/jupyter/kernels/java/kernel.json",
        0o644,
        include_str!("../../assets/code-interpreter/kernels/java/kernel.json"),
    ),
];

/// The install steps, in order, each one `post_install` command. The files
/// step goes between the first and the second.
const STEP_DEBIAN: &str = include_str!("../../assets/code-interpreter/steps/10-debian.sh");
const STEPS_AFTER_FILES: &[&str] = &[
    include_str!("../../assets/code-interpreter/steps/30-python.sh"),
    include_str!("../../assets/code-interpreter/steps/40-deno.sh"),
    include_str!("../../assets/code-interpreter/steps/50-java.sh"),
    include_str!("../../assets/code-interpreter/steps/55-java-cds.sh"),
    include_str!("../../assets/code-interpreter/steps/60-user.sh"),
    include_str!("../../assets/code-interpreter/steps/90-check.sh"),
];

/// `base` with the code interpreter's kernels added by post-install steps.
pub(crate) fn recipe(base: &Recipe) -> Recipe {
    let mut post_install = base.post_install.clone();
    post_install.push(STEP_DEBIAN.to_string());
    post_install.push(write_files_step(FILES));
    post_install.extend(STEPS_AFTER_FILES.iter().map(|s| s.to_string()));
    Recipe {
        name: NAME.to_string(),
        post_install,
        ..base.clone()
    }
}

/// One shell command that writes `files` with here-documents.
fn write_files_step(files: &[(&str, u32, &str)]) -> String {
    let mut cmd = String::from("# Kernel specs, configuration and pins of the code interpreter.\n");
    for (path, mode, contents) in files {
        let dir = path.rsplit_once('/').map_or("/", |(d, _)| d);
        cmd.push_str(&format!("mkdir -p {dir}\ncat > {path} <<'{HEREDOC_END}'\n"));
        cmd.push_str(contents);
        if !contents.ends_with('\n') {
            cmd.push('\n');
        }
        cmd.push_str(&format!("{HEREDOC_END}\nchmod {mode:o} {path}\n"));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the kernels' specs go: the agent looks for `<name>/kernel.json` here.
    const KERNELS_DIR: &str = "/usr/local/share/jupyter/kernels";

    /// The kernels this template provides, by kernel-spec name.
    const KERNELS: &[&str] = &["python3", "bash", "deno", "r", "java"];

    #[test]
    fn files_are_safe_to_embed_in_here_documents() {
        for (path, _, contents) in FILES {
            assert!(
                path.starts_with('/')
                    && path
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
                "{path} must be an absolute path the shell needs no quotes for"
            );
            assert!(
                contents.lines().all(|l| l != HEREDOC_END),
                "{path} contains the here-document end marker"
            );
        }
    }

    #[test]
    fn every_kernel_has_a_valid_spec_with_absolute_argv() {
        for kernel in KERNELS {
            let path = format!("{KERNELS_DIR}/{kernel}/kernel.json");
            let (_, _, text) = FILES
                .iter()
                .find(|(p, _, _)| *p == path)
                .unwrap_or_else(|| panic!("no file for {path}"));
            let spec: serde_json::Value = serde_json::from_str(text).expect("kernel.json is JSON");
            let argv: Vec<&str> = spec["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .map(|a| a.as_str().expect("argv strings"))
                .collect();
            assert!(argv[0].starts_with('/'), "{kernel}: {argv:?}");
            assert!(argv.contains(&"{connection_file}"), "{kernel}: {argv:?}");
            assert!(spec["display_name"].is_string() && spec["language"].is_string());
        }
    }

    #[test]
    fn python_packages_are_pinned_by_version_and_hash() {
        let lock = include_str!("../../assets/code-interpreter/python-lock.txt");
        let mut names = Vec::new();
        for line in lock.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let spec = words.next().expect("a requirement");
            let (name, version) = spec
                .split_once("==")
                .unwrap_or_else(|| panic!("{line:?} is not pinned with =="));
            assert!(!name.is_empty() && !version.is_empty(), "{line:?}");
            let hashes: Vec<&str> = words.collect();
            assert!(!hashes.is_empty(), "{line:?} has no hash");
            for h in hashes {
                let hex = h
                    .strip_prefix("--hash=sha256:")
                    .unwrap_or_else(|| panic!("{line:?}: {h:?} is not a SHA-256"));
                assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            names.push(name.to_ascii_lowercase().replace('_', "-"));
        }
        // Every package asked for is in the lock (pip itself first of all).
        let wanted = include_str!("../../assets/code-interpreter/python-requirements.txt");
        for line in wanted.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split("==").next().expect("name");
            let name = name.to_ascii_lowercase().replace('_', "-");
            assert!(names.contains(&name), "{name} is asked for but not locked");
        }
        assert!(names.iter().any(|n| n == "pip"));
    }

    #[test]
    fn recipe_extends_base() {
        let base = Recipe::new(
            "base",
            "bookworm",
            "http://deb.debian.org/debian",
            &["bash"],
        );
        let ci = recipe(&base);
        assert_eq!(ci.name, NAME);
        assert_eq!(ci.packages, base.packages);
        assert_eq!(ci.post_install.len(), 2 + STEPS_AFTER_FILES.len());
        assert_ne!(ci.key(), base.key());
        let files = &ci.post_install[1];
        assert!(files.contains("cat > /usr/local/share/jupyter/kernels/java/kernel.json <<'"));
        assert!(files.contains("def load_ipython_extension"));
    }
}
