//! The `sudo` command line, parsed the way sudo(8) parses it.
//!
//! Options end at the first argument that is not an option (sudo runs getopt in `+` mode, so
//! `sudo ls -l` passes `-l` to `ls`) or at `--`. Leading `VAR=value` arguments after the options
//! set variables in the command's environment. Options that only make sense with a password,
//! a terminal prompt or a security module are accepted and ignored; those that would need
//! features this sudo lacks are refused with a clear message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-h`: print the help text.
    Help,
    /// `-V`: print the version.
    Version,
    /// `-k`/`-K` without a command: forget cached credentials, which this sudo never keeps.
    ResetTimestamp,
    /// `-v`: check that the caller may use sudo.
    Validate,
    /// `-l`: list the caller's privileges, or check one command.
    List,
    /// Run a command (or a shell).
    Run,
}

/// Which of the caller's variables the command keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreserveEnv {
    /// Reset the environment, keeping only a fixed safe list (sudo's `env_reset`).
    #[default]
    Reset,
    /// `-E`: keep everything.
    All,
    /// `--preserve-env=A,B`: reset, but keep these too.
    Only(Vec<String>),
}

/// Everything the command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// What to do; `None` is the same as [`Action::Run`] (kept separate to detect conflicts).
    pub action: Option<Action>,
    /// `-n`: never prompt. This sudo never prompts, so it only changes the refusal message.
    pub non_interactive: bool,
    /// `-u`: the user to run as (a name or `#uid`).
    pub user: Option<String>,
    /// `-g`: the primary group to run with (a name or `#gid`).
    pub group: Option<String>,
    /// `-E` / `--preserve-env[=list]`.
    pub preserve_env: PreserveEnv,
    /// `-H`: set `HOME` to the target's home even when `-E` keeps the caller's.
    pub set_home: bool,
    /// `-i`: run the target's login shell.
    pub login: bool,
    /// `-s`: run a shell.
    pub shell: bool,
    /// `-b`: start the command and return at once.
    pub background: bool,
    /// `-D`: the directory to run in.
    pub chdir: Option<String>,
    /// `VAR=value` arguments before the command.
    pub set_env: Vec<(String, String)>,
    /// The command and its arguments (may be empty with `-i`, `-s`, `-l`).
    pub command: Vec<String>,
}

impl Invocation {
    /// The action, with a plain command run being the default.
    pub fn action(&self) -> Action {
        self.action.clone().unwrap_or(Action::Run)
    }
}

/// Why the command line was rejected. `Display` gives sudo's wording, without the `sudo: `
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// An unknown short option.
    InvalidOption(char),
    /// An unknown long option.
    UnrecognizedOption(String),
    /// An option that needs a value was last.
    MissingArgument(String),
    /// A long option that takes no value got one.
    UnexpectedArgument(String),
    /// Two modes that exclude each other (`-i` with `-s`, `-l` with `-v`, ...).
    Conflict(&'static str),
    /// An option this sudo recognises but cannot honour.
    Unsupported(String),
    /// Nothing to run.
    NoCommand,
    /// An argument that is not valid UTF-8 (the request to the agent is JSON).
    NotUtf8,
}

impl ArgError {
    /// Whether sudo prints its usage summary after this error.
    pub fn shows_usage(&self) -> bool {
        !matches!(
            self,
            Self::Unsupported(_) | Self::NotUtf8 | Self::Conflict(_)
        )
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOption(c) => write!(f, "invalid option -- '{c}'"),
            Self::UnrecognizedOption(o) => write!(f, "unrecognized option '{o}'"),
            Self::MissingArgument(o) if o.starts_with("--") => {
                write!(f, "option '{o}' requires an argument")
            }
            Self::MissingArgument(o) => write!(f, "option requires an argument -- '{o}'"),
            Self::UnexpectedArgument(o) => write!(f, "option '{o}' doesn't allow an argument"),
            Self::Conflict(text) => f.write_str(text),
            Self::Unsupported(text) => f.write_str(text),
            Self::NoCommand => f.write_str("a command is required"),
            Self::NotUtf8 => f.write_str("arguments must be valid UTF-8"),
        }
    }
}

