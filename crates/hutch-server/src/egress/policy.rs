//! A sandbox's egress policy: the `network` options of E2B's create and update
//! (`allowOut`, `denyOut`, `rules`, `dnsServers`), checked, kept in the sandbox's record
//! as given, and compiled into what the egress proxy and the firewall decide with.
//!
//! E2B's order of decision, for each connection: a name the connection carries (TLS SNI,
//! HTTP `Host`) that an allowed domain matches allows it; else an allowed address range
//! that holds its destination allows it; else a denied range that holds it denies it;
//! else it is allowed. `allow_internet_access = false` denies every range.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hutch_runtime::net::EgressFilter;
use serde::{Deserialize, Serialize};

/// E2B's "all traffic" range (`ALL_TRAFFIC` in the SDKs).
pub const ALL_TRAFFIC: &str = "0.0.0.0/0";
/// The nameserver a policy with domains may reach when it names none (E2B's default).
pub const DEFAULT_DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

/// E2B's limits on transform rules.
const MAX_RULE_DOMAINS: usize = 10;
const MAX_RULES_PER_DOMAIN: usize = 1;
const MAX_RULE_DOMAIN_LEN: usize = 128;
const MAX_HEADERS_PER_RULE: usize = 20;
const MAX_HEADER_NAME_LEN: usize = 64;
const MAX_HEADER_VALUE_LEN: usize = 2048;
const MAX_DNS_SERVERS: usize = 10;
const MAX_ENTRIES: usize = 1000;

/// Headers a matching request gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transform {
    /// Set on the request, replacing headers of the same name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One rule of a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// What it does to matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
}

/// The egress part of a sandbox's `network` options, as the API takes and returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressConfig {
    /// Ranges, addresses and domains that are allowed (before any denial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    /// Ranges and addresses that are denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    /// Header transforms by domain (exact, or `*.` for its subdomains).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Nameservers reachable when `allow_out` holds a domain (None: [`DEFAULT_DNS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<Ipv4Addr>>,
}

impl EgressConfig {
    /// Nothing asked for: the sandbox's traffic goes out as any sandbox's.
    pub fn is_empty(&self) -> bool {
        self.allow_out.is_empty() && self.deny_out.is_empty() && self.rules.is_empty()
    }

    /// Checks the options (as E2B does) and returns them normalised: domains in lower case.
    /// `internet` is `allow_internet_access` (false denies every range). The error is the
    /// message of a 400.
    pub fn checked(mut self, internet: bool) -> Result<EgressConfig, String> {
        if self.allow_out.len() > MAX_ENTRIES || self.deny_out.len() > MAX_ENTRIES {
            return Err(format!(
                "allowOut and denyOut take at most {MAX_ENTRIES} entries each"
            ));
        }
        for entry in &self.deny_out {
            if range(entry).is_none() {
                return Err(format!(
                    "invalid denied CIDR {entry}: denyOut takes IPv4 addresses and CIDR blocks only"
                ));
            }
        }
        let mut domains = false;
        for entry in &mut self.allow_out {
            if range(entry).is_some() {
                continue;
            }
            match Pattern::parse(entry) {
                Some(p) => {
                    *entry = p.to_string();
                    domains = true;
                }
                None => {
                    return Err(format!(
                        "invalid allowed address {entry}: allowOut takes IPv4 addresses, CIDR \
                         blocks and domain names (example.com, *.example.com)"
                    ))
                }
            }
        }
        if domains && internet && !self.deny_out.iter().any(|d| d == ALL_TRAFFIC) {
            return Err(
                "When specifying allowed domains in allow out, you must include \
                        'ALL_TRAFFIC' in deny out to block all other traffic."
                    .into(),
            );
        }
        if let Some(dns) = &self.dns_servers {
            if dns.len() > MAX_DNS_SERVERS {
                return Err(format!(
                    "dnsServers takes at most {MAX_DNS_SERVERS} addresses"
                ));
            }
        }
        if self.rules.len() > MAX_RULE_DOMAINS {
            return Err(format!(
                "Network rules can have at most {MAX_RULE_DOMAINS} domains."
            ));
        }
        let mut rules = BTreeMap::new();
        for (domain, list) in std::mem::take(&mut self.rules) {
            if domain.len() > MAX_RULE_DOMAIN_LEN {
                return Err(format!(
                    "Rule domain {domain:?} exceeds maximum length of {MAX_RULE_DOMAIN_LEN} characters."
                ));
            }
            let Some(pattern) = Pattern::parse(&domain) else {
                return Err(format!(
                    "Rule domain {domain:?} is not a valid domain name."
                ));
            };
            if list.len() > MAX_RULES_PER_DOMAIN {
                return Err(format!(
                    "Domain {domain:?} can have at most {MAX_RULES_PER_DOMAIN} transform rule."
                ));
            }
            for rule in &list {
                let headers = rule.transform.iter().flat_map(|t| t.headers.iter());
                check_headers(&domain, headers)?;
            }
            if rules.insert(pattern.to_string(), list).is_some() {
                return Err(format!("Rule domain {domain:?} is given twice."));
            }
        }
        self.rules = rules;
        Ok(self)
    }
}

