//! hutch's syscall layer: the only place in the workspace that makes raw Linux calls.
//!
//! Everything above this crate calls safe functions that return typed, checked results;
//! `unsafe` lives here, each block with a `// SAFETY:` comment saying why it holds.
//!
//! Most functions are thin wrappers over `rustix` returning its [`Errno`] (which converts
//! into `std::io::Error` with the OS error number intact, so callers keep matching on it);
//! the few multi-step operations return [`SysError`], which names the call and its input.
//! Functions documented as *async-signal-safe* allocate nothing and take no locks: they may
//! run in a child between `fork` and `exec` (see [`child`]).

pub mod caps;
pub mod child;
pub mod creds;
pub mod errno;
pub mod error;
pub mod fd;
pub mod fs;
pub mod inotify;
pub mod loopdev;
pub mod malloc;
pub mod mount;
pub mod netlink;
pub mod ns;
pub mod oom;
pub mod process;
pub mod pty;
pub mod rooted;
pub mod seccomp;
pub mod signal;
pub mod xattr;

pub use error::{SysError, SysResult};
pub use rustix::io::Errno;
