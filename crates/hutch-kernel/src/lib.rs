//! A Jupyter messaging client over ZeroMQ, without Jupyter Server.
//!
//! The in-sandbox agent uses it to drive kernels (ipykernel, bash_kernel, JS/TS, IRkernel,
//! Java): it writes a [`ConnectionInfo`] file, finds the [`KernelSpec`] and spawns the
//! [`KernelCommand`] itself (it is PID 1 and reaps every child), then
//! [`KernelClient::connect`]s and [`KernelClient::execute`]s code, mapping each
//! [`ExecutionEvent`] to E2B's NDJSON with [`e2b::event_lines`].
//!
//! See `docs/kernel.md` for the design and measurements.

#![warn(missing_docs)]

pub mod client;
pub mod connection;
pub mod e2b;
pub mod error;
pub mod execute;
pub mod message;
pub mod spec;

pub use client::{sigint, wait_for_endpoints, ConnectOptions, Interrupted, KernelClient};
pub use connection::{create_private_dir, ConnectionInfo, Transport};
pub use error::{ConnectionError, KernelError, ProtocolError, SpecError};
pub use execute::{
    ExecuteReply, ExecuteRequest, Execution, ExecutionEvent, ExecutionState, ReplyStatus,
    StreamName,
};
pub use message::{Channel, Header, Message, Signer};
pub use spec::{
    find_kernel_spec, find_kernel_specs, kernel_dirs, InterruptMode, KernelCommand, KernelSpec,
    SYSTEM_KERNEL_DIRS,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}

    /// The agent shares one client across axum handlers and streams executions from
    /// spawned tasks, so these must cross threads; this fails to compile otherwise.
    #[test]
    fn client_and_its_futures_can_cross_tasks() {
        send_sync::<KernelClient>();
        send_sync::<Execution>();
        #[allow(dead_code)]
        async fn futures(c: &KernelClient, info: &ConnectionInfo, mut e: Execution) {
            send(&KernelClient::connect(info, ConnectOptions::default()));
            send(&c.execute_code("1"));
            send(&c.interrupt());
            send(&c.shutdown(false));
            send(&c.heartbeat(std::time::Duration::from_secs(1)));
            send(&e.next_event());
        }
    }
}
