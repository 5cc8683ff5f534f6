//! One `/execute` request: waiting for the context's turn, per-request environment variables,
//! streaming the kernel's events as E2B's NDJSON lines, and interrupting the kernel when the
//! client goes away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hutch_kernel::e2b;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::kernel::Kernel;
use super::language::Dialect;
use super::{Context, InterpreterService};

/// Lines buffered between the kernel and a slow client before the kernel's events wait.
const LINE_BUFFER: usize = 256;

/// After interrupting an abandoned execution, how long to wait for the kernel to finish it
/// before handing the context to the next request anyway (which then queues in the kernel).
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// How often an abandoned execution that is still running is interrupted again. A SIGINT
/// that lands while ipykernel itself (not the user's code) runs can be swallowed, and the
/// code then starts anyway.
const INTERRUPT_REPEAT: Duration = Duration::from_secs(1);

/// Starts running `code` in `context` on a task of its own and returns its NDJSON lines, each
/// ending in `\n`. Dropping the receiver means the client went away: the kernel is then
/// interrupted.
pub fn start(
    service: InterpreterService,
    context: Arc<Context>,
    code: String,
    env_vars: BTreeMap<String, String>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(LINE_BUFFER);
    tokio::spawn(run(service, context, code, env_vars, tx));
    rx
}

async fn run(
    service: InterpreterService,
    context: Arc<Context>,
    code: String,
    env_vars: BTreeMap<String, String>,
    tx: mpsc::Sender<Bytes>,
) {
    let turn = tokio::select! {
        turn = Arc::clone(&context.turn).lock_owned() => turn,
        // Gone while queued behind another execution: nothing to run.
        _ = tx.closed() => return,
    };
    let kernel = match service.kernel(&context).await {
        Ok(kernel) => kernel,
        Err(err) => {
            send(
                &tx,
                e2b::error_line("KernelStartError", &err.to_string(), ""),
            )
            .await;
            send(&tx, json!({"type": "end_of_execution"})).await;
            return;
        }
    };
    if tx.is_closed() {
        // Gone while the kernel started: the kernel stays for the next request.
        return;
    }
    let dialect = Dialect::of(&context.language);
    if !env_vars.is_empty() {
        match dialect {
            Some(d) => {
                kernel
                    .run_hidden(&d.set_all(&env_vars), "setting env_vars")
                    .await;
            }
            None => tracing::warn!(
                language = %context.language,
                "env_vars ignored: no way to set variables in this language"
            ),
        }
    }

    stream(&kernel, &code, &tx).await;
    // The client's stream ends here; the clean-up below is no reason to keep it waiting.
    drop(tx);

    if let (false, Some(d)) = (env_vars.is_empty(), dialect) {
        // Back to what every execution sees: the sandbox's value, or unset.
        let sandbox_env = service.inner.settings.identity.env();
        let restore: Vec<String> = env_vars
            .keys()
            .map(|k| match sandbox_env.get(k) {
                Some(v) => d.set(k, v),
                None => d.unset(k),
            })
            .collect();
        kernel
            .run_hidden(&restore.join("\n"), "restoring env_vars")
            .await;
    }
    drop(turn);
}

/// Runs the user's code and forwards its events until `end_of_execution`.
async fn stream(kernel: &Kernel, code: &str, tx: &mpsc::Sender<Bytes>) {
    let sent = match kernel.client() {
        Some(client) => client.execute_code(code).await,
        None => Err(hutch_kernel::KernelError::Disconnected(
            "the kernel exited".into(),
        )),
    };
    let mut execution = match sent {
        Ok(execution) => execution,
        Err(err) => {
            tracing::warn!(error = %err, "cannot send execute_request");
            lost(kernel, tx).await;
            return;
        }
    };
    // When the client went away, and when to interrupt again.
    let mut abandoned: Option<(Instant, Instant)> = None;
    loop {
        let next_interrupt = async {
            match abandoned {
                Some((_, again)) => tokio::time::sleep_until(again).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = execution.next_event() => match event {
                Ok(Some(event)) => {
                    for line in e2b::event_lines(&event) {
                        send(tx, line).await;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::info!(error = %err, "execution lost its kernel");
                    lost(kernel, tx).await;
                    return;
                }
            },
            _ = tx.closed(), if abandoned.is_none() => {
                tracing::info!(pid = kernel.pid(), "client went away mid-execution; interrupting the kernel");
                kernel.interrupt().await;
                let now = Instant::now();
                abandoned = Some((now, now + INTERRUPT_REPEAT));
            }
            _ = next_interrupt => {
                let Some((since, _)) = abandoned else { continue };
                if since.elapsed() >= INTERRUPT_GRACE {
                    tracing::warn!(pid = kernel.pid(), "kernel still busy after interrupts; releasing the context anyway");
                    return;
                }
                tracing::info!(pid = kernel.pid(), "abandoned execution still running; interrupting again");
                kernel.interrupt().await;
                abandoned = Some((since, Instant::now() + INTERRUPT_REPEAT));
            }
        }
    }
}

/// Ends a stream whose kernel went away, saying why.
async fn lost(kernel: &Kernel, tx: &mpsc::Sender<Bytes>) {
    let (name, value) = kernel.lost_error().await;
    send(tx, e2b::error_line(&name, &value, "")).await;
    send(tx, json!({"type": "end_of_execution"})).await;
}

/// Sends one line; a client that went away is noticed by the caller's `closed()`.
async fn send(tx: &mpsc::Sender<Bytes>, line: Value) {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    let _ = tx.send(Bytes::from(bytes)).await;
}
