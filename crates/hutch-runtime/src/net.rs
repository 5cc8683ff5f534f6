//! Sandbox networking: one network namespace per slot behind a veth pair, made the first
//! time the slot is used and kept for the slot's next sandboxes ([`SlotNet`]), and one
//! nftables table that decides what may cross. Per-sandbox changes go over netlink; only
//! the table itself is loaded with `nft`, once at start.
//!
//! Every slot owns a /30 out of the sandbox range: `.1` is the host end (`hv<slot>`),
//! `.2` is the sandbox's `eth0`. The host reaches the agent on the `.2` address. From the
//! sandbox side:
//! * nothing addressed to the host itself is accepted (the `input` chain drops every new
//!   connection arriving on an `hv*` interface: hutch's own port, sshd, everything);
//! * nothing reaches another sandbox (the `forward` chain drops `hv*` → `hv*`);
//! * link-local (cloud metadata), private, loopback and multicast destinations are
//!   dropped, as is IPv6;
//! * sandboxes created with `allow_internet_access=false` have their address in the
//!   `noinet` set and nothing they send is forwarded at all;
//! * everything else is masqueraded out of the host's uplink.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use hutch_sys::netlink::{Message, Socket};
use hutch_sys::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

mod msgs;
pub mod rules;

/// Name of hutch's nftables table (family `inet`).
pub const NFT_TABLE: &str = "hutch";
/// Prefix of the host-side veth names.
pub const HOST_IF_PREFIX: &str = "hv";
/// Name of the sandbox's end of its veth, inside its namespace.
pub const SANDBOX_IF: &str = "eth0";
/// Prefix length of a sandbox's network: a /30 per slot.
const SLOT_PREFIX: u8 = 30;

/// The address range sandboxes are numbered from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct NetConfig {
    /// First address of the range (a /16 by default: 16384 sandboxes).
    pub base: Ipv4Addr,
    /// Prefix length of the range.
    pub prefix: u8,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            base: Ipv4Addr::new(10, 201, 0, 0),
            prefix: 16,
        }
    }
}

impl NetConfig {
    /// How many /30 slots the range holds.
    pub fn slots(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix)).saturating_sub(2)
    }

    /// The network facts of slot `slot`.
    pub fn slot(&self, slot: u32) -> SandboxNet {
        let net = u32::from(self.base) + slot * 4;
        SandboxNet {
            slot,
            host_if: format!("{HOST_IF_PREFIX}{slot}"),
            peer_if: format!("hp{slot}"),
            host_ip: Ipv4Addr::from(net + 1),
            sandbox_ip: Ipv4Addr::from(net + 2),
        }
    }

    /// The range in CIDR notation.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix)
    }
}

/// One sandbox's network facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxNet {
    /// Index in the range.
    pub slot: u32,
    /// Host-side veth name.
    pub host_if: String,
    /// Unused: the sandbox's end is created as `eth0` inside its namespace. Kept so that
    /// stored and in-flight values from earlier versions still parse.
    pub peer_if: String,
    /// Host end of the /30.
    pub host_ip: Ipv4Addr,
    /// The sandbox's address.
    pub sandbox_ip: Ipv4Addr,
}

impl SandboxNet {
    /// The hardware address of the host's end of the veth.
    pub fn host_mac(&self) -> [u8; 6] {
        slot_mac(1, self.slot)
    }

    /// The hardware address of the sandbox's end (`eth0`).
    pub fn sandbox_mac(&self) -> [u8; 6] {
        slot_mac(2, self.slot)
    }
}