fn check_headers<'a>(
    domain: &str,
    headers: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    for (n, (name, value)) in headers.enumerate() {
        if n >= MAX_HEADERS_PER_RULE {
            return Err(format!(
                "Domain {domain:?} can have at most {MAX_HEADERS_PER_RULE} headers per rule."
            ));
        }
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
            return Err(format!(
                "Header name {name:?} in rule for domain {domain:?} must be 1 to {MAX_HEADER_NAME_LEN} characters."
            ));
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "Header name {name:?} in rule for domain {domain:?} must contain only valid HTTP token characters."
            ));
        }
        if value.len() > MAX_HEADER_VALUE_LEN || http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "Value for header {name:?} in rule for domain {domain:?} contains invalid characters or exceeds {MAX_HEADER_VALUE_LEN} characters."
            ));
        }
        if value.contains("${e2b.") {
            return Err(format!(
                "Value for header {name:?} in rule for domain {domain:?} uses a workload identity \
                 placeholder; this hutch server has no workload identity (iam)."
            ));
        }
    }
    Ok(())
}

/// An inclusive range of addresses.
pub type Range = (u32, u32);

/// The range of an IPv4 address or CIDR block (`0.0.0.0` alone is not an address one
/// can send to, as E2B says).
pub fn range(entry: &str) -> Option<Range> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => {
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (a, p.parse::<u8>().ok().filter(|p| *p <= 32)?)
        }
        None => (entry, 32),
    };
    let ip: Ipv4Addr = addr.parse().ok()?;
    if ip.is_unspecified() && prefix == 32 {
        return None;
    }
    Some(block(ip, prefix))
}

/// The inclusive range of the CIDR block `ip/prefix` (prefix at most 32).
pub fn block(ip: Ipv4Addr, prefix: u8) -> Range {
    let mask = match prefix.min(32) {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    };
    let first = u32::from(ip) & mask;
    (first, first | !mask)
}

/// A domain name pattern: a name, or `*.` and a name for its subdomains at any depth (not
/// the name itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// Names ending in `.<this>`.
    Subdomains(String),
}

impl Pattern {
    /// Parses `example.com` or `*.example.com` (lower-cased); None when it is not a
    /// domain name.
    pub fn parse(s: &str) -> Option<Pattern> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        if !is_domain(&name) {
            return None;
        }
        Some(if wild {
            Pattern::Subdomains(name)
        } else {
            Pattern::Exact(name)
        })
    }

    /// Whether `host` (lower case, no trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Pattern::Exact(n) => host == n,
            Pattern::Subdomains(n) => host
                .strip_suffix(n.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Subdomains(n) => write!(f, "*.{n}"),
        }
    }
}

/// A DNS name of letters, digits and hyphens (underscores too, as real names have them),
/// not an IP address.
fn is_domain(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 || name.parse::<Ipv4Addr>().is_ok() {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// How a connection was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An allowed domain matched the name it carries: connect to that name.
    ByName,
    /// Its destination address is allowed: connect to it.
    ByAddress,
    /// Refused.
    Denied,
}

/// A policy ready to decide with.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    allow_nets: Vec<Range>,
    allow_domains: Vec<Pattern>,
    deny_nets: Vec<Range>,
    dns: Vec<Range>,
    rules: Vec<(Pattern, http::HeaderMap)>,
}

