//! The sandbox record and the E2B API's JSON shapes built from it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The envd version hutch's agent reports. The official SDKs switch features on by this
/// number (see docs/wire.md §2.2).
pub const ENVD_VERSION: &str = "0.6.4";
/// The `clientID` field E2B returns; constant for a single-node install.
pub const CLIENT_ID: &str = "hutch";

/// Lifecycle state of a sandbox, as E2B names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Processes run.
    Running,
    /// Processes are frozen; the sandbox does not expire.
    Paused,
}

impl SandboxState {
    /// E2B's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }
}

/// Everything hutch remembers about one sandbox (persisted as JSON in SQLite).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 20 lowercase alphanumeric characters.
    pub id: String,
    /// The template id the caller asked for (an alias such as `base` is kept as given).
    pub template_id: String,
    /// The template's alias, if it has one.
    pub alias: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Environment variables every process in the sandbox gets.
    pub env_vars: BTreeMap<String, String>,
    /// Creation time.
    pub started_at: DateTime<Utc>,
    /// When the sandbox will be killed (while running).
    pub end_at: DateTime<Utc>,
    /// Running or paused.
    pub state: SandboxState,
    /// CPUs.
    pub cpu_count: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
    /// Token the agent requires in `X-Access-Token` (secure sandboxes).
    pub envd_access_token: Option<String>,
    /// As requested at creation (None = unset = allowed).
    pub allow_internet_access: Option<bool>,
    /// Token every request to the sandbox's ports other than the agent's must carry in
    /// `E2B-Traffic-Access-Token`: set when the create asked for `allowPublicTraffic: false`.
    #[serde(default)]
    pub traffic_access_token: Option<String>,
    /// Pause instead of kill at the end time.
    pub auto_pause: bool,
    /// With `auto_pause`: the pause at the end time keeps only the filesystem
    /// (`autoPauseMemory: false`).
    #[serde(default)]
    pub auto_pause_filesystem: bool,
    /// Resume when traffic reaches it through the router while paused (`autoResume`).
    #[serde(default)]
    pub auto_resume: bool,
    /// Network slot.
    pub slot: u32,
    /// Host pid of the sandbox's PID 1.
    pub pid: i32,
    /// Start time of that pid.
    pub pid_start: u64,
    /// Id of the API key that created it (None for records from before keys were remembered).
    #[serde(default)]
    pub key_id: Option<String>,
    /// The team that owns it (None: the default team, and records from before teams).
    #[serde(default)]
    pub team: Option<String>,
    /// The template layers it was started on (user-built layers are kept while in use).
    #[serde(default)]
    pub layers: Vec<std::path::PathBuf>,
    /// The template build this sandbox runs, for build sandboxes (ended when the server
    /// restarts, since their build died with it).
    #[serde(default)]
    pub build: Option<String>,
    /// Set while it is paused without memory: where its filesystem (its upper dir, as a
    /// layer) is saved. It has no processes, cgroup, disk or network then; `slot`, `pid`
    /// and `pid_start` are those it had, and resuming boots it again on the saved files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_disk: Option<std::path::PathBuf>,
    /// The volumes mounted in it (`volumeMounts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Its `network` options besides `allowPublicTraffic` (None: none given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SandboxNetwork>,
}

/// A sandbox's `network` options besides `allowPublicTraffic` (which is its
/// `traffic_access_token`), as given and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetwork {
    /// The egress policy: `allowOut`, `denyOut`, `rules`, `dnsServers`.
    #[serde(flatten)]
    pub egress: crate::egress::policy::EgressConfig,
    /// The `Host` requests reaching its ports through the router carry, `${PORT}` replaced
    /// by the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// Its ports the router reaches over TLS (their certificates are not checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub https_ports: Vec<u16>,
}

impl SandboxNetwork {
    /// The `Host` a request to `port` gets, when masked.
    pub fn masked_host(&self, port: u16) -> Option<String> {
        self.mask_request_host
            .as_deref()
            .map(|m| masked_host(m, port))
    }
}

/// The `Host` that `mask` (a `maskRequestHost`) gives a request to `port`.
pub fn masked_host(mask: &str, port: u16) -> String {
    mask.replace("${PORT}", &port.to_string())
}

