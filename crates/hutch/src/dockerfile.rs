//! The part of the Dockerfile language that `e2b.Dockerfile` files use, turned into the
//! build steps of E2B's template API: FROM, RUN, COPY/ADD (local files), ENV, ARG, WORKDIR,
//! USER, CMD and ENTRYPOINT (the start command). Other instructions (EXPOSE, LABEL, ...)
//! do not change a sandbox and are skipped with a warning.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

/// One build step, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A shell command, optionally as another user.
    Run(String),
    /// Local files (a path or glob relative to the context) to a destination.
    Copy {
        /// Source, relative to the build context.
        src: String,
        /// Destination in the template.
        dest: String,
        /// `--chown` (user or user:group).
        owner: Option<String>,
        /// `--chmod` (octal).
        mode: Option<String>,
    },
    /// Environment variables, in order.
    Env(Vec<(String, String)>),
    /// The working directory of later steps and of sandboxes.
    Workdir(String),
    /// The user of later steps and of sandboxes.
    User(String),
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// What FROM names.
    pub from: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// From CMD / ENTRYPOINT.
    pub start_cmd: Option<String>,
    /// Instructions that were skipped.
    pub warnings: Vec<String>,
}

/// Splits the file into logical lines (continuations joined, comments dropped), each with
/// its first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if cur.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !cur.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if cur.is_empty() {
            start = i + 1;
        }
        if let Some(body) = line.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push((start, std::mem::take(&mut cur).trim().to_string()));
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur.trim().to_string()));
    }
    out
}

/// Expands `$NAME`, `${NAME}` and `${NAME:-default}` from `vars` (unknown names expand to
/// nothing, as in Docker); `\$` is a literal dollar.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '\\' && i + 1 < b.len() && b[i + 1] == '$' {
            out.push('$');
            i += 2;
        } else if b[i] == '$' && i + 1 < b.len() && b[i + 1] == '{' {
            let Some(end) = b[i..].iter().position(|&c| c == '}') else {
                out.extend(&b[i..]);
                break;
            };
            let inner: String = b[i + 2..i + end].iter().collect();
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (inner, None),
            };
            match (vars.get(&name), default) {
                (Some(v), _) if !v.is_empty() => out.push_str(v),
                (_, Some(d)) => out.push_str(&d),
                (Some(v), None) => out.push_str(v),
                (None, None) => {}
            }
            i += end + 1;
        } else if b[i] == '$'
            && i + 1 < b.len()
            && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == '_')
        {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            let name: String = b[i + 1..j].iter().collect();
            if let Some(v) = vars.get(&name) {
                out.push_str(v);
            }
            i = j;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Splits on whitespace, honouring double and single quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The JSON (exec) form's words, if `s` is one.
fn exec_form(s: &str) -> Option<Vec<String>> {
    if !s.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s.trim()).ok()
}

