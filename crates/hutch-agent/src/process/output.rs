//! Moving a process's output from its pipes to the clients watching it.
//!
//! Each process has an [`EventHub`]: its output pumps publish into it and every stream watching
//! the process (its `Start` call and any `Connect` calls) holds a subscription. Delivery applies
//! back-pressure like envd's multiplexer: a slow reader slows the process's pipe down rather than
//! losing output, while a reader that went away is dropped and the process keeps running.

use hutch_sys::errno;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};

use super::wire::ProcessEvent;

/// Size of one read from a pipe, and so the most output one data event carries (envd's value).
const CHUNK: usize = 32 << 10;

/// How much output is still read after the process exited. The process's own output is at most a
/// pipe's capacity (64 KiB by default, 1 MiB at most); the cap stops a background descendant that
/// keeps writing into the inherited pipe from delaying the end event forever.
const DRAIN_LIMIT: usize = 4 << 20;

/// Events a subscriber may have in flight before the publisher waits.
pub const SUBSCRIBER_BUFFER: usize = 64;

/// Fans one process's events out to its subscribers.
#[derive(Debug, Default)]
pub struct EventHub {
    /// `None` once the process has ended and its last event went out.
    subscribers: Mutex<Option<Vec<mpsc::Sender<ProcessEvent>>>>,
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::new(Some(Vec::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<mpsc::Sender<ProcessEvent>>>> {
        // The guarded value is a plain list; it is consistent even after a panic elsewhere.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to every event published from now on; `None` if the process already ended.
    pub fn subscribe(&self) -> Option<mpsc::Receiver<ProcessEvent>> {
        let mut guard = self.lock();
        let subs = guard.as_mut()?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        subs.push(tx);
        Some(rx)
    }

    /// Delivers `event` to every live subscriber, waiting for room in each one's buffer.
    pub async fn publish(&self, event: ProcessEvent) {
        let targets = match self.lock().as_ref() {
            Some(subs) => subs.clone(),
            None => return,
        };
        let mut lost_one = false;
        for tx in &targets {
            // An error means the subscriber hung up; output then simply goes unobserved, as in
            // envd, and the process is not disturbed.
            lost_one |= tx.send(event.clone()).await.is_err();
        }
        if lost_one {
            if let Some(subs) = self.lock().as_mut() {
                subs.retain(|tx| !tx.is_closed());
            }
        }
    }

    /// Ends every subscription; their receivers yield `None` after the buffered events.
    pub fn close(&self) {
        self.lock().take();
    }
}

/// Which output stream a pump reads.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
    /// The master side of the process's terminal.
    Pty,
}

impl Stream {
    fn event(self, bytes: Bytes) -> ProcessEvent {
        match self {
            Stream::Stdout => ProcessEvent::Stdout(bytes),
            Stream::Stderr => ProcessEvent::Stderr(bytes),
            Stream::Pty => ProcessEvent::Pty(bytes),
        }
    }
}

/// Makes `fd` non-blocking and registers it with the runtime for `interest`.
pub fn async_fd(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: an `OwnedFd` is an open descriptor that stays open, and keeps returning the same
    // number, until it is dropped, which happens only together with the `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

/// Writes all of `data` to the non-blocking `fd`, waiting whenever it is full (a process that
/// does not read its input slows the writer down; nothing is dropped).
pub async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| write_fd(fd.get_ref(), data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(err)) => return Err(err),
            // Spurious readiness; try_io cleared it and the next poll waits again.
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// One `write(2)` from `buf`.
fn write_fd(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    Ok(hutch_sys::fd::write(fd, buf)?)
}

/// Whether a read error means "no more data ever": a PTY master reads EIO once every holder of
/// the slave side has closed it.
fn is_hangup(err: &io::Error) -> bool {
    err.raw_os_error() == Some(errno::EIO)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    Ok(hutch_sys::fd::set_nonblocking(fd)?)
}

/// One `read(2)` into `buf`.
fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(hutch_sys::fd::read(fd, buf)?)
}

/// Copies `pipe` into `hub` until end of file, or until the process has exited (`exited` turns
/// true) and what it left in the pipe has been read.
///
/// Stopping at exit rather than at end of file matters: a background child (`cmd &`) inherits the
/// pipe and keeps it open, and the stream must still end when the process does. The read end is
/// closed when this returns, so such descendants get SIGPIPE, as under envd.
pub async fn pump(
    pipe: Arc<AsyncFd<OwnedFd>>,
    stream: Stream,
    hub: Arc<EventHub>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            // Checked first so a descendant writing nonstop cannot hold the stream open.
            biased;
            // The sender only goes away after sending true, so an error means "exited" too.
            _ = async { drop(exited.wait_for(|done| *done).await) } => {
                drain(&pipe, stream, &hub, &mut buf).await;
                return;
            }
            ready = pipe.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(err) => {
                        tracing::warn!(error = %err, ?stream, "polling process output failed");
                        return;
                    }
                };
                match guard.try_io(|fd| read_fd(fd.get_ref(), &mut buf)) {
                    Ok(Ok(0)) => return,
                    Ok(Ok(n)) => hub.publish(stream.event(Bytes::copy_from_slice(&buf[..n]))).await,
                    Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(err)) if is_hangup(&err) => return,
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, ?stream, "reading process output failed");
                        return;
                    }
                    // Spurious readiness; try_io cleared it and the next poll waits again.
                    Err(_would_block) => {}
                }
            }
        }
    }
}

/// Reads whatever is already in the pipe without waiting for more.
///
/// Uses `read(2)` directly rather than the runtime's readiness: the readiness may not have caught
/// up with data written just before the exit, and this must see all of it.
async fn drain(pipe: &AsyncFd<OwnedFd>, stream: Stream, hub: &EventHub, buf: &mut [u8]) {
    let mut total = 0;
    while total < DRAIN_LIMIT {
        match read_fd(pipe.get_ref(), buf) {
            Ok(0) => return,
            Ok(n) => {
                total += n;
                hub.publish(stream.event(Bytes::copy_from_slice(&buf[..n])))
                    .await;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: the pipe is empty; EIO: a terminal nobody holds any more; anything
            // else: nothing more to read either way.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hub_delivers_in_order_and_ends_subscriptions_on_close() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe().unwrap();
        hub.publish(ProcessEvent::Start { pid: 1 }).await;
        hub.publish(ProcessEvent::Keepalive).await;
        hub.close();
        assert_eq!(rx.recv().await, Some(ProcessEvent::Start { pid: 1 }));
        assert_eq!(rx.recv().await, Some(ProcessEvent::Keepalive));
        assert_eq!(rx.recv().await, None);
        assert!(hub.subscribe().is_none());
    }

    #[tokio::test]
    async fn hub_drops_subscribers_that_hung_up() {
        let hub = EventHub::new();
        let rx = hub.subscribe().unwrap();
        drop(rx);
        // Must not block even though the buffer of the dead subscriber would be full.
        for _ in 0..SUBSCRIBER_BUFFER * 2 {
            hub.publish(ProcessEvent::Keepalive).await;
        }
        assert!(hub.lock().as_ref().unwrap().is_empty());
    }
}
