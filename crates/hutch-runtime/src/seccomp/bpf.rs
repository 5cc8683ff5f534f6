//! A classic-BPF interpreter for seccomp filters, so tests can run the real compiled
//! filter against synthetic system calls without installing it.
//!
//! It covers the instructions seccomp filters use (loads from `seccomp_data`, ALU with a
//! constant, conditional jumps, returns) and panics on anything else, so a filter it cannot
//! follow fails the test rather than passing silently.

use hutch_sys::seccomp::Instruction;

const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_K: u16 = 0x00;
const BPF_A: u16 = 0x10;

/// `struct seccomp_data`: what the kernel hands a filter about a system call.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeccompData {
    /// System call number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the calling convention.
    pub arch: u32,
    /// Up to six arguments.
    pub args: [u64; 6],
}

/// `AUDIT_ARCH_X86_64`.
pub(super) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_I386`: the 32-bit calling convention on the same CPU.
pub(super) const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

impl SeccompData {
    /// A call of `nr` with `args` in the x86-64 calling convention.
    pub fn x86_64(nr: i64, args: &[u64]) -> Self {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        SeccompData {
            nr: i32::try_from(nr).expect("syscall number fits i32"),
            arch: AUDIT_ARCH_X86_64,
            args: a,
        }
    }

    /// The structure's bytes as the kernel lays it out (native endianness, 64 bytes).
    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        // instruction_pointer (8..16) stays zero: hutch's filter does not look at it.
        for (i, arg) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        b
    }
}

/// Runs one filter and returns its 32-bit verdict.
pub(super) fn run(prog: &[Instruction], data: &SeccompData) -> u32 {
    let mem = data.bytes();
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = prog
            .get(pc)
            .unwrap_or_else(|| panic!("filter ran past its end at {pc}"));
        pc += 1;
        let k = ins.k;
        match ins.code & 0x07 {
            BPF_LD => {
                assert_eq!(
                    ins.code,
                    BPF_LD | BPF_W | BPF_ABS,
                    "unsupported load at {pc}"
                );
                let off = k as usize;
                // The kernel only accepts aligned word loads inside seccomp_data.
                assert!(
                    off.is_multiple_of(4) && off + 4 <= mem.len(),
                    "bad load offset {off}"
                );
                acc = u32::from_ne_bytes(mem[off..off + 4].try_into().expect("4 bytes"));
            }
            BPF_ALU => {
                assert_eq!(ins.code & 0x08, BPF_K, "ALU with X at {pc}");
                acc = match ins.code & 0xf0 {
                    0x00 => acc.wrapping_add(k),
                    0x10 => acc.wrapping_sub(k),
                    0x40 => acc | k,
                    0x50 => acc & k,
                    0x60 => acc.wrapping_shl(k),
                    0x70 => acc.wrapping_shr(k),
                    op => panic!("unsupported ALU op {op:#x} at {pc}"),
                };
            }
            BPF_JMP => {
                assert_eq!(ins.code & 0x08, BPF_K, "jump against X at {pc}");
                let taken = match ins.code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => acc == k,
                    0x20 => acc > k,
                    0x30 => acc >= k,
                    0x40 => acc & k != 0,
                    op => panic!("unsupported jump {op:#x} at {pc}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            BPF_RET => {
                return if ins.code & 0x18 == BPF_A { acc } else { k };
            }
            class => panic!("unsupported instruction class {class:#x} at {pc}"),
        }
    }
}

/// What the kernel does with a call, from the verdicts of every installed filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The call runs.
    Allow,
    /// The call fails with this errno.
    Errno(u32),
    /// The whole process is killed.
    KillProcess,
    /// Any other action.
    Other(u32),
}

/// Runs every filter (`programs` in installation order) and combines the verdicts as the
/// kernel does: the action with the highest precedence wins (the lowest value of the action
/// bits read as a signed number); among equal actions, the most recently installed filter's.
pub(super) fn verdict(programs: &[Vec<Instruction>], data: &SeccompData) -> Verdict {
    let action = |r: u32| (r & 0xffff_0000) as i32;
    let mut best: Option<u32> = None;
    for p in programs.iter().rev() {
        let r = run(p, data);
        if best.is_none_or(|b| action(r) < action(b)) {
            best = Some(r);
        }
    }
    match best.expect("at least one filter") {
        0x7fff_0000 => Verdict::Allow,
        0x8000_0000 => Verdict::KillProcess,
        r if r & 0xffff_0000 == 0x0005_0000 => Verdict::Errno(r & 0xffff),
        r => Verdict::Other(r),
    }
}
