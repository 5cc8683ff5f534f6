//! Template build steps: what `hutch template build` (and E2B's SDKs) send to
//! `POST /v2/templates/{id}/builds/{build}`, typed once.
//!
//! On the wire a step is E2B's `{"type": "RUN", "args": [...], "filesHash": ..., "force": ...}`.
//! [`WireStep`] is that form as sent; [`BuildStep`] is a checked step, parsed once from it
//! with [`BuildStep::parse`] and turned back into it with [`WireStep::from`].

use serde::{Deserialize, Serialize};

/// One build step as E2B's API carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireStep {
    /// RUN, COPY, ENV, WORKDIR or USER.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its arguments; their meaning depends on the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// For COPY: the hash of the uploaded archive of its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
    /// E2B's "rebuild this step even if cached"; hutch caches no steps, so it changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// A checked build step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStep {
    /// Runs a shell command (`args: [command, user?]`).
    Run {
        /// The command, run by `bash -l -c`.
        command: String,
        /// Who runs it; `None` = the current USER.
        user: Option<String>,
    },
    /// Sets environment variables for later steps and the template's sandboxes
    /// (`args: [name, value, name, value, ...]`).
    Env(Vec<(String, String)>),
    /// Changes (and creates) the working directory (`args: [dir]`).
    Workdir(String),
    /// Changes the user later steps run as (`args: [user]`).
    User(String),
    /// Copies uploaded files into the template (`args: [src, dest, owner?, mode?]`).
    Copy {
        /// What to take from the archive (a path or glob, relative to the build context).
        src: String,
        /// Where to put it (relative to the WORKDIR unless absolute).
        dest: String,
        /// `user` or `user:group` of the copies; `None` = the current USER.
        owner: Option<String>,
        /// Mode given to `chmod -R`; `None` = as archived.
        mode: Option<String>,
        /// The hash of the uploaded archive (`filesHash`); `None` when the client sent none.
        files_hash: Option<String>,
    },
}

/// Why a wire step is not a valid step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The type is none hutch knows.
    #[error("unknown step type {0:?} (RUN, COPY, ENV, WORKDIR and USER are known)")]
    UnknownType(String),
    /// The arguments do not fit the type.
    #[error("malformed arguments {args:?}")]
    MalformedArgs {
        /// The step's type.
        kind: String,
        /// The arguments given.
        args: Vec<String>,
    },
}

/// True when `name` can be an environment variable's name.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// An argument that is present and not empty.
fn given(args: &[String], i: usize) -> Option<String> {
    args.get(i).filter(|a| !a.is_empty()).cloned()
}

impl BuildStep {
    /// Checks a wire step and types it.
    pub fn parse(wire: &WireStep) -> Result<Self, StepError> {
        let args = wire.args.as_deref().unwrap_or_default();
        let malformed = || StepError::MalformedArgs {
            kind: wire.kind.clone(),
            args: args.to_vec(),
        };
        let step = match wire.kind.as_str() {
            "RUN" => match args.first() {
                Some(command) if !command.trim().is_empty() => BuildStep::Run {
                    command: command.clone(),
                    user: given(args, 1),
                },
                _ => return Err(malformed()),
            },
            "ENV" => {
                if !args.len().is_multiple_of(2) || !args.chunks(2).all(|kv| valid_env_name(&kv[0]))
                {
                    return Err(malformed());
                }
                BuildStep::Env(
                    args.chunks(2)
                        .map(|kv| (kv[0].clone(), kv[1].clone()))
                        .collect(),
                )
            }
            "WORKDIR" | "USER" => {
                let [only] = args else {
                    return Err(malformed());
                };
                if only.is_empty() {
                    return Err(malformed());
                }
                if wire.kind == "USER" {
                    BuildStep::User(only.clone())
                } else {
                    BuildStep::Workdir(only.clone())
                }
            }
            "COPY" => match (given(args, 0), given(args, 1)) {
                (Some(src), Some(dest)) => BuildStep::Copy {
                    src,
                    dest,
                    owner: given(args, 2),
                    mode: given(args, 3),
                    files_hash: wire.files_hash.clone(),
                },
                _ => return Err(malformed()),
            },
            other => return Err(StepError::UnknownType(other.to_string())),
        };
        Ok(step)
    }

    /// The step's type as the wire names it.
    pub fn kind(&self) -> &'static str {
        match self {
            BuildStep::Run { .. } => "RUN",
            BuildStep::Env(_) => "ENV",
            BuildStep::Workdir(_) => "WORKDIR",
            BuildStep::User(_) => "USER",
            BuildStep::Copy { .. } => "COPY",
        }
    }

    /// The step's arguments in wire order.
    pub fn args(&self) -> Vec<String> {
        match self {
            BuildStep::Run { command, user } => {
                let mut args = vec![command.clone()];
                args.extend(user.clone());
                args
            }
            BuildStep::Env(pairs) => pairs
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            BuildStep::Workdir(d) => vec![d.clone()],
            BuildStep::User(u) => vec![u.clone()],
            // Owner and mode are positional: absent ones are sent empty.
            BuildStep::Copy {
                src,
                dest,
                owner,
                mode,
                ..
            } => vec![
                src.clone(),
                dest.clone(),
                owner.clone().unwrap_or_default(),
                mode.clone().unwrap_or_default(),
            ],
        }
    }
}

