//! What the `sudo` client and the agent say to each other over the sudo socket.
//!
//! Every message is one line of JSON. The client opens with a [`Request`], sent together with its
//! stdin, stdout and stderr as `SCM_RIGHTS` ancillary data on the first bytes; after that it only
//! sends [`ClientMessage`]s (signals to relay). The agent answers with [`Reply`] lines: `started`
//! (carrying the master of the command's pseudo-terminal in pty mode) then one final
//! `exited`/`signaled`, or a single final `error`/`done`/`listing`.
//!
//! Ancillary data is what makes the command's output land exactly where the caller's would
//! (a pipe, a file, a terminal), with no copying by the agent, and what lets stdin pass through.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::args::PreserveEnv;

/// Descriptors a request carries: stdin, stdout, stderr.
pub const REQUEST_FDS: usize = 3;

/// The largest request line the agent accepts (the caller's whole environment travels in it).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The largest line either side accepts after the request.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// What the client wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Run a command.
    Run,
    /// `-v`: only check that the caller may use sudo.
    Validate,
    /// `-l`: list what the caller may do.
    List,
}

/// The client's request: its command line (already parsed) and its context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// What to do.
    pub mode: Mode,
    /// The command and its arguments; empty for a bare `-i`/`-s`.
    #[serde(default)]
    pub command: Vec<String>,
    /// The caller's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `VAR=value` arguments from the command line.
    #[serde(default)]
    pub set_env: Vec<(String, String)>,
    /// The caller's working directory, if it has a valid one.
    #[serde(default)]
    pub cwd: Option<String>,
    /// `-u`.
    #[serde(default)]
    pub user: Option<String>,
    /// `-g`.
    #[serde(default)]
    pub group: Option<String>,
    /// `-E` / `--preserve-env`.
    #[serde(default)]
    pub preserve_env: PreserveEnv,
    /// `-H`.
    #[serde(default)]
    pub set_home: bool,
    /// `-i`.
    #[serde(default)]
    pub login: bool,
    /// `-s`.
    #[serde(default)]
    pub shell: bool,
    /// `-b`.
    #[serde(default)]
    pub background: bool,
    /// `-D`.
    #[serde(default)]
    pub chdir: Option<String>,
    /// `-n`.
    #[serde(default)]
    pub non_interactive: bool,
    /// The client is in the foreground of the terminal on its stdin and stdout and wants the
    /// command on a pseudo-terminal of its own (sudo's `use_pty`), relayed by the client.
    #[serde(default)]
    pub pty: bool,
}

/// What the client sends once its command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// Relay this signal to the command.
    Signal(i32),
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The command started. With `pty`, the master side of its terminal comes attached.
    Started {
        /// Its pid (as seen inside the sandbox).
        pid: u32,
        /// Whether it runs on a pseudo-terminal whose master the client now relays.
        pty: bool,
    },
    /// The command exited with this code (final).
    Exited(i32),
    /// A signal ended the command (final).
    Signaled(i32),
    /// sudo itself failed or refused: print `message` (final) and exit with `status`.
    Error {
        /// The full line to print on stderr.
        message: String,
        /// The exit status for the client.
        status: u8,
    },
    /// `-v` succeeded (final).
    Done,
    /// `-l` output to print on stdout (final).
    Listing(String),
}

/// Encodes `value` as one JSON line.
pub fn encode_line<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Decodes one line (without its newline).
pub fn decode_line<T: serde::de::DeserializeOwned>(line: &[u8]) -> io::Result<T> {
    serde_json::from_slice(line).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Splits the first complete line off `buf`, if there is one.
pub fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    Some(line)
}

/// Room for the control message of `n` descriptors, as u64s so it is aligned for `cmsghdr`.
fn cmsg_buffer(n: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE only does arithmetic on its argument.
    let bytes = unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

/// Sends `data` on the stream socket `sock`, with `fds` attached to its first byte.
///
/// Blocking; returns how many bytes went out (the caller writes the rest normally).
pub fn send_with_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut cmsg = cmsg_buffer(fds.len());
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no data" header; every pointer is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(cmsg.as_slice()) as _;
    let payload = std::mem::size_of_val(fds);
    // SAFETY: msg_control points at a zeroed, aligned buffer of CMSG_SPACE(payload) bytes, so the
    // first header and its data fit; the data copy writes exactly `payload` bytes into it.
    unsafe {
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        if hdr.is_null() {
            return Err(io::Error::other("control buffer too small"));
        }
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(hdr), payload);
    }
    loop {
        // SAFETY: `msg` and everything it points to (iov, data, cmsg) live across the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One non-blocking `recvmsg` on `sock` into `buf`, collecting any descriptors that came with
/// it into `fds` (close-on-exec, owned, so extras are closed when dropped).
///
/// Returns the number of bytes read (0 at end of stream).
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    const MAX_FDS: usize = 8;
    let mut cmsg = cmsg_buffer(MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in `send_with_fds`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(cmsg.as_slice()) as _;
    // SAFETY: `msg` points at `buf` and `cmsg`, both valid for writes of the lengths given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `msg_control` with well-formed headers up to `msg_controllen`;
    // CMSG_FIRSTHDR/NXTHDR stay inside it, and each SCM_RIGHTS payload is an array of descriptors
    // now owned by this process, which we take ownership of exactly once.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr);
                let len = (*hdr).cmsg_len as usize - (data as usize - hdr as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors attached",
        ));
    }
    Ok(n.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_round_trip_as_lines() {
        let line = encode_line(&Reply::Error {
            message: "sudo: no".into(),
            status: 1,
        })
        .unwrap();
        let mut buf = line.clone();
        buf.extend_from_slice(b"{\"signal\":2}\npartial");
        let first = take_line(&mut buf).unwrap();
        assert!(matches!(
            decode_line::<Reply>(&first).unwrap(),
            Reply::Error { status: 1, .. }
        ));
        let second = take_line(&mut buf).unwrap();
        assert_eq!(
            decode_line::<ClientMessage>(&second).unwrap(),
            ClientMessage::Signal(2)
        );
        assert_eq!(take_line(&mut buf), None);
        assert_eq!(buf, b"partial");
    }

    #[test]
    fn passes_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        let sent = send_with_fds(&a, b"hello", &[w.as_raw_fd()]).unwrap();
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        drop(w);
        // The received descriptor is the same socket: writing to it reaches `r`.
        let got = UnixStream::from(fds.pop().unwrap());
        use std::io::{Read, Write};
        (&got).write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        (&r).read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }
}
