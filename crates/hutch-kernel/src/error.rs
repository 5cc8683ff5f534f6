//! Error types, one enum per concern: connection files, kernel specs, the wire format,
//! and the client that drives a kernel.

use std::path::PathBuf;
use std::time::Duration;

/// Creating, writing or reading a Jupyter connection file.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The file could not be read or written.
    #[error("connection file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid connection file.
    #[error("connection file {path} is not valid JSON for a Jupyter connection: {source}")]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// Only `hmac-sha256` (and an empty key, meaning no signing) is implemented.
    #[error("signature scheme {0:?} is not supported; use \"hmac-sha256\"")]
    UnsupportedScheme(String),
    /// The transport field names neither `tcp` nor `ipc`.
    #[error("transport {0:?} is not supported; use \"tcp\" or \"ipc\"")]
    UnsupportedTransport(String),
    /// A unix socket path would not fit in `sockaddr_un.sun_path` (108 bytes with the NUL).
    #[error("ipc socket path {path} is {len} bytes, over the 107-byte unix socket limit; use a shorter directory")]
    IpcPathTooLong {
        /// The socket path that is too long.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("could not reserve a free TCP port on 127.0.0.1: {0}")]
    NoFreePort(std::io::Error),
}

/// Finding or parsing a kernel spec (`kernel.json`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `kernel.json` could not be read.
    #[error("kernel spec {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `kernel.json` is not a valid kernel spec.
    #[error("kernel spec {path} is not a valid kernel.json: {source}")]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// `argv` is empty, so there is nothing to run.
    #[error("kernel spec {path} has an empty argv")]
    EmptyArgv {
        /// The file that was read.
        path: PathBuf,
    },
    /// `argv` never mentions `{connection_file}`, so the kernel could not find its ports.
    #[error("kernel spec {path}: argv has no {{connection_file}} placeholder")]
    NoConnectionFile {
        /// The file that was read.
        path: PathBuf,
    },
    /// `interrupt_mode` is neither `signal` nor `message`.
    #[error("kernel spec {path}: interrupt_mode {mode:?} is neither \"signal\" nor \"message\"")]
    InterruptMode {
        /// The file that was read.
        path: PathBuf,
        /// The value found.
        mode: String,
    },
    /// No kernel of that name in any searched directory.
    #[error("no kernel spec named {name:?} in {searched:?}")]
    NotFound {
        /// The kernel name asked for.
        name: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
}

/// A multipart message that does not follow the Jupyter wire protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// No `<IDS|MSG>` delimiter frame.
    #[error("message has no <IDS|MSG> delimiter")]
    NoDelimiter,
    /// Fewer than the signature and four JSON frames after the delimiter.
    #[error("message has {0} frames after <IDS|MSG>, need at least 5")]
    TooFewFrames(usize),
    /// The HMAC signature does not match the key (or is not hex).
    #[error("message signature does not match the session key")]
    BadSignature,
    /// One of header, parent_header, metadata or content is not valid JSON of the right shape.
    #[error("message {part} is not valid: {source}")]
    Json {
        /// Which frame: header, parent_header, metadata or content.
        part: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// Driving a kernel: connecting, sending requests, executing code.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The connection info is unusable.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A message from the kernel broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// ZeroMQ failed to connect or send.
    #[error("zeromq {channel} channel: {source}")]
    Zmq {
        /// The channel involved (shell, iopub, ...).
        channel: &'static str,
        /// What zeromq said.
        source: zeromq::ZmqError,
    },
    /// The kernel's endpoints never accepted connections in time.
    #[error("kernel endpoints {endpoints:?} did not accept connections within {waited:?}; is the kernel running?")]
    EndpointsTimeout {
        /// The endpoints still refusing.
        endpoints: Vec<String>,
        /// How long we polled.
        waited: Duration,
    },
    /// The kernel accepted connections but never answered `kernel_info_request` in time.
    #[error("kernel did not answer kernel_info_request (with an iopub status) within {0:?}")]
    NotReady(Duration),
    /// A request got no reply in time.
    #[error("no {msg_type} reply within {waited:?}")]
    ReplyTimeout {
        /// The request type that went unanswered.
        msg_type: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The kernel's spec says `interrupt_mode: signal` and no pid was given.
    #[error("this kernel is interrupted by SIGINT and no pid is known; the caller must signal the kernel process")]
    InterruptNeedsSignal,
    /// Sending SIGINT to the kernel failed.
    #[error("SIGINT to kernel pid {pid}: {source}")]
    Signal {
        /// The pid signalled.
        pid: u32,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Requests go on shell or control; the other channels carry no replies.
    #[error("requests go on the shell or control channel, not {0}")]
    NotARequestChannel(&'static str),
    /// The client lost the kernel (its sockets went away, or the caller said it exited).
    #[error("lost the kernel: {0}")]
    Disconnected(String),
}

impl KernelError {
    /// Wraps a zeromq error with the channel it happened on.
    pub(crate) fn zmq(channel: &'static str, source: zeromq::ZmqError) -> Self {
        Self::Zmq { channel, source }
    }
}
