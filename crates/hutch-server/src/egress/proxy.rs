//! The egress proxy: every new TCP connection of a sandbox with an egress policy is
//! redirected here by the firewall (see `hutch_runtime::net::rules`), decided, and then
//! spliced to its destination, or relayed with a rule's headers set.
//!
//! What is decided on is the connection's destination address and, when the policy has
//! domains or rules, the name its first bytes carry (TLS SNI, HTTP `Host`). A connection
//! allowed by its name is made to that name as this host resolves it, never to the
//! address the sandbox chose: a sandbox that resolves `allowed.example` to another
//! address (its own `/etc/hosts`) reaches `allowed.example` all the same. Whatever the
//! verdict, the proxy never connects to hutch's blocked ranges (private, link-local,
//! the sandbox range, the operator's `--deny-cidr`) nor to this host's own addresses:
//! what the firewall keeps from sandboxes, the proxy does not hand them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::policy::{Compiled, Verdict};
use super::sniff::{sniff, Sniffed, MAX_PEEK};
use super::tls::EgressCa;

/// How long a connection to port 80 or 443 may take to send its first bytes (the name
/// they carry decides it).
const NAMED_PORT_WAIT: Duration = Duration::from_secs(5);
/// The same for other ports, where the server may be the first to speak (SSH, SMTP):
/// after this the connection is decided by its address alone.
const OTHER_PORT_WAIT: Duration = Duration::from_millis(500);
/// How long a connection to the destination may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections one sandbox may have open through the proxy at once: each holds two of the
/// server's descriptors, which one sandbox must not exhaust for every other.
const MAX_CONNECTIONS_PER_SANDBOX: usize = 2048;

/// Names the proxy resolves, from an operator's hosts file first (`--egress-hosts`, read
/// again whenever it changes), then from this host's resolver.
struct Resolver {
    hosts: Option<PathBuf>,
    cache: Mutex<HostsFile>,
}

/// The hosts file as last read, and its modification time then.
#[derive(Default)]
struct HostsFile {
    modified: Option<SystemTime>,
    names: HashMap<String, Vec<Ipv4Addr>>,
}

