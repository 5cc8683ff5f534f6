//! Sandbox isolation for hutch: the pieces that turn a template rootfs into a running,
//! isolated sandbox and back into nothing.
//!
//! This crate speaks no HTTP. The server drives it through [`Runtime`]; the process that
//! actually clones into the new namespaces is a short-lived helper (`hutch __spawn`)
//! whose entry point is [`spawn::helper_main`], so that `fork` never happens inside the
//! multi-threaded server.

mod agent_log;
pub mod caps;
pub mod cgroup;
pub mod disk;
pub mod error;
pub mod gvisor;
pub mod idmap;
mod mountinfo;
pub mod mounts;
pub mod net;
pub mod proc;
pub mod runtime;
pub mod seccomp;
pub mod spawn;
mod spawner;
pub mod squash;
#[cfg(test)]
mod testutil;
mod timing;
mod trash;
pub mod ucounts;
pub mod zygote;

pub use cgroup::{CgroupDriver, CgroupStats};
pub use error::RuntimeError;
pub use net::{NetConfig, SandboxNet};
pub use runtime::{Limits, Runtime, RuntimeConfig, SandboxSpec, Spawned};
