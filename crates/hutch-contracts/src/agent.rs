//! The in-sandbox agent as the server sees it: where it lives, where it listens, and the
//! configuration the server hands it at start.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The port E2B clients expect envd (and so the agent) on.
pub const AGENT_PORT: u16 = 49983;

/// The port E2B's code-interpreter SDK expects the code interpreter on.
pub const CODE_INTERPRETER_PORT: u16 = 49999;

/// Where the agent binary is inside a sandbox's root filesystem.
pub const AGENT_PATH: &str = "/.hutch/hutch-agent";

/// The environment variable carrying [`AgentConfig`] as JSON.
pub const CONFIG_ENV: &str = "HUTCH_AGENT_CONFIG";

/// The environment variable naming the descriptor (always [`READY_FD`]) on which the agent
/// writes one byte, then closes it, once it serves its API: how the spawn helper learns
/// that a new sandbox is up without polling it.
pub const READY_FD_ENV: &str = "HUTCH_READY_FD";

/// The agent's readiness descriptor (see [`READY_FD_ENV`]).
pub const READY_FD: i32 = 3;

/// The environment variable naming the descriptor (always [`WORK_CGROUP_FD`]) of the file a
/// process the agent starts writes `0` to, between fork and exec, to move itself into the
/// sandbox's work cgroup: the agent's memory is kept apart from everything it starts.
pub const WORK_CGROUP_FD_ENV: &str = "HUTCH_WORK_CGROUP_FD";

/// The work cgroup's descriptor (see [`WORK_CGROUP_FD_ENV`]).
pub const WORK_CGROUP_FD: i32 = 4;

/// Per-sandbox settings the server passes to the agent in [`CONFIG_ENV`].
///
/// Every field is written (absent ones as `null`); on input `null` or a missing field means the
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// The sandbox's id, for logs.
    #[serde(default, deserialize_with = "nullable")]
    pub sandbox_id: String,
    /// Environment variables every process in the sandbox gets (from sandbox create).
    #[serde(default, deserialize_with = "nullable")]
    pub env_vars: BTreeMap<String, String>,
    /// When set, every request but `GET /health` must carry it in `X-Access-Token`.
    #[serde(default)]
    pub access_token: Option<String>,
    /// The default user (a custom template's USER); `None` = `user`.
    #[serde(default)]
    pub default_user: Option<String>,
    /// The default working directory (a custom template's WORKDIR); `None` = the user's home.
    #[serde(default)]
    pub default_workdir: Option<String>,
    /// Run the code interpreter (off in template builds, whose kernels would write into the
    /// layer being built). Absent = on.
    #[serde(default)]
    pub interpreter: Option<bool>,
    /// The sandbox waits in a warm pool: `access_token` is the pool's one-off token, and
    /// [`CLAIM_PATH`] hands the sandbox to its user once. Absent = false.
    #[serde(default)]
    pub pooled: Option<bool>,
    /// The default Python kernel is not started at boot: the server hands one in, forked
    /// from its template's zygote ([`KERNEL_PREPARE_PATH`], [`KERNEL_ADOPT_PATH`]), or asks
    /// [`WARM_PATH`], which starts one the usual way. Absent = false.
    #[serde(default)]
    pub kernel_from_server: Option<bool>,
}

/// `POST`: makes a pooled sandbox ready for a first user (agent up, default Python kernel
/// started and past a first execution); answers 204 once it is.
pub const WARM_PATH: &str = "/hutch/warm";

/// `POST` with a [`Claim`]: hands a pooled sandbox to the create that took it; 204, or 409
/// when it was claimed already.
pub const CLAIM_PATH: &str = "/hutch/claim";

/// `POST` (empty body): the agent prepares everything the default Python context's kernel
/// needs (its socket directory, connection file and log file) and answers 200 with a
/// [`KernelPlan`]. 409 when that context already has a running kernel or a plan is
/// pending; 404 when the sandbox has no Python kernel.
pub const KERNEL_PREPARE_PATH: &str = "/hutch/kernel/prepare";