/// Fixed hardware addresses per slot (locally administered, unicast), so that each end
/// knows the other's from the start: both get a permanent neighbour entry and nothing
/// waits for ARP. With ARP, a packet still in flight to a slot's previous sandbox (a
/// retransmission to an address now reused) made the host ask before the new sandbox's
/// `eth0` was up; the unanswered question was asked again only a second later, and the
/// new sandbox's first connection waited that second.
fn slot_mac(side: u8, slot: u32) -> [u8; 6] {
    let s = slot.to_be_bytes();
    [0x02, 0x68, side, s[1], s[2], s[3]]
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().map_err(|e| RuntimeError::Command {
        cmd: format!("{cmd} {}", args.join(" ")),
        stderr: e.to_string(),
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A sandbox's egress filter beyond hutch's defaults (its egress policy, decided by the
/// server): every new TCP connection it opens goes to the server's egress proxy (which
/// decides by name or address), and anything else it sends to a `denied` range is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressFilter {
    /// Inclusive, disjoint and sorted address ranges non-TCP traffic may not reach.
    pub denied: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// Marks that hutch, not the host's own configuration, turned IPv4 forwarding on. Under
/// `/run`, so it goes with a reboot, as forwarding does.
const FORWARDING_MARK: &str = "/run/hutch-ip-forward";

/// Installs (or replaces) hutch's nftables table and turns on IPv4 forwarding.
/// `host.noinet` lists the sandbox addresses that must get no egress and `host.filtered`
/// those with an egress filter (both kept across restarts); `host.deny`, the operator's
/// ranges no sandbox reaches. If the host did not forward before hutch (or an earlier run
/// of it) turned forwarding on, only sandbox traffic is forwarded (whatever
/// `host.forward_only_sandboxes` says).
pub fn install_host_rules(cfg: &NetConfig, host: &rules::HostRules<'_>) -> Result<()> {
    const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    let was = std::fs::read_to_string(FORWARD).map_err(|e| RuntimeError::io("read", FORWARD, e))?;
    let ours = if was.trim() == "1" {
        std::path::Path::new(FORWARDING_MARK).exists()
    } else {
        std::fs::write(FORWARDING_MARK, "hutch turned net.ipv4.ip_forward on\n")
            .map_err(|e| RuntimeError::io("write", FORWARDING_MARK, e))?;
        std::fs::write(FORWARD, "1").map_err(|e| RuntimeError::io("write", FORWARD, e))?;
        true
    };
    let ruleset = rules::ruleset(
        cfg,
        &rules::HostRules {
            forward_only_sandboxes: ours,
            ..host.clone()
        },
    );
    run("nft", &["-f", "-"], Some(&ruleset))
}

/// Removes hutch's nftables table (used by tests and uninstall), and turns IPv4 forwarding
/// off again if it was hutch that turned it on.
pub fn remove_host_rules() -> Result<()> {
    if std::fs::remove_file(FORWARDING_MARK).is_ok() {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0");
    }
    run("nft", &["delete", "table", "inet", NFT_TABLE], None)
}

/// Adds or removes a sandbox address from the no-egress set (one nftables batch over
/// netlink). Removing an address that is not there is fine.
pub fn set_internet(ip: Ipv4Addr, allowed: bool) -> Result<()> {
    let mut nl =
        Socket::netfilter().map_err(|e| RuntimeError::sys("netlink socket (netfilter)", e))?;
    match nl.transact(&msgs::noinet_batch(ip, !allowed)) {
        Ok(_) => Ok(()),
        // Deleting an element that is not there is fine.
        Err(e) if allowed && e == Errno::NOENT => Ok(()),
        Err(e) => Err(RuntimeError::sys(
            format!(
                "nftables: {} {ip} {} set noinet",
                if allowed { "delete" } else { "add" },
                if allowed { "from" } else { "to" }
            ),
            e,
        )),
    }
}

/// Replaces the egress filter of the sandbox at `ip`: `old` is the one it has (None: none),
/// `new` the one it gets (None: none, its traffic goes out as any sandbox's). One
/// nftables batch over netlink: the change is atomic.
pub fn set_egress_filter(
    ip: Ipv4Addr,
    old: Option<&EgressFilter>,
    new: Option<&EgressFilter>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let mut changes = Vec::new();
    if let Some(old) = old {
        changes.push(msgs::set_elements(
            "egress_deny",
            false,
            &deny_keys(ip, old),
        ));
        changes.push(msgs::set_elements(
            "proxied",
            false,
            &[(ip.octets().to_vec(), None)],
        ));
    }
    if let Some(new) = new {
        changes.push(msgs::set_elements(
            "proxied",
            true,
            &[(ip.octets().to_vec(), None)],
        ));
        changes.push(msgs::set_elements("egress_deny", true, &deny_keys(ip, new)));
    }
    changes.retain(|m| m.is_some());
    let changes: Vec<Message> = changes.into_iter().flatten().collect();
    let mut nl =
        Socket::netfilter().map_err(|e| RuntimeError::sys("netlink socket (netfilter)", e))?;
    nl.transact(&msgs::nft_batch(changes))
        .map(|_| ())
        .map_err(|e| RuntimeError::sys(format!("nftables: egress filter of {ip}"), e))
}

/// The `egress_deny` keys of `filter` for the sandbox at `ip`: `ip . first` to `ip . last`.
fn deny_keys(ip: Ipv4Addr, filter: &EgressFilter) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    filter
        .denied
        .iter()
        .map(|(first, last)| {
            let key = |a: &Ipv4Addr| [ip.octets(), a.octets()].concat();
            (key(first), Some(key(last)))
        })
        .collect()
}

fn route_socket() -> Result<Socket> {
    Socket::route().map_err(|e| RuntimeError::sys("netlink socket (route)", e))
}

fn rtnl(
    nl: &mut Socket,
    what: impl FnOnce() -> String,
    msgs: &[Message],
) -> Result<Vec<(u16, Vec<u8>)>> {
    nl.transact(msgs)
        .map_err(|e| RuntimeError::sys(format!("rtnetlink: {}", what()), e))
}

/// The index of interface `name` in the namespace of `nl`.
fn link_index(nl: &mut Socket, name: &str) -> Result<u32> {
    let replies = rtnl(nl, || format!("get link {name}"), &[msgs::get_link(name)])?;
    replies
        .iter()
        .find_map(|(_, body)| msgs::link_index(body))
        .ok_or_else(|| RuntimeError::sys(format!("rtnetlink: get link {name}"), Errno::NODEV))
}

/// A slot's network: a network namespace behind the slot's veth pair, configured once
/// and kept by the long-lived spawn helper from one sandbox of the slot to the next (see
/// docs/design.md, "Slot networks"). Its owner is the host's user namespace, not a
/// sandbox's, so root inside a sandbox has no capability over it: it cannot change its
/// addresses, routes, firewall or sysctls, which is what makes handing it to the slot's
/// next sandbox safe.
#[derive(Debug)]
pub struct SlotNet {
    /// The network namespace, held open.
    pub ns: OwnedFd,
    /// The host's index of the slot's veth end, as made.
    host_index: u32,
}

impl SlotNet {
    /// Whether the host end of the veth made with this network is still the slot's (a
    /// one-shot helper that made the slot's network anew deleted the pair it found).
    pub fn intact(&self, net: &SandboxNet) -> bool {
        host_index(&net.host_if) == Some(self.host_index)
    }
}

/// The host's index of interface `name` (read from the host's sysfs).
fn host_index(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Makes slot `net`'s network: a new network namespace with IPv6 off, ping allowed and
/// low ports open to the ids `ids` (first id, count: the slot's sandbox range, as ids of
/// the owner's user namespace), the veth pair (`hv<slot>` on the host, `eth0` inside)
/// addressed and up, and a default route to the host. A stale `hv<slot>` (of a network
/// namespace that is still being destroyed, or of an earlier helper) is replaced.
///
/// The namespace belongs to the host's user namespace, or with `owner` to that user
/// namespace (a zygote's: its forks must join the namespaces of the sandboxes nested in
/// it, which needs capabilities over their owners). Either way not to a sandbox's.
///
/// It is made from `parent` (see [`make_parent_net`]) when given, else from the caller's.
///
/// Moves the calling thread between network namespaces and back, or forks: call it from a
/// single-threaded process.
pub fn make_slot_net(
    net: &SandboxNet,
    ids: (u32, u32),
    owner: Option<&OwnedFd>,
    parent: Option<&OwnedFd>,
) -> Result<SlotNet> {
    match owner {
        None => make_host_owned(net, ids, parent),
        Some(userns) => make_owned_by(net, ids, userns, parent),
    }
}

/// Buckets of the TCP connection hash of each slot network ([`make_parent_net`]).
const SLOT_TCP_HASH_BUCKETS: u32 = 1024;

/// A network namespace that slot networks are made from, so that each gets a TCP
/// connection hash of its own ([`SLOT_TCP_HASH_BUCKETS`], `tcp_child_ehash_entries`,
/// Linux 6.1) instead of sharing the host's: listing the sockets a sandbox left behind
/// ([`end_leftover_sockets`]) then walks its own thousand buckets, not the host's hundreds of
/// thousands, and no sandbox's connections crowd another's chains. None on a kernel
/// without the setting: slot networks then share the host's hash, as before.
///
/// Moves the calling thread into a new namespace and back: call it from a single-threaded
/// process.
pub fn make_parent_net() -> Option<OwnedFd> {
    let home = open_own().ok()?;
    hutch_sys::ns::unshare_net_namespace().ok()?;
    let made = (|| {
        std::fs::write(
            "/proc/sys/net/ipv4/tcp_child_ehash_entries",
            SLOT_TCP_HASH_BUCKETS.to_string(),
        )
        .ok()?;
        open_own().ok()
    })();
    enter(&home).ok()?;
    made
}

fn open_own() -> Result<OwnedFd> {
    hutch_sys::ns::own_net_namespace()
        .map_err(|e| RuntimeError::io("open", "/proc/thread-self/ns/net", e))
}

fn make_host_owned(net: &SandboxNet, ids: (u32, u32), parent: Option<&OwnedFd>) -> Result<SlotNet> {
    let home = open_own()?;
    if let Some(p) = parent {
        enter(p)?;
    }
    hutch_sys::ns::unshare_net_namespace()
        .map_err(|e| RuntimeError::sys("unshare (new network namespace)", e))?;
    let made = (|| {
        let ns = open_own()?;
        configure_namespace(ids)?;
        enter(&home)?;
        let host_index = make_veth(net, &ns)?;
        let inside = enter(&ns).and_then(|()| configure_eth0(net));
        if let Err(e) = inside {
            let _ = enter(&home);
            remove_host_side(net);
            return Err(e);
        }
        Ok(SlotNet { ns, host_index })
    })();
    // Back home whatever happened; a helper stuck in another namespace must not go on.
    enter(&home)?;
    made
}

/// [`make_slot_net`] for a namespace owned by `userns`: only a process inside `userns`
/// makes one there, so a child of ours joins it as its root, makes the namespace and its
/// sysctls, and (once we have made the veth from the host's side) configures `eth0`.
fn make_owned_by(
    net: &SandboxNet,
    ids: (u32, u32),
    userns: &OwnedFd,
    parent: Option<&OwnedFd>,
) -> Result<SlotNet> {
    let pipe = || hutch_sys::fd::pipe().map_err(|e| RuntimeError::sys("pipe2", e));
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let fork = hutch_sys::ns::fork_into_namespaces(hutch_sys::ns::Namespaces::empty())
        .map_err(|e| RuntimeError::sys("fork", e))?;
    let pid = match fork {
        hutch_sys::ns::Fork::Child => {
            drop((ready_r, go_w));
            let mut report = std::fs::File::from(ready_w);
            let outcome = (|| {
                if let Some(p) = parent {
                    hutch_sys::ns::enter_net_namespace(p)
                        .map_err(|e| format!("setns (the slot networks' parent): {e}"))?;
                }
                hutch_sys::ns::enter_user_namespace(userns)
                    .map_err(|e| format!("setns (the zygote's user namespace): {e}"))?;
                hutch_sys::creds::Credentials::root()
                    .apply()
                    .map_err(|e| format!("becoming root of the zygote's user namespace: {e}"))?;
                hutch_sys::ns::unshare_net_namespace()
                    .map_err(|e| format!("unshare (new network namespace): {e}"))?;
                configure_namespace(ids).map_err(|e| e.to_string())?;
                report.write_all(b"R").map_err(|e| e.to_string())?;
                let mut go = [0u8; 1];
                match std::io::Read::read(&mut std::fs::File::from(go_r), &mut go) {
                    Ok(1) => configure_eth0(net).map_err(|e| e.to_string()),
                    _ => Err("given up".to_string()),
                }
            })();
            let code = match outcome {
                Ok(()) => 0,
                Err(e) => {
                    let _ = report.write_all(format!("E{e}").as_bytes());
                    1
                }
            };
            hutch_sys::process::exit_now(code)
        }
        hutch_sys::ns::Fork::Parent(pid) => pid,
    };
    drop((ready_w, go_r));
    let mut ready = std::fs::File::from(ready_r);
    let mut first = [0u8; 1];
    let made = (|| {
        let n = std::io::Read::read(&mut ready, &mut first)
            .map_err(|e| RuntimeError::io("read from", "the slot network's maker", e))?;
        if n != 1 || first[0] != b'R' {
            let mut why = String::new();
            let _ = std::io::Read::read_to_string(&mut ready, &mut why);
            return Err(RuntimeError::Spawn(format!(
                "making a network namespace in the zygote's user namespace: {}",
                why.trim_start_matches('E')
            )));
        }
        let path = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| RuntimeError::io("open", &path, e))?;
        let host_index = make_veth(net, &ns)?;
        let configured = std::fs::File::from(go_w)
            .write_all(b"g")
            .map_err(|e| RuntimeError::io("write to", "the slot network's maker", e))
            .and_then(|()| {
                let mut why = String::new();
                let _ = std::io::Read::read_to_string(&mut ready, &mut why);
                match why.strip_prefix('E') {
                    Some(e) => Err(RuntimeError::Spawn(format!("configuring eth0: {e}"))),
                    None => Ok(()),
                }
            });
        if let Err(e) = configured {
            remove_host_side(net);
            return Err(e);
        }
        Ok(SlotNet { ns, host_index })
    })();
    if made.is_err() {
        let _ = hutch_sys::signal::kill(pid, hutch_sys::signal::Signal::KILL);
    }
    let _ = hutch_sys::process::wait_for(pid);
    made
}

fn enter(ns: &OwnedFd) -> Result<()> {
    hutch_sys::ns::enter_net_namespace(ns)
        .map_err(|e| RuntimeError::sys("setns (network namespace)", e))
}

/// The sysctls of a new slot network namespace, written from inside it (its `/proc/sys/net`
/// is the writer's). `ids` are ids of the writer's user namespace.
fn configure_namespace(ids: (u32, u32)) -> Result<()> {
    for f in ["all", "default", "lo"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
    }
    // No sandbox process has CAP_NET_RAW or CAP_NET_BIND_SERVICE here (the namespace is
    // the host's user namespace's): `ping` opens ICMP datagram sockets, allowed for the
    // slot's groups, and every port may be bound, as root inside could before.
    let last = ids.0 + ids.1.saturating_sub(1);
    for (name, value) in [
        ("ipv4/ping_group_range", format!("{} {last}", ids.0)),
        ("ipv4/ip_unprivileged_port_start", "0".to_string()),
    ] {
        let path = format!("/proc/sys/net/{name}");
        std::fs::write(&path, value).map_err(|e| RuntimeError::io("write", &path, e))?;
    }
    // Destinations and their round-trip times would outlive a sandbox in the namespace's
    // TCP metrics cache, readable by the slot's next sandbox.
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_no_metrics_save", "1");
    Ok(())
}

/// Creates the veth pair with its sandbox end, already named `eth0`, in the namespace
/// `ns`, and addresses and raises the host end. Runs in the host's network namespace.
/// Returns the host end's index.
fn make_veth(net: &SandboxNet, ns: &OwnedFd) -> Result<u32> {
    let mut nl = route_socket()?;
    let create = msgs::new_veth(
        &net.host_if,
        net.host_mac(),
        SANDBOX_IF,
        net.sandbox_mac(),
        ns.as_raw_fd(),
    );
    let what = || format!("create veth {} (peer {SANDBOX_IF})", net.host_if);
    match nl.transact(std::slice::from_ref(&create)) {
        Ok(_) => {}
        // A leftover of the slot's previous network: replace it.
        Err(e) if e == Errno::EXIST => {
            let _ = nl.transact(&[msgs::del_link(&net.host_if)]);
            rtnl(&mut nl, what, &[create])?;
        }
        Err(e) => return Err(RuntimeError::sys(format!("rtnetlink: {}", what()), e)),
    }
    // Before the link is up, so that it never gets an IPv6 address. Strict reverse-path
    // filtering stops a sandbox from sending with another one's address.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", net.host_if),
        "1",
    );
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{}/rp_filter", net.host_if),
        "1",
    );
    let index = link_index(&mut nl, &net.host_if)?;
    let up = rtnl(
        &mut nl,
        || format!("address and raise {}", net.host_if),
        &[
            msgs::add_addr(index, net.host_ip, SLOT_PREFIX),
            msgs::link_up(&net.host_if),
            msgs::add_neighbour(index, net.sandbox_ip, net.sandbox_mac()),
        ],
    );
    if let Err(e) = up {
        remove_host_side(net);
        return Err(e);
    }
    Ok(index)
}

/// Configures the slot's end: loopback, `eth0` and the default route. Runs in the slot's
/// network namespace (the netlink socket talks to the namespace it is opened in).
fn configure_eth0(net: &SandboxNet) -> Result<()> {
    let mut nl = route_socket()?;
    let index = link_index(&mut nl, SANDBOX_IF)?;
    rtnl(
        &mut nl,
        || format!("configure {SANDBOX_IF} and lo"),
        &[
            msgs::link_up("lo"),
            msgs::add_addr(index, net.sandbox_ip, SLOT_PREFIX),
            msgs::link_up(SANDBOX_IF),
            msgs::add_neighbour(index, net.host_ip, net.host_mac()),
            msgs::add_default_route(index, net.host_ip),
        ],
    )?;
    Ok(())
}

/// Ends every TCP socket left in slot network `ns`, before it is handed to the slot's next
/// sandbox: the sockets of the last sandbox's killed processes linger in FIN-WAIT,
/// TIME-WAIT, CLOSING or LAST-ACK for up to minutes, and would show the next one (`ss`,
/// `/proc/net/tcp`) whom the last one talked to. Returns how many were ended. Fails when
/// the kernel cannot end sockets (built without `CONFIG_INET_DIAG_DESTROY`) and some are
/// left: the caller then makes the slot a new network instead.
///
/// Moves the calling thread into `ns` and back: call it from a single-threaded process.
pub fn end_leftover_sockets(ns: &OwnedFd) -> Result<usize> {
    let home = open_own()?;
    enter(ns)?;
    let ended = (|| {
        let mut nl =
            Socket::sock_diag().map_err(|e| RuntimeError::sys("netlink socket (sock_diag)", e))?;
        let mut ended = 0;
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let tcp = libc::IPPROTO_TCP as u8;
            let listed = nl
                .transact(&[msgs::list_sockets(family, tcp)])
                .map_err(|e| RuntimeError::sys("sock_diag: list sockets", e))?;
            for (kind, body) in listed {
                let Some(id) = msgs::listed_socket(kind, &body) else {
                    continue;
                };
                match nl.transact(&[msgs::end_socket(family, tcp, &id)]) {
                    Ok(_) => ended += 1,
                    // Gone in the meantime.
                    Err(e) if e == Errno::NOENT => {}
                    Err(e) => return Err(RuntimeError::sys("sock_diag: end a socket", e)),
                }
            }
        }
        Ok(ended)
    })();
    enter(&home)?;
    ended
}

