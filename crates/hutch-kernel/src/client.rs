//! The client: five ZeroMQ sockets to one kernel, and request/reply correlation.
//!
//! One reader task per receiving socket decodes messages and routes each by its parent
//! msg_id to whoever sent that request (an [`Execution`], or a request waiting for its
//! reply). Messages for nobody (another client's requests, startup noise) are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::{
    DealerRecvHalf, DealerSendHalf, DealerSocket, ReqSocket, Socket, SocketEvent, SocketOptions,
    SocketRecv, SocketSend, SubSocket, ZmqMessage,
};

use crate::connection::{ConnectionInfo, Transport};
use crate::error::KernelError;
use crate::execute::{ExecuteRequest, Execution, OutputBarrier};
use crate::message::{self, new_id, Channel, Message, Signer};
use crate::spec::InterruptMode;

/// How long to wait between polls of a starting kernel's endpoints.
///
/// Short, because every poll is a cheap failed `connect` and each millisecond here is a
/// millisecond of sandbox start-up.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Options for [`KernelClient::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Deadline for the endpoints to accept and the kernel to answer `kernel_info_request`.
    pub timeout: Duration,
    /// Deadline for replies on the control channel (interrupt, shutdown) and the heartbeat.
    pub reply_timeout: Duration,
    /// From the kernel spec: how [`KernelClient::interrupt`] reaches the kernel.
    pub interrupt_mode: InterruptMode,
    /// The kernel's pid, needed to interrupt a `signal`-mode kernel.
    pub pid: Option<u32>,
    /// `username` in our message headers.
    pub username: String,
    /// For kernels that forward a cell's output from a task of their own, so that it can
    /// arrive after the cell's `idle` and reply, parented to whatever request is current by
    /// then (Deno does). Given a marker, returns code that prints the marker on stdout once
    /// all output queued before it has gone out. Every non-silent execution is followed by
    /// that code, and lasts until the marker arrives; see [`crate::execute`].
    pub output_barrier: Option<fn(&str) -> String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(10),
            interrupt_mode: InterruptMode::Signal,
            pid: None,
            username: "hutch".to_owned(),
            output_barrier: None,
        }
    }
}

/// How [`KernelClient::interrupt`] delivered the interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// `interrupt_request` on control, and the kernel replied.
    ByMessage,
    /// SIGINT to the kernel's pid (or its process group, when it leads one).
    BySignal(u32),
}

/// A message routed to a waiter, or the news that no more will come.
#[derive(Debug)]
pub(crate) enum Routed {
    Message(Channel, Box<Message>),
    Lost(String),
}

/// msg_id → waiter, shared by the reader tasks and the request senders.
#[derive(Debug, Default)]
struct Routes {
    map: Mutex<HashMap<String, mpsc::UnboundedSender<Routed>>>,
    /// Set once the kernel is gone; new requests then fail at once.
    lost: Mutex<Option<String>>,
}

