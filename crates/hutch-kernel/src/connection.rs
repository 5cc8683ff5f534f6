//! Jupyter connection files: generating one for a new kernel, writing it, reading it.
//!
//! A connection file tells a kernel where to bind its five sockets and which key signs
//! messages. We prefer the `ipc` transport (unix sockets in a private directory): inside a
//! sandbox it needs no ports, cannot collide with a user's servers, and the directory's
//! mode keeps other users out.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConnectionError;
use crate::message::Channel;

/// The only signature scheme we implement (Jupyter's default).
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_IPC_PATH: usize = 107;

/// How the kernel's sockets are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP on `ip`, one port per channel.
    Tcp,
    /// Unix sockets at `{ip}-{port}`, where `ip` is a path prefix.
    Ipc,
}

/// The contents of a Jupyter connection file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// `tcp` or `ipc`.
    pub transport: Transport,
    /// An address for tcp; a socket path prefix for ipc.
    pub ip: String,
    /// Shell channel port (or ipc suffix).
    pub shell_port: u16,
    /// IOPub channel port (or ipc suffix).
    pub iopub_port: u16,
    /// Stdin channel port (or ipc suffix).
    pub stdin_port: u16,
    /// Control channel port (or ipc suffix).
    pub control_port: u16,
    /// Heartbeat channel port (or ipc suffix).
    pub hb_port: u16,
    /// The HMAC key; empty disables signing.
    pub key: String,
    /// Always `hmac-sha256` here.
    pub signature_scheme: String,
    /// The kernel spec name, when the file records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
}

impl std::fmt::Debug for ConnectionInfo {
    // The key signs code execution requests: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("transport", &self.transport)
            .field("ip", &self.ip)
            .field("shell_port", &self.shell_port)
            .field("iopub_port", &self.iopub_port)
            .field("stdin_port", &self.stdin_port)
            .field("control_port", &self.control_port)
            .field("hb_port", &self.hb_port)
            .field("key", &"<redacted>")
            .field("signature_scheme", &self.signature_scheme)
            .field("kernel_name", &self.kernel_name)
            .finish()
    }
}

impl ConnectionInfo {
    /// A new ipc connection whose sockets live in `dir` (created with mode 0700 if missing).
    ///
    /// The socket names get a random prefix, so several kernels may share one directory.
    /// If the kernel runs as another user, the caller must hand `dir` to that user.
    pub fn new_ipc(dir: &Path) -> Result<Self, ConnectionError> {
        create_private_dir(dir)?;
        let prefix = dir.join(format!("k{}", &random_hex(4)));
        let info = ConnectionInfo {
            transport: Transport::Ipc,
            ip: prefix.to_string_lossy().into_owned(),
            shell_port: 1,
            iopub_port: 2,
            stdin_port: 3,
            control_port: 4,
            hb_port: 5,
            key: random_hex(32),
            signature_scheme: SIGNATURE_SCHEME.to_owned(),
            kernel_name: None,
        };
        info.check()?;
        Ok(info)
    }

    /// A new tcp connection on 127.0.0.1 with five currently free ports.
    ///
    /// The ports come from just below the system's ephemeral range, so
    /// the outgoing connections of clients (which get ephemeral ports) cannot take one
    /// between now and the kernel binding it. Prefer [`ConnectionInfo::new_ipc`].
    pub fn new_tcp() -> Result<Self, ConnectionError> {
        let ports = kernel_ports(5)?;
        Ok(ConnectionInfo {
            transport: Transport::Tcp,
            ip: "127.0.0.1".to_owned(),
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key: random_hex(32),
            signature_scheme: SIGNATURE_SCHEME.to_owned(),
            kernel_name: None,
        })
    }