/// `POST` with a [`KernelAdopt`]: the process the plan was carried out by is the default
/// Python context's kernel. Answers 204 once it answered `kernel_info` and ran a first
/// (silent) execution, as [`WARM_PATH`] does. On failure (5xx, or 404 for an unknown plan)
/// the agent has killed the process and dropped the plan; the context has no kernel, so
/// [`WARM_PATH`] starts one the usual way.
pub const KERNEL_ADOPT_PATH: &str = "/hutch/kernel/adopt";

/// How the agent would start the default Python kernel; the server's zygote carries it
/// out inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelPlan {
    /// Names this plan in [`KernelAdopt`].
    pub id: String,
    /// The kernel's command line from its spec (program first).
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    pub cwd: String,
    /// Who it runs as.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
    /// The connection file the argv names.
    pub connection_file: String,
    /// Where its stdout and stderr go: a FIFO that exists, belongs to `uid` and is drained
    /// by the agent (open it for writing).
    pub log_file: String,
}

/// The body of [`KERNEL_ADOPT_PATH`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelAdopt {
    /// The [`KernelPlan::id`] carried out.
    pub id: String,
    /// The kernel's pid inside the sandbox (a child of the agent by then).
    pub pid: i32,
}

/// Request header by which the server asks `GET /files` for the open file instead of its
/// bytes ("1"). The agent then answers a download of a regular file on a local filesystem
/// of at least [`FILE_HANDOFF_MIN`] bytes with 200, [`FILE_HANDOFF_HEADER`] set, and a
/// body that is one line of [`FileHandoff`] JSON and then stays open: the descriptor named
/// in it stays open in the agent until that body is dropped. The server takes the
/// descriptor with `pidfd_getfd(2)` and sends the bytes itself, saving the agent's copies
/// and a TCP hop. Any other answer is the download as usual. On `POST /files` the header
/// asks for the other direction: see [`UploadOpen`]. The server never forwards this header
/// from clients.
pub const FILE_HANDOFF_HEADER: &str = "x-hutch-file-handoff";

/// Downloads shorter than this are answered with their bytes even when a hand-off was
/// asked for: for them the extra connection and system calls cost more than the copies.
pub const FILE_HANDOFF_MIN: u64 = 1 << 20;

/// The first line of a hand-off body: the response the download would have been, with the
/// file left for the server to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileHandoff {
    /// The download's status (200 or 206).
    pub status: u16,
    /// Its headers, in order (`Content-Length` included).
    pub headers: Vec<(String, String)>,
    /// The descriptor number of the open file in the agent.
    pub fd: i32,
    /// The file's device and inode: the server checks the descriptor it took is this file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The body, in order.
    pub segments: Vec<HandoffSegment>,
}

/// A piece of a handed-off body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HandoffSegment {
    /// `len` bytes of the file from `start`.
    File {
        /// First byte.
        start: u64,
        /// Number of bytes.
        len: u64,
    },
    /// Bytes sent as they are (the framing of `multipart/byteranges`).
    Literal(String),
}

/// The body of a `POST /files` that carries [`FILE_HANDOFF_HEADER`] "1": the server reads
/// an upload's body itself (the raw file, or a multipart body it parses) and asks the agent
/// to open each file it names. The request keeps the client's query and headers (access
/// token, signature, `X-Metadata-*`), so the agent authorises, resolves the path for the
/// user, makes missing directories theirs, creates or truncates the file, gives it to the
/// user and stores the metadata exactly as for an upload it reads itself. On success it
/// answers 200, [`FILE_HANDOFF_HEADER`] set, and a body that is one line of
/// [`UploadHandoff`] JSON and then stays open; on failure, the error the upload would have
/// got, [`FILE_HANDOFF_HEADER`] set to [`UPLOAD_REFUSED`] or, when the client was not
/// authorised (its body is not worth reading to the end), [`UPLOAD_REFUSED_UNAUTHORISED`].
/// The server writes the bytes through the descriptor it takes with `pidfd_getfd(2)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadOpen {
    /// Whether the client's body is `multipart/form-data` (one file per `file` part) rather
    /// than the raw file (`application/octet-stream`).
    pub multipart: bool,
    /// The part's `filename` (the file's path when the query has no `path`).
    #[serde(default)]
    pub filename: Option<String>,
    /// The paths this upload has already written, as answered: a part for one of them again
    /// is the client's error, and the file is left as the first part wrote it.
    #[serde(default)]
    pub written: Vec<String>,
}