impl Routes {
    fn register(
        self: &Arc<Self>,
        msg_id: &str,
    ) -> Result<(mpsc::UnboundedReceiver<Routed>, RouteGuard), KernelError> {
        // Hold `lost` while inserting (fail_all takes the same locks in the same order),
        // so a waiter registered as the kernel dies is either refused or told.
        let lost = self.lost.lock().expect("routes lock");
        if let Some(reason) = lost.as_ref() {
            return Err(KernelError::Disconnected(reason.clone()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.map
            .lock()
            .expect("routes lock")
            .insert(msg_id.to_owned(), tx);
        drop(lost);
        Ok((
            rx,
            RouteGuard {
                routes: Arc::clone(self),
                msg_id: msg_id.to_owned(),
            },
        ))
    }

    /// Routes replies to `alias` to the waiter of `msg_id` too.
    fn alias(self: &Arc<Self>, alias: &str, msg_id: &str) -> Result<RouteGuard, KernelError> {
        let mut map = self.map.lock().expect("routes lock");
        let tx = map
            .get(msg_id)
            .cloned()
            .ok_or_else(|| KernelError::Disconnected("the request's waiter is gone".into()))?;
        map.insert(alias.to_owned(), tx);
        Ok(RouteGuard {
            routes: Arc::clone(self),
            msg_id: alias.to_owned(),
        })
    }

    fn route(&self, channel: Channel, msg: Message) {
        let Some(parent) = msg.parent_msg_id() else {
            tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                "message without parent"
            );
            return;
        };
        let map = self.map.lock().expect("routes lock");
        match map.get(parent) {
            // A send error means the waiter was just dropped; nothing to do.
            Some(tx) => drop(tx.send(Routed::Message(channel, Box::new(msg)))),
            None => tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                parent,
                "message for no waiter"
            ),
        }
    }

    fn fail_all(&self, reason: &str) {
        let mut lost = self.lost.lock().expect("routes lock");
        if lost.is_none() {
            *lost = Some(reason.to_owned());
        }
        for tx in self.map.lock().expect("routes lock").values() {
            let _ = tx.send(Routed::Lost(reason.to_owned()));
        }
    }
}

/// Unregisters a waiter when dropped, so abandoned requests do not leak routes.
#[derive(Debug)]
pub(crate) struct RouteGuard {
    routes: Arc<Routes>,
    msg_id: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.routes.map.lock() {
            map.remove(&self.msg_id);
        }
    }
}

/// A connected, ready Jupyter kernel client.
///
/// Methods take `&self`; share it behind an `Arc`. Dropping it closes the sockets and
/// stops its tasks. It never starts or reaps the kernel process.
pub struct KernelClient {
    session: String,
    username: String,
    signer: Signer,
    info: ConnectionInfo,
    options: ConnectOptions,
    routes: Arc<Routes>,
    shell: tokio::sync::Mutex<DealerSendHalf>,
    control: tokio::sync::Mutex<DealerSendHalf>,
    heartbeat: tokio::sync::Mutex<Option<ReqSocket>>,
    kernel_info: Value,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KernelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelClient")
            .field("session", &self.session)
            .field("info", &self.info)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for KernelClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KernelClient {
    /// Waits for a starting kernel's endpoints, connects all five channels, and returns once
    /// the kernel has answered `kernel_info_request` and its iopub output reaches us.
    ///
    /// Safe to cancel (e.g. in a `select!` with the kernel process exiting): dropping the
    /// future closes whatever it opened.
    pub async fn connect(
        info: &ConnectionInfo,
        options: ConnectOptions,
    ) -> Result<KernelClient, KernelError> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        wait_for_endpoints(info, deadline).await?;
        let endpoints_at = started.elapsed();

        let session = new_id();
        let signer = Signer::new(&info.key);
        let routes = Arc::new(Routes::default());

        let remaining = deadline.saturating_duration_since(Instant::now());
        // Shell and stdin share an identity: the kernel sends input_request to the stdin
        // peer whose identity matches the shell request's, as jupyter_client arranges.
        let identity = || {
            let mut o = sock_options(remaining);
            if let Ok(id) = zeromq::util::PeerIdentity::try_from(session.as_bytes().to_vec()) {
                o.peer_identity(id);
            }
            o
        };
        let mut shell = DealerSocket::with_options(identity());
        let mut stdin = DealerSocket::with_options(identity());
        let mut control = DealerSocket::with_options(sock_options(remaining));
        let mut iopub = SubSocket::with_options(sock_options(remaining));
        // Subscribe before connecting, so the subscription travels with the handshake.
        iopub
            .subscribe("")
            .await
            .map_err(|e| KernelError::zmq("iopub", e))?;
        let iopub_events = iopub.monitor();
        let (shell_ep, iopub_ep, stdin_ep, control_ep) = (
            info.endpoint(Channel::Shell),
            info.endpoint(Channel::IoPub),
            info.endpoint(Channel::Stdin),
            info.endpoint(Channel::Control),
        );
        let (a, b, c, d) = tokio::join!(
            shell.connect(&shell_ep),
            iopub.connect(&iopub_ep),
            stdin.connect(&stdin_ep),
            control.connect(&control_ep),
        );
        a.map_err(|e| KernelError::zmq("shell", e))?;
        b.map_err(|e| KernelError::zmq("iopub", e))?;
        c.map_err(|e| KernelError::zmq("stdin", e))?;
        d.map_err(|e| KernelError::zmq("control", e))?;
        let connected_at = started.elapsed();

        let (shell_tx, shell_rx) = shell.split();
        let (control_tx, control_rx) = control.split();
        let tasks = vec![
            tokio::spawn(read_dealer(
                Channel::Shell,
                shell_rx,
                signer.clone(),
                Arc::clone(&routes),
            )),
            tokio::spawn(read_dealer(
                Channel::Control,
                control_rx,
                signer.clone(),
                Arc::clone(&routes),
            )),
            tokio::spawn(read_iopub(iopub, signer.clone(), Arc::clone(&routes))),
            tokio::spawn(watch_iopub(iopub_events, Arc::clone(&routes))),
            tokio::spawn(serve_stdin(
                stdin,
                signer.clone(),
                session.clone(),
                options.username.clone(),
            )),
        ];

        let mut client = KernelClient {
            session,
            username: options.username.clone(),
            signer,
            info: info.clone(),
            options,
            routes,
            shell: tokio::sync::Mutex::new(shell_tx),
            control: tokio::sync::Mutex::new(control_tx),
            heartbeat: tokio::sync::Mutex::new(None),
            kernel_info: Value::Null,
            tasks,
        };
        client.kernel_info = client.wait_ready(deadline).await?;
        tracing::debug!(
            endpoints_ms = endpoints_at.as_secs_f64() * 1e3,
            connected_ms = connected_at.as_secs_f64() * 1e3,
            ready_ms = started.elapsed().as_secs_f64() * 1e3,
            transport = ?info.transport,
            "kernel ready"
        );
        Ok(client)
    }

