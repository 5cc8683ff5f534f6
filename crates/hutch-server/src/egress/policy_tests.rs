use super::*;

fn config(allow: &[&str], deny: &[&str]) -> EgressConfig {
    EgressConfig {
        allow_out: allow.iter().map(|s| s.to_string()).collect(),
        deny_out: deny.iter().map(|s| s.to_string()).collect(),
        ..EgressConfig::default()
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

#[test]
fn ranges_are_addresses_and_cidr_blocks_only() {
    assert_eq!(range("1.2.3.4"), Some((0x0102_0304, 0x0102_0304)));
    assert_eq!(range("10.1.2.3/8"), Some((0x0a00_0000, 0x0aff_ffff)));
    assert_eq!(range("0.0.0.0/0"), Some((0, u32::MAX)));
    for bad in [
        "0.0.0.0",
        "10.0.0.0/33",
        "10.0.0.0/",
        "example.com",
        "::1",
        "1.2.3",
        "1.2.3.4/+8",
    ] {
        assert_eq!(range(bad), None, "{bad}");
    }
}

#[test]
fn wildcards_match_subdomains_at_any_depth_but_not_the_apex() {
    let p = Pattern::parse("*.Example.com").expect("pattern");
    assert_eq!(p.to_string(), "*.example.com");
    assert!(p.matches("a.example.com"));
    assert!(p.matches("a.b.example.com"));
    assert!(!p.matches("example.com"));
    assert!(!p.matches("badexample.com"));
    assert!(Pattern::parse("example.com")
        .expect("p")
        .matches("example.com"));
    for bad in [
        "*",
        "*.",
        "",
        "a..b",
        "-a.com",
        "a b.com",
        "1.2.3.4",
        "not a domain!",
    ] {
        assert_eq!(Pattern::parse(bad), None, "{bad}");
    }
}

#[test]
fn bad_options_are_refused_with_a_message() {
    let cases = [
        (config(&[], &["example.com"]), "invalid denied CIDR"),
        (config(&["10.0.0.0/33"], &[]), "invalid allowed address"),
        (config(&["x.test"], &[]), "ALL_TRAFFIC"),
    ];
    for (c, want) in cases {
        let e = c.checked(true).expect_err("refused");
        assert!(e.contains(want), "{e}");
    }
    // Without internet every range is denied already: domains need no ALL_TRAFFIC.
    assert!(config(&["x.test"], &[]).checked(false).is_ok());
    let mut bad_header = config(&[], &[]);
    bad_header.rules.insert(
        "api.test".into(),
        vec![Rule {
            transform: Some(Transform {
                headers: [("Bad Header".to_string(), "v".to_string())].into(),
            }),
        }],
    );
    assert!(bad_header
        .checked(true)
        .expect_err("refused")
        .contains("token"));
    let mut star = config(&[], &[]);
    star.rules.insert("*".into(), vec![Rule::default()]);
    assert!(star.checked(true).is_err());
}

#[test]
fn allow_beats_deny_and_names_beat_addresses() {
    let c = config(&["198.18.1.2", "allowed.test"], &[ALL_TRAFFIC])
        .checked(true)
        .expect("valid");
    let p = Compiled::new(&c, true);
    assert!(p.is_active());
    assert_eq!(p.decide(None, ip("198.18.1.2")), Verdict::ByAddress);
    assert_eq!(p.decide(None, ip("198.18.1.6")), Verdict::Denied);
    assert_eq!(
        p.decide(Some("allowed.test"), ip("198.18.1.6")),
        Verdict::ByName
    );
    assert_eq!(
        p.decide(Some("other.test"), ip("198.18.1.6")),
        Verdict::Denied
    );
    assert!(p.wants_name(ip("198.18.1.6")));
    assert!(!p.wants_name(ip("198.18.1.2")));
    // With a domain allowed, the default nameserver takes all traffic (DNS over TCP).
    assert_eq!(p.decide(None, DEFAULT_DNS), Verdict::ByAddress);
    // Only what is denied is denied.
    let p = Compiled::new(&config(&[], &["198.18.1.0/30"]), true);
    assert_eq!(p.decide(None, ip("198.18.1.2")), Verdict::Denied);
    assert_eq!(p.decide(None, ip("198.18.1.6")), Verdict::ByAddress);
    // No internet: everything denied but what is allowed.
    let p = Compiled::new(&config(&["198.18.1.2"], &[]), false);
    assert_eq!(p.decide(None, ip("198.18.1.2")), Verdict::ByAddress);
    assert_eq!(p.decide(None, ip("1.1.1.1")), Verdict::Denied);
    assert!(!Compiled::new(&EgressConfig::default(), true).is_active());
}

#[test]
fn the_firewall_denies_the_denied_ranges_less_the_allowed_ones_and_the_nameservers() {
    let mut c = config(&["198.18.1.2", "198.18.1.0/30", "a.test"], &[ALL_TRAFFIC]);
    c.dns_servers = Some(vec![ip("198.18.2.2")]);
    let f = Compiled::new(&c.checked(true).expect("valid"), true).filter();
    assert_eq!(
        f.denied,
        [
            (ip("0.0.0.0"), ip("198.18.0.255")),
            (ip("198.18.1.4"), ip("198.18.2.1")),
            (ip("198.18.2.3"), ip("255.255.255.255")),
        ]
    );
    // No domain: no nameserver is opened.
    let f = Compiled::new(&config(&[], &["198.18.0.0/16", "198.18.1.0/24"]), true).filter();
    assert_eq!(f.denied, [(ip("198.18.0.0"), ip("198.18.255.255"))]);
}

#[test]
fn exact_rules_win_then_the_longest_wildcard() {
    let rule = |v: &str| {
        vec![Rule {
            transform: Some(Transform {
                headers: [("x-rule".to_string(), v.to_string())].into(),
            }),
        }]
    };
    let mut c = config(&[], &[]);
    c.rules.insert("*.test".into(), rule("short"));
    c.rules.insert("*.api.test".into(), rule("long"));
    c.rules.insert("x.api.test".into(), rule("exact"));
    let p = Compiled::new(&c.checked(true).expect("valid"), true);
    let got = |n: &str| {
        p.headers_for(n)
            .and_then(|h| h.get("x-rule"))
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    assert_eq!(got("x.api.test").as_deref(), Some("exact"));
    assert_eq!(got("y.api.test").as_deref(), Some("long"));
    assert_eq!(got("api.test").as_deref(), Some("short"));
    assert_eq!(got("other.com"), None);
}
