//! Pseudo-terminals: the one PTY opener and the window-size setter.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::process::Uid;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use crate::error::{SysError, SysResult};

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Both sides of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// The master: reading gives the terminal's output, writing types into it.
    pub master: OwnedFd,
    /// The slave: what the program on the terminal gets as its standard streams.
    pub slave: OwnedFd,
}

/// Opens a new pseudo-terminal of `size`.
///
/// Both ends are close-on-exec from the start (other commands forked concurrently must not
/// inherit, and so hold open, a terminal that is not theirs) and neither becomes the
/// caller's controlling terminal.
pub fn open_pty(size: WinSize) -> SysResult<Pty> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(|e| SysError::call("posix_openpt", "O_RDWR|O_NOCTTY|O_CLOEXEC", e))?;
    let raw = master.as_raw_fd();
    rustix::pty::grantpt(&master).map_err(|e| SysError::fd("grantpt", raw, e))?;
    rustix::pty::unlockpt(&master).map_err(|e| SysError::fd("unlockpt", raw, e))?;
    let name =
        rustix::pty::ptsname(&master, Vec::new()).map_err(|e| SysError::fd("ptsname", raw, e))?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::path("open pty slave", name.to_string_lossy().into_owned(), e))?;
    set_winsize(&master, size).map_err(|e| SysError::fd("TIOCSWINSZ", raw, e))?;
    Ok(Pty { master, slave })
}

/// Gives the terminal to `uid` (like login(1)), so tools that reopen it by name (`tty`,
/// `script`, `write`) work after a credential switch. The group (tty) stays as devpts set it.
pub fn chown_slave(slave: impl AsFd, uid: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(slave, Some(Uid::from_raw(uid)), None)
}

/// Sets the size of the terminal whose master (or slave) is `fd`. The kernel sends SIGWINCH to
/// the terminal's foreground process group when the size changes.
pub fn set_winsize(fd: impl AsFd, size: WinSize) -> rustix::io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_the_slave_come_out_of_the_master() {
        let pty = open_pty(WinSize { cols: 80, rows: 24 }).unwrap();
        rustix::io::write(&pty.slave, b"ping").unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        // The line discipline turns "\n" into "\r\n" but leaves plain text as is.
        while got.len() < 4 {
            let n = rustix::io::read(&pty.master, &mut buf[..]).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"ping");
    }

    #[test]
    fn a_new_pty_has_the_requested_size_and_can_be_resized() {
        let pty = open_pty(WinSize {
            cols: 100,
            rows: 30,
        })
        .unwrap();
        let ws = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        set_winsize(
            &pty.master,
            WinSize {
                cols: 120,
                rows: 40,
            },
        )
        .unwrap();
        let ws = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (120, 40));
    }

    #[test]
    fn both_ends_are_close_on_exec() {
        let pty = open_pty(WinSize { cols: 80, rows: 24 }).unwrap();
        for fd in [&pty.master, &pty.slave] {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
    }
}
