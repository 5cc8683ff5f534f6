//! The `network` options of a create and `PUT /sandboxes/{id}/network` (E2B's
//! `update_network`): decoded, checked (a 400 names what is wrong) and handed to the
//! service. See docs/egress.md.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::api::{check_id, ApiError, ApiJson, ApiResult, AppState, CallerExt};
use crate::egress::policy::{EgressConfig, Rule};
use crate::sandbox::SandboxNetwork;

/// The agent's port: the router never reaches it over TLS.
const AGENT_PORT: u16 = 49983;

/// `network` of a create.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NetworkConfig {
    /// False: the sandbox's ports (other than the agent's) answer only requests with its
    /// `trafficAccessToken` in `E2B-Traffic-Access-Token`.
    pub allow_public_traffic: Option<bool>,
    #[serde(flatten)]
    egress: EgressBody,
    mask_request_host: Option<String>,
    https_ports: Option<Vec<i64>>,
}

/// The egress options, common to a create's `network` and an update.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EgressBody {
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    rules: Option<BTreeMap<String, Vec<Rule>>>,
    dns_servers: Option<Vec<String>>,
    egress_proxy: Option<serde_json::Value>,
}

impl EgressBody {
    fn config(self, internet: bool) -> ApiResult<EgressConfig> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        if self.egress_proxy.as_ref().is_some_and(|p| !p.is_null()) {
            return Err(bad(
                "network.egressProxy is not supported by this hutch server: a \
                 bring-your-own SOCKS5 proxy is E2B Cloud's; create the sandbox without it"
                    .into(),
            ));
        }
        let dns_servers = match self.dns_servers {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| {
                        s.parse::<Ipv4Addr>().map_err(|_| {
                            bad(format!(
                                "invalid DNS server {s:?}: dnsServers takes IPv4 addresses"
                            ))
                        })
                    })
                    .collect::<ApiResult<Vec<_>>>()?,
            ),
        };
        EgressConfig {
            allow_out: self.allow_out.unwrap_or_default(),
            deny_out: self.deny_out.unwrap_or_default(),
            rules: self.rules.unwrap_or_default(),
            dns_servers,
        }
        .checked(internet)
        .map_err(bad)
    }
}

impl NetworkConfig {
    /// The checked options besides `allowPublicTraffic`; None when none is given.
    pub(crate) fn settings(self, internet: Option<bool>) -> ApiResult<Option<SandboxNetwork>> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let egress = self.egress.config(internet.unwrap_or(true))?;
        if let Some(mask) = &self.mask_request_host {
            check_mask(mask).map_err(bad)?;
        }
        let mut https_ports = Vec::new();
        for p in self.https_ports.unwrap_or_default() {
            match u16::try_from(p) {
                Ok(port) if port != 0 && port != AGENT_PORT => {
                    if !https_ports.contains(&port) {
                        https_ports.push(port);
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "invalid port {p} in httpsPorts: ports are 1 to 65535, and the \
                         agent's ({AGENT_PORT}) cannot be listed"
                    )))
                }
            }
        }
        let network = SandboxNetwork {
            egress,
            mask_request_host: self.mask_request_host,
            https_ports,
        };
        Ok((network != SandboxNetwork::default()).then_some(network))
    }
}

/// A `maskRequestHost`: an ASCII host name, with an optional port, in which `${PORT}`
/// stands for the port requested.
fn check_mask(mask: &str) -> Result<(), String> {
    let bad = || format!("mask request host is not valid: {mask}");
    let concrete = mask.replace("${PORT}", "1");
    if concrete.is_empty() || !concrete.is_ascii() {
        return Err(bad());
    }
    let (host, port) = match concrete.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (concrete.as_str(), None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

/// The body of `PUT /sandboxes/{id}/network`: the whole egress configuration (what is
/// left out is cleared).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NetworkUpdate {
    #[serde(flatten)]
    egress: EgressBody,
    /// Snake case on the wire, as in a create's body.
    #[serde(rename = "allow_internet_access", alias = "allowInternetAccess")]
    allow_internet_access: Option<bool>,
}

/// `PUT /sandboxes/{id}/network`: 204, 404, 409 (paused), 400 (bad options).
pub(crate) async fn update_network(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NetworkUpdate>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    // Like every field of the update, `allow_internet_access` left out is cleared (allowed).
    let egress = body
        .egress
        .config(body.allow_internet_access.unwrap_or(true))?;
    st.svc
        .update_network(&id, egress, body.allow_internet_access)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> NetworkConfig {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn options_are_checked_and_kept() {
        let n = parse(serde_json::json!({
            "allowOut": ["198.18.1.2", "*.Example.com"],
            "denyOut": ["0.0.0.0/0"],
            "maskRequestHost": "${PORT}-masked.test",
            "httpsPorts": [8443, 8443],
            "allowPublicTraffic": true,
        }))
        .settings(None)
        .expect("valid")
        .expect("some");
        assert_eq!(n.egress.allow_out, ["198.18.1.2", "*.example.com"]);
        assert_eq!(n.https_ports, [8443]);
        assert_eq!(n.masked_host(8000).as_deref(), Some("8000-masked.test"));
        assert!(parse(serde_json::json!({"allowPublicTraffic": false}))
            .settings(None)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            serde_json::json!({"httpsPorts": [0]}),
            serde_json::json!({"httpsPorts": [70000]}),
            serde_json::json!({"httpsPorts": [49983]}),
            serde_json::json!({"maskRequestHost": "bad host/"}),
            serde_json::json!({"denyOut": ["example.com"]}),
            serde_json::json!({"dnsServers": ["dns.test"]}),
            serde_json::json!({"egressProxy": {"address": "p.test:1080"}}),
        ] {
            assert!(parse(bad.clone()).settings(None).is_err(), "{bad}");
        }
    }
}
