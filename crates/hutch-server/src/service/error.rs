//! [`ServiceError`]: why a control-plane operation failed, with the data and the source
//! error behind it. The HTTP layer maps each variant onto one of E2B's status codes; the
//! `Display` texts are the messages clients see.

use std::path::PathBuf;

use hutch_contracts::template::StepError;
use hutch_runtime::RuntimeError;

use crate::store::StoreError;
use crate::templates::TemplateLookupError;

/// Something that does not exist (or that the caller may not see).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// A sandbox looked up by id.
    #[error("sandbox \"{0}\" doesn't exist or you don't have access to it")]
    Sandbox(String),
    /// A sandbox to kill.
    #[error("sandbox \"{0}\" not found")]
    KilledSandbox(String),
    /// A user-built template.
    #[error("template '{0}' not found")]
    Template(String),
    /// A build of a template.
    #[error("build '{build_id}' of template '{template_id}' not found")]
    Build {
        /// The template.
        template_id: String,
        /// The build.
        build_id: String,
    },
    /// A known template with no build waiting for its COPY files.
    #[error("template '{0}' has no build waiting for files")]
    WaitingBuild(String),
}

/// A request the service refuses as malformed.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// A timeout above the maximum.
    #[error("timeout {got}s is longer than the maximum of {max}s")]
    Timeout {
        /// What was asked for, in seconds.
        got: u64,
        /// The maximum, in seconds.
        max: u64,
    },
    /// An environment variable name that cannot be one.
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    /// An environment variable whose value holds a NUL byte.
    #[error("environment variable {0:?} has a NUL byte in its value")]
    EnvValue(String),
    /// A list cursor that no list call produced.
    #[error("invalid nextToken {0:?}")]
    NextToken(String),
    /// A template name E2B would not accept.
    #[error("invalid template name {0:?}: use lowercase letters, digits, '-', '_' and '.'")]
    TemplateName(String),
    /// A build of a built-in template.
    #[error("'{0}' is a built-in template; choose another name")]
    BuiltinName(String),
    /// A deletion of a built-in template.
    #[error("'{0}' is a built-in template and cannot be deleted")]
    BuiltinDelete(String),
    /// A CPU count the template may not have.
    #[error("cpuCount {asked} is out of range: this server allows 1 to {max} CPUs for your team's templates")]
    CpuCount {
        /// What was asked for.
        asked: u32,
        /// The most allowed.
        max: u32,
    },
    /// A memory size the template may not have.
    #[error("memoryMB {asked} is out of range: this server allows 128 to {max} MiB for your team's templates")]
    MemoryMb {
        /// What was asked for.
        asked: u64,
        /// The most allowed.
        max: u64,
    },
    /// A COPY files hash that is not one.
    #[error("invalid files hash {0:?}")]
    FilesHash(String),
    /// A build step that is not one.
    #[error("step {number}{}: {source}", kind_note(source))]
    Step {
        /// Its number, from 1.
        number: usize,
        /// What is wrong with it.
        #[source]
        source: StepError,
    },
    /// A COPY step whose archive was never uploaded.
    #[error("step {number} (COPY {src}): its files (hash {hash:?}) were not uploaded")]
    CopyFilesMissing {
        /// The step's number, from 1.
        number: usize,
        /// The step's source path.
        src: String,
        /// The hash it names.
        hash: String,
    },
    /// An upload larger than allowed.
    #[error("the upload exceeds {} GiB", .max_bytes >> 30)]
    UploadTooLarge {
        /// The limit in bytes.
        max_bytes: u64,
    },
    /// An upload that would take the team's stored build files past their quota.
    #[error("the team's uploaded build files would exceed {} GiB; unused ones are removed after {} days", .max_bytes >> 30, .kept_days)]
    FilesQuota {
        /// The quota in bytes.
        max_bytes: u64,
        /// How long unused files are kept.
        kept_days: u64,
    },
    /// Warm pool sizes that cannot be.
    #[error("{0}")]
    PoolSize(String),
    /// A fork count out of range.
    #[error("count {asked} is out of range: a fork starts 1 to {max} sandboxes")]
    ForkCount {
        /// What was asked for.
        asked: i64,
        /// The most.
        max: u32,
    },
    /// A snapshot or fork this server cannot take (the reason says why).
    #[error("{0}")]
    Snapshot(String),
    /// `network` options that are malformed or cannot be honoured (the reason says why).
    #[error("{0}")]
    Network(String),
    /// An upload whose body broke off.
    #[error("upload broke off: {0}")]
    UploadBroken(#[source] axum::Error),
}

/// `" (RUN)"` for malformed arguments, nothing for an unknown type (its text names it).
fn kind_note(e: &StepError) -> String {
    match e {
        StepError::MalformedArgs { kind, .. } => format!(" ({kind})"),
        StepError::UnknownType(_) => String::new(),
    }
}

/// A runtime operation on one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeOp {
    /// Creating it.
    Create,
    /// Killing it.
    Kill,
    /// Pausing it.
    Pause,
    /// Resuming it.
    Resume,
    /// Saving its upper dir as a layer.
    Commit,
    /// Changing its egress rules.
    Network,
}