impl Resolver {
    fn in_hosts_file(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let path = self.hosts.as_ref()?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.modified != modified || modified.is_none() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            cache.names = parse_hosts(&text);
            cache.modified = modified;
        }
        cache.names.get(name).cloned()
    }

    async fn resolve(&self, name: &str) -> Vec<Ipv4Addr> {
        if let Some(found) = self.in_hosts_file(name) {
            return found;
        }
        match tokio::net::lookup_host((name, 0)).await {
            Ok(addrs) => addrs
                .filter_map(|a| match a {
                    SocketAddr::V4(v4) => Some(*v4.ip()),
                    SocketAddr::V6(_) => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The IPv4 entries of a hosts(5) file, by lower-case name.
fn parse_hosts(text: &str) -> HashMap<String, Vec<Ipv4Addr>> {
    let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        for name in words {
            out.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
    }
    out
}

/// The egress proxy of one server.
pub struct EgressProxy {
    policies: RwLock<HashMap<Ipv4Addr, Arc<Compiled>>>,
    /// Connections open per sandbox address.
    open: Mutex<HashMap<Ipv4Addr, usize>>,
    ca: EgressCa,
    upstream_tls: Arc<rustls::ClientConfig>,
    resolver: Resolver,
    /// Inclusive ranges nothing is sent to.
    blocked: Vec<(u32, u32)>,
}

/// How the proxy is set up.
pub struct ProxyConfig {
    /// Where its certificate authority is kept.
    pub ca_dir: PathBuf,
    /// Certificates trusted besides the host's when it talks TLS to a destination itself
    /// (`--egress-ca-file`).
    pub extra_roots: Option<PathBuf>,
    /// A hosts file consulted before the host's resolver (`--egress-hosts`).
    pub hosts: Option<PathBuf>,
    /// Ranges (CIDR) it never connects to.
    pub blocked: Vec<(Ipv4Addr, u8)>,
}

impl EgressProxy {
    /// Sets up the proxy (its CA is made on the first start).
    pub fn new(cfg: ProxyConfig) -> Result<Arc<EgressProxy>, String> {
        let ca = EgressCa::load_or_create(&cfg.ca_dir)?;
        let upstream_tls = super::tls::client_config(cfg.extra_roots.as_deref())?;
        let blocked = cfg
            .blocked
            .iter()
            .map(|(ip, prefix)| super::policy::block(*ip, *prefix))
            .collect();
        Ok(Arc::new(EgressProxy {
            policies: RwLock::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            ca,
            upstream_tls,
            resolver: Resolver {
                hosts: cfg.hosts,
                cache: Mutex::new(HostsFile::default()),
            },
            blocked,
        }))
    }

    /// The CA certificate (PEM) sandboxes with transform rules trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Sets (or with None removes) the policy of the sandbox at `ip`.
    pub fn set(&self, ip: Ipv4Addr, policy: Option<Arc<Compiled>>) {
        let mut map = self.policies.write().unwrap_or_else(|e| e.into_inner());
        match policy {
            Some(p) => map.insert(ip, p),
            None => map.remove(&ip),
        };
    }

    fn policy(&self, ip: Ipv4Addr) -> Option<Arc<Compiled>> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .cloned()
    }

    /// Serves connections redirected to `listener` until the server stops.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let me = Arc::clone(&self);
                    tokio::spawn(async move { me.handle(stream, peer).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "egress proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let SocketAddr::V4(peer) = peer else { return };
        // Only sandboxes with a policy are redirected here; anything else goes.
        let Some(policy) = self.policy(*peer.ip()) else {
            return refuse(stream);
        };
        let Some(_slot) = OpenSlot::take(&self, *peer.ip()) else {
            tracing::debug!(sandbox_ip = %peer.ip(), "egress proxy: too many connections from one sandbox");
            return refuse(stream);
        };
        let Ok(dest) = hutch_sys::fd::original_destination(&stream) else {
            return refuse(stream);
        };
        if stream.local_addr().ok() == Some(SocketAddr::V4(dest)) {
            // Not redirected: someone dialled the proxy's port itself.
            return refuse(stream);
        }
        let (ip, port) = (*dest.ip(), dest.port());
        let sniffed = if policy.wants_name(ip) {
            let wait = if port == 80 || port == 443 {
                NAMED_PORT_WAIT
            } else {
                OTHER_PORT_WAIT
            };
            peek_name(&stream, wait).await
        } else {
            Sniffed::Other
        };
        let name = match &sniffed {
            Sniffed::Http(n) | Sniffed::Tls(n) => Some(n.as_str()),
            _ => None,
        };
        let verdict = policy.decide(name, ip);
        let mut headers = name
            .and_then(|n| policy.headers_for(n))
            .filter(|h| !h.is_empty())
            .cloned();
        tracing::debug!(sandbox_ip = %peer.ip(), %dest, ?name, ?verdict, transform = headers.is_some(), "egress connection");
        if verdict == Verdict::Denied {
            return refuse(stream);
        }
        let direct = SocketAddrV4::new(ip, port);
        let upstream = match (verdict, name, headers.is_some()) {
            (Verdict::ByName, Some(n), _) => self.dial_name(n, port, None).await,
            // Headers (credentials, often) go only to the name they are for, as this host
            // resolves it, never to an address the sandbox picked; and a rule grants no
            // access: the name's own addresses must be allowed too. Otherwise the request
            // goes where it was headed, as sent.
            (_, Some(n), true) => match self.dial_name(n, port, Some(&policy)).await {
                Ok(s) => Ok(s),
                Err(_) => {
                    headers = None;
                    self.dial_address(direct).await
                }
            },
            _ => self.dial_address(direct).await,
        };
        let upstream = match upstream {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%dest, ?name, error = %e, "egress connection not made");
                return refuse(stream);
            }
        };
        let outcome = match (headers, sniffed) {
            (Some(h), Sniffed::Http(_)) => {
                super::transform::relay_with_headers(stream, upstream, h).await
            }
            (Some(h), Sniffed::Tls(n)) => self.intercept(stream, upstream, &n, h).await,
            _ => splice(stream, upstream).await,
        };
        if let Err(e) = outcome {
            tracing::debug!(%dest, error = %e, "egress connection ended with an error");
        }
    }

    /// Terminates the sandbox's TLS with a certificate of hutch's CA for `name`, after
    /// checking the destination's own certificate for `name`, and relays the requests
    /// with `headers` set.
    async fn intercept(
        &self,
        stream: TcpStream,
        upstream: TcpStream,
        name: &str,
        headers: http::HeaderMap,
    ) -> Result<(), String> {
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("{name}: {e}"))?;
        let up = tokio_rustls::TlsConnector::from(Arc::clone(&self.upstream_tls))
            .connect(server_name, upstream)
            .await
            .map_err(|e| format!("TLS to {name}: {e}"))?;
        let down = tokio_rustls::TlsAcceptor::from(self.ca.server_config(name)?)
            .accept(stream)
            .await
            .map_err(|e| format!("TLS from the sandbox for {name}: {e}"))?;
        super::transform::relay_with_headers(down, up, headers).await
    }

    /// Whether nothing may be sent to `ip`: a blocked range, or this host itself.
    fn forbidden(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.blocked.iter().any(|(a, b)| *a <= n && n <= *b) || is_local(ip)
    }

    async fn dial_address(&self, dest: SocketAddrV4) -> Result<TcpStream, String> {
        if self.forbidden(*dest.ip()) {
            return Err(format!("{} is not reachable from sandboxes", dest.ip()));
        }
        connect(dest).await
    }

    /// Connects to `name` as this host resolves it; with `policy`, only to addresses it
    /// allows.
    async fn dial_name(
        &self,
        name: &str,
        port: u16,
        policy: Option<&Compiled>,
    ) -> Result<TcpStream, String> {
        let addrs = self.resolver.resolve(name).await;
        let mut last = format!("{name} does not resolve to an IPv4 address");
        for ip in addrs {
            if self.forbidden(ip) || policy.is_some_and(|p| p.decide(None, ip) == Verdict::Denied) {
                last = format!("{name} resolves to {ip}, which the sandbox may not reach");
                continue;
            }
            match connect(SocketAddrV4::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// One open connection of a sandbox, counted until it is dropped.
struct OpenSlot {
    proxy: Arc<EgressProxy>,
    ip: Ipv4Addr,
}

impl OpenSlot {
    fn take(proxy: &Arc<EgressProxy>, ip: Ipv4Addr) -> Option<OpenSlot> {
        let mut open = proxy.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_SANDBOX {
            return None;
        }
        *n += 1;
        Some(OpenSlot {
            proxy: Arc::clone(proxy),
            ip,
        })
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.proxy.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Whether `ip` is one of this host's own addresses: a datagram socket "connected" to it
/// takes it as its own source.
fn is_local(ip: Ipv4Addr) -> bool {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((ip, 9)).map(|()| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(local) => local.ip() == std::net::IpAddr::V4(ip),
        // No route: not reachable anyway.
        Err(_) => true,
    }
}

async fn connect(dest: SocketAddrV4) -> Result<TcpStream, String> {
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(dest)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connecting to {dest}: {e}")),
        Err(_) => Err(format!("connecting to {dest}: timed out")),
    }
}

/// Ends a refused connection with a reset, as a firewall's reject would (a zero linger
/// time makes the close a reset; nothing is left to send, so dropping does not block).
fn refuse(stream: TcpStream) {
    if let Ok(s) = stream.into_std() {
        let _ = hutch_sys::fd::reset_on_close(&s);
    }
}

/// What the first bytes of `stream` name, waiting at most `wait` for them.
async fn peek_name(stream: &TcpStream, wait: Duration) -> Sniffed {
    let mut buf = vec![0u8; MAX_PEEK];
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) => n,
            _ => return Sniffed::Other,
        };
        if n == 0 {
            return Sniffed::Other;
        }
        if let Some(s) = sniff(&buf[..n]) {
            return s;
        }
        if n == seen {
            // Nothing new yet: peek returns at once while data waits, so give the client a
            // moment rather than spin.
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(5)))
                .await
                .is_err()
            {
                return Sniffed::Other;
            }
        }
        seen = n;
    }
}

/// Copies both ways until both sides are done.
async fn splice(mut down: TcpStream, mut up: TcpStream) -> Result<(), String> {
    let outcome = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    let _ = up.shutdown().await;
    outcome.map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_map_names_to_ipv4_addresses() {
        let hosts = parse_hosts(
            "# comment\n198.18.1.2 Allowed.test www.wild.test # trailing\n::1 v6.test\n\n198.18.1.6 allowed.test\n",
        );
        assert_eq!(
            hosts.get("allowed.test"),
            Some(&vec![
                "198.18.1.2".parse().expect("ip"),
                "198.18.1.6".parse().expect("ip")
            ])
        );
        assert!(hosts.contains_key("www.wild.test"));
        assert!(!hosts.contains_key("v6.test"));
    }

    #[test]
    fn this_hosts_own_addresses_are_local() {
        assert!(is_local(Ipv4Addr::LOCALHOST));
    }
}
