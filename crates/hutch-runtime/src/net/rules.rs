//! The text hutch hands to `nft`, built from its inputs alone.

use std::net::Ipv4Addr;

use super::{EgressFilter, NetConfig, HOST_IF_PREFIX, NFT_TABLE};

/// Destinations no sandbox reaches, besides the sandbox range itself and the operator's own
/// (`--deny-cidr`): "this network", private, shared (CGNAT), loopback, link-local (cloud
/// metadata at 169.254.169.254), IETF protocol assignments, multicast and reserved, and
/// Azure's wire server (168.63.129.16: metadata and agent services that answer from an
/// ordinary public address).
pub const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "168.63.129.16/32",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "224.0.0.0/3",
];

/// [`BLOCKED`] as addresses and prefix lengths.
pub fn blocked() -> Vec<(Ipv4Addr, u8)> {
    BLOCKED
        .iter()
        .filter_map(|c| {
            let (ip, prefix) = c.split_once('/')?;
            Some((ip.parse().ok()?, prefix.parse().ok()?))
        })
        .collect()
}

/// What the host's rules are made from besides the address range.
#[derive(Debug, Clone, Default)]
pub struct HostRules<'a> {
    /// Addresses of sandboxes without egress (the `noinet` set).
    pub noinet: &'a [Ipv4Addr],
    /// The operator's ranges (the `blocked` set, beside [`BLOCKED`]).
    pub deny: &'a [(Ipv4Addr, u8)],
    /// Nothing but sandbox traffic is forwarded (hutch turned forwarding on; the host did
    /// not route before).
    pub forward_only_sandboxes: bool,
    /// The port of the server's egress proxy: new TCP connections of sandboxes with an
    /// egress filter are redirected to it. None: their TCP is dropped.
    pub egress_port: Option<u16>,
    /// The sandboxes with an egress filter and their filters (the `proxied` and
    /// `egress_deny` sets).
    pub filtered: &'a [(Ipv4Addr, EgressFilter)],
}

/// The complete nftables script for hutch's table: it creates the table if missing,
/// deletes it (so a rerun replaces rather than appends) and defines it anew, with the
/// sets already holding what `host` lists.
pub fn ruleset(cfg: &NetConfig, host: &HostRules<'_>) -> String {
    let elements = element_list(host.noinet.iter().map(|a| a.to_string()));
    let p = HOST_IF_PREFIX;
    let cidr = cfg.cidr();
    let mut blocked: Vec<String> = BLOCKED.iter().map(|s| (*s).to_owned()).collect();
    blocked.extend(
        host.deny
            .iter()
            .map(|(ip, prefix)| format!("{ip}/{prefix}")),
    );
    blocked.push(cidr.clone());
    let blocked = blocked.join(", ");
    // When hutch turned forwarding on, it forwards for its sandboxes only: the host must
    // not start routing between its other interfaces.
    let host_forwarding = if host.forward_only_sandboxes {
        "\n        drop"
    } else {
        ""
    };
    let proxied = element_list(host.filtered.iter().map(|(ip, _)| ip.to_string()));
    let egress_deny = element_list(host.filtered.iter().flat_map(|(ip, f)| {
        f.denied
            .iter()
            .map(move |(first, last)| format!("{ip} . {first}-{last}"))
    }));
    // Redirected connections arrive at the slot's host address with the proxy's port and
    // a destination NAT in their conntrack entry: only those pass the input chain.
    let (redirect, proxy_in, proxy_closed) = match host.egress_port {
        Some(port) => (
            format!("\n        iifname \"{p}*\" ip saddr @proxied meta l4proto tcp redirect to :{port}"),
            format!("\n        iifname \"{p}*\" ip saddr @proxied tcp dport {port} ct status dnat accept"),
            format!("\n        tcp dport {port} drop"),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        r#"add table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    set noinet {{
        type ipv4_addr
        {elements}
    }}
    set proxied {{
        type ipv4_addr
        {proxied}
    }}
    set egress_deny {{
        type ipv4_addr . ipv4_addr
        flags interval
        {egress_deny}
    }}
    set blocked {{
        type ipv4_addr
        flags interval
        auto-merge
        elements = {{ {blocked} }}
    }}
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        iifname "{p}*" fib saddr . iif oif missing drop
    }}
    chain egress_redirect {{
        type nat hook prerouting priority dstnat; policy accept;{redirect}
    }}
    chain input {{
        type filter hook input priority -10; policy accept;{proxy_in}
        iifname "{p}*" ct state established,related accept
        iifname "{p}*" drop{proxy_closed}
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        oifname "{p}*" ct state established,related accept
        oifname "{p}*" drop
        iifname "{p}*" meta nfproto ipv6 drop
        iifname "{p}*" ip saddr @noinet drop
        iifname "{p}*" ip saddr @proxied meta l4proto tcp drop
        iifname "{p}*" ip saddr . ip daddr @egress_deny drop
        iifname "{p}*" ip daddr @blocked drop
        iifname "{p}*" ip saddr != {cidr} drop
        iifname "{p}*" accept{host_forwarding}
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {cidr} oifname != "{p}*" masquerade
    }}
}}
"#
    )
}

/// `elements = { .. }` of a set, or nothing for an empty one.
fn element_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("elements = {{ {} }}", items.join(", "))
    }
}

/// The slot of a host interface named `hv<slot>`; None for every other name.
pub fn slot_of_interface(name: &str) -> Option<u32> {
    name.strip_prefix(HOST_IF_PREFIX)?.parse().ok()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
