//! hutch-agent: the process that runs as PID 1 inside every hutch sandbox and speaks E2B's envd
//! protocol to the SDKs (through the host's proxy).
//!
//! Layout: [`init`] and [`reaper`] are the PID-1 duties, [`connect`] the RPC framing, [`process`]
//! the process service, [`http`] the routes ([`pool`] and [`handin`] the server's own), [`auth`]
//! who may call and as whom, [`interpreter`] the code interpreter.

pub mod auth;
pub mod config;
pub mod connect;
pub mod files;
pub mod filesystem;
pub mod handin;
pub mod http;
pub mod identity;
pub mod init;
pub mod interpreter;
pub mod pool;
pub mod process;
pub mod reaper;
pub mod users;

use config::{AgentConfig, Options};
use identity::Identity;
use pool::PoolState;
use process::ProcessService;
use reaper::Reaper;
use users::UserDb;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Setting up PID-1 duties failed.
    #[error(transparent)]
    Init(#[from] init::InitError),
    /// The SIGCHLD handler could not be installed.
    #[error("cannot install the SIGCHLD handler: {0}")]
    Reaper(std::io::Error),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the agent until SIGTERM/SIGINT; must be called inside a tokio runtime.
pub async fn run(options: Options, config: AgentConfig) -> Result<(), AgentError> {
    init::adopt_orphans()?;
    users::set_defaults(config.default_user.clone(), config.default_workdir.clone());
    let shutdown = init::shutdown_signal()?;
    let reaper = Reaper::new();
    reaper.start().map_err(AgentError::Reaper)?;
    init::remove_legacy_sudo_link();
    init::publish_hostname();

    let identity = Identity::new(config.env_vars.clone(), config.access_token.as_deref());
    let process = ProcessService::new(
        reaper.clone(),
        UserDb::new(&options.passwd, &options.group),
        identity.clone(),
    );
    let files = files::FilesService::new(
        UserDb::new(&options.passwd, &options.group),
        identity.clone(),
    );
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.listen,
            source,
        })?;
    // The code interpreter (port 49999); kept until the end so its scratch dir goes last.
    let interpreter = if config.interpreter.unwrap_or(true) {
        interpreter::launch(
            &reaper,
            &options,
            &identity,
            config.kernel_from_server.unwrap_or(false),
        )
        .await
    } else {
        None
    };
    let pooled = config.pooled.unwrap_or(false);
    let state = http::AppState {
        process: process.clone(),
        files,
        filesystem: filesystem::FilesystemService::new(&options.passwd, &options.group),
        pool: PoolState::new(
            pooled,
            identity.clone(),
            interpreter.as_ref().map(|i| i.service.clone()),
        ),
        identity,
    };
    tracing::info!(
        addr = %options.listen,
        sandbox_id = %config.sandbox_id,
        pid1 = init::is_pid1(),
        token = config.access_token.is_some(),
        pooled,
        "agent listening"
    );

    // The listener is bound: a request from now on waits at most until the loop below runs.
    init::signal_ready();
    // Not a graceful shutdown: open streams (long-running commands) would hold it up forever, and
    // the sandbox is going away anyway.
    let outcome = tokio::select! {
        served = axum::serve(hutch_contracts::net::no_delay(listener), http::router(state)) => served.map_err(AgentError::Serve),
        signal = shutdown => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
    };
    // Outside a pid namespace nothing else would stop the commands the agent started.
    process.kill_all();
    outcome
}