/// The usage summary sudo prints after a command-line error.
pub const USAGE: &str = "\
usage: sudo -h | -K | -k | -V
usage: sudo -v [-knS] [-g group] [-u user]
usage: sudo -l [-knS] [-g group] [-u user] [command [arg ...]]
usage: sudo [-bEHknS] [-D directory] [-g group] [-u user] [VAR=value] [-i | -s] [command [arg ...]]
";

/// The `-h` text.
pub const HELP: &str = "\
sudo - execute a command as another user (hutch agent-backed sudo)

usage: sudo -h | -K | -k | -V
usage: sudo -v [-knS] [-g group] [-u user]
usage: sudo -l [-knS] [-g group] [-u user] [command [arg ...]]
usage: sudo [-bEHknS] [-D directory] [-g group] [-u user] [VAR=value] [-i | -s] [command [arg ...]]

Options:
  -b, --background              run command in the background
  -D, --chdir=directory         change the working directory before running command
  -E, --preserve-env            preserve user environment when running command
      --preserve-env=list       preserve specific environment variables
  -g, --group=group             run command as the specified group name or ID
  -H, --set-home                set HOME variable to target user's home dir
  -h, --help                    display help message and exit
  -i, --login                   run login shell as the target user; a command may also be
                                specified
  -K, --remove-timestamp        remove timestamp file completely (no-op)
  -k, --reset-timestamp         invalidate timestamp file (no-op)
  -l, --list                    list user's privileges or check a specific command
  -n, --non-interactive         non-interactive mode, no prompts are used
  -S, --stdin                   read password from standard input (no-op: no password is asked)
  -s, --shell                   run shell as the target user; a command may also be specified
  -u, --user=user               run command (or edit file) as specified user name or ID
  -V, --version                 display version information and exit
  -v, --validate                update user's timestamp without running a command
  --                            stop processing command line arguments

The command runs through the hutch agent (PID 1), because no_new_privs stops setuid programs
from gaining privileges inside a hutch sandbox.
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Invocation, ArgError> {
    let args = args
        .into_iter()
        .map(|a| a.into_string().map_err(|_| ArgError::NotUtf8))
        .collect::<Result<Vec<String>, ArgError>>()?;
    parse_strings(args)
}

/// Options that take a value, short and long spellings.
fn takes_value(short: char) -> bool {
    matches!(
        short,
        'u' | 'g' | 'D' | 'p' | 'C' | 'T' | 'U' | 'R' | 'r' | 't'
    )
}

/// The short option a long one stands for.
fn long_to_short(name: &str) -> Option<char> {
    Some(match name {
        "askpass" => 'A',
        "background" => 'b',
        "bell" => 'B',
        "close-from" => 'C',
        "chdir" => 'D',
        "preserve-env" => 'E',
        "edit" => 'e',
        "group" => 'g',
        "set-home" => 'H',
        "help" => 'h',
        "login" => 'i',
        "remove-timestamp" => 'K',
        "reset-timestamp" => 'k',
        "list" => 'l',
        "non-interactive" => 'n',
        "no-update" => 'N',
        "preserve-groups" => 'P',
        "prompt" => 'p',
        "chroot" => 'R',
        "role" => 'r',
        "stdin" => 'S',
        "shell" => 's',
        "type" => 't',
        "command-timeout" => 'T',
        "other-user" => 'U',
        "user" => 'u',
        "version" => 'V',
        "validate" => 'v',
        _ => return None,
    })
}

fn set_action(inv: &mut Invocation, action: Action) -> Result<(), ArgError> {
    match &inv.action {
        Some(existing) if *existing != action => Err(ArgError::Conflict(
            "Only one of the -e, -h, -i, -K, -l, -s, -v or -V options may be specified",
        )),
        _ => {
            inv.action = Some(action);
            Ok(())
        }
    }
}

