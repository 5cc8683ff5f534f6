//! What the host tells the agent at start: command-line flags and the `HUTCH_AGENT_CONFIG` JSON.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The environment variable carrying [`AgentConfig`] as JSON.
pub const CONFIG_ENV: &str = "HUTCH_AGENT_CONFIG";

/// The port E2B clients expect envd on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:49983";

/// Why the agent could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag the agent does not know.
    #[error(
        "unknown argument '{0}'; usage: hutch-agent [--listen ADDR] [--passwd PATH] [--group PATH] [--interpreter-listen ADDR] [--kernel-dir DIR]..."
    )]
    UnknownArgument(String),
    /// A flag given without its value.
    #[error("flag {0} needs a value")]
    MissingValue(&'static str),
    /// `--listen` or `--interpreter-listen` is not an `IP:PORT`.
    #[error("{flag} '{value}' is not an IP:PORT address: {source}")]
    BadListen {
        /// The flag.
        flag: &'static str,
        /// The rejected value.
        value: String,
        /// The parse error.
        source: std::net::AddrParseError,
    },
    /// `HUTCH_AGENT_CONFIG` is not the expected JSON object.
    #[error("{CONFIG_ENV} is not valid JSON of the form {{\"sandboxId\",\"envVars\",\"accessToken\"}}: {0}")]
    BadConfig(serde_json::Error),
}

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The passwd file users are looked up in (tests point this at a fixture).
    pub passwd: PathBuf,
    /// The group file supplementary groups are read from.
    pub group: PathBuf,
    /// Where the code interpreter listens; `None` means its default (port 49999 in a sandbox,
    /// off elsewhere).
    pub interpreter_listen: Option<SocketAddr>,
    /// Kernel spec directories searched before the system ones (repeatable `--kernel-dir`).
    pub kernel_dirs: Vec<PathBuf>,
}

impl Options {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, ConfigError> {
        let mut listen = DEFAULT_LISTEN.to_owned();
        let mut passwd = PathBuf::from("/etc/passwd");
        let mut group = PathBuf::from("/etc/group");
        let mut interpreter_listen = None;
        let mut kernel_dirs = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(OsString::from(v))),
                None => (arg.clone(), None),
            };
            let mut value = |name: &'static str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(ConfigError::MissingValue(name))
            };
            match flag.as_str() {
                "--listen" => listen = value("--listen")?.to_string_lossy().into_owned(),
                "--passwd" => passwd = value("--passwd")?.into(),
                "--group" => group = value("--group")?.into(),
                "--interpreter-listen" => {
                    let addr = value("--interpreter-listen")?
                        .to_string_lossy()
                        .into_owned();
                    interpreter_listen =
                        Some(addr.parse().map_err(|source| ConfigError::BadListen {
                            flag: "--interpreter-listen",
                            value: addr.clone(),
                            source,
                        })?);
                }
                "--kernel-dir" => kernel_dirs.push(value("--kernel-dir")?.into()),
                _ => return Err(ConfigError::UnknownArgument(arg)),
            }
        }
        let listen = listen.parse().map_err(|source| ConfigError::BadListen {
            flag: "--listen",
            value: listen.clone(),
            source,
        })?;
        Ok(Self {
            listen,
            passwd,
            group,
            interpreter_listen,
            kernel_dirs,
        })
    }
}

/// Per-sandbox settings from the host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// The sandbox's id, for logs.
    #[serde(default, deserialize_with = "crate::json::nullable")]
    pub sandbox_id: String,
    /// Environment variables every process in the sandbox gets (from sandbox create).
    #[serde(default, deserialize_with = "crate::json::nullable")]
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
}

impl AgentConfig {
    /// Parses the JSON the host passes in [`CONFIG_ENV`].
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let mut config: Self = serde_json::from_str(json).map_err(ConfigError::BadConfig)?;
        // An empty token would make every request "authenticated" by sending an empty header;
        // treat it as no token, which is what it means.
        if config.access_token.as_deref() == Some("") {
            config.access_token = None;
        }
        Ok(config)
    }

    /// Reads [`CONFIG_ENV`] and removes it from the agent's environment so no child inherits the
    /// access token. `Ok(None)` when the variable is absent.
    ///
    /// Must run before any other thread exists: it mutates the process environment.
    pub fn take_from_env() -> Result<Option<Self>, ConfigError> {
        let Some(raw) = std::env::var_os(CONFIG_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(CONFIG_ENV);
        Self::from_json(&raw.to_string_lossy()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_in_both_spellings() {
        let opts = Options::parse(
            ["--listen=127.0.0.1:5000", "--passwd", "/tmp/p"]
                .into_iter()
                .map(OsString::from),
        )
        .unwrap();
        assert_eq!(opts.listen.port(), 5000);
        assert_eq!(opts.passwd, PathBuf::from("/tmp/p"));
        assert!(Options::parse([OsString::from("--bogus")]).is_err());
        assert!(Options::parse([OsString::from("--listen")]).is_err());
    }

    #[test]
    fn parses_host_config_and_drops_empty_token() {
        let c =
            AgentConfig::from_json(r#"{"sandboxId":"abc","envVars":{"A":"1"},"accessToken":""}"#)
                .unwrap();
        assert_eq!(c.sandbox_id, "abc");
        assert_eq!(c.env_vars["A"], "1");
        assert!(c.access_token.is_none());
        let c = AgentConfig::from_json(r#"{"sandboxId":"abc","envVars":null,"accessToken":null}"#)
            .unwrap();
        assert!(c.env_vars.is_empty());
        assert!(AgentConfig::from_json("[1]").is_err());
    }
}
