//! The contracts between hutch's processes, each typed once: the server, the CLI and the
//! in-sandbox agent all use these types instead of re-describing the values they exchange.
//!
//! - [`envd`]: the envd protocol (E2B's `process` and `filesystem` Connect services), generated
//!   from `proto/*.proto`.
//! - [`template`]: template build steps, parsed once from E2B's wire form.
//! - [`agent`]: how the server configures the in-sandbox agent, and where it lives and listens.
//! - [`multipart`]: the `multipart/form-data` bodies of `POST /files`, parsed by the agent and,
//!   for uploads it hands off, by the server.
//! - [`auth`], [`net`]: small helpers both sides of a connection need.

pub mod agent;
pub mod auth;
pub mod envd;
pub mod multipart;
#[cfg(feature = "serve")]
pub mod net;
pub mod process_output;
pub mod template;
