//! A user-built template's start and ready commands, run in a new sandbox through its
//! agent: by the service when it creates a sandbox of the template, and by a build to
//! check them before the template is saved.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent_client::{AgentClient, Command};
use crate::templates::TemplateRecord;

/// How long a start command may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Starts a template's start command in the background in a sandbox, then runs its ready
/// command until it succeeds (at most two minutes). A ready command that only waits (`sleep
/// N`, what E2B's `wait_for_timeout` gives) is honoured at build time only, since a new
/// sandbox need not wait for a fixed time.
pub async fn start_and_wait(
    agent: &AgentClient<'_>,
    t: &TemplateRecord,
    at_build: bool,
    mut on_log: impl FnMut(String),
) -> Result<(), String> {
    let Some(start) = t.start_cmd.as_deref() else {
        return Ok(());
    };
    let user = t.user.as_deref().unwrap_or("user");
    // The sandbox's agent gives every process the template's ENV already.
    let no_env = BTreeMap::new();
    let cmd = |script| Command {
        script,
        user,
        cwd: t.workdir.as_deref(),
        envs: &no_env,
    };
    let launch = launch_script(start);
    let code = agent
        .run(&cmd(&launch), |_, l| on_log(l.to_string()))
        .await?;
    if code != 0 {
        return Err(format!(
            "the start command could not be launched (exit code {code})"
        ));
    }
    let Some(ready) = t.ready_cmd.as_deref() else {
        return Ok(());
    };
    if !at_build && is_fixed_wait(ready) {
        return Ok(());
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while agent.run(&cmd(ready), |_, _| {}).await? != 0 {
        if Instant::now() > deadline {
            return Err(format!(
                "the ready command `{ready}` did not succeed within {} s of the start command `{start}`",
                READY_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The script that starts `start` detached from the agent's process, logging to a file.
fn launch_script(start: &str) -> String {
    format!(
        "setsid nohup /bin/bash -l -c {} >/tmp/.hutch-start.log 2>&1 </dev/null &",
        shell_quote(start)
    )
}

/// True for a ready command that only waits a fixed time (`sleep N`).
pub fn is_fixed_wait(cmd: &str) -> bool {
    let mut words = cmd.split_whitespace();
    words.next() == Some("sleep")
        && words.next().is_some_and(|n| n.parse::<f64>().is_ok())
        && words.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_wraps_in_single_quotes() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME `x` \"y\""), "'$HOME `x` \"y\"'");
    }

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("''"), r"''\'''\'''");
    }

    #[test]
    fn only_a_bare_sleep_is_a_fixed_wait() {
        assert!(is_fixed_wait("sleep 20"));
        assert!(is_fixed_wait("  sleep 0.5 "));
        assert!(!is_fixed_wait("sleep 20 && curl x"));
        assert!(!is_fixed_wait("sleep"));
        assert!(!is_fixed_wait("sleep forever"));
        assert!(!is_fixed_wait("curl -f localhost:8080"));
    }

    #[test]
    fn the_start_command_is_quoted_into_the_launcher() {
        assert_eq!(
            launch_script("python -m http.server 'x'"),
            r"setsid nohup /bin/bash -l -c 'python -m http.server '\''x'\''' >/tmp/.hutch-start.log 2>&1 </dev/null &"
        );
    }
}