/// Joins words into one shell command line, quoting where needed.
fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `text`. `build_args` override ARG defaults.
pub fn parse(text: &str, build_args: &BTreeMap<String, String>) -> Result<Parsed> {
    let mut p = Parsed::default();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut from_seen = false;
    let mut user_changed = false;
    let mut workdir_changed = false;
    let mut cmd: Option<(bool, Vec<String>)> = None;
    let mut entrypoint: Option<(bool, Vec<String>)> = None;
    for (line_no, line) in logical_lines(text) {
        let (inst, rest) = match line.split_once(char::is_whitespace) {
            Some((i, r)) => (i.to_ascii_uppercase(), r.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let at = |m: String| anyhow!("line {line_no}: {m}");
        if rest.contains("<<") && matches!(inst.as_str(), "RUN" | "COPY" | "ADD") {
            bail!(at(format!("{inst} with a heredoc is not supported")));
        }
        if !from_seen && inst != "FROM" && inst != "ARG" {
            bail!(at(format!("{inst} must come after FROM")));
        }
        match inst.as_str() {
            "FROM" => {
                if from_seen {
                    bail!(at(
                        "multi-stage Dockerfiles (a second FROM) are not supported".into()
                    ));
                }
                from_seen = true;
                let w = words(&expand(&rest, &vars));
                p.from = w
                    .iter()
                    .find(|w| !w.starts_with("--"))
                    .cloned()
                    .ok_or_else(|| at("FROM needs an image or template".into()))?;
                // Docker's defaults, as E2B's parser sets them.
                p.steps.push(Step::User("root".into()));
                p.steps.push(Step::Workdir("/".into()));
            }
            "ARG" => {
                for w in words(&rest) {
                    let (k, v) = match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (w.clone(), String::new()),
                    };
                    let v = build_args.get(&k).cloned().unwrap_or(v);
                    vars.insert(k, v);
                }
            }
            "ENV" => {
                let expanded = expand(&rest, &vars);
                let w = words(&expanded);
                let mut pairs = Vec::new();
                if w.first().is_some_and(|f| f.contains('=')) {
                    for kv in &w {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| at(format!("ENV {kv}: expected NAME=VALUE")))?;
                        pairs.push((k.to_string(), v.to_string()));
                    }
                } else {
                    let (k, v) = expanded
                        .trim()
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| at("ENV needs a name and a value".into()))?;
                    pairs.push((k.to_string(), v.trim().to_string()));
                }
                for (k, v) in &pairs {
                    vars.insert(k.clone(), v.clone());
                }
                p.steps.push(Step::Env(pairs));
            }
            "RUN" => {
                let command = match exec_form(&rest) {
                    Some(w) => shell_join(&w),
                    None => rest.clone(),
                };
                if command.trim().is_empty() {
                    bail!(at("RUN needs a command".into()));
                }
                p.steps.push(Step::Run(command));
            }
            "COPY" | "ADD" => {
                let mut owner = None;
                let mut mode = None;
                let mut args = Vec::new();
                let list = exec_form(&rest).unwrap_or_else(|| words(&rest));
                for w in list {
                    let w = expand(&w, &vars);
                    if let Some(v) = w.strip_prefix("--chown=") {
                        owner = Some(v.to_string());
                    } else if let Some(v) = w.strip_prefix("--chmod=") {
                        if !v.chars().all(|c| c.is_digit(8)) || v.is_empty() {
                            bail!(at(format!(
                                "--chmod={v}: expected an octal mode such as 0755"
                            )));
                        }
                        mode = Some(v.to_string());
                    } else if w.starts_with("--from") {
                        bail!(at(format!(
                            "{inst} --from is not supported (multi-stage builds)"
                        )));
                    } else if w.starts_with("--") {
                        p.warnings
                            .push(format!("line {line_no}: {inst} {w} ignored"));
                    } else {
                        args.push(w);
                    }
                }
                if args.len() < 2 {
                    bail!(at(format!("{inst} needs a source and a destination")));
                }
                let dest = args.pop().unwrap_or_default();
                for src in args {
                    if src.contains("://") {
                        bail!(at(format!("{inst} from a URL is not supported: {src}")));
                    }
                    p.steps.push(Step::Copy {
                        src,
                        dest: dest.clone(),
                        owner: owner.clone(),
                        mode: mode.clone(),
                    });
                }
            }
            "WORKDIR" => {
                let dir = expand(&rest, &vars);
                if dir.trim().is_empty() {
                    bail!(at("WORKDIR needs a path".into()));
                }
                p.steps.push(Step::Workdir(dir.trim().to_string()));
                workdir_changed = true;
            }
            "USER" => {
                let user = expand(&rest, &vars);
                if user.trim().is_empty() {
                    bail!(at("USER needs a name".into()));
                }
                p.steps.push(Step::User(user.trim().to_string()));
                user_changed = true;
            }
            "CMD" | "ENTRYPOINT" => {
                let form = match exec_form(&rest) {
                    Some(w) => (true, w),
                    None => (false, vec![rest.clone()]),
                };
                if inst == "CMD" {
                    cmd = Some(form);
                } else {
                    entrypoint = Some(form);
                }
            }
            "EXPOSE" | "LABEL" | "VOLUME" | "HEALTHCHECK" | "STOPSIGNAL" | "SHELL" | "ONBUILD"
            | "MAINTAINER" => {
                p.warnings.push(format!(
                    "line {line_no}: {inst} does not apply to sandboxes; skipped"
                ));
            }
            other => bail!(at(format!("unknown instruction {other}"))),
        }
    }
    if !from_seen {
        bail!("the Dockerfile has no FROM");
    }
    // Docker's rules for ENTRYPOINT + CMD.
    p.start_cmd = match (entrypoint, cmd) {
        (Some((true, mut e)), c) => {
            match c {
                Some((true, c)) => e.extend(c),
                Some((false, c)) => {
                    e.extend(["/bin/sh".to_string(), "-c".to_string()]);
                    e.extend(c);
                }
                None => {}
            }
            Some(shell_join(&e))
        }
        (Some((false, e)), _) => e.into_iter().next(),
        (None, Some((true, c))) => Some(shell_join(&c)),
        (None, Some((false, c))) => c.into_iter().next(),
        (None, None) => None,
    }
    .filter(|c| !c.trim().is_empty());
    // E2B's defaults for sandboxes, unless the file chose.
    if !user_changed {
        p.steps.push(Step::User("user".into()));
    }
    if !workdir_changed {
        p.steps.push(Step::Workdir("/home/user".into()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(s: &str) -> Parsed {
        parse(s, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn the_seed_dockerfile() {
        let p = parse_ok(
            "# comment\nFROM e2bdev/code-interpreter:latest\n\nRUN pip install pandas \\\n    numpy\nCOPY app.py /home/user/\n",
        );
        assert_eq!(p.from, "e2bdev/code-interpreter:latest");
        assert_eq!(
            p.steps,
            vec![
                Step::User("root".into()),
                Step::Workdir("/".into()),
                Step::Run("pip install pandas      numpy".into()),
                Step::Copy {
                    src: "app.py".into(),
                    dest: "/home/user/".into(),
                    owner: None,
                    mode: None
                },
                Step::User("user".into()),
                Step::Workdir("/home/user".into()),
            ]
        );
        assert_eq!(p.start_cmd, None);
    }

    #[test]
    fn env_arg_and_substitution() {
        let p = parse_ok(
            "ARG V=1.2\nFROM base\nENV A=x B=\"y z\"\nENV C $A-${V}\nWORKDIR /opt/${A}\nUSER nobody\n",
        );
        assert_eq!(
            p.steps[2],
            Step::Env(vec![("A".into(), "x".into()), ("B".into(), "y z".into())])
        );
        assert_eq!(p.steps[3], Step::Env(vec![("C".into(), "x-1.2".into())]));
        assert_eq!(p.steps[4], Step::Workdir("/opt/x".into()));
        assert_eq!(p.steps[5], Step::User("nobody".into()));
        assert_eq!(
            p.steps.len(),
            6,
            "USER and WORKDIR were set: no E2B defaults"
        );
        let overridden = parse(
            "ARG V=1\nFROM t:${V}\n",
            &BTreeMap::from([("V".into(), "2".into())]),
        )
        .unwrap();
        assert_eq!(overridden.from, "t:2");
    }

    #[test]
    fn copy_flags_and_exec_forms() {
        let p = parse_ok(
            "FROM base\nCOPY --chown=user:user --chmod=755 a b /dst/\nRUN [\"echo\", \"it's\"]\nENTRYPOINT [\"python\", \"-m\", \"http.server\"]\nCMD [\"8000\"]\n",
        );
        assert!(
            matches!(&p.steps[2], Step::Copy { src, owner: Some(o), mode: Some(m), .. } if src == "a" && o == "user:user" && m == "755")
        );
        assert!(matches!(&p.steps[3], Step::Copy { src, .. } if src == "b"));
        assert_eq!(p.steps[4], Step::Run(r"echo 'it'\''s'".into()));
        assert_eq!(p.start_cmd.as_deref(), Some("python -m http.server 8000"));
        assert_eq!(
            parse_ok("FROM b\nCMD node server.js\n")
                .start_cmd
                .as_deref(),
            Some("node server.js")
        );
    }

    #[test]
    fn refuses_what_it_cannot_build() {
        for bad in [
            "RUN x\n",
            "FROM a\nFROM b\n",
            "FROM a\nCOPY --from=x a b\n",
            "FROM a\nADD https://x/y /z\n",
            "FROM a\nCOPY onlyone\n",
            "FROM a\nRUN <<EOF\nx\nEOF\n",
            "FROM a\nBOGUS x\n",
            "",
        ] {
            assert!(parse(bad, &BTreeMap::new()).is_err(), "{bad:?}");
        }
        let p = parse_ok("FROM a\nEXPOSE 80\n");
        assert_eq!(p.warnings.len(), 1);
    }
}
