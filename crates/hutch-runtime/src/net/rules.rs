//! The text hutch hands to `nft`, built from its inputs alone.

use std::net::Ipv4Addr;

use super::{NetConfig, HOST_IF_PREFIX, NFT_TABLE};

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

/// The complete nftables script for hutch's table: it creates the table if missing,
/// deletes it (so a rerun replaces rather than appends) and defines it anew, with
/// `noinet` (the addresses of sandboxes without egress) already in the `noinet` set and
/// `deny` (the operator's ranges) in the `blocked` one. `forward_only_sandboxes`: nothing
/// but sandbox traffic is forwarded (hutch turned forwarding on; the host did not route
/// before).
pub fn ruleset(
    cfg: &NetConfig,
    noinet: &[Ipv4Addr],
    deny: &[(Ipv4Addr, u8)],
    forward_only_sandboxes: bool,
) -> String {
    let elements = if noinet.is_empty() {
        String::new()
    } else {
        format!(
            "elements = {{ {} }}",
            noinet
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let p = HOST_IF_PREFIX;
    let cidr = cfg.cidr();
    let mut blocked: Vec<String> = BLOCKED.iter().map(|s| (*s).to_owned()).collect();
    blocked.extend(deny.iter().map(|(ip, prefix)| format!("{ip}/{prefix}")));
    blocked.push(cidr.clone());
    let blocked = blocked.join(", ");
    // When hutch turned forwarding on, it forwards for its sandboxes only: the host must
    // not start routing between its other interfaces.
    let host_forwarding = if forward_only_sandboxes {
        "\n        drop"
    } else {
        ""
    };
    format!(
        r#"add table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    set noinet {{
        type ipv4_addr
        {elements}
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
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{p}*" ct state established,related accept
        iifname "{p}*" drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        oifname "{p}*" ct state established,related accept
        oifname "{p}*" drop
        iifname "{p}*" meta nfproto ipv6 drop
        iifname "{p}*" ip saddr @noinet drop
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

/// The slot of a host interface named `hv<slot>`; None for every other name.
pub fn slot_of_interface(name: &str) -> Option<u32> {
    name.strip_prefix(HOST_IF_PREFIX)?.parse().ok()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
