//! Installing a classic-BPF seccomp filter on the calling thread.

use std::io;

/// One classic-BPF instruction, in the kernel's `struct sock_filter` layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Installs `program` with `seccomp(SECCOMP_SET_MODE_FILTER)`, without setting
/// `no_new_privs` first: the caller decides that. Without it the kernel requires
/// CAP_SYS_ADMIN in the caller's user namespace and answers EACCES otherwise.
/// Async-signal-safe.
pub fn install_filter(program: &[Instruction]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        // `Instruction` is `#[repr(C)]` with the same fields as libc's `sock_filter`; the
        // kernel only reads through the pointer.
        filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>(),
    };
    // SAFETY: `prog` describes `len` valid instructions that outlive the call; the kernel
    // copies them before returning and keeps no pointer to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instruction_has_the_kernels_layout() {
        assert_eq!(
            std::mem::size_of::<Instruction>(),
            std::mem::size_of::<libc::sock_filter>()
        );
        assert_eq!(
            std::mem::align_of::<Instruction>(),
            std::mem::align_of::<libc::sock_filter>()
        );
    }

    #[test]
    fn an_empty_or_oversized_program_is_refused_before_the_kernel_sees_it() {
        let huge = vec![
            Instruction {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000
            };
            70_000
        ];
        assert_eq!(
            install_filter(&huge).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
