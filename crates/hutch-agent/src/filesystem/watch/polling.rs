//! The polling side of watching (`CreateWatcher` / `GetWatcherEvents`): a watch's events kept in
//! a bounded buffer until a client fetches them.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use super::EventReceiver;
use crate::connect::{Code, ConnectError};
use crate::filesystem::wire::FilesystemEvent;

/// Events a polling watcher keeps before it gives up: a client that never fetches must not
/// make PID 1 grow without bound.
pub const MAX_BUFFERED_EVENTS: usize = 65_536;

/// A watcher of the polling API: a task moves its events into a buffer until they are fetched.
pub struct PollingWatcher {
    buffer: Arc<Mutex<Buffer>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Buffer {
    events: Vec<FilesystemEvent>,
    error: Option<ConnectError>,
}

impl PollingWatcher {
    /// Starts buffering `events`.
    pub fn new(mut events: EventReceiver) -> Self {
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let sink = buffer.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = events.recv().await {
                let mut buffer = lock_buffer(&sink);
                match item {
                    Ok(event) if buffer.events.len() < MAX_BUFFERED_EVENTS => {
                        buffer.events.push(event)
                    }
                    Ok(_) => {
                        buffer.error = Some(ConnectError::new(
                            Code::ResourceExhausted,
                            format!(
                                "the watcher buffered {MAX_BUFFERED_EVENTS} events that were \
                                 never fetched and stopped; create a new one"
                            ),
                        ));
                        return;
                    }
                    Err(err) => {
                        buffer.error = Some(err);
                        return;
                    }
                }
            }
        });
        Self { buffer, task }
    }

    /// Every buffered event, oldest first; the watcher's error once it failed.
    pub fn take_events(&self) -> Result<Vec<FilesystemEvent>, ConnectError> {
        let mut buffer = lock_buffer(&self.buffer);
        if let Some(err) = &buffer.error {
            return Err(err.clone());
        }
        Ok(std::mem::take(&mut buffer.events))
    }
}

impl Drop for PollingWatcher {
    fn drop(&mut self) {
        // Dropping the receiver with the task ends the reader task, which closes the
        // inotify descriptor.
        self.task.abort();
    }
}

fn lock_buffer(buffer: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    // Critical sections are single pushes and swaps; a poisoned buffer is still consistent.
    buffer.lock().unwrap_or_else(|e| e.into_inner())
}
