//! The same policy built the straightforward way, with `seccompiler`: four stacked filters
//! that compare the system call number against each listed call in turn. Kept as the
//! reference the compiled tree ([`super::programs`]) is checked against.

use std::collections::BTreeMap;

use hutch_sys::seccomp::Instruction;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use super::{
    ALLOWED, FAMILIES_IP, FAMILY_NETLINK, FAMILY_UNIX, IOCTLS_REFUSED, IP_PROTOCOLS,
    NETLINK_PROTOCOLS, NS_FLAGS, PERSONALITIES,
};
use crate::error::{Result, RuntimeError};

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<Vec<Instruction>> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| RuntimeError::Seccomp(e.to_string()))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| RuntimeError::Seccomp(e.to_string()))?;
    Ok(program
        .iter()
        .map(|i| Instruction {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| RuntimeError::Seccomp(e.to_string()))
}

/// A condition on the low 32 bits of an argument: for the `int` and `unsigned int`
/// parameters the kernel reads only those of (a caller may set the upper ones to anything).
fn cond32(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| RuntimeError::Seccomp(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conds).map_err(|e| RuntimeError::Seccomp(e.to_string()))
}

/// The calls of a family other than [`FAMILY_UNIX`], [`FAMILIES_IP`] and [`FAMILY_NETLINK`]
/// (`socketpair`: other than [`FAMILY_UNIX`]). They get EAFNOSUPPORT, the kernel's own
/// answer for a family it lacks, which programs that probe for one expect (sudo and PAM take
/// EPERM from the audit socket for an error, for instance).
fn foreign_families() -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut families = vec![FAMILY_UNIX, FAMILY_NETLINK];
    families.extend_from_slice(FAMILIES_IP);
    let not_any = families
        .iter()
        .map(|f| cond32(0, SeccompCmpOp::Ne, *f))
        .collect::<Result<Vec<_>>>()?;
    Ok([
        (libc::SYS_socket, vec![rule(not_any)?]),
        (
            libc::SYS_socketpair,
            vec![rule(vec![cond32(0, SeccompCmpOp::Ne, FAMILY_UNIX)?])?],
        ),
    ]
    .into_iter()
    .collect())
}

/// The `socket` calls of an allowed family with a protocol outside [`IP_PROTOCOLS`] or
/// [`NETLINK_PROTOCOLS`]: EPROTONOSUPPORT, as from a kernel without them.
fn foreign_protocols() -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut rules = Vec::new();
    let mut add = |family: u64, protocols: &[u64]| -> Result<()> {
        let mut conds = vec![cond32(0, SeccompCmpOp::Eq, family)?];
        for p in protocols {
            conds.push(cond32(2, SeccompCmpOp::Ne, *p)?);
        }
        rules.push(rule(conds)?);
        Ok(())
    };
    for family in FAMILIES_IP {
        add(*family, IP_PROTOCOLS)?;
    }
    add(FAMILY_NETLINK, NETLINK_PROTOCOLS)?;
    Ok([(libc::SYS_socket, rules)].into_iter().collect())
}

/// The filters, in installation order: the allowlist, the clone3 → ENOSYS filter, and the
/// socket families (EAFNOSUPPORT) and protocols (EPROTONOSUPPORT) filters.
pub(super) fn programs() -> Result<Vec<Vec<Instruction>>> {
    let mut allow: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|s| (*s, Vec::new())).collect();
    allow.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(NS_FLAGS), 0)?])?],
    );
    let personality = PERSONALITIES
        .iter()
        .map(|v| rule(vec![cond(0, SeccompCmpOp::Eq, *v)?]))
        .collect::<Result<Vec<_>>>()?;
    allow.insert(libc::SYS_personality, personality);
    let ioctl = IOCTLS_REFUSED
        .iter()
        .map(|r| cond32(1, SeccompCmpOp::Ne, *r))
        .collect::<Result<Vec<_>>>()?;
    allow.insert(libc::SYS_ioctl, vec![rule(ioctl)?]);
    let allowlist = compile(
        allow,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?;

    let clone3: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    let clone3 = compile(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    let families = compile(
        foreign_families()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
    )?;
    let protocols = compile(
        foreign_protocols()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPROTONOSUPPORT as u32),
    )?;
    Ok(vec![allowlist, clone3, families, protocols])
}