impl std::fmt::Display for BuildStep {
    /// `TYPE arg arg ...`, as build logs show a step.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.args().join(" "))
    }
}

impl From<&BuildStep> for WireStep {
    fn from(step: &BuildStep) -> Self {
        let files_hash = match step {
            BuildStep::Copy { files_hash, .. } => files_hash.clone(),
            _ => None,
        };
        WireStep {
            kind: step.kind().to_string(),
            args: Some(step.args()),
            files_hash,
            force: None,
        }
    }
}

impl TryFrom<&WireStep> for BuildStep {
    type Error = StepError;

    fn try_from(wire: &WireStep) -> Result<Self, StepError> {
        BuildStep::parse(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireStep {
        serde_json::from_str(json).expect("a wire step")
    }

    #[test]
    fn run_with_and_without_user() {
        assert_eq!(
            BuildStep::parse(&wire(
                r#"{"type":"RUN","args":["make all","root"],"force":true}"#
            )),
            Ok(BuildStep::Run {
                command: "make all".into(),
                user: Some("root".into())
            })
        );
        assert_eq!(
            BuildStep::parse(&wire(r#"{"type":"RUN","args":["ls",""]}"#)),
            Ok(BuildStep::Run {
                command: "ls".into(),
                user: None
            })
        );
    }

    #[test]
    fn blank_run_is_malformed() {
        let err = BuildStep::parse(&wire(r#"{"type":"RUN","args":["  "]}"#)).unwrap_err();
        assert_eq!(err.to_string(), r#"malformed arguments ["  "]"#);
        assert!(BuildStep::parse(&wire(r#"{"type":"RUN"}"#)).is_err());
    }

    #[test]
    fn env_needs_pairs_with_valid_names() {
        assert_eq!(
            BuildStep::parse(&wire(r#"{"type":"ENV","args":["A","1","B","x=y"]}"#)),
            Ok(BuildStep::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into())
            ]))
        );
        assert!(BuildStep::parse(&wire(r#"{"type":"ENV","args":["A"]}"#)).is_err());
        assert!(BuildStep::parse(&wire(r#"{"type":"ENV","args":["A=B","1"]}"#)).is_err());
    }

    #[test]
    fn workdir_and_user_take_exactly_one_argument() {
        assert_eq!(
            BuildStep::parse(&wire(r#"{"type":"WORKDIR","args":["/app"]}"#)),
            Ok(BuildStep::Workdir("/app".into()))
        );
        assert_eq!(
            BuildStep::parse(&wire(r#"{"type":"USER","args":["root"]}"#)),
            Ok(BuildStep::User("root".into()))
        );
        assert!(BuildStep::parse(&wire(r#"{"type":"USER","args":["a","b"]}"#)).is_err());
        assert!(BuildStep::parse(&wire(r#"{"type":"WORKDIR","args":[""]}"#)).is_err());
    }

    #[test]
    fn copy_keeps_optional_owner_mode_and_hash() {
        assert_eq!(
            BuildStep::parse(&wire(
                r#"{"type":"COPY","args":["src","/dst","","0755"],"filesHash":"ab"}"#
            )),
            Ok(BuildStep::Copy {
                src: "src".into(),
                dest: "/dst".into(),
                owner: None,
                mode: Some("0755".into()),
                files_hash: Some("ab".into()),
            })
        );
        assert!(BuildStep::parse(&wire(r#"{"type":"COPY","args":["src"]}"#)).is_err());
    }

    #[test]
    fn unknown_type_is_named() {
        let err = BuildStep::parse(&wire(r#"{"type":"ADD","args":["a","b"]}"#)).unwrap_err();
        assert_eq!(err, StepError::UnknownType("ADD".into()));
    }

    #[test]
    fn steps_serialise_to_the_clients_json() {
        let run = BuildStep::Run {
            command: "echo hi".into(),
            user: None,
        };
        assert_eq!(
            serde_json::to_value(WireStep::from(&run)).unwrap(),
            serde_json::json!({"type": "RUN", "args": ["echo hi"]})
        );
        let copy = BuildStep::Copy {
            src: "a".into(),
            dest: "b".into(),
            owner: Some("user".into()),
            mode: None,
            files_hash: Some("ff".into()),
        };
        assert_eq!(
            serde_json::to_value(WireStep::from(&copy)).unwrap(),
            serde_json::json!({"type": "COPY", "args": ["a", "b", "user", ""], "filesHash": "ff"})
        );
        assert_eq!(BuildStep::parse(&WireStep::from(&copy)), Ok(copy));
        assert_eq!(run.to_string(), "RUN echo hi");
    }
}
