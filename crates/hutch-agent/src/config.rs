//! What the host tells the agent at start: command-line flags and the `HUTCH_AGENT_CONFIG` JSON.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use hutch_contracts::agent::AGENT_PORT;
pub use hutch_contracts::agent::{AgentConfig, CONFIG_ENV};

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
        let mut listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, AGENT_PORT)).to_string();
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

/// Parses the JSON the host passes in [`CONFIG_ENV`].
pub fn parse_config(json: &str) -> Result<AgentConfig, ConfigError> {
    let mut config = AgentConfig::from_json(json).map_err(ConfigError::BadConfig)?;
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
pub fn take_config_from_env() -> Result<Option<AgentConfig>, ConfigError> {
    let Some(raw) = std::env::var_os(CONFIG_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(CONFIG_ENV);
    parse_config(&raw.to_string_lossy()).map(Some)
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
            parse_config(r#"{"sandboxId":"abc","envVars":{"A":"1"},"accessToken":""}"#).unwrap();
        assert_eq!(c.sandbox_id, "abc");
        assert_eq!(c.env_vars["A"], "1");
        assert!(c.access_token.is_none());
        let c = parse_config(r#"{"sandboxId":"abc","envVars":null,"accessToken":null}"#).unwrap();
        assert!(c.env_vars.is_empty());
        assert!(parse_config("[1]").is_err());
    }
}