/// The message prefix of a failed runtime operation (kept as clients saw it before).
fn runtime_context(op: RuntimeOp, id: &str) -> String {
    match op {
        RuntimeOp::Create => "creating the sandbox failed: ".to_string(),
        RuntimeOp::Kill => format!("killing sandbox {id}: "),
        RuntimeOp::Pause => format!("pausing sandbox {id}: "),
        RuntimeOp::Resume => format!("resuming sandbox {id}: "),
        RuntimeOp::Commit => String::new(),
        RuntimeOp::Network => format!("changing the network rules of sandbox {id}: "),
    }
}

/// Errors of service operations; the API maps them onto E2B's status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such sandbox, template or build (404).
    #[error(transparent)]
    NotFound(#[from] Missing),
    /// The request is malformed (400).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The template cannot be used (404, 503 while building, 500 when broken).
    #[error(transparent)]
    Template(#[from] TemplateLookupError),
    /// The sandbox is paused already (409).
    #[error("sandbox {id} is already paused")]
    AlreadyPaused {
        /// The sandbox.
        id: String,
    },
    /// The sandbox is running already (409).
    #[error("sandbox {id} is already running")]
    AlreadyRunning {
        /// The sandbox.
        id: String,
    },
    /// The build was started already (409).
    #[error("build '{build_id}' was started already")]
    BuildStarted {
        /// The build.
        build_id: String,
    },
    /// Every network slot is taken (503).
    #[error("all {slots} sandbox slots are in use")]
    NoSlot {
        /// How many slots there are.
        slots: u32,
    },
    /// Too many sandboxes are starting at once; the create waited its turn in vain (503).
    #[error(
        "the server is busy starting {starting} other sandboxes and this one waited {waited_s}s \
         for its turn; retry in a moment"
    )]
    Busy {
        /// Cold starts allowed at once.
        starting: usize,
        /// How long the create waited.
        waited_s: u64,
    },
    /// The host's data disk has less room than a new sandbox's disk could fill (503).
    #[error(
        "not enough free disk space on the host for a sandbox: {free_mb} MiB free, its disk \
         may grow to {needed_mb} MiB; free some space or lower --sandbox-disk-mb"
    )]
    DiskFull {
        /// MiB free on the data directory's filesystem.
        free_mb: u64,
        /// The sandbox's disk size in MiB.
        needed_mb: u64,
    },
    /// The sandboxes' disks together could grow past what the operator lets them promise
    /// of the data disk's free space (503).
    #[error(
        "not enough free disk space on the host for another sandbox: the sandboxes' disks \
         may still grow by {promised_mb} MiB and this one by {needed_mb} MiB, and \
         --disk-overcommit {ratio} lets them promise at most {ratio}x the {free_mb} MiB \
         free; try again once sandboxes have ended"
    )]
    DiskOvercommitted {
        /// MiB free on the data directory's filesystem.
        free_mb: u64,
        /// MiB the existing sandboxes' disks may still grow by.
        promised_mb: u64,
        /// The new sandbox's disk size in MiB.
        needed_mb: u64,
        /// The operator's ratio.
        ratio: f64,
    },
    /// The caller's key holds as many sandboxes as it may (429).
    #[error(
        "Rate limit exceeded: this API key may hold at most {max} sandboxes at once \
         (running and paused); kill one or ask for a key with a higher limit"
    )]
    RateLimited {
        /// The key's limit.
        max: u32,
    },
    /// The caller's team holds as many sandboxes as it may (429).
    #[error(
        "Rate limit exceeded: team {team} may hold at most {max} sandboxes at once; kill one \
         or ask the operator to raise the team's limit"
    )]
    TeamRateLimited {
        /// The team.
        team: String,
        /// Its limit.
        max: u32,
    },
    /// A file upload without a valid token (401).
    #[error("invalid or expired upload token")]
    UploadToken,
    /// The runtime failed on a sandbox (500).
    #[error("{}{source}", runtime_context(*op, id))]
    Runtime {
        /// What was being done.
        op: RuntimeOp,
        /// The sandbox.
        id: String,
        /// The runtime's error.
        #[source]
        source: RuntimeError,
    },
    /// A new sandbox's agent (or its template's start command) did not become ready (500).
    #[error("{0}")]
    NotReady(String),
    /// The database failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked or was cancelled (500).
    #[error("worker thread failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// A file operation on the host failed (500).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Storing an upload under its final name failed (500).
    #[error("storing the upload: {0}")]
    StoreUpload(#[source] std::io::Error),
}

impl ServiceError {
    /// A runtime failure of `op` on sandbox `id`.
    pub fn runtime(op: RuntimeOp, id: &str, source: RuntimeError) -> Self {
        ServiceError::Runtime {
            op,
            id: id.to_string(),
            source,
        }
    }

    /// A file operation failure.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ServiceError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result of service operations.
pub type Result<T> = std::result::Result<T, ServiceError>;
