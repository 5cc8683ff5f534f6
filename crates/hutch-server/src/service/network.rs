//! Sandboxes' egress policies (`network.allowOut`, `denyOut`, `rules`): which of the
//! firewall's means a sandbox gets (none, the `noinet` set, or an egress filter with the
//! proxy), applied before anything in it runs, changed on a running one
//! (`update_network`), and restored after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hutch_runtime::net::EgressFilter;

use super::{lock, Invalid, Result, RuntimeOp, Service, ServiceError};
use crate::agent_client::{AgentClient, Command};
use crate::egress::policy::{Compiled, EgressConfig};
use crate::egress::proxy::EgressProxy;
use crate::sandbox::{SandboxNetwork, SandboxRecord, SandboxState};

/// How long adding the egress CA to a sandbox's trust store may take.
const CA_INSTALL_LIMIT: Duration = Duration::from_secs(30);

/// The system trust bundle of Debian-family templates, where the egress CA goes.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a sandbox's egress is enforced.
#[derive(Debug, Clone, Default)]
pub struct EgressPlan {
    /// False: nothing it sends is forwarded (the `noinet` set).
    pub internet: bool,
    /// Its policy, when it needs the proxy and a filter.
    pub policy: Option<Arc<Compiled>>,
    /// Its policy injects headers: it must trust the egress CA.
    pub needs_ca: bool,
}

impl EgressPlan {
    /// The plan for `allow_internet_access` and the egress options.
    pub fn of(internet: Option<bool>, network: Option<&SandboxNetwork>) -> EgressPlan {
        let internet = internet.unwrap_or(true);
        let Some(egress) = network.map(|n| &n.egress).filter(|e| !e.is_empty()) else {
            return EgressPlan {
                internet,
                ..EgressPlan::default()
            };
        };
        if !internet && egress.allow_out.is_empty() {
            // Everything is denied and nothing allowed: the plain no-egress rule does it.
            return EgressPlan::default();
        }
        let policy = Compiled::new(egress, internet);
        EgressPlan {
            internet: true,
            needs_ca: !egress.rules.is_empty(),
            policy: policy.is_active().then(|| Arc::new(policy)),
        }
    }

    /// The firewall's part.
    pub fn filter(&self) -> Option<EgressFilter> {
        self.policy.as_ref().map(|p| p.filter())
    }
}

impl Service {
    /// Gives the service the server's egress proxy (once).
    pub fn set_egress_proxy(&self, proxy: Arc<EgressProxy>) {
        let _ = self.egress.set(proxy);
    }

    /// Checks that this server can enforce `network`'s egress options (400 otherwise).
    pub fn check_network(&self, network: Option<&SandboxNetwork>) -> Result<()> {
        if network.is_some_and(|n| !n.egress.is_empty()) && self.egress.get().is_none() {
            return Err(Invalid::Network(
                "this hutch server runs without its egress proxy, so it cannot enforce \
                 allowOut, denyOut or rules"
                    .into(),
            )
            .into());
        }
        Ok(())
    }

    /// Tells the proxy the policy of the sandbox at `ip` (None: it has none).
    pub(super) fn announce_policy(&self, ip: Ipv4Addr, policy: Option<Arc<Compiled>>) {
        if let Some(proxy) = self.egress.get() {
            proxy.set(ip, policy);
        }
    }

    /// Applies `plan` to the running sandbox in `slot` (a claimed pooled one, or an
    /// update): the proxy learns the policy before the firewall sends it anything.
    pub(super) async fn apply_plan(&self, id: &str, slot: u32, plan: &EgressPlan) -> Result<()> {
        let ip = self.runtime.net_for(slot).sandbox_ip;
        if plan.policy.is_some() {
            self.announce_policy(ip, plan.policy.clone());
        }
        let (internet, filter) = (plan.internet, plan.filter());
        self.blocking(move |rt| {
            // Closing first and opening last: no moment has less filtering than both.
            if !internet {
                rt.set_internet(slot, false)?;
            }
            rt.set_egress_filter(slot, filter)?;
            if internet {
                rt.set_internet(slot, true)?;
            }
            Ok(())
        })
        .await?
        .map_err(|e| ServiceError::runtime(RuntimeOp::Network, id, e))?;
        if plan.policy.is_none() {
            self.announce_policy(ip, None);
        }
        Ok(())
    }

