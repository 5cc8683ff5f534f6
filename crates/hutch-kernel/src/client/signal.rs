//! Interrupting a `signal`-mode kernel by SIGINT.

use crate::error::KernelError;

/// Sends SIGINT to `pid`, or to its whole process group when it leads one (as
/// jupyter_client does), so code the kernel started in a subprocess is interrupted too.
pub fn sigint(pid: u32) -> Result<(), KernelError> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| KernelError::Signal {
        pid,
        source: std::io::Error::from_raw_os_error(libc::ESRCH),
    })?;
    // SAFETY: getpgid and kill only read their integer arguments; no memory is shared.
    let rc = unsafe {
        if raw > 0 && libc::getpgid(raw) == raw {
            libc::kill(-raw, libc::SIGINT)
        } else {
            libc::kill(raw, libc::SIGINT)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(KernelError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        })
    }
}
