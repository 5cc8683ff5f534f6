//! Sandboxes' egress policies and the proxy that enforces them (see docs/egress.md).

pub mod policy;
pub mod proxy;
pub mod sniff;
pub mod tls;
pub mod transform;
