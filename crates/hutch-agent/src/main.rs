//! `hutch-agent`: see the library docs. This file only wires process-level setup together.

use std::process::ExitCode;

use hutch_agent::config::{take_config_from_env, AgentConfig, Options, CONFIG_ENV};

fn main() -> ExitCode {
    // Where exec put the environment, found before anything changes it.
    let env_block = hutch_sys::process::initial_environment_block();
    // Before anything starts a thread: this edits the process environment.
    let config = take_config_from_env();
    init_logging();
    hutch_agent::init::take_ready_fd();
    // Whatever reached the agent in its environment (its configuration held the access
    // token) leaves the memory /proc/1/environ shows, in case anyone may read it (gVisor's
    // /proc lets anyone inside).
    match env_block {
        Ok(Some(block)) => hutch_sys::process::scrub_initial_environment(block),
        Ok(None) => {}
        Err(err) => tracing::warn!(error = %err, "cannot scrub the agent's initial environment"),
    }
    // Root inside the sandbox must not attach to the agent and take its descriptors, memory
    // or secrets (it lacks CAP_SYS_PTRACE, which a process that is not dumpable requires).
    if let Err(err) = hutch_sys::caps::set_not_dumpable() {
        tracing::warn!(error = %err, "cannot make the agent not dumpable");
    }
    let options = match Options::parse(std::env::args_os().skip(1)) {
        Ok(options) => options,
        Err(err) => {
            tracing::error!(error = %err, "bad command line");
            return ExitCode::from(2);
        }
    };
    let config = match config {
        Ok(Some(config)) => config,
        Ok(None) => {
            tracing::warn!(
                "{CONFIG_ENV} is not set; running without sandbox env vars or access token"
            );
            AgentConfig::default()
        }
        Err(err) => {
            tracing::error!(error = %err, "bad configuration");
            return ExitCode::from(2);
        }
    };
    // Uploads and downloads stream through buffers of up to a few hundred KiB: with glibc's
    // defaults each one was a fresh mapping or trimmed heap, faulted in and zeroed again
    // (9% of the agent's CPU during a 1 GiB upload). 8 MiB is what an idle agent may keep.
    if !hutch_sys::malloc::keep_freed_memory(8 << 20, 4 << 20) {
        tracing::debug!("could not tune the allocator");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hutch_agent::run(options, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "agent failed");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines on stderr, filtered by `HUTCH_AGENT_LOG` (default `info`).
///
/// Best effort: stderr is `/dev/null` or, with the server's `--agent-log`, a pipe the server
/// reads, which has no reader while the server restarts. A log line that cannot be written
/// is dropped; it must never take the agent down (the standard library's `eprintln!`, and
/// with it tracing's own report of a failed write, panics on a broken pipe).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUTCH_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .log_internal_errors(false)
        .init();
}

/// Standard error that reports every write as done, whether it was or not.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
