//! The text hutch hands to `nft`, built from its inputs alone.

use std::net::Ipv4Addr;

use super::{NetConfig, HOST_IF_PREFIX, NFT_TABLE};

/// The complete nftables script for hutch's table: it creates the table if missing,
/// deletes it (so a rerun replaces rather than appends) and defines it anew, with
/// `noinet` (the addresses of sandboxes without egress) already in the `noinet` set.
pub fn ruleset(cfg: &NetConfig, noinet: &[Ipv4Addr]) -> String {
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
        elements = {{ 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16,
                      172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 224.0.0.0/3, {cidr} }}
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