    /// Adds the egress CA to the trust store of the sandbox at `ip`, so that HTTPS
    /// requests a rule adds headers to are trusted (`curl`, OpenSSL and GnuTLS clients,
    /// Python's `ssl`; clients with a bundle of their own, like `requests`' certifi, are
    /// not changed). Run as root through the agent; done once per sandbox.
    pub(super) async fn install_egress_ca(&self, ip: Ipv4Addr, token: Option<&str>) -> Result<()> {
        let Some(proxy) = self.egress.get() else {
            return Ok(());
        };
        let pem = proxy.ca_pem().trim().to_string();
        // A line of the certificate's body tells whether it is there already.
        let mark = pem.lines().nth(1).unwrap_or_default().to_string();
        let envs = BTreeMap::from([
            ("HUTCH_EGRESS_CA".to_string(), pem),
            ("HUTCH_EGRESS_CA_MARK".to_string(), mark),
        ]);
        let script = format!(
            "f={CA_BUNDLE}; grep -qxF \"$HUTCH_EGRESS_CA_MARK\" \"$f\" 2>/dev/null && exit 0; \
             mkdir -p \"${{f%/*}}\" && printf '%s\\n' \"$HUTCH_EGRESS_CA\" >> \"$f\""
        );
        let client = AgentClient::new(&self.http, ip, token);
        let cmd = Command {
            script: &script,
            user: "root",
            cwd: Some("/"),
            envs: &envs,
        };
        let mut output = String::new();
        let ran = tokio::time::timeout(
            CA_INSTALL_LIMIT,
            client.run(&cmd, |_, line| {
                if output.len() < 4096 {
                    output.push_str(line);
                }
            }),
        )
        .await;
        match ran {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(code)) => Err(ServiceError::NotReady(format!(
                "adding the egress CA to {CA_BUNDLE} failed (exit {code}): {output}"
            ))),
            Ok(Err(e)) => Err(ServiceError::NotReady(format!(
                "adding the egress CA to {CA_BUNDLE}: {e}"
            ))),
            Err(_) => Err(ServiceError::NotReady(format!(
                "adding the egress CA to {CA_BUNDLE} took more than {CA_INSTALL_LIMIT:?}"
            ))),
        }
    }

    /// Replaces the egress options of running sandbox `id` (E2B's `PUT
    /// /sandboxes/{id}/network`: what is left out is cleared, `internet` too: None is
    /// allowed). Connections already open through the proxy keep the
    /// verdict they had; every other connection follows the new rules.
    pub async fn update_network(
        &self,
        id: &str,
        egress: EgressConfig,
        internet: Option<bool>,
    ) -> Result<SandboxRecord> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = e.record();
        if rec.state != SandboxState::Running {
            return Err(ServiceError::AlreadyPaused { id: id.to_string() });
        }
        let network = {
            let mut n = rec.network.clone().unwrap_or_default();
            n.egress = egress;
            n
        };
        self.check_network(Some(&network))?;
        let plan = EgressPlan::of(internet, Some(&network));
        if plan.needs_ca {
            let ip = self.runtime.net_for(rec.slot).sandbox_ip;
            self.install_egress_ca(ip, rec.envd_access_token.as_deref())
                .await?;
        }
        self.apply_plan(id, rec.slot, &plan).await?;
        let rec = {
            let mut r = lock(&e.rec);
            r.network = (network != SandboxNetwork::default()).then_some(network);
            r.allow_internet_access = internet;
            r.clone()
        };
        self.store.put_sandbox(&rec)?;
        tracing::info!(sandbox = %id, internet = plan.internet, filtered = plan.policy.is_some(), "sandbox network updated");
        Ok(rec)
    }

    /// The egress filters of `records` (adopted at a restart), for the firewall's sets.
    pub fn egress_filters(
        records: &[SandboxRecord],
        net: &hutch_runtime::NetConfig,
    ) -> Vec<(Ipv4Addr, EgressFilter)> {
        records
            .iter()
            .filter(|r| !r.is_stopped())
            .filter_map(|r| {
                let plan = EgressPlan::of(r.allow_internet_access, r.network.as_ref());
                Some((net.slot(r.slot).sandbox_ip, plan.filter()?))
            })
            .collect()
    }

    /// Tells the proxy the policies of the live sandboxes (at start, once it is set).
    pub fn announce_policies(&self) {
        let live: Vec<SandboxRecord> = lock(&self.live).values().map(|e| e.record()).collect();
        for rec in live.iter().filter(|r| !r.is_stopped()) {
            let plan = EgressPlan::of(rec.allow_internet_access, rec.network.as_ref());
            if plan.policy.is_some() {
                self.announce_policy(self.runtime.net_for(rec.slot).sandbox_ip, plan.policy);
            }
        }
    }
}
