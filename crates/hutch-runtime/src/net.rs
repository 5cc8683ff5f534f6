//! Sandbox networking: one network namespace per sandbox behind a veth pair, and one
//! nftables table that decides what may cross.
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

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

pub mod rules;

/// Name of hutch's nftables table (family `inet`).
pub const NFT_TABLE: &str = "hutch";
/// Prefix of the host-side veth names.
pub const HOST_IF_PREFIX: &str = "hv";

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
    /// Sandbox-side veth name before it is renamed `eth0` inside.
    pub peer_if: String,
    /// Host end of the /30.
    pub host_ip: Ipv4Addr,
    /// The sandbox's address.
    pub sandbox_ip: Ipv4Addr,
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

/// Installs (or replaces) hutch's nftables table and turns on IPv4 forwarding.
/// `noinet` lists the sandbox addresses that must get no egress (kept across restarts).
pub fn install_host_rules(cfg: &NetConfig, noinet: &[Ipv4Addr]) -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| RuntimeError::io("write", "/proc/sys/net/ipv4/ip_forward", e))?;
    let ruleset = rules::ruleset(cfg, noinet);
    run("nft", &["-f", "-"], Some(&ruleset))
}

/// Removes hutch's nftables table (used by tests and uninstall).
pub fn remove_host_rules() -> Result<()> {
    run("nft", &["delete", "table", "inet", NFT_TABLE], None)
}

/// Adds or removes a sandbox address from the no-egress set.
pub fn set_internet(ip: Ipv4Addr, allowed: bool) -> Result<()> {
    let args = rules::noinet_args(ip, allowed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = run("nft", &args, None);
    match res {
        // Deleting an element that is not there is fine.
        Err(_) if allowed => Ok(()),
        r => r,
    }
}

/// Creates the veth pair with its sandbox end inside the network namespace of `pid` and
/// configures the host end. Runs in the host's network namespace.
pub fn setup_host_side(net: &SandboxNet, pid: i32) -> Result<()> {
    // A leftover interface of a dead sandbox with the same slot would make `link add` fail.
    let _ = run("ip", &["link", "del", &net.host_if], None);
    let batch = rules::host_side_batch(net, pid);
    run("ip", &["-batch", "-"], Some(&batch))?;
    // Strict reverse-path filtering stops a sandbox from sending with another one's address.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{}/rp_filter", net.host_if),
        "1",
    );
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", net.host_if),
        "1",
    );
    Ok(())
}

/// Configures the sandbox end: loopback, `eth0` and the default route. Must run in the
/// sandbox's network namespace.
pub fn setup_sandbox_side(net: &SandboxNet) -> Result<()> {
    for f in ["all", "default", "lo"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
    }
    let batch = rules::sandbox_side_batch(net);
    run("ip", &["-batch", "-"], Some(&batch))
}

/// Deletes the host end of a sandbox's veth if it still exists (it normally disappears
/// with the sandbox's network namespace).
pub fn remove_host_side(net: &SandboxNet) {
    if std::path::Path::new("/sys/class/net")
        .join(&net.host_if)
        .exists()
    {
        let _ = run("ip", &["link", "del", &net.host_if], None);
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