/// A volume mounted in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's id.
    pub id: String,
    /// Its name (what the create named).
    pub name: String,
    /// Where it is mounted inside, absolute.
    pub path: String,
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SandboxRecord {
    /// Paused without memory: nothing of it runs, and its slot is free for others.
    pub fn is_stopped(&self) -> bool {
        self.saved_disk.is_some()
    }

    /// The `Sandbox` body of create / connect / resume.
    /// `domain` is the server's `--domain` (None: the SDK uses its own default).
    pub fn to_sandbox_json(&self, domain: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "templateID": self.template_id,
            "sandboxID": self.id,
            "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION,
            "alias": self.alias,
            "envdAccessToken": self.envd_access_token,
            "trafficAccessToken": self.traffic_access_token,
            "domain": domain,
        })
    }

    fn common_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "templateID": self.template_id,
            "sandboxID": self.id,
            "clientID": CLIENT_ID,
            "alias": self.alias,
            "startedAt": rfc3339(&self.started_at),
            "endAt": rfc3339(&self.end_at),
            "envdVersion": ENVD_VERSION,
            "cpuCount": self.cpu_count,
            "memoryMB": self.memory_mb,
            "diskSizeMB": self.disk_mb,
            "state": self.state.as_str(),
            "metadata": self.metadata,
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The `ListedSandbox` body of list.
    pub fn to_listed_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.common_json())
    }

    /// The `SandboxDetail` body of get-info.
    pub fn to_detail_json(&self, domain: Option<&str>) -> serde_json::Value {
        let mut m = self.common_json();
        m.insert(
            "envdAccessToken".into(),
            serde_json::json!(self.envd_access_token),
        );
        m.insert(
            "allowInternetAccess".into(),
            serde_json::json!(self.allow_internet_access),
        );
        m.insert("domain".into(), serde_json::json!(domain));
        m.insert(
            "lifecycle".into(),
            serde_json::json!({
                "autoResume": self.auto_resume,
                "onTimeout": if self.auto_pause { "pause" } else { "kill" },
            }),
        );
        if self.network.is_some() || self.traffic_access_token.is_some() {
            let mut network = match self.network.as_ref().map(serde_json::to_value).transpose() {
                Ok(Some(serde_json::Value::Object(n))) => n,
                _ => serde_json::Map::new(),
            };
            network.insert(
                "allowPublicTraffic".into(),
                serde_json::json!(self.traffic_access_token.is_none()),
            );
            m.insert("network".into(), serde_json::Value::Object(network));
        }
        if !self.volume_mounts.is_empty() {
            m.insert(
                "volumeMounts".into(),
                serde_json::json!(self
                    .volume_mounts
                    .iter()
                    .map(|v| serde_json::json!({ "name": v.name, "path": v.path }))
                    .collect::<Vec<_>>()),
            );
        }
        if self.state == SandboxState::Paused {
            m.insert(
                "pauseMode".into(),
                serde_json::json!(if self.is_stopped() {
                    "filesystem"
                } else {
                    "full"
                }),
            );
        }
        serde_json::Value::Object(m)
    }
}

/// One metrics sample, as E2B's `SandboxMetric`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// RFC 3339 time of the sample.
    pub timestamp: String,
    /// Unix seconds of the sample.
    pub timestamp_unix: i64,
    /// CPUs of the sandbox.
    pub cpu_count: u32,
    /// CPU use in percent of all its CPUs since the previous sample.
    pub cpu_used_pct: f64,
    /// Memory used, bytes.
    pub mem_used: u64,
    /// Memory limit, bytes.
    pub mem_total: u64,
    /// Page cache, bytes.
    pub mem_cache: u64,
    /// Disk used, bytes.
    pub disk_used: u64,
    /// Disk size, bytes.
    pub disk_total: u64,
}

/// Makes a new sandbox id: 20 lowercase alphanumeric characters, like E2B's.
pub fn new_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// `bytes` random bytes in hex (access and upload tokens, build ids).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// True for strings that can be sandbox ids (checked before any lookup or path use).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = new_id();
        assert_eq!(a.len(), 20);
        assert!(valid_id(&a));
        assert_ne!(a, new_id());
    }

    #[test]
    fn ids_are_lowercase_alphanumeric_and_bounded() {
        assert!(valid_id("abc123"));
        assert!(!valid_id(""));
        assert!(!valid_id("ABC"));
        assert!(!valid_id("a-b"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(valid_id(&"a".repeat(64)));
    }
}
