//! The OOM killer's preference for the calling process (`/proc/self/oom_score_adj`).

use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, Result};

/// The default score.
pub const DEFAULT: i16 = 0;

/// Writes `value` (-1000..=1000) to `/proc/self/oom_score_adj`.
///
/// Async-signal-safe: formats into a stack buffer and uses open/write/close only, so a forked
/// child may call it (before a credential switch, which makes its /proc files root's).
pub fn set_oom_score_adj(value: i16) -> Result<()> {
    if !(-1000..=1000).contains(&value) {
        return Err(Errno::INVAL);
    }
    let mut buf = [0u8; 8];
    let text = format_i16(value, &mut buf);
    let fd = rustix::fs::open(
        "/proc/self/oom_score_adj",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let written = rustix::io::write(&fd, text)?;
    if written != text.len() {
        return Err(Errno::IO);
    }
    Ok(())
}

/// Decimal text of `value` in `buf`, without allocating.
fn format_i16(value: i16, buf: &mut [u8; 8]) -> &[u8] {
    let mut n = i32::from(value).unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_format_as_decimal_text() {
        let mut buf = [0u8; 8];
        assert_eq!(format_i16(-1000, &mut buf), b"-1000");
        assert_eq!(format_i16(0, &mut buf), b"0");
        assert_eq!(format_i16(250, &mut buf), b"250");
    }

    #[test]
    fn out_of_range_scores_are_refused() {
        assert_eq!(set_oom_score_adj(1001), Err(Errno::INVAL));
    }

    #[test]
    fn raising_the_score_is_always_allowed() {
        // Raising it needs no privilege; read back what the kernel stored.
        let before = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        let current: i16 = before.trim().parse().unwrap();
        let higher = current.saturating_add(1).min(1000);
        set_oom_score_adj(higher).unwrap();
        let after = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        assert_eq!(after.trim(), higher.to_string());
        // Put it back (lowering needs CAP_SYS_RESOURCE; best effort when not root).
        let _ = set_oom_score_adj(current);
    }
}
