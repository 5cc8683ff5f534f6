//! Runs typed build steps in a build's sandbox through its agent, tracking the USER,
//! WORKDIR and ENV they set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hutch_contracts::template::BuildStep;

use super::Build;
use crate::agent_client::{AgentClient, Command, Stream};
use crate::startup::shell_quote;

/// Where a build's sandbox receives the archive of a COPY step.
const COPY_ARCHIVE_DIR: &str = "/tmp";

/// Unpacks a COPY step's archive and puts what `HUTCH_SRC` matches at `HUTCH_DEST`, as
/// Docker's COPY does: a directory's contents go into the destination; a single file goes
/// to the destination path unless that ends in `/` or is a directory. Runs as root inside
/// the build sandbox, so a symlink made by an earlier step cannot lead outside it.
const COPY_SCRIPT: &str = include_str!("../../assets/copy.sh");

/// Runs a build's steps in its sandbox, tracking the USER, WORKDIR and ENV they set.
pub(super) struct Stepper<'a> {
    pub(super) build: &'a Build,
    pub(super) agent: &'a AgentClient<'a>,
    pub(super) files_dir: PathBuf,
    pub(super) user: String,
    pub(super) workdir: String,
    pub(super) env: BTreeMap<String, String>,
}

impl Stepper<'_> {
    /// Runs step `name`; the error is the failure's message.
    pub(super) async fn run(&mut self, name: &str, step: &BuildStep) -> Result<(), String> {
        match step {
            BuildStep::Env(pairs) => {
                self.env.extend(pairs.iter().cloned());
            }
            BuildStep::User(u) => {
                let script = format!("id -u -- {}", shell_quote(u));
                if self.exec(name, &script, "root", "/", &self.env).await? != 0 {
                    return Err(format!("USER {u}: no such user in the template"));
                }
                self.user = u.clone();
            }
            BuildStep::Workdir(d) => {
                let dir = absolute(&self.workdir, d);
                let code = self
                    .exec(
                        name,
                        &workdir_script(&dir, &self.user),
                        "root",
                        "/",
                        &self.env,
                    )
                    .await?;
                if code != 0 {
                    return Err(format!(
                        "WORKDIR {dir}: cannot create it (exit code {code})"
                    ));
                }
                self.workdir = dir;
            }
            BuildStep::Run { command, user } => {
                let run_as = user.as_deref().unwrap_or(&self.user);
                let code = self
                    .exec(name, command, run_as, &self.workdir, &self.env)
                    .await?;
                if code != 0 {
                    return Err(format!(
                        "RUN {command}: the command exited with code {code}"
                    ));
                }
            }
            BuildStep::Copy {
                src,
                dest,
                owner,
                mode,
                files_hash,
            } => {
                let hash = files_hash.as_deref().unwrap_or_default();
                let archive = format!("{COPY_ARCHIVE_DIR}/.hutch-copy-{hash}");
                self.agent
                    .upload(&self.files_dir.join(hash), &archive, "root")
                    .await?;
                let owner = owner.as_deref().unwrap_or(&self.user);
                let vars = copy_env(
                    &self.env,
                    archive,
                    src,
                    absolute(&self.workdir, dest),
                    owner,
                    mode.as_deref(),
                );
                let code = self.exec(name, COPY_SCRIPT, "root", "/", &vars).await?;
                if code != 0 {
                    return Err(format!("COPY {src} {dest}: failed (exit code {code})"));
                }
            }
        }
        Ok(())
    }

    /// Runs one command of step `name` in the sandbox, logging its output.
    async fn exec(
        &self,
        name: &str,
        script: &str,
        user: &str,
        cwd: &str,
        envs: &BTreeMap<String, String>,
    ) -> Result<i32, String> {
        self.agent
            .run(
                &Command {
                    script,
                    user,
                    cwd: Some(cwd),
                    envs,
                },
                |stream, line| {
                    let level = if stream == Stream::Stderr {
                        "warn"
                    } else {
                        "info"
                    };
                    self.build.log(level, Some(name), line);
                },
            )
            .await
    }
}

/// Creates `dir` (owned by `user`) unless it exists.
fn workdir_script(dir: &str, user: &str) -> String {
    format!(
        "[ -d {d} ] || {{ mkdir -p -- {d} && chown -- {u}: {d}; }}",
        d = shell_quote(dir),
        u = shell_quote(user)
    )
}

/// The environment of [`COPY_SCRIPT`]: the build's ENV plus the step's parameters.
fn copy_env(
    env: &BTreeMap<String, String>,
    archive: String,
    src: &str,
    dest: String,
    owner: &str,
    mode: Option<&str>,
) -> BTreeMap<String, String> {
    let mut vars = env.clone();
    vars.extend([
        ("HUTCH_TAR".to_string(), archive),
        ("HUTCH_SRC".to_string(), src.to_string()),
        ("HUTCH_DEST".to_string(), dest),
        ("HUTCH_OWNER".to_string(), owner.to_string()),
        (
            "HUTCH_MODE".to_string(),
            mode.unwrap_or_default().to_string(),
        ),
    ]);
    vars
}

/// `path` taken from `cwd` when relative.
pub(super) fn absolute(cwd: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        let p = Path::new(cwd).join(path);
        p.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_workdir() {
        assert_eq!(absolute("/home/user", "app"), "/home/user/app");
        assert_eq!(absolute("/home/user", "/app"), "/app");
        assert_eq!(absolute("/", "srv/x"), "/srv/x");
    }

    #[test]
    fn workdir_script_quotes_dir_and_user() {
        assert_eq!(
            workdir_script("/my dir", "o'k"),
            r"[ -d '/my dir' ] || { mkdir -p -- '/my dir' && chown -- 'o'\''k': '/my dir'; }"
        );
    }

    #[test]
    fn copy_env_adds_the_step_to_the_build_env() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let vars = copy_env(&env, "/tmp/t".into(), "src", "/d".into(), "user", None);
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["HUTCH_TAR"], "/tmp/t");
        assert_eq!(vars["HUTCH_SRC"], "src");
        assert_eq!(vars["HUTCH_DEST"], "/d");
        assert_eq!(vars["HUTCH_OWNER"], "user");
        assert_eq!(vars["HUTCH_MODE"], "");
    }

    #[test]
    fn the_copy_script_is_embedded() {
        assert!(COPY_SCRIPT.starts_with("set -euo pipefail\n"));
        assert!(COPY_SCRIPT.contains("HUTCH_DEST"));
    }
}
