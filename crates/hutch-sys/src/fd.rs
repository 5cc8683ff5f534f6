//! File descriptors: pipes, standard-stream redirection, non-blocking I/O.

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

/// One `read(2)` into `buf`; returns how many bytes arrived (0 at end of file).
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> Result<usize> {
    rustix::io::read(fd, buf)
}

/// One `write(2)` from `buf`; returns how many bytes were taken.
pub fn write(fd: impl AsFd, buf: &[u8]) -> Result<usize> {
    rustix::io::write(fd, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

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
