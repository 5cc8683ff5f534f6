//! The nftables text, and the /30-per-sandbox arithmetic behind it.

use super::*;
use crate::net::SandboxNet;

fn cfg() -> NetConfig {
    NetConfig::default()
}

/// The lines of the chain `name` in `text`, trimmed, without the braces.
fn chain<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("chain {name} {{");
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| *l != "}")
        .collect()
}

#[test]
fn ruleset_replaces_the_table_atomically() {
    let text = ruleset(&cfg(), &HostRules::default());
    let head: Vec<&str> = text.lines().take(3).collect();
    // "add" makes the "delete" succeed on a first run; both apply in one nft transaction.
    assert_eq!(
        head,
        [
            "add table inet hutch",
            "delete table inet hutch",
            "table inet hutch {"
        ]
    );
}

#[test]
fn input_drops_everything_new_from_sandboxes_to_the_host() {
    assert_eq!(
        chain(&ruleset(&cfg(), &HostRules::default()), "input"),
        [
            "type filter hook input priority -10; policy accept;",
            r#"iifname "hv*" ct state established,related accept"#,
            r#"iifname "hv*" drop"#,
        ]
    );
}

#[test]
fn forward_isolates_sandboxes_and_filters_their_egress() {
    assert_eq!(
        chain(&ruleset(&cfg(), &HostRules::default()), "forward"),
        [
            "type filter hook forward priority -10; policy accept;",
            r#"oifname "hv*" ct state established,related accept"#,
            r#"oifname "hv*" drop"#,
            r#"iifname "hv*" meta nfproto ipv6 drop"#,
            r#"iifname "hv*" ip saddr @noinet drop"#,
            r#"iifname "hv*" ip saddr @proxied meta l4proto tcp drop"#,
            r#"iifname "hv*" ip saddr . ip daddr @egress_deny drop"#,
            r#"iifname "hv*" ip daddr @blocked drop"#,
            r#"iifname "hv*" ip saddr != 10.201.0.0/16 drop"#,
            r#"iifname "hv*" accept"#,
        ]
    );
}

#[test]
fn forwarding_hutch_turned_on_is_for_sandboxes_only() {
    let forward = ruleset(
        &cfg(),
        &HostRules {
            forward_only_sandboxes: true,
            ..HostRules::default()
        },
    );
    let forward = chain(&forward, "forward");
    assert_eq!(forward.last(), Some(&"drop"));
    assert_eq!(forward[forward.len() - 2], r#"iifname "hv*" accept"#);
}

#[test]
fn spoofed_sources_are_dropped_before_conntrack() {
    assert_eq!(
        chain(&ruleset(&cfg(), &HostRules::default()), "prerouting"),
        [
            "type filter hook prerouting priority raw; policy accept;",
            r#"iifname "hv*" fib saddr . iif oif missing drop"#,
        ]
    );
}

#[test]
fn the_operators_ranges_and_azures_wire_server_are_blocked() {
    let text = ruleset(
        &cfg(),
        &HostRules {
            deny: &[
                (Ipv4Addr::new(192, 0, 2, 0), 24),
                (Ipv4Addr::new(198, 51, 100, 7), 32),
            ],
            ..HostRules::default()
        },
    );
    for net in ["192.0.2.0/24", "198.51.100.7/32", "168.63.129.16/32"] {
        assert!(text.contains(net), "{net} missing");
    }
}

#[test]
fn postrouting_masquerades_the_sandbox_range_out_of_the_uplink() {
    assert_eq!(
        chain(&ruleset(&cfg(), &HostRules::default()), "postrouting"),
        [
            "type nat hook postrouting priority 100; policy accept;",
            r#"ip saddr 10.201.0.0/16 oifname != "hv*" masquerade"#,
        ]
    );
}

#[test]
fn blocked_set_covers_private_metadata_and_the_sandbox_range_itself() {
    let cfg = NetConfig {
        base: Ipv4Addr::new(172, 30, 0, 0),
        prefix: 20,
    };
    let text = ruleset(&cfg, &HostRules::default());
    for net in [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "224.0.0.0/3",
        "172.30.0.0/20 }",
    ] {
        assert!(text.contains(net), "{net} missing");
    }
}

#[test]
fn noinet_set_is_empty_without_restricted_sandboxes() {
    let text = ruleset(&cfg(), &HostRules::default());
    let set: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "set noinet {")
        .take_while(|l| *l != "}")
        .collect();
    assert_eq!(set, ["set noinet {", "type ipv4_addr", ""]);
}

#[test]
fn noinet_set_is_rebuilt_from_the_adopted_sandboxes() {
    let adopted = [Ipv4Addr::new(10, 201, 0, 6), Ipv4Addr::new(10, 201, 0, 10)];
    let text = ruleset(
        &cfg(),
        &HostRules {
            noinet: &adopted,
            ..HostRules::default()
        },
    );
    assert!(text.contains("        elements = { 10.201.0.6, 10.201.0.10 }\n"));
    assert_eq!(
        text,
        ruleset(
            &cfg(),
            &HostRules {
                noinet: &adopted,
                ..HostRules::default()
            }
        ),
        "rendering is deterministic"
    );
}