    /// Sends `kernel_info_request` until one is answered on shell *and* its status shows on
    /// iopub: a SUB socket's subscription takes effect asynchronously, so a reply alone
    /// does not prove we will see the next request's output.
    async fn wait_ready(&self, deadline: Instant) -> Result<Value, KernelError> {
        let mut iopub_grace = Duration::from_millis(100);
        loop {
            let msg = self.message("kernel_info_request", json!({}));
            let (mut rx, _guard) = self.routes.register(&msg.header.msg_id)?;
            self.send(Channel::Shell, &msg).await?;
            let mut reply: Option<Value> = None;
            let mut saw_iopub = false;
            // Until the reply: the overall deadline. After it: a short grace for iopub.
            let mut until = deadline;
            loop {
                let next = tokio::time::timeout_at(until.into(), rx.recv()).await;
                match next {
                    Ok(Some(Routed::Message(Channel::Shell, m)))
                        if m.msg_type() == "kernel_info_reply" =>
                    {
                        reply = Some(m.content);
                        until = (Instant::now() + iopub_grace).min(deadline);
                    }
                    Ok(Some(Routed::Message(Channel::IoPub, _))) => saw_iopub = true,
                    Ok(Some(Routed::Message(..))) => {}
                    Ok(Some(Routed::Lost(reason))) => {
                        return Err(KernelError::Disconnected(reason))
                    }
                    Ok(None) => return Err(KernelError::Disconnected("client closed".into())),
                    Err(_) => break,
                }
                if let (Some(r), true) = (&reply, saw_iopub) {
                    return Ok(r.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(KernelError::NotReady(self.options.timeout));
            }
            tracing::debug!(
                got_reply = reply.is_some(),
                "kernel_info without iopub status yet; asking again"
            );
            iopub_grace = (iopub_grace * 2).min(Duration::from_secs(1));
        }
    }

    /// The content of the kernel's `kernel_info_reply` (language_info, implementation, ...).
    pub fn kernel_info(&self) -> &Value {
        &self.kernel_info
    }

    /// The connection this client uses.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Our session id (the `session` of every header we send).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Sends an `execute_request` and returns the stream of its events.
    pub async fn execute(&self, request: ExecuteRequest) -> Result<Execution, KernelError> {
        let msg = self.message("execute_request", request.content());
        let id = msg.header.msg_id.clone();
        let (rx, guard) = self.routes.register(&id)?;
        let barrier = match self.options.output_barrier {
            Some(code) if !request.silent => {
                let marker = format!("hutch-output-barrier-{}", new_id());
                let hidden = ExecuteRequest {
                    silent: true,
                    store_history: false,
                    stop_on_error: false,
                    ..ExecuteRequest::new(code(&marker))
                };
                let bmsg = self.message("execute_request", hidden.content());
                let bguard = self.routes.alias(&bmsg.header.msg_id, &id)?;
                Some((bmsg, marker, bguard))
            }
            _ => None,
        };
        match &barrier {
            // Both in one go: nothing else may queue between the code and its barrier.
            Some((bmsg, ..)) => self.send_all(Channel::Shell, &[&msg, bmsg]).await?,
            None => self.send_all(Channel::Shell, &[&msg]).await?,
        }
        tracing::debug!(msg_id = %id, barrier = barrier.is_some(), "execute_request sent");
        let barrier = barrier.map(|(bmsg, marker, bguard)| OutputBarrier {
            msg_id: bmsg.header.msg_id,
            marker,
            route: bguard,
        });
        Ok(Execution::new(id, rx, guard, barrier))
    }

    /// [`KernelClient::execute`] with E2B's default request options.
    pub async fn execute_code(&self, code: &str) -> Result<Execution, KernelError> {
        self.execute(ExecuteRequest::new(code)).await
    }

    /// Sends any request on shell or control (e.g. `complete_request`) and waits up to
    /// `timeout` for its reply.
    pub async fn request(
        &self,
        channel: Channel,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> Result<Message, KernelError> {
        let msg = self.message(msg_type, content);
        let (mut rx, _guard) = self.routes.register(&msg.header.msg_id)?;
        self.send(channel, &msg).await?;
        let wait = async {
            loop {
                match rx.recv().await {
                    Some(Routed::Message(ch, m)) if ch == channel => return Ok(*m),
                    Some(Routed::Message(..)) => {}
                    Some(Routed::Lost(reason)) => return Err(KernelError::Disconnected(reason)),
                    None => return Err(KernelError::Disconnected("client closed".into())),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| KernelError::ReplyTimeout {
                msg_type: msg_type.to_owned(),
                waited: timeout,
            })?
    }

    /// Interrupts the running code the way the kernel spec asks.
    ///
    /// `signal` mode needs the pid ([`ConnectOptions::pid`]); without one this returns
    /// [`KernelError::InterruptNeedsSignal`] and the caller must SIGINT the process itself.
    pub async fn interrupt(&self) -> Result<Interrupted, KernelError> {
        match self.options.interrupt_mode {
            InterruptMode::Message => {
                self.request(
                    Channel::Control,
                    "interrupt_request",
                    json!({}),
                    self.options.reply_timeout,
                )
                .await?;
                Ok(Interrupted::ByMessage)
            }
            InterruptMode::Signal => {
                let pid = self.options.pid.ok_or(KernelError::InterruptNeedsSignal)?;
                sigint(pid)?;
                Ok(Interrupted::BySignal(pid))
            }
        }
    }

    /// Asks the kernel to exit (`shutdown_request` on control) and waits for its reply.
    ///
    /// `restart: true` only tells the kernel a new one will follow. Either way the process
    /// then exits: the caller waits for (and reaps) it, killing it if it lingers, and for a
    /// restart spawns the same command with the same connection file and connects a new
    /// client.
    pub async fn shutdown(&self, restart: bool) -> Result<(), KernelError> {
        let reply = self
            .request(
                Channel::Control,
                "shutdown_request",
                json!({"restart": restart}),
                self.options.reply_timeout,
            )
            .await?;
        tracing::debug!(restart, status = %reply.content["status"], "shutdown_reply");
        Ok(())
    }

    /// Pings the heartbeat channel; returns the round trip, or an error if the kernel did
    /// not echo within `timeout` (a hung or dead kernel).
    pub async fn heartbeat(&self, timeout: Duration) -> Result<Duration, KernelError> {
        let mut slot = self.heartbeat.lock().await;
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, async {
            if slot.is_none() {
                let mut req = ReqSocket::with_options(sock_options(timeout));
                req.connect(&self.info.endpoint(Channel::Heartbeat))
                    .await
                    .map_err(|e| KernelError::zmq("hb", e))?;
                *slot = Some(req);
            }
            let req = slot.as_mut().expect("just set");
            req.send(ZmqMessage::from(Bytes::from_static(b"ping")))
                .await
                .map_err(|e| KernelError::zmq("hb", e))?;
            req.recv().await.map_err(|e| KernelError::zmq("hb", e))?;
            Ok::<_, KernelError>(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => {
                // A REQ socket stuck mid-request cannot send again: start afresh next time.
                *slot = None;
                Err(e)
            }
            Err(_) => {
                *slot = None;
                Err(KernelError::ReplyTimeout {
                    msg_type: "heartbeat".into(),
                    waited: timeout,
                })
            }
        }
    }

    /// True if the kernel echoes a heartbeat within `timeout`.
    pub async fn is_alive(&self, timeout: Duration) -> bool {
        self.heartbeat(timeout).await.is_ok()
    }

    /// Tells the client its kernel process is gone (the caller reaped it): every running
    /// [`Execution`] and pending request fails with [`KernelError::Disconnected`], and so
    /// does every later request.
    pub fn kernel_exited(&self, reason: &str) {
        self.routes.fail_all(reason);
    }

    fn message(&self, msg_type: &str, content: Value) -> Message {
        Message::new(msg_type, content, &self.session, &self.username)
    }

    async fn send(&self, channel: Channel, msg: &Message) -> Result<(), KernelError> {
        self.send_all(channel, &[msg]).await
    }

    /// Sends `msgs` in order, holding the socket throughout.
    async fn send_all(&self, channel: Channel, msgs: &[&Message]) -> Result<(), KernelError> {
        let sock = match channel {
            Channel::Shell => &self.shell,
            Channel::Control => &self.control,
            other => return Err(KernelError::NotARequestChannel(other.name())),
        };
        let mut sock = sock.lock().await;
        for msg in msgs {
            let frames = message::encode(msg, &self.signer);
            let zmsg = ZmqMessage::try_from(frames).expect("encoded messages have frames");
            sock.send(zmsg)
                .await
                .map_err(|e| KernelError::zmq(channel.name(), e))?;
        }
        Ok(())
    }
}

fn sock_options(connect_timeout: Duration) -> SocketOptions {
    let mut o = SocketOptions::default();
    o.connect_timeout(connect_timeout.max(Duration::from_millis(1)));
    o
}

/// Polls until every endpoint of `info` accepts a connection.
///
/// zeromq's own connect retries with a back-off that starts at 50–100 ms, so connecting to a
/// kernel that has not bound yet would add that much to start-up; a cheap probe every few
/// milliseconds finds the sockets as soon as they listen.
pub async fn wait_for_endpoints(
    info: &ConnectionInfo,
    deadline: Instant,
) -> Result<(), KernelError> {
    let started = Instant::now();
    let mut pending: Vec<Channel> = Channel::ALL.to_vec();
    loop {
        let mut still = Vec::new();
        for ch in pending {
            if !accepts(info, ch).await {
                still.push(ch);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KernelError::EndpointsTimeout {
                endpoints: pending.iter().map(|c| info.endpoint(*c)).collect(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn accepts(info: &ConnectionInfo, ch: Channel) -> bool {
    match info.transport {
        Transport::Ipc => match info.ipc_path(ch) {
            // Existence alone is not enough: a dead kernel's socket file can linger.
            Some(p) => tokio::net::UnixStream::connect(p).await.is_ok(),
            None => false,
        },
        Transport::Tcp => tokio::net::TcpStream::connect((info.ip.as_str(), info.port(ch)))
            .await
            .is_ok(),
    }
}

/// Sends SIGINT to `pid`, or to its whole process group when it leads one (as
/// jupyter_client does), so code the kernel started in a subprocess is interrupted too.
pub fn sigint(pid: u32) -> Result<(), KernelError> {
    use hutch_sys::signal::{self, Signal};
    // Pids that do not fit (or 0, which would mean our own group) name no kernel: ESRCH.
    let raw = i32::try_from(pid).unwrap_or(0);
    let sent = if signal::process_group(raw) == Ok(raw) {
        signal::kill_group(raw, Signal::INT)
    } else {
        signal::kill(raw, Signal::INT)
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) => Err(KernelError::Signal {
            pid,
            source: e.into(),
        }),
    }
}

async fn read_dealer(
    channel: Channel,
    mut rx: DealerRecvHalf,
    signer: Signer,
    routes: Arc<Routes>,
) {
    loop {
        match rx.recv().await {
            Ok(m) => deliver(channel, m, &signer, &routes),
            Err(e) => {
                tracing::debug!(channel = channel.name(), error = %e, "recv failed");
                // Errors here mean the peer went away; avoid a hot loop while it is gone.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_iopub(mut sub: SubSocket, signer: Signer, routes: Arc<Routes>) {
    loop {
        match sub.recv().await {
            Ok(m) => deliver(Channel::IoPub, m, &signer, &routes),
            Err(e) => {
                tracing::debug!(error = %e, "iopub recv failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The kernel closing its iopub socket means it exited (or crashed): fail everything
/// waiting on it rather than let executions hang.
async fn watch_iopub(
    mut events: impl futures_util::Stream<Item = SocketEvent> + Unpin,
    routes: Arc<Routes>,
) {
    use futures_util::StreamExt;
    while let Some(ev) = events.next().await {
        if let SocketEvent::Disconnected(_) = ev {
            tracing::debug!("kernel closed its iopub socket");
            routes.fail_all("the kernel closed its sockets (it exited or crashed)");
        }
    }
}

fn deliver(channel: Channel, frames: ZmqMessage, signer: &Signer, routes: &Routes) {
    match message::decode(frames.into_vec(), signer) {
        Ok(msg) => {
            tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                parent = msg.parent_msg_id().unwrap_or("-"),
                content = %msg.content,
                "received"
            );
            routes.route(channel, msg)
        }
        Err(e) => tracing::warn!(channel = channel.name(), error = %e, "dropping bad message"),
    }
}

/// Answers `input_request`s. We send `allow_stdin: false`, so a well-behaved kernel never
/// asks; one that asks anyway would block forever, so it gets an empty line.
async fn serve_stdin(mut sock: DealerSocket, signer: Signer, session: String, username: String) {
    loop {
        let frames = match sock.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "stdin recv failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let req = match message::decode(frames.into_vec(), &signer) {
            Ok(m) if m.msg_type() == "input_request" => m,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "dropping bad stdin message");
                continue;
            }
        };
        tracing::warn!(prompt = %req.content["prompt"], "kernel asked for input; answering with an empty line");
        let mut reply = Message::new("input_reply", json!({"value": ""}), &session, &username);
        reply.parent_header = Some(req.header.clone());
        let zmsg = ZmqMessage::try_from(message::encode(&reply, &signer)).expect("frames");
        if let Err(e) = sock.send(zmsg).await {
            tracing::debug!(error = %e, "input_reply failed");
        }
    }
}
