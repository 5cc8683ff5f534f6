//! Sandbox networking: one network namespace per sandbox behind a veth pair, and one
//! nftables table that decides what may cross. Per-sandbox changes go over netlink; only
//! the table itself is loaded with `nft`, once at start.
//!
//! Every sandbox owns a /30 out of the sandbox range: `.1` is the host end (`hv<slot>`),
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
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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

/// Marks that hutch, not the host's own configuration, turned IPv4 forwarding on. Under
/// `/run`, so it goes with a reboot, as forwarding does.
const FORWARDING_MARK: &str = "/run/hutch-ip-forward";

/// Installs (or replaces) hutch's nftables table and turns on IPv4 forwarding.
/// `noinet` lists the sandbox addresses that must get no egress (kept across restarts);
/// `deny`, the operator's ranges no sandbox reaches. If the host did not forward before
/// hutch (or an earlier run of it) turned forwarding on, only sandbox traffic is forwarded.
pub fn install_host_rules(
    cfg: &NetConfig,
    noinet: &[Ipv4Addr],
    deny: &[(Ipv4Addr, u8)],
) -> Result<()> {
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
    let ruleset = rules::ruleset(cfg, noinet, deny, ours);
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

/// Creates the veth pair with its sandbox end, already named `eth0`, inside the network
/// namespace of `pid`, and addresses and raises the host end. Runs in the host's network
/// namespace, over netlink.
pub fn setup_host_side(net: &SandboxNet, pid: i32) -> Result<()> {
    let mut nl = route_socket()?;
    let create = msgs::new_veth(
        &net.host_if,
        net.host_mac(),
        SANDBOX_IF,
        net.sandbox_mac(),
        pid,
    );
    let what = || {
        format!(
            "create veth {} (peer {SANDBOX_IF} in pid {pid}'s namespace)",
            net.host_if
        )
    };
    match nl.transact(std::slice::from_ref(&create)) {
        Ok(_) => {}
        // A leftover interface of a dead sandbox with the same slot: replace it.
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
    rtnl(
        &mut nl,
        || format!("address and raise {}", net.host_if),
        &[
            msgs::add_addr(index, net.host_ip, SLOT_PREFIX),
            msgs::link_up(&net.host_if),
            msgs::add_neighbour(index, net.sandbox_ip, net.sandbox_mac()),
        ],
    )?;
    Ok(())
}

/// Configures the sandbox end: loopback, `eth0` and the default route. Must run in the
/// sandbox's network namespace (the netlink socket talks to the namespace it is opened in).
pub fn setup_sandbox_side(net: &SandboxNet) -> Result<()> {
    for f in ["all", "default", "lo"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
    }
    // Root inside has no CAP_NET_RAW: `ping` opens ICMP datagram sockets instead, which this
    // allows for every group the sandbox has (the namespace's own setting, not the host's).
    let groups = std::fs::read_to_string("/proc/self/gid_map")
        .map_err(|e| RuntimeError::io("read", "/proc/self/gid_map", e))?;
    let range = format!("0 {}", highest_mapped(&groups));
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", range)
        .map_err(|e| RuntimeError::io("write", "/proc/sys/net/ipv4/ping_group_range", e))?;
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

/// The highest id inside a user namespace that an id map (`/proc/<pid>/gid_map`) maps.
fn highest_mapped(map: &str) -> u64 {
    map.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
            let (inside, _, count) = (fields.next()??, fields.next()??, fields.next()??);
            (inside + count).checked_sub(1)
        })
        .max()
        .unwrap_or(0)
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

/// Interface group of discarded host veth ends ("htch"); nothing else on the host should
/// use it, since [`purge_discarded`] deletes the whole group.
pub const DISCARD_GROUP: u32 = 0x6874_6368;
/// Prefix of the names of discarded host veth ends. Not `hv*`: they are no sandbox's
/// (and down, so nothing crosses them whatever the firewall says).
pub const DISCARD_PREFIX: &str = "hdead";

/// Frees a sandbox's slot on the host side at once, without waiting for the kernel to
/// delete its veth (tens of milliseconds, most of it RCU waits under the lock every network
/// change takes): the host end goes down (its routes go with it), is renamed `hdead<n>` and
/// joins [`DISCARD_GROUP`]. The kernel deletes the pair with the sandbox's network
/// namespace; [`purge_discarded`] deletes what is left, many in one batch. Returns false
/// when there was no such interface. Falls back to deleting it outright if the rename
/// fails.
pub fn discard_host_side(net: &SandboxNet) -> bool {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Ok(mut nl) = route_socket() else {
        remove_host_side(net);
        return true;
    };
    let index = match link_index(&mut nl, &net.host_if) {
        Ok(i) => i,
        Err(_) => return false,
    };
    let name = format!("{DISCARD_PREFIX}{:x}", NEXT.fetch_add(1, Ordering::Relaxed));
    if let Err(e) = nl.transact(&[msgs::discard_link(index, &name, DISCARD_GROUP)]) {
        tracing::debug!(interface = %net.host_if, error = %e, "discarding the veth failed; deleting it");
        remove_host_side(net);
    }
    true
}

/// Deletes every discarded host veth end still there, in one batch.
pub fn purge_discarded() {
    let Ok(mut nl) = route_socket() else {
        return;
    };
    match nl.transact(&[msgs::del_group(DISCARD_GROUP)]) {
        Ok(_) => {}
        Err(e) if e == Errno::NODEV => {}
        Err(e) => tracing::warn!(error = %e, "deleting discarded veths failed"),
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
mod id_map_tests {
    use super::highest_mapped;

    #[test]
    fn the_highest_mapped_id_of_one_or_several_ranges() {
        assert_eq!(highest_mapped("         0     100000      65536\n"), 65535);
        assert_eq!(highest_mapped("0 1000 1\n1 200000 999\n"), 999);
        assert_eq!(highest_mapped(""), 0);
        assert_eq!(highest_mapped("garbage\n"), 0);
    }
}