#[test]
fn filtered_sandboxes_tcp_goes_to_the_proxy_and_their_other_traffic_to_denied_ranges_is_dropped() {
    let filtered = [(
        Ipv4Addr::new(10, 201, 0, 6),
        EgressFilter {
            denied: vec![
                (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(198, 18, 1, 1)),
                (
                    Ipv4Addr::new(198, 18, 1, 3),
                    Ipv4Addr::new(255, 255, 255, 255),
                ),
            ],
        },
    )];
    let text = ruleset(
        &cfg(),
        &HostRules {
            egress_port: Some(40123),
            filtered: &filtered,
            ..HostRules::default()
        },
    );
    assert!(
        text.contains("set proxied {\n        type ipv4_addr\n        elements = { 10.201.0.6 }\n")
    );
    assert!(text.contains(
        "elements = { 10.201.0.6 . 0.0.0.0-198.18.1.1, 10.201.0.6 . 198.18.1.3-255.255.255.255 }"
    ));
    assert_eq!(
        chain(&text, "egress_redirect"),
        [
            "type nat hook prerouting priority dstnat; policy accept;",
            r#"iifname "hv*" ip saddr @proxied meta l4proto tcp redirect to :40123"#,
        ]
    );
    // Only redirected connections reach the proxy's port; nobody reaches it directly.
    assert_eq!(
        chain(&text, "input"),
        [
            "type filter hook input priority -10; policy accept;",
            r#"iifname "hv*" ip saddr @proxied tcp dport 40123 ct status dnat accept"#,
            r#"iifname "hv*" ct state established,related accept"#,
            r#"iifname "hv*" drop"#,
            "tcp dport 40123 drop",
        ]
    );
}

#[test]
fn only_hv_names_with_a_number_are_slots() {
    assert_eq!(slot_of_interface("hv0"), Some(0));
    assert_eq!(slot_of_interface("hv16383"), Some(16383));
    assert_eq!(slot_of_interface("hp3"), None);
    assert_eq!(slot_of_interface("hv"), None);
    assert_eq!(slot_of_interface("hvx1"), None);
    assert_eq!(slot_of_interface("eth0"), None);
}

#[test]
fn each_slot_is_a_30_with_host_at_1_and_sandbox_at_2() {
    let c = cfg();
    let s0 = c.slot(0);
    assert_eq!(
        (s0.host_ip, s0.sandbox_ip),
        (Ipv4Addr::new(10, 201, 0, 1), Ipv4Addr::new(10, 201, 0, 2))
    );
    assert_eq!((s0.host_if.as_str(), s0.peer_if.as_str()), ("hv0", "hp0"));
    let s64 = c.slot(64);
    assert_eq!(s64.host_ip, Ipv4Addr::new(10, 201, 1, 1));
    let last = c.slot(c.slots() - 1);
    assert_eq!(last.sandbox_ip, Ipv4Addr::new(10, 201, 255, 254));
}

#[test]
fn slot_count_follows_the_prefix() {
    assert_eq!(cfg().slots(), 16384);
    let small = NetConfig {
        base: Ipv4Addr::new(192, 168, 7, 0),
        prefix: 24,
    };
    assert_eq!(small.slots(), 64);
    assert_eq!(small.cidr(), "192.168.7.0/24");
    let one = NetConfig {
        base: Ipv4Addr::new(192, 168, 7, 0),
        prefix: 30,
    };
    assert_eq!(one.slots(), 1);
}

#[test]
fn sandbox_net_round_trips_through_json() {
    let net = cfg().slot(5);
    let json = serde_json::to_string(&net).expect("serialize");
    assert_eq!(
        json,
        r#"{"slot":5,"host_if":"hv5","peer_if":"hp5","host_ip":"10.201.0.21","sandbox_ip":"10.201.0.22"}"#
    );
    let back: SandboxNet = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, net);
}

#[test]
fn nft_accepts_the_ruleset_with_filtered_sandboxes_when_root() {
    if !hutch_sys::creds::is_root()
        || std::process::Command::new("nft")
            .arg("-v")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let filtered = [(
        Ipv4Addr::new(10, 201, 0, 6),
        EgressFilter {
            denied: vec![(
                Ipv4Addr::new(198, 18, 1, 3),
                Ipv4Addr::new(255, 255, 255, 255),
            )],
        },
    )];
    let text = ruleset(
        &cfg(),
        &HostRules {
            noinet: &[Ipv4Addr::new(10, 201, 0, 10)],
            egress_port: Some(40123),
            filtered: &filtered,
            forward_only_sandboxes: true,
            ..HostRules::default()
        },
    );
    // `-c`: checked by the kernel's rules, nothing applied.
    let mut child = std::process::Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