/// Deletes the host end of a sandbox's veth if it still exists (it also disappears, a
/// little later, with the sandbox's network namespace).
pub fn remove_host_side(net: &SandboxNet) {
    let Ok(mut nl) = route_socket() else {
        return;
    };
    match nl.transact(&[msgs::del_link(&net.host_if)]) {
        Ok(_) => {}
        Err(e) if e == Errno::NODEV => {}
        Err(e) => tracing::warn!(interface = %net.host_if, error = %e, "deleting the veth failed"),
    }
}

/// Slots of every `hv*` interface that exists on the host (for the restart sweep).
pub fn existing_slots() -> Vec<u32> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| rules::slot_of_interface(&n))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod sockets_tests {
    use super::*;

    /// TCP sockets of the calling thread's network namespace, from `/proc/thread-self/net`.
    fn tcp_sockets() -> usize {
        ["tcp", "tcp6"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                    .map(|s| s.lines().count().saturating_sub(1))
                    .unwrap_or(0)
            })
            .sum()
    }

    #[test]
    fn sockets_left_in_a_slot_network_are_ended_when_root() {
        if !hutch_sys::creds::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // A thread of its own: network namespaces are per thread.
        let outcome = std::thread::spawn(|| {
            hutch_sys::ns::unshare_net_namespace().expect("unshare");
            let ns = open_own().expect("own namespace");
            let mut nl = route_socket().expect("netlink");
            rtnl(&mut nl, || "lo up".into(), &[msgs::link_up("lo")]).expect("lo up");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            let addr = listener.local_addr().expect("address");
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            // The client closes first: it lingers in TIME-WAIT (after FIN-WAIT), as a killed
            // sandbox's connections do.
            drop(client);
            drop(server);
            drop(listener);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let before = tcp_sockets();
            let ended = end_leftover_sockets(&ns);
            (before, ended.map_err(|e| e.to_string()), tcp_sockets())
        })
        .join()
        .expect("thread");
        let (before, ended, after) = outcome;
        assert!(before >= 1, "nothing lingered");
        match ended {
            Ok(n) => {
                assert!(n >= 1, "{n} ended");
                assert_eq!(after, 0);
            }
            // A kernel without CONFIG_INET_DIAG_DESTROY: the caller makes a new network.
            Err(e) => assert!(e.contains("end a socket"), "{e}"),
        }
    }

    #[test]
    fn slot_networks_made_from_the_parent_get_a_tcp_hash_of_their_own_when_root() {
        if !hutch_sys::creds::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let entries = std::thread::spawn(|| {
            let parent = make_parent_net()?;
            enter(&parent).expect("enter the parent");
            hutch_sys::ns::unshare_net_namespace().expect("unshare");
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries").ok()
        })
        .join()
        .expect("thread");
        // None: a kernel before 6.1, where slot networks share the host's hash.
        if let Some(n) = entries {
            assert_eq!(n.trim(), SLOT_TCP_HASH_BUCKETS.to_string());
        }
    }
}