/// Applies one option; `value` is set exactly when the option takes one.
fn apply(inv: &mut Invocation, opt: char, value: Option<String>) -> Result<(), ArgError> {
    match opt {
        'n' => inv.non_interactive = true,
        'u' => inv.user = value,
        'g' => inv.group = value,
        'E' => inv.preserve_env = PreserveEnv::All,
        'H' => inv.set_home = true,
        'i' => inv.login = true,
        's' => inv.shell = true,
        'b' => inv.background = true,
        'D' => inv.chdir = value,
        'h' => set_action(inv, Action::Help)?,
        'V' => set_action(inv, Action::Version)?,
        'v' => set_action(inv, Action::Validate)?,
        'l' => set_action(inv, Action::List)?,
        // `-k` with a command runs it (after "forgetting" credentials); alone it is an action.
        'k' => {}
        'K' => set_action(inv, Action::ResetTimestamp)?,
        // No password is ever asked for, so these change nothing; `-p`, `-C` and `-T` values are
        // accepted and ignored.
        'S' | 'A' | 'B' | 'N' | 'P' | 'p' | 'C' | 'T' | 'U' => {}
        'e' => {
            return Err(ArgError::Unsupported(
                "sudoedit (-e) is not supported by hutch's sudo; run your editor with sudo instead"
                    .into(),
            ))
        }
        'R' => {
            return Err(ArgError::Unsupported(
                "you are not permitted to use the -R option".into(),
            ))
        }
        'r' | 't' => {
            return Err(ArgError::Unsupported(
                "SELinux options (-r, -t) are not supported by hutch's sudo".into(),
            ))
        }
        other => return Err(ArgError::InvalidOption(other)),
    }
    Ok(())
}

fn is_known_short(c: char) -> bool {
    "nuhgEHisbDVvlkKSABNPpCTUeRrt".contains(c)
}

/// Parses already-decoded arguments (the program name excluded).
pub fn parse_strings(args: Vec<String>) -> Result<Invocation, ArgError> {
    let mut inv = Invocation::default();
    let mut saw_k = false;
    let mut rest = args.into_iter().peekable();
    while let Some(arg) = rest.peek().cloned() {
        if arg == "--" {
            rest.next();
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            rest.next();
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            // `--preserve-env` alone keeps everything; with a list, only those.
            if name == "preserve-env" {
                inv.preserve_env = match inline {
                    None => PreserveEnv::All,
                    Some(list) => PreserveEnv::Only(
                        list.split(',')
                            .filter(|v| !v.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    ),
                };
                continue;
            }
            if name == "host" {
                // `--host` only matters to `-l` with network sudoers; accept and ignore it.
                if inline.is_none() && rest.next().is_none() {
                    return Err(ArgError::MissingArgument(format!("--{name}")));
                }
                continue;
            }
            let short = long_to_short(name)
                .ok_or_else(|| ArgError::UnrecognizedOption(format!("--{name}")))?;
            let value = if takes_value(short) {
                match inline {
                    Some(v) => Some(v),
                    None => Some(
                        rest.next()
                            .ok_or_else(|| ArgError::MissingArgument(format!("--{name}")))?,
                    ),
                }
            } else if inline.is_some() {
                return Err(ArgError::UnexpectedArgument(format!("--{name}")));
            } else {
                None
            };
            saw_k |= short == 'k';
            apply(&mut inv, short, value)?;
            continue;
        }
        let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            break;
        };
        rest.next();
        for (i, c) in shorts.char_indices() {
            if !is_known_short(c) {
                return Err(ArgError::InvalidOption(c));
            }
            if takes_value(c) {
                let inline = &shorts[i + c.len_utf8()..];
                let value = if inline.is_empty() {
                    rest.next()
                        .ok_or_else(|| ArgError::MissingArgument(c.to_string()))?
                } else {
                    inline.to_owned()
                };
                apply(&mut inv, c, Some(value))?;
                break;
            }
            saw_k |= c == 'k';
            apply(&mut inv, c, None)?;
        }
    }

    // `VAR=value` arguments before the command.
    while let Some(arg) = rest.peek() {
        match arg.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                inv.set_env.push((name.to_owned(), value.to_owned()));
                rest.next();
            }
            _ => break,
        }
    }
    inv.command = rest.collect();

    if inv.login && inv.shell {
        return Err(ArgError::Conflict(
            "you may not specify both the -i and -s options",
        ));
    }
    if (inv.login || inv.shell) && inv.action.is_some() {
        return Err(ArgError::Conflict(
            "Only one of the -e, -h, -i, -K, -l, -s, -v or -V options may be specified",
        ));
    }
    if inv.action.is_none() && inv.command.is_empty() && !inv.login && !inv.shell {
        if saw_k {
            inv.action = Some(Action::ResetTimestamp);
        } else {
            return Err(ArgError::NoCommand);
        }
    }
    if matches!(inv.action, Some(Action::Validate)) && !inv.command.is_empty() {
        return Err(ArgError::Conflict("the -v option does not take a command"));
    }
    Ok(inv)
}

