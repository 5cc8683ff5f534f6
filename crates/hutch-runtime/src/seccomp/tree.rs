//! The sandbox's seccomp policy compiled into one classic-BPF program that finds the
//! system call number by binary search.
//!
//! The kernel pays for a filter three times: when it is attached (checked, translated and
//! JIT-compiled, then run once for every system call number to fill the per-number cache
//! of calls that are always allowed), and on every call whose verdict depends on its
//! arguments. A program that compares the number against each listed call in turn costs
//! the length of the list for each of these; four of them stacked (as `seccompiler`
//! builds them, one per action) cost four times. Here the number is found in about
//! 2 × log2(ranges) instructions, and the argument checks of the few calls that have them
//! follow their leaf.

use hutch_sys::seccomp::Instruction;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// `SECCOMP_RET_ALLOW`.
pub(super) const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO` with `errno`.
pub(super) const fn ret_errno(errno: i32) -> u32 {
    0x0005_0000 | (errno as u32 & 0xffff)
}

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// Offsets in `struct seccomp_data` (x86-64, little-endian): the number, the calling
/// convention, and the low and high 32 bits of argument `i`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
pub(super) const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
pub(super) const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum To {
    /// The next instruction.
    Next,
    /// A label of the same [`Asm`].
    Label(usize),
}

/// A forward-only assembler for classic BPF with labels.
#[derive(Debug, Default)]
pub(super) struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    /// A new label, placed later with [`Asm::place`].
    pub fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    /// Puts `label` at the next instruction.
    pub fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.code.len());
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub fn load(&mut self, offset: u32) {
        self.code.push((BPF_LD_W_ABS, To::Next, To::Next, offset));
    }

    /// Returns `action`.
    pub fn ret(&mut self, action: u32) {
        self.code.push((BPF_RET_K, To::Next, To::Next, action));
    }

    /// Jumps to `yes` when `A == k`, else to `no`.
    pub fn jeq(&mut self, k: u32, yes: To, no: To) {
        self.code.push((BPF_JMP_JEQ_K, yes, no, k));
    }

    /// Jumps to `yes` when `A >= k`, else to `no`.
    pub fn jge(&mut self, k: u32, yes: To, no: To) {
        self.code.push((BPF_JMP_JGE_K, yes, no, k));
    }

    /// Jumps to `yes` when `A & k != 0`, else to `no`.
    pub fn jset(&mut self, k: u32, yes: To, no: To) {
        self.code.push((BPF_JMP_JSET_K, yes, no, k));
    }

    /// Jumps to `to` unconditionally (any distance).
    pub fn ja(&mut self, to: usize) {
        self.code.push((BPF_JMP_JA, To::Label(to), To::Next, 0));
    }

    /// The program, with every jump resolved. Fails when a label was never placed or a
    /// conditional jump is longer than 255 instructions.
    pub fn finish(self) -> Result<Vec<Instruction>, String> {
        let offset = |pc: usize, to: To| -> Result<usize, String> {
            match to {
                To::Next => Ok(0),
                To::Label(l) => {
                    let at = self.labels[l].ok_or_else(|| format!("label {l} never placed"))?;
                    at.checked_sub(pc + 1)
                        .ok_or_else(|| format!("backward jump at {pc}"))
                }
            }
        };
        let short = |n: usize, pc: usize| {
            u8::try_from(n).map_err(|_| format!("conditional jump of {n} at {pc}"))
        };
        self.code
            .iter()
            .enumerate()
            .map(|(pc, &(code, jt, jf, k))| {
                if code == BPF_JMP_JA {
                    let n = offset(pc, jt)?;
                    let k = u32::try_from(n).map_err(|_| format!("jump of {n} at {pc}"))?;
                    return Ok(Instruction {
                        code,
                        jt: 0,
                        jf: 0,
                        k,
                    });
                }
                Ok(Instruction {
                    code,
                    jt: short(offset(pc, jt)?, pc)?,
                    jf: short(offset(pc, jf)?, pc)?,
                    k,
                })
            })
            .collect()
    }
}

/// Emits the argument checks of one system call (every path ends with a return).
pub(super) type Check<'a> = &'a dyn Fn(&mut Asm);

/// What a system call number leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaf {
    /// This action, whatever the arguments.
    Ret(u32),
    /// The argument checks of entry `i` of the `checks` given to [`compile`].
    Check(usize),
}

/// Compiles a policy: calls of another calling convention kill the process; `leaves` maps
/// system call numbers to what they lead to (numbers not listed: `default`); a
/// [`Leaf::Check`] runs the emitter at that index of `checks`, which must end every path
/// with a return.
pub(super) fn compile(
    leaves: &[(u32, Leaf)],
    default: u32,
    checks: &[Check<'_>],
) -> Result<Vec<Instruction>, String> {
    let mut sorted = leaves.to_vec();
    sorted.sort_by_key(|(nr, _)| *nr);
    if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("a system call is listed twice".into());
    }
    // Ranges [start, next start) of numbers with the same leaf, covering every number.
    let mut ranges: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |start: u32, leaf: Leaf| match ranges.last() {
        Some((_, last)) if *last == leaf && !matches!(leaf, Leaf::Check(_)) => {}
        _ => ranges.push((start, leaf)),
    };
    let mut next = 0u32;
    for &(nr, leaf) in &sorted {
        if nr > next {
            push(next, Leaf::Ret(default));
        }
        push(nr, leaf);
        next = nr.saturating_add(1);
    }
    if next != 0 && sorted.last().is_some_and(|(nr, _)| *nr < u32::MAX) {
        push(next, Leaf::Ret(default));
    }
    if ranges.is_empty() {
        ranges.push((0, Leaf::Ret(default)));
    }

    let mut asm = Asm::default();
    asm.load(OFF_ARCH);
    let native = asm.label();
    asm.jeq(AUDIT_ARCH_X86_64, To::Label(native), To::Next);
    asm.ret(RET_KILL_PROCESS);
    asm.place(native);
    asm.load(OFF_NR);
    emit_tree(&mut asm, &ranges, checks)?;
    asm.finish()
}

/// The search over `ranges` (sorted, contiguous): halves until one range is left.
fn emit_tree(asm: &mut Asm, ranges: &[(u32, Leaf)], checks: &[Check<'_>]) -> Result<(), String> {
    match ranges {
        [] => Err("no range".into()),
        [(_, Leaf::Ret(action))] => {
            asm.ret(*action);
            Ok(())
        }
        [(_, Leaf::Check(i))] => {
            let emit = checks
                .get(*i)
                .ok_or_else(|| format!("no argument check {i}"))?;
            emit(asm);
            Ok(())
        }
        _ => {
            // A >= the upper half's first number: on to the long jump there; else past it.
            let mid = ranges.len() / 2;
            let (lower, upper) = (asm.label(), asm.label());
            asm.jge(ranges[mid].0, To::Next, To::Label(lower));
            asm.ja(upper);
            asm.place(lower);
            emit_tree(asm, &ranges[..mid], checks)?;
            asm.place(upper);
            emit_tree(asm, &ranges[mid..], checks)
        }
    }
}
