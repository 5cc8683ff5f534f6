//! Kernel specs: finding and parsing `kernel.json`, and turning one into a command line.
//!
//! This module never starts a process. The agent is PID 1 inside a sandbox and reaps every
//! child itself, so it takes the [`KernelCommand`] from here and spawns it its own way.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::SpecError;

/// The system-wide Jupyter kernel directories, searched after any configured ones.
pub const SYSTEM_KERNEL_DIRS: [&str; 2] = [
    "/usr/local/share/jupyter/kernels",
    "/usr/share/jupyter/kernels",
];

/// How a kernel wants to be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterruptMode {
    /// Send SIGINT to the kernel process (Jupyter's default).
    #[default]
    Signal,
    /// Send `interrupt_request` on the control channel.
    Message,
}

/// A parsed `kernel.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSpec {
    /// The kernel's name: its directory's name, lowercased (Jupyter names are case-insensitive).
    pub name: String,
    /// The directory holding `kernel.json` (substituted for `{resource_dir}`).
    pub resource_dir: PathBuf,
    /// The command line, with `{connection_file}` still in it.
    pub argv: Vec<String>,
    /// Environment variables to set for the kernel; values may use `${VAR}`.
    pub env: BTreeMap<String, String>,
    /// The language, e.g. `python`.
    pub language: String,
    /// A human-readable name.
    pub display_name: String,
    /// Signal or message.
    pub interrupt_mode: InterruptMode,
    /// Free-form metadata from the spec.
    pub metadata: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSpec {
    argv: Vec<String>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    interrupt_mode: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    metadata: serde_json::Value,
}

/// What to run to start a kernel: the caller spawns it and owns the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCommand {
    /// `argv[0]`; a bare name is looked up in the caller's `PATH`.
    pub program: String,
    /// `argv[1..]`, placeholders substituted.
    pub args: Vec<String>,
    /// The complete environment: the base environment with the spec's `env` on top.
    pub env: Vec<(String, String)>,
    /// How to interrupt the kernel once it runs.
    pub interrupt_mode: InterruptMode,
}

impl KernelSpec {
    /// Reads `dir/kernel.json`; the kernel's name is the directory's name.
    pub fn from_dir(dir: &Path) -> Result<Self, SpecError> {
        let path = dir.join("kernel.json");
        let text = fs::read(&path).map_err(|source| SpecError::Io {
            path: path.clone(),
            source,
        })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        Self::parse(&name, dir, &text)
    }

    /// Parses `kernel.json` bytes for a kernel called `name` living in `dir`.
    pub fn parse(name: &str, dir: &Path, json: &[u8]) -> Result<Self, SpecError> {
        let path = dir.join("kernel.json");
        let raw: RawSpec = serde_json::from_slice(json).map_err(|source| SpecError::Parse {
            path: path.clone(),
            source,
        })?;
        if raw.argv.is_empty() {
            return Err(SpecError::EmptyArgv { path });
        }
        if !raw.argv.iter().any(|a| a.contains("{connection_file}")) {
            return Err(SpecError::NoConnectionFile { path });
        }
        let interrupt_mode = match raw.interrupt_mode.as_deref() {
            None | Some("signal") => InterruptMode::Signal,
            Some("message") => InterruptMode::Message,
            Some(other) => {
                return Err(SpecError::InterruptMode {
                    path,
                    mode: other.to_owned(),
                })
            }
        };
        Ok(KernelSpec {
            name: name.to_owned(),
            resource_dir: dir.to_owned(),
            argv: raw.argv,
            env: raw.env,
            language: raw.language,
            display_name: raw.display_name,
            interrupt_mode,
            metadata: raw.metadata,
        })
    }

    /// The command to start this kernel with `connection_file`, in `base_env` plus the spec's env.
    ///
    /// `{connection_file}` and `{resource_dir}` are substituted in argv; `${VAR}` / `$VAR`
    /// in env values expand from `base_env` (unknown names stay as written, as
    /// jupyter_client's `safe_substitute` leaves them).
    pub fn command(&self, connection_file: &Path, base_env: &[(String, String)]) -> KernelCommand {
        let conn = connection_file.to_string_lossy();
        let res = self.resource_dir.to_string_lossy();
        let mut argv = self.argv.iter().map(|a| {
            a.replace("{connection_file}", &conn)
                .replace("{resource_dir}", &res)
        });
        let program = argv.next().unwrap_or_default();
        let args = argv.collect();

        let mut env: Vec<(String, String)> = base_env.to_vec();
        for (k, v) in &self.env {
            let v = expand_vars(v, base_env);
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k.clone(), v)),
            }
        }
        KernelCommand {
            program,
            args,
            env,
            interrupt_mode: self.interrupt_mode,
        }
    }
}

/// The directories to search, in precedence order: `extra` first, then the system ones.
pub fn kernel_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    extra
        .iter()
        .cloned()
        .chain(SYSTEM_KERNEL_DIRS.iter().map(PathBuf::from))
        .collect()
}

/// Every valid kernel spec under `dirs`; the first directory that has a name wins.
///
/// Unreadable or invalid specs are skipped with a warning, so one broken kernel does not
/// hide the others.
pub fn find_kernel_specs(dirs: &[PathBuf]) -> Vec<KernelSpec> {
    let mut found: Vec<KernelSpec> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("kernel.json").is_file())
            .collect();
        subdirs.sort();
        for sub in subdirs {
            match KernelSpec::from_dir(&sub) {
                Ok(spec) if found.iter().any(|s| s.name == spec.name) => {
                    tracing::debug!(name = %spec.name, dir = %sub.display(), "kernel spec shadowed by an earlier directory");
                }
                Ok(spec) => found.push(spec),
                Err(e) => tracing::warn!(error = %e, "skipping kernel spec"),
            }
        }
    }
    found
}