    /// Reads and validates a connection file.
    pub fn read(path: &Path) -> Result<Self, ConnectionError> {
        let text = fs::read(path).map_err(|source| ConnectionError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses connection-file JSON; `path` is only used in errors.
    pub fn parse(json: &[u8], path: &Path) -> Result<Self, ConnectionError> {
        // Check the transport by hand first, so an unknown one gets its own error.
        let raw: serde_json::Value =
            serde_json::from_slice(json).map_err(|source| ConnectionError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if let Some(t) = raw.get("transport").and_then(|t| t.as_str()) {
            if t != "tcp" && t != "ipc" {
                return Err(ConnectionError::UnsupportedTransport(t.to_owned()));
            }
        }
        let info: ConnectionInfo =
            serde_json::from_value(raw).map_err(|source| ConnectionError::Parse {
                path: path.to_owned(),
                source,
            })?;
        info.check()?;
        Ok(info)
    }

    /// Writes the file with mode 0600 (it holds the key).
    pub fn write(&self, path: &Path) -> Result<(), ConnectionError> {
        let io = |source| ConnectionError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).expect("connection info serializes");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&json).map_err(io)?;
        // An existing file keeps its old mode through `open`; tighten it explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        Ok(())
    }

    /// The port (or ipc suffix) of `channel`.
    pub fn port(&self, channel: Channel) -> u16 {
        match channel {
            Channel::Shell => self.shell_port,
            Channel::IoPub => self.iopub_port,
            Channel::Stdin => self.stdin_port,
            Channel::Control => self.control_port,
            Channel::Heartbeat => self.hb_port,
        }
    }

    /// The ZeroMQ endpoint of `channel`, e.g. `tcp://127.0.0.1:5555` or `ipc:///run/k-1`.
    pub fn endpoint(&self, channel: Channel) -> String {
        match self.transport {
            Transport::Tcp => format!("tcp://{}:{}", self.ip, self.port(channel)),
            Transport::Ipc => format!("ipc://{}-{}", self.ip, self.port(channel)),
        }
    }

    /// The unix socket path of `channel` for ipc connections.
    pub fn ipc_path(&self, channel: Channel) -> Option<PathBuf> {
        match self.transport {
            Transport::Tcp => None,
            Transport::Ipc => Some(PathBuf::from(format!("{}-{}", self.ip, self.port(channel)))),
        }
    }

    /// Removes the ipc socket files (after the kernel has exited); tcp needs nothing.
    pub fn remove_ipc_files(&self) {
        for ch in Channel::ALL {
            if let Some(p) = self.ipc_path(ch) {
                let _ = fs::remove_file(p);
            }
        }
    }

    fn check(&self) -> Result<(), ConnectionError> {
        if !self.key.is_empty() && self.signature_scheme != SIGNATURE_SCHEME {
            return Err(ConnectionError::UnsupportedScheme(
                self.signature_scheme.clone(),
            ));
        }
        for ch in Channel::ALL {
            if let Some(p) = self.ipc_path(ch) {
                let len = p.as_os_str().len();
                if len > MAX_IPC_PATH {
                    return Err(ConnectionError::IpcPathTooLong { path: p, len });
                }
            }
        }
        Ok(())
    }
}

/// Creates `dir` (and its parents) and makes it mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), ConnectionError> {
    let io = |source| ConnectionError::Io {
        path: dir.to_owned(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// `n` random bytes from the OS generator, hex-encoded.
/// Where the next search for kernel ports starts (an offset into the range); random at first,
/// so agents started at the same moment do not all try the same ports.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// The range kernel ports are taken from: up to 16384 ports just below the ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 by default), which the kernel never hands to a
/// socket that binds port 0 or connects without binding.
fn kernel_port_range() -> (u16, u16) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let end = ephemeral_low.max(2048);
    (end.saturating_sub(16384).max(1024), end)
}

/// `n` distinct ports on 127.0.0.1 that are free now, taken in turn from
/// [`kernel_port_range`]: two kernels started at once never get the same port, and a port
/// comes round again only after the whole range has been handed out.
fn kernel_ports(n: usize) -> Result<Vec<u16>, ConnectionError> {
    use std::sync::atomic::Ordering;
    let (start, end) = kernel_port_range();
    let span = u32::from(end - start);
    if NEXT_PORT.load(Ordering::Relaxed) == u32::MAX {
        use rand::RngCore;
        let seed = rand::rngs::OsRng.next_u32() % span;
        let _ = NEXT_PORT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    // Held until all are found, so none is counted twice.
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut last_error = None;
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let offset = NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span;
        let port = start + offset as u16;
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                held.push(listener);
                ports.push(port);
            }
            Err(e) => last_error = Some(e),
        }
    }
    if ports.len() < n {
        return Err(ConnectionError::NoFreePort(last_error.unwrap_or_else(
            || std::io::Error::other(format!("no free port in {start}..{end}")),
        )));
    }
    Ok(ports)
}

fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ports_are_distinct_and_below_the_ephemeral_range() {
        let (start, end) = kernel_port_range();
        let a = ConnectionInfo::new_tcp().expect("ports");
        let b = ConnectionInfo::new_tcp().expect("ports");
        let mut all = Vec::new();
        for info in [&a, &b] {
            all.extend([
                info.shell_port,
                info.iopub_port,
                info.stdin_port,
                info.control_port,
                info.hb_port,
            ]);
        }
        assert!(
            all.iter().all(|p| (start..end).contains(p)),
            "{all:?} outside {start}..{end}"
        );
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "a port was handed out twice: {all:?}"
        );
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hutch-kernel-{tag}-{}", random_hex(4)));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn ipc_connection_uses_a_private_dir_and_short_paths() {
        let base = tmpdir("ipc");
        let dir = base.join("sock");
        let info = ConnectionInfo::new_ipc(&dir).unwrap();
        assert_eq!(info.transport, Transport::Ipc);
        assert_eq!(info.key.len(), 64);
        assert_eq!(info.signature_scheme, "hmac-sha256");
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let shell = info.ipc_path(Channel::Shell).unwrap();
        assert!(shell.starts_with(&dir));
        assert_eq!(
            info.endpoint(Channel::Shell),
            format!("ipc://{}", shell.display())
        );
        assert_ne!(
            ConnectionInfo::new_ipc(&dir).unwrap().ip,
            info.ip,
            "two kernels in one dir must not share sockets"
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn ipc_path_over_the_unix_limit_is_refused() {
        let base = tmpdir("long");
        let dir = base.join("d".repeat(100));
        match ConnectionInfo::new_ipc(&dir) {
            Err(ConnectionError::IpcPathTooLong { len, .. }) => assert!(len > 107),
            other => panic!("expected IpcPathTooLong, got {other:?}"),
        }
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn tcp_connection_has_five_distinct_ports() {
        let info = ConnectionInfo::new_tcp().unwrap();
        let mut ports: Vec<u16> = Channel::ALL.iter().map(|c| info.port(*c)).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 5);
        assert!(info
            .endpoint(Channel::IoPub)
            .starts_with("tcp://127.0.0.1:"));
        assert_eq!(info.ipc_path(Channel::Shell), None);
    }

    #[test]
    fn written_file_is_0600_and_reads_back() {
        let base = tmpdir("write");
        let path = base.join("kernel.json");
        let info = ConnectionInfo::new_tcp().unwrap();
        info.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ConnectionInfo::read(&path).unwrap(), info);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn parses_a_file_written_by_jupyter_client() {
        // The shape jupyter_client.write_connection_file produces.
        let json = br#"{
          "shell_port": 53001, "iopub_port": 53002, "stdin_port": 53003,
          "control_port": 53004, "hb_port": 53005, "ip": "127.0.0.1",
          "key": "a0436f6c-1916-498b-8eb9-e81ab9368e84", "transport": "tcp",
          "signature_scheme": "hmac-sha256", "kernel_name": "python3"
        }"#;
        let info = ConnectionInfo::parse(json, Path::new("x.json")).unwrap();
        assert_eq!(info.endpoint(Channel::Control), "tcp://127.0.0.1:53004");
        assert_eq!(info.kernel_name.as_deref(), Some("python3"));
        assert!(
            !format!("{info:?}").contains("a0436f6c"),
            "key leaked in Debug"
        );
    }

    #[test]
    fn unknown_transport_and_scheme_are_refused() {
        let bad_t = br#"{"shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,
          "hb_port":5,"ip":"x","key":"k","transport":"udp","signature_scheme":"hmac-sha256"}"#;
        assert!(matches!(
            ConnectionInfo::parse(bad_t, Path::new("x")),
            Err(ConnectionError::UnsupportedTransport(t)) if t == "udp"
        ));
        let bad_s = br#"{"shell_port":1,"iopub_port":2,"stdin_port":3,"control_port":4,
          "hb_port":5,"ip":"x","key":"k","transport":"tcp","signature_scheme":"hmac-md5"}"#;
        assert!(matches!(
            ConnectionInfo::parse(bad_s, Path::new("x")),
            Err(ConnectionError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            ConnectionInfo::parse(b"{", Path::new("x")),
            Err(ConnectionError::Parse { .. })
        ));
    }
}
