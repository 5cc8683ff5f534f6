//! hutch's syscall layer: the only place in the workspace that makes raw Linux calls.
//!
//! Everything above this crate calls safe functions that return typed, checked results;
//! `unsafe` lives here, each block with a `// SAFETY:` comment saying why it holds.
