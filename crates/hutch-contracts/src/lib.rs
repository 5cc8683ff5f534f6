//! The contracts between hutch's processes, each typed once: the server, the CLI and the
//! in-sandbox agent all use these types instead of re-describing the values they exchange.

pub mod template;
