//! File descriptors: pipes, standard-stream redirection, non-blocking I/O, where a
//! redirected connection was headed.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Result;
use rustix::pipe::PipeFlags;

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
}

/// Makes `stdin`, `stdout` and `stderr` the caller's descriptors 0, 1 and 2 (each `dup2`
/// checked; the new descriptors are not close-on-exec). The originals stay open.
///
/// Async-signal-safe.
pub fn redirect_stdio(stdin: impl AsFd, stdout: impl AsFd, stderr: impl AsFd) -> Result<()> {
    rustix::stdio::dup2_stdin(stdin)?;
    rustix::stdio::dup2_stdout(stdout)?;
    rustix::stdio::dup2_stderr(stderr)
}

/// Sets `O_NONBLOCK` on `fd`, keeping its other status flags.
pub fn set_nonblocking(fd: impl AsFd) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)
}

/// A close-on-exec duplicate of `fd` numbered `min` or above: out of the way of descriptors
/// about to be placed at low numbers.
pub fn dup_above(fd: impl AsFd, min: i32) -> Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, min)
}

/// Clears `O_NONBLOCK` on `fd`, keeping its other status flags.
pub fn set_blocking(fd: impl AsFd) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
}

/// One `read(2)` into `buf`; returns how many bytes arrived (0 at end of file).
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> Result<usize> {
    rustix::io::read(fd, buf)
}

/// One `write(2)` from `buf`; returns how many bytes were taken.
pub fn write(fd: impl AsFd, buf: &[u8]) -> Result<usize> {
    rustix::io::write(fd, buf)
}

/// A connected pair of close-on-exec `AF_UNIX` `SOCK_SEQPACKET` sockets: messages keep
/// their boundaries and may carry descriptors.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// Makes the caller's descriptor number `fd` survive `exec` (clears close-on-exec);
/// `EBADF` when it is not open.
pub fn keep_open_on_exec(fd: i32) -> Result<()> {
    // SAFETY: `fd` is only used for the duration of these two fcntl calls, which fail
    // cleanly with EBADF when it is not open.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
}

/// Sends one message on a (non-blocking or blocking) socket with `fds` attached
/// (`SCM_RIGHTS`); never raises `SIGPIPE`.
pub fn send_with_fds(
    sock: impl AsFd,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::NOBUFS);
    }
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )
}

/// Receives one message without waiting (`EAGAIN` when none is there); 0 at end of file.
/// Descriptors sent along are closed.
pub fn recv_message(sock: impl AsFd, buf: &mut [u8]) -> Result<usize> {
    use rustix::net::RecvFlags;
    let (n, _) = rustix::net::recv(sock, buf, RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC)?;
    Ok(n)
}

/// Marks the caller's descriptor number `fd` close-on-exec; `EBADF` when it is not open.
pub fn close_on_exec(fd: i32) -> Result<()> {
    // SAFETY: as in `keep_open_on_exec`.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
}

/// Makes `fd` also the caller's descriptor number `target`, open across `exec` (`dup2`;
/// when `fd` already is `target`, only its close-on-exec flag is cleared).
///
/// Async-signal-safe.
pub fn dup_to(fd: impl AsFd, target: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let src = fd.as_fd().as_raw_fd();
    if src == target {
        return keep_open_on_exec(target);
    }
    // SAFETY: dup2 takes plain integers; `target` is the caller's to overwrite.
    if unsafe { libc::dup2(src, target) } == target {
        Ok(())
    } else {
        Err(crate::errno::last())
    }
}

/// Waits up to `timeout` for `fd` to be readable (or at its end, or in error); false when
/// the time ran out.
pub fn wait_readable(fd: impl AsFd, timeout: std::time::Duration) -> Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Closes every descriptor from `first` on (`close_range`): before an `exec`, so that
/// nothing a parent left open without close-on-exec reaches the new program.
///
/// Async-signal-safe.
pub fn close_from(first: u32) -> Result<()> {
    // SAFETY: close_range takes plain integers and touches no memory; descriptors other
    // code of this (single-threaded, about to exec) process still owns are closed too,
    // which is the point.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(crate::errno::last())
    }
}

