//! Running debootstrap and finding the host tools the build needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{describe_status, run_streaming, Finished, Tail};
use crate::progress::DebootstrapTracker;
use crate::{mounts, Progress, Recipe, TemplateError};

/// Lines of debootstrap's own log (dpkg output goes there) appended to the
/// error when it fails, since the build directory is deleted afterwards.
const LOG_TAIL_LINES: usize = 30;

/// Finds `tool` in PATH, falling back to the sbin directories that a
/// non-login root environment may lack in PATH; the error names the Debian
/// `package` that has it.
pub fn find_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, TemplateError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fallback = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(fallback)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
        .ok_or(TemplateError::MissingTool { tool, package })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs debootstrap's first stage (`--foreign`) for `recipe` into `target`
/// (which must not exist yet or be empty), reusing downloaded packages from
/// `debs_dir`: it downloads and checks the packages against the archive's
/// signature and unpacks them, running none of their scripts. The second
/// stage, which does, runs in the build jail ([`crate::setup::second_stage`]).
/// Returns the progress tracker for that second stage to go on with.
///
/// Whether it succeeds or not, nothing debootstrap mounted stays mounted.
pub(crate) fn run(
    debootstrap: &Path,
    recipe: &Recipe,
    target: &Path,
    debs_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<DebootstrapTracker, TemplateError> {
    let mut packages: Vec<&str> = recipe.packages.iter().map(|p| p.trim()).collect();
    packages.sort_unstable();
    packages.dedup();

    let mut cmd = Command::new(debootstrap);
    cmd.arg("--foreign")
        .arg(format!("--variant={}", recipe.variant.trim()));
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    // debootstrap insists on an absolute cache dir; the caller canonicalised.
    cmd.arg(format!("--cache-dir={}", debs_dir.display()))
        .arg(recipe.suite.trim())
        .arg(target)
        .arg(recipe.mirror.trim())
        .current_dir("/")
        // English messages (our parser relies on them) and no prompts.
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    tracing::info!(
        template = %recipe.name,
        suite = %recipe.suite,
        mirror = %recipe.mirror,
        target = %target.display(),
        "running debootstrap"
    );

    let mut tracker = DebootstrapTracker::new(&recipe.name, Some(target.to_path_buf()));
    let name = recipe.name.as_str();
    let result = run_streaming(&mut cmd, &mut |line| {
        tracing::debug!(template = name, "debootstrap: {line}");
        for p in tracker.on_line(line) {
            progress(p);
        }
    });
    // debootstrap unmounts /proc and /sys via an exit trap, which does not
    // run if it was killed; never leave them behind.
    let unmounted = mounts::unmount_all_under(target);

    let finished = result.map_err(TemplateError::io("could not run", debootstrap))?;
    check(&finished, recipe, target)?;
    unmounted?;
    Ok(tracker)
}

/// An error for a debootstrap stage that exited unsuccessfully.
pub(crate) fn check(
    finished: &Finished,
    recipe: &Recipe,
    target: &Path,
) -> Result<(), TemplateError> {
    if finished.status.success() {
        return Ok(());
    }
    Err(TemplateError::Debootstrap {
        suite: recipe.suite.clone(),
        mirror: recipe.mirror.clone(),
        target: target.to_path_buf(),
        status: describe_status(&finished.status),
        output: with_log_tail(&finished.tail, target),
    })
}

/// The captured output, followed by the end of debootstrap's log file.
fn with_log_tail(tail: &Tail, target: &Path) -> String {
    let mut out = tail.joined();
    let log = target.join("debootstrap/debootstrap.log");
    if let Ok(text) = std::fs::read_to_string(&log) {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        out.push_str(&format!("\n--- end of {} ---\n", log.display()));
        out.push_str(&lines[start..].join("\n"));
    }
    out
}