/// Joins a command for `shell -c` the way sudo does for `-i` and `-s`: every character but
/// letters, digits, `_`, `-` and `$` is escaped with a backslash, so the shell sees the same words
/// (while `$VAR` still expands, as with sudo).
pub fn shell_escape_join(command: &[String]) -> String {
    let mut out = String::new();
    for (i, word) in command.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for c in word.chars() {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, ArgError> {
        parse_strings(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn options_stop_at_the_command() {
        let inv = p(&["-n", "ls", "-l"]).unwrap();
        assert!(inv.non_interactive);
        assert_eq!(inv.command, ["ls", "-l"]);
        assert_eq!(inv.action(), Action::Run);
        let inv = p(&["--", "-n"]).unwrap();
        assert_eq!(inv.command, ["-n"]);
    }

    #[test]
    fn values_inline_separate_and_combined() {
        let inv = p(&["-nu", "user", "id"]).unwrap();
        assert_eq!(
            (inv.non_interactive, inv.user.as_deref()),
            (true, Some("user"))
        );
        let inv = p(&["-uuser", "id"]).unwrap();
        assert_eq!(inv.user.as_deref(), Some("user"));
        let inv = p(&["--user=#1000", "--group", "sudo", "id"]).unwrap();
        assert_eq!(inv.user.as_deref(), Some("#1000"));
        assert_eq!(inv.group.as_deref(), Some("sudo"));
        assert_eq!(p(&["-u"]), Err(ArgError::MissingArgument("u".into())));
    }

    #[test]
    fn env_assignments_and_preserve_env() {
        let inv = p(&["-E", "A=1", "B=x=y", "env", "C=3"]).unwrap();
        assert_eq!(inv.preserve_env, PreserveEnv::All);
        assert_eq!(
            inv.set_env,
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(inv.command, ["env", "C=3"]);
        let inv = p(&["--preserve-env=FOO,BAR", "env"]).unwrap();
        assert_eq!(
            inv.preserve_env,
            PreserveEnv::Only(vec!["FOO".into(), "BAR".into()])
        );
    }

    #[test]
    fn modes_and_errors() {
        assert_eq!(p(&["-V"]).unwrap().action(), Action::Version);
        assert_eq!(p(&["-k"]).unwrap().action(), Action::ResetTimestamp);
        assert_eq!(p(&["-K"]).unwrap().action(), Action::ResetTimestamp);
        assert_eq!(p(&["-k", "true"]).unwrap().action(), Action::Run);
        assert_eq!(p(&["-v"]).unwrap().action(), Action::Validate);
        assert_eq!(p(&["-l"]).unwrap().action(), Action::List);
        assert!(p(&["-i"]).unwrap().login);
        assert!(p(&["-s", "echo", "hi"]).unwrap().shell);
        assert_eq!(p(&[]), Err(ArgError::NoCommand));
        assert_eq!(p(&["-Z", "true"]), Err(ArgError::InvalidOption('Z')));
        assert_eq!(
            p(&["--frobnicate"]),
            Err(ArgError::UnrecognizedOption("--frobnicate".into()))
        );
        assert!(matches!(p(&["-i", "-s"]), Err(ArgError::Conflict(_))));
        assert!(matches!(p(&["-l", "-v"]), Err(ArgError::Conflict(_))));
        assert!(matches!(p(&["-e", "f"]), Err(ArgError::Unsupported(_))));
        assert_eq!(
            ArgError::InvalidOption('Z').to_string(),
            "invalid option -- 'Z'"
        );
    }

    #[test]
    fn escapes_for_the_shell_like_sudo() {
        let cmd = ["echo".to_owned(), "a b".to_owned(), "$HOME".to_owned()];
        assert_eq!(shell_escape_join(&cmd), "echo a\\ b $HOME");
    }
}