/// The kernel spec called `name` (case-insensitive) under `dirs`.
pub fn find_kernel_spec(name: &str, dirs: &[PathBuf]) -> Result<KernelSpec, SpecError> {
    let want = name.to_lowercase();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().to_lowercase() == want
                && path.join("kernel.json").is_file()
            {
                return KernelSpec::from_dir(&path);
            }
        }
    }
    Err(SpecError::NotFound {
        name: name.to_owned(),
        searched: dirs.to_vec(),
    })
}

/// Expands `${NAME}`, `$NAME` and `$$` like Python's `string.Template.safe_substitute`.
fn expand_vars(value: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let is_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_cont = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end)
                    if braced[..end].starts_with(is_start)
                        && braced[..end].chars().all(is_cont) =>
                {
                    match lookup(&braced[..end]) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&rest[i..i + end + 3]),
                    }
                    rest = &braced[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else if after.starts_with(is_start) {
            let end = after.find(|c: char| !is_cont(c)).unwrap_or(after.len());
            match lookup(&after[..end]) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 1 + end]),
            }
            rest = &after[end..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPYKERNEL: &str = r#"{
      "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (ipykernel)",
      "language": "python",
      "metadata": {"debugger": true}
    }"#;

    #[test]
    fn parses_ipykernels_spec_with_signal_default() {
        let s =
            KernelSpec::parse("python3", Path::new("/k/python3"), IPYKERNEL.as_bytes()).unwrap();
        assert_eq!(s.language, "python");
        assert_eq!(s.display_name, "Python 3 (ipykernel)");
        assert_eq!(s.interrupt_mode, InterruptMode::Signal);
        assert_eq!(s.metadata["debugger"], true);
    }

    #[test]
    fn command_substitutes_placeholders_and_layers_env() {
        let json = br#"{"argv": ["node", "{resource_dir}/run.js", "--conn={connection_file}"],
          "language": "javascript", "display_name": "JS", "interrupt_mode": "message",
          "env": {"PATH": "/opt/bin:${PATH}", "NEW": "$HOME/x", "LIT": "$$5 ${NOPE} $"}}"#;
        let s = KernelSpec::parse("js", Path::new("/k/js"), json).unwrap();
        let base = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("HOME".to_string(), "/home/user".to_string()),
        ];
        let cmd = s.command(Path::new("/run/c.json"), &base);
        assert_eq!(cmd.program, "node");
        assert_eq!(cmd.args, vec!["/k/js/run.js", "--conn=/run/c.json"]);
        assert_eq!(cmd.interrupt_mode, InterruptMode::Message);
        let get = |k: &str| cmd.env.iter().find(|(ek, _)| ek == k).unwrap().1.clone();
        assert_eq!(get("PATH"), "/opt/bin:/usr/bin");
        assert_eq!(get("NEW"), "/home/user/x");
        assert_eq!(get("LIT"), "$5 ${NOPE} $");
        assert_eq!(get("HOME"), "/home/user");
    }

    #[test]
    fn invalid_specs_are_refused() {
        let d = Path::new("/k/x");
        assert!(matches!(
            KernelSpec::parse("x", d, br#"{"argv": []}"#),
            Err(SpecError::EmptyArgv { .. })
        ));
        assert!(matches!(
            KernelSpec::parse("x", d, br#"{"argv": ["k"]}"#),
            Err(SpecError::NoConnectionFile { .. })
        ));
        assert!(matches!(
            KernelSpec::parse(
                "x",
                d,
                br#"{"argv": ["k", "{connection_file}"], "interrupt_mode": "poke"}"#
            ),
            Err(SpecError::InterruptMode { .. })
        ));
        assert!(matches!(
            KernelSpec::parse("x", d, b"not json"),
            Err(SpecError::Parse { .. })
        ));
    }

    #[test]
    fn discovery_prefers_earlier_dirs_and_skips_broken_specs() {
        let base = std::env::temp_dir().join(format!("hutch-kspec-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for (dir, name, lang) in [
            (&a, "Python3", "python-a"),
            (&b, "python3", "python-b"),
            (&b, "bash", "bash"),
        ] {
            fs::create_dir_all(dir.join(name)).unwrap();
            let spec = format!(
                r#"{{"argv": ["k", "{{connection_file}}"], "language": "{lang}", "display_name": "{name}"}}"#
            );
            fs::write(dir.join(name).join("kernel.json"), spec).unwrap();
        }
        fs::create_dir_all(b.join("broken")).unwrap();
        fs::write(b.join("broken").join("kernel.json"), "{").unwrap();

        let dirs = vec![a.clone(), b.clone(), base.join("missing")];
        let specs = find_kernel_specs(&dirs);
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["python3", "bash"]);
        assert_eq!(specs[0].language, "python-a");

        assert_eq!(
            find_kernel_spec("PYTHON3", &dirs).unwrap().language,
            "python-a"
        );
        assert!(matches!(
            find_kernel_spec("r", &dirs),
            Err(SpecError::NotFound { .. })
        ));
        assert_eq!(
            kernel_dirs(std::slice::from_ref(&a)),
            vec![
                a,
                PathBuf::from("/usr/local/share/jupyter/kernels"),
                PathBuf::from("/usr/share/jupyter/kernels")
            ]
        );
        fs::remove_dir_all(base).unwrap();
    }
}