/// A pidfd of process `pid` (`pidfd_open`).
pub fn pidfd(pid: i32) -> Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
}

/// A duplicate of descriptor `target` of the process `pidfd` refers to (`pidfd_getfd(2)`;
/// needs ptrace access to that process). Close-on-exec, like every descriptor it returns.
pub fn take_fd(pidfd: impl AsFd, target: i32) -> Result<OwnedFd> {
    rustix::process::pidfd_getfd(pidfd, target, rustix::process::PidfdGetfdFlags::empty())
}

/// Up to `want` bytes of `fd` from `offset` (`pread(2)`, retried when interrupted), in a
/// new buffer that is not zeroed first; empty at end of file.
pub fn pread_new(fd: impl AsFd, want: usize, offset: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    loop {
        match rustix::io::pread(&fd, rustix::buffer::spare_capacity(&mut buf), offset) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(buf),
        }
    }
}

/// Where a TCP connection accepted on `socket` was headed before the firewall redirected
/// it to this host (`SO_ORIGINAL_DST`, from its conntrack entry). For a connection that
/// was not redirected, its own local address.
pub fn original_destination(socket: impl AsFd) -> Result<std::net::SocketAddrV4> {
    rustix::net::sockopt::ip_original_dst(socket)
}

/// Makes closing the TCP socket `socket` reset the connection (`SO_LINGER` with a zero
/// time) instead of ending it in order.
pub fn reset_on_close(socket: impl AsFd) -> Result<()> {
    rustix::net::sockopt::set_socket_linger(socket, Some(std::time::Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pread_new_reads_at_an_offset_and_stops_at_the_end() {
        let f = tempfile_with(b"0123456789");
        assert_eq!(pread_new(&f, 4, 3).unwrap(), b"3456");
        assert_eq!(pread_new(&f, 100, 8).unwrap(), b"89");
        assert!(pread_new(&f, 4, 10).unwrap().is_empty());
    }

    fn tempfile_with(bytes: &[u8]) -> std::fs::File {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("hutch-sys-pread-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn take_fd_duplicates_a_descriptor_of_this_process() {
        let (r, w) = pipe().unwrap();
        let me = pidfd(std::process::id() as i32).unwrap();
        let dup = take_fd(&me, std::os::fd::AsRawFd::as_raw_fd(&w)).unwrap();
        assert_eq!(write(&dup, b"x").unwrap(), 1);
        let mut buf = [0u8; 1];
        assert_eq!(read(&r, &mut buf).unwrap(), 1);
    }

    #[test]
    fn a_pipe_carries_bytes_and_is_close_on_exec() {
        let (r, w) = pipe().unwrap();
        assert_eq!(write(&w, b"abc").unwrap(), 3);
        let mut buf = [0u8; 8];
        assert_eq!(read(&r, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        for fd in [&r, &w] {
            assert!(rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC));
        }
    }

    #[test]
    fn reading_an_empty_nonblocking_pipe_would_block() {
        let (r, _w) = pipe().unwrap();
        set_nonblocking(&r).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read(&r, &mut buf), Err(rustix::io::Errno::AGAIN));
    }

    #[test]
    fn reading_a_pipe_whose_writer_closed_gives_end_of_file() {
        let (r, w) = pipe().unwrap();
        drop(w);
        let mut buf = [0u8; 8];
        assert_eq!(read(&r, &mut buf).unwrap(), 0);
    }

    #[test]
    fn a_child_writes_to_the_redirected_stdout() {
        use std::os::unix::process::CommandExt;
        let (r, w) = pipe().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo redirected"]);
        let stdin = std::fs::File::open("/dev/null").unwrap();
        let hook = move || Ok(redirect_stdio(&stdin, &w, &w)?);
        // SAFETY: the hook only makes dup2 calls on descriptors opened before the fork.
        unsafe { cmd.pre_exec(hook) };
        let status = cmd.status().unwrap();
        assert!(status.success());
        let mut buf = [0u8; 64];
        let n = read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"redirected\n");
    }

    #[test]
    fn writing_to_the_read_end_is_refused() {
        let (r, _w) = pipe().unwrap();
        assert_eq!(write(&r, b"x"), Err(rustix::io::Errno::BADF));
    }
}
