//! `--agent-log`: the output of a sandbox's agent (and of a zygote) reaches its host log
//! file through a pipe, never as a descriptor of the file itself. Whoever took the agent's
//! descriptors inside could otherwise write, truncate or grow a host file at will; a pipe
//! end only feeds a reader on the host, which keeps at most [`MAX_LOG_BYTES`] of it.
//!
//! The pipe is a FIFO in the sandbox's host directory (0700, root's): the server opens its
//! read end, the spawn helper opens the write end by path (as the log file before) for the
//! new process's stdout and stderr. A thread of the server then copies into the log until
//! every writer is gone, which is when the sandbox's last process has exited. A server
//! that restarts opens the FIFOs of the sandboxes it adopts again ([`LogPipe::reattach`]);
//! what the agent wrote in between is lost (it drops lines it cannot write).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

/// The most bytes of output a log file keeps; the rest is read and dropped, so the writer
/// never blocks on a full pipe.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// A FIFO waiting for the spawn helper to open its write end.
#[derive(Debug)]
pub(crate) struct LogPipe {
    fifo: PathBuf,
    reader: OwnedFd,
    log: PathBuf,
}

impl LogPipe {
    /// Makes `<log>.fifo` (replacing a leftover) and opens its read end.
    pub(crate) fn new(log: &Path) -> Result<LogPipe> {
        let fifo = fifo_of(log);
        match std::fs::remove_file(&fifo) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("remove", &fifo, e)),
        }
        hutch_sys::fs::mkfifo(&fifo, 0o600)
            .map_err(|e| RuntimeError::io("mkfifo", &fifo, e.into()))?;
        let reader = hutch_sys::fs::open_fifo(&fifo, false)
            .map_err(|e| RuntimeError::io("open", &fifo, e.into()))?;
        Ok(LogPipe {
            fifo,
            reader,
            log: log.to_path_buf(),
        })
    }

    /// The FIFO of `log` made by an earlier server, opened again: `None` when there is none.
    pub(crate) fn reattach(log: &Path) -> Option<LogPipe> {
        let fifo = fifo_of(log);
        let reader = hutch_sys::fs::open_fifo(&fifo, false).ok()?;
        Some(LogPipe {
            fifo,
            reader,
            log: log.to_path_buf(),
        })
    }

    /// The path the spawn helper opens as the process's output.
    pub(crate) fn path(&self) -> &Path {
        &self.fifo
    }

    /// Once the helper is done (whether the spawn worked or not): copies what arrives into
    /// the log on a thread of its own, until no writer is left (at once when none ever
    /// opened it).
    pub(crate) fn drain(self) {
        let LogPipe { reader, log, .. } = self;
        let spawned = std::thread::Builder::new()
            .name("agent-log".into())
            .stack_size(64 << 10)
            .spawn(move || {
                if let Err(e) = copy(reader, &log) {
                    tracing::warn!(log = %log.display(), error = %e, "agent log stopped");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread for the agent log; its output is dropped");
        }
    }
}

fn fifo_of(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".fifo");
    PathBuf::from(name)
}

fn copy(reader: OwnedFd, log: &Path) -> std::io::Result<()> {
    hutch_sys::fd::set_blocking(&reader)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut kept = file.metadata()?.len();
    let mut buf = vec![0u8; 64 << 10];
    let mut told = false;
    loop {
        let n = match hutch_sys::fd::read(&reader, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(hutch_sys::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let room = MAX_LOG_BYTES.saturating_sub(kept);
        let take = (n as u64).min(room) as usize;
        if take > 0 {
            file.write_all(&buf[..take])?;
            kept += take as u64;
        }
        if take < n && !told {
            told = true;
            writeln!(
                file,
                "\n[hutch: log full at {MAX_LOG_BYTES} bytes; the rest is dropped]"
            )?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn output_reaches_the_log_through_a_pipe_also_after_a_reattach() {
        let tmp = TempDir::new("agent-log");
        let log = tmp.path().join("agent.log");
        let pipe = LogPipe::new(&log).expect("fifo");
        let fifo = pipe.path().to_path_buf();
        // What the helper does: open the path for writing.
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&fifo)
            .expect("open the write end");
        assert!(writer.metadata().expect("stat").file_type().is_fifo());
        pipe.drain();
        writer.write_all(b"hello\n").expect("write");
        wait_for_log(&log, b"hello\n");
        // A restarted server reads on from where its predecessor stopped.
        let again = LogPipe::reattach(&log).expect("reattach");
        again.drain();
        writer.write_all(b"again\n").expect("write");
        drop(writer);
        wait_for_log(&log, b"hello\nagain\n");
    }

    fn wait_for_log(log: &Path, want: &[u8]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(log).unwrap_or_default() != want {
            assert!(std::time::Instant::now() < deadline, "log never filled");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_pipe_nobody_opened_ends_at_once() {
        let tmp = TempDir::new("agent-log-none");
        let log = tmp.path().join("agent.log");
        LogPipe::new(&log).expect("fifo").drain();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !log.exists() {
            assert!(std::time::Instant::now() < deadline, "the drain never ran");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(std::fs::read(&log).expect("read"), b"");
    }
}