/// [`FILE_HANDOFF_HEADER`] on the agent's refusal of an [`UploadOpen`].
pub const UPLOAD_REFUSED: &str = "refused";
/// [`FILE_HANDOFF_HEADER`] on the agent's refusal of an [`UploadOpen`] from a client it did
/// not authorise.
pub const UPLOAD_REFUSED_UNAUTHORISED: &str = "refused-unauthorised";

/// The first line of the agent's answer to an [`UploadOpen`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadHandoff {
    /// The descriptor number of the file, open for writing, in the agent.
    pub fd: i32,
    /// The file's device and inode: the server checks the descriptor it took is this file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The file as the upload's answer lists it.
    pub file: WrittenFile,
}

/// The message of an upload that ran out of disk space (answered 507), whoever wrote the
/// bytes: `content_length` is the request's `Content-Length`.
pub fn upload_disk_full(content_length: Option<u64>) -> String {
    match content_length {
        Some(len) if len > 0 => {
            format!("attempted to write {len} bytes: not enough disk space available")
        }
        _ => "not enough disk space available".to_owned(),
    }
}

/// One file an upload wrote, as the SDK's `WriteInfo` reads it from `POST /files`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The file name (last path component).
    pub name: String,
    /// The absolute path.
    pub path: String,
    /// Always `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The metadata on the file, read back from disk; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// What a create gives a sandbox it takes from a warm pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claim {
    /// The sandbox's variables from now on (the template's and the request's), for new
    /// processes and the kernels already running.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// The sandbox's access token from now on (`None`: it has none).
    #[serde(default)]
    pub access_token: Option<String>,
}

impl AgentConfig {
    /// The JSON the server puts in [`CONFIG_ENV`].
    pub fn to_json(&self) -> String {
        // A struct of strings, maps of strings and options has no way to fail serialising.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Parses the JSON of [`CONFIG_ENV`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// Deserialises `null` as the type's default.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_json_has_every_key_in_camel_case() {
        let config = AgentConfig {
            sandbox_id: "sb1".into(),
            env_vars: BTreeMap::from([("A".into(), "1".into())]),
            access_token: None,
            default_user: Some("root".into()),
            default_workdir: None,
            interpreter: Some(true),
            pooled: Some(false),
            kernel_from_server: None,
        };
        let value: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
        assert_eq!(
            value,
            json!({"sandboxId": "sb1", "envVars": {"A": "1"}, "accessToken": null,
                   "defaultUser": "root", "defaultWorkdir": null, "interpreter": true,
                   "pooled": false, "kernelFromServer": null})
        );
        assert_eq!(AgentConfig::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn config_accepts_nulls_and_missing_keys() {
        let c = AgentConfig::from_json(r#"{"sandboxId":"abc","envVars":null,"accessToken":null}"#)
            .unwrap();
        assert_eq!(c.sandbox_id, "abc");
        assert!(c.env_vars.is_empty() && c.access_token.is_none() && c.interpreter.is_none());
        assert_eq!(
            AgentConfig::from_json("{}").unwrap(),
            AgentConfig::default()
        );
        assert!(AgentConfig::from_json("[1]").is_err());
    }

    #[test]
    fn a_claim_is_camel_case_and_strict() {
        let claim = Claim {
            env_vars: BTreeMap::from([("A".into(), "1".into())]),
            access_token: Some("t".into()),
        };
        let value = serde_json::to_value(&claim).unwrap();
        assert_eq!(value, json!({"envVars": {"A": "1"}, "accessToken": "t"}));
        assert_eq!(
            serde_json::from_value::<Claim>(json!({})).unwrap(),
            Claim::default()
        );
        assert!(serde_json::from_value::<Claim>(json!({"sandboxId": "x"})).is_err());
    }
}