impl Compiled {
    /// Compiles a checked `config`; `internet` false denies every range.
    pub fn new(config: &EgressConfig, internet: bool) -> Compiled {
        let mut c = Compiled::default();
        for entry in &config.allow_out {
            match range(entry) {
                Some(r) => c.allow_nets.push(r),
                None => c.allow_domains.extend(Pattern::parse(entry)),
            }
        }
        c.deny_nets = if internet {
            config.deny_out.iter().filter_map(|d| range(d)).collect()
        } else {
            vec![(0, u32::MAX)]
        };
        if !c.allow_domains.is_empty() {
            let dns = config
                .dns_servers
                .clone()
                .unwrap_or_else(|| vec![DEFAULT_DNS]);
            c.dns = dns.iter().map(|a| (u32::from(*a), u32::from(*a))).collect();
        }
        for (domain, list) in &config.rules {
            let Some(pattern) = Pattern::parse(domain) else {
                continue;
            };
            let mut headers = http::HeaderMap::new();
            for t in list.iter().filter_map(|r| r.transform.as_ref()) {
                for (n, v) in &t.headers {
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(n.as_bytes()),
                        http::HeaderValue::from_str(v),
                    ) {
                        headers.insert(n, v);
                    }
                }
            }
            c.rules.push((pattern, headers));
        }
        c
    }

    /// Whether the sandbox needs the proxy and the filter at all (else its traffic goes
    /// out as any sandbox's).
    pub fn is_active(&self) -> bool {
        !(self.allow_nets.is_empty()
            && self.allow_domains.is_empty()
            && self.deny_nets.is_empty()
            && self.rules.is_empty())
    }

    /// Whether a connection's name could change its verdict or its headers: only then is
    /// it worth waiting for the client's first bytes.
    pub fn wants_name(&self, ip: Ipv4Addr) -> bool {
        !self.rules.is_empty()
            || (!self.allow_domains.is_empty() && self.decide(None, ip) == Verdict::Denied)
    }

    /// The verdict on a connection to `ip` carrying `name` (lower case) if any.
    pub fn decide(&self, name: Option<&str>, ip: Ipv4Addr) -> Verdict {
        if let Some(name) = name {
            if self.allow_domains.iter().any(|p| p.matches(name)) {
                return Verdict::ByName;
            }
        }
        let ip = u32::from(ip);
        let within = |r: &Range| r.0 <= ip && ip <= r.1;
        // The nameservers a policy with domains opens take all traffic (DNS over TCP too).
        if self.allow_nets.iter().chain(&self.dns).any(within) {
            Verdict::ByAddress
        } else if self.deny_nets.iter().any(within) {
            Verdict::Denied
        } else {
            Verdict::ByAddress
        }
    }

    /// The headers requests to `name` get: those of the exact rule, else of the longest
    /// matching wildcard one, else none.
    pub fn headers_for(&self, name: &str) -> Option<&http::HeaderMap> {
        if let Some((_, h)) = self
            .rules
            .iter()
            .find(|(p, _)| matches!(p, Pattern::Exact(_)) && p.matches(name))
        {
            return Some(h);
        }
        self.rules
            .iter()
            .filter(|(p, _)| matches!(p, Pattern::Subdomains(_)) && p.matches(name))
            .max_by_key(|(p, _)| match p {
                Pattern::Subdomains(n) | Pattern::Exact(n) => n.len(),
            })
            .map(|(_, h)| h)
    }

    /// The firewall's part, for what the proxy does not see (everything but TCP): the
    /// denied ranges less the allowed ones and the nameservers.
    pub fn filter(&self) -> EgressFilter {
        let mut allowed: Vec<Range> = self.allow_nets.iter().chain(&self.dns).copied().collect();
        allowed.sort_unstable();
        let mut denied = union(self.deny_nets.clone());
        for a in union(allowed) {
            denied = denied.into_iter().flat_map(|d| subtract(d, a)).collect();
        }
        EgressFilter {
            denied: denied
                .into_iter()
                .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
                .collect(),
        }
    }
}

/// Sorted, disjoint ranges covering `ranges`.
fn union(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.0 <= last.1.saturating_add(1) => last.1 = last.1.max(r.1),
            _ => out.push(r),
        }
    }
    out
}

/// `d` without `a`: none, one or two ranges.
fn subtract(d: Range, a: Range) -> Vec<Range> {
    if a.1 < d.0 || a.0 > d.1 {
        return vec![d];
    }
    let mut out = Vec::new();
    if a.0 > d.0 {
        out.push((d.0, a.0 - 1));
    }
    if a.1 < d.1 {
        out.push((a.1 + 1, d.1));
    }
    out
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
