//! Who may use sudo, and as whom.
//!
//! The rule, in order:
//! - root (uid 0) may run anything as anyone;
//! - a member of group `sudo` (primary group, or listed in `/etc/group`) may run anything as
//!   anyone: Debian's `%sudo ALL=(ALL:ALL) ALL`;
//! - otherwise a sudoers rule must name the user (`name`, `#uid`, `%group`, `%#gid` or `ALL`)
//!   with the command `ALL`; its run-as list (`(ALL)`, `(ALL:ALL)`, `(alice, bob)`, or none,
//!   meaning root) limits the target user.
//!
//! Sudoers support is deliberately small: `/etc/sudoers` plus its `@includedir`/`#includedir`
//! and `@include`/`#include` files, rules on one logical line each. Aliases, `Defaults`, negation
//! and host matching are ignored, and rules that allow only specific commands grant nothing (we
//! under-grant rather than over-grant). Password tags are moot: nobody is ever asked for one.
//! Files are read on every request, so `usermod -aG sudo` and new sudoers files apply at once.

use std::path::{Path, PathBuf};

/// A passwd entry, with the fields sudo needs beyond [`crate::users::User`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell (`/bin/sh` when the field is empty).
    pub shell: String,
}

/// A group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Users listed as members.
    pub members: Vec<String>,
}

fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_owned(),
            shell: if f[6].trim().is_empty() {
                "/bin/sh".to_owned()
            } else {
                f[6].trim().to_owned()
            },
        })
    })
}

fn parse_groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// The files sudo consults.
#[derive(Debug, Clone)]
pub struct Files {
    /// The passwd file.
    pub passwd: PathBuf,
    /// The group file.
    pub group: PathBuf,
    /// The main sudoers file.
    pub sudoers: PathBuf,
}

impl Files {
    /// The passwd entry with this uid (the first, like getpwuid).
    pub fn user_by_uid(&self, uid: u32) -> Option<PasswdEntry> {
        let text = std::fs::read_to_string(&self.passwd).ok()?;
        let found = parse_passwd(&text).find(|e| e.uid == uid);
        found
    }

    /// The passwd entry with this name.
    pub fn user_by_name(&self, name: &str) -> Option<PasswdEntry> {
        let text = std::fs::read_to_string(&self.passwd).ok()?;
        let found = parse_passwd(&text).find(|e| e.name == name);
        found
    }

    /// Every group entry (empty when the file is unreadable).
    pub fn groups(&self) -> Vec<GroupEntry> {
        std::fs::read_to_string(&self.group)
            .map(|t| parse_groups(&t))
            .unwrap_or_default()
    }

    /// The gid of a group given by name or `#gid`.
    pub fn group_id(&self, spec: &str) -> Option<u32> {
        if let Some(num) = spec.strip_prefix('#') {
            return num.parse().ok();
        }
        self.groups()
            .into_iter()
            .find(|g| g.name == spec)
            .map(|g| g.gid)
    }
}

/// Whom a caller may run commands as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Anyone, any group.
    Anyone,
    /// Only these users (names, `#uid`, `%group` as written in sudoers).
    Only(Vec<String>),
}

impl Grant {
    fn merge(self, other: Grant) -> Grant {
        match (self, other) {
            (Grant::Anyone, _) | (_, Grant::Anyone) => Grant::Anyone,
            (Grant::Only(mut a), Grant::Only(b)) => {
                for x in b {
                    if !a.contains(&x) {
                        a.push(x);
                    }
                }
                Grant::Only(a)
            }
        }
    }

    /// Whether `target` (with its group names) may be run as.
    pub fn allows(&self, target: &PasswdEntry, target_groups: &[GroupEntry]) -> bool {
        match self {
            Grant::Anyone => true,
            Grant::Only(list) => list
                .iter()
                .any(|spec| matches_user(spec, target, target_groups)),
        }
    }

    /// The run-as column of `sudo -l`.
    pub fn describe(&self) -> String {
        match self {
            Grant::Anyone => "(ALL : ALL) NOPASSWD: ALL".to_owned(),
            Grant::Only(list) => format!("({}) NOPASSWD: ALL", list.join(", ")),
        }
    }
}

/// Whether the sudoers user spec `spec` names `user`.
fn matches_user(spec: &str, user: &PasswdEntry, groups: &[GroupEntry]) -> bool {
    if spec == "ALL" {
        return true;
    }
    if let Some(group) = spec.strip_prefix('%') {
        return groups.iter().any(|g| match group.strip_prefix('#') {
            Some(gid) => gid.parse() == Ok(g.gid),
            None => g.name == group,
        });
    }
    if let Some(uid) = spec.strip_prefix('#') {
        return uid.parse() == Ok(user.uid);
    }
    spec == user.name
}

/// The groups `user` belongs to: their primary group and every group listing them.
pub fn groups_of(user: &PasswdEntry, all: &[GroupEntry]) -> Vec<GroupEntry> {
    all.iter()
        .filter(|g| g.gid == user.gid || g.members.contains(&user.name))
        .cloned()
        .collect()
}

/// What `caller` may do, or `None` if they may not use sudo at all.
pub fn grant_for(files: &Files, caller: &PasswdEntry) -> Option<Grant> {
    if caller.uid == 0 {
        return Some(Grant::Anyone);
    }
    let groups = groups_of(caller, &files.groups());
    if groups.iter().any(|g| g.name == "sudo") {
        return Some(Grant::Anyone);
    }
    let mut grant = None::<Grant>;
    for rule in read_sudoers(&files.sudoers, 0) {
        if rule.users.iter().any(|u| matches_user(u, caller, &groups)) {
            grant = Some(match grant {
                None => rule.runas,
                Some(g) => g.merge(rule.runas),
            });
        }
    }
    grant
}

/// A sudoers rule that allows every command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    users: Vec<String>,
    runas: Grant,
}

/// Include nesting deeper than this is a loop, as sudo also decides.
const MAX_INCLUDE_DEPTH: usize = 8;

/// The rules of `path` and what it includes; unreadable files contribute nothing.
fn read_sudoers(path: &Path, depth: usize) -> Vec<Rule> {
    if depth > MAX_INCLUDE_DEPTH {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    for line in logical_lines(&text) {
        let line = line.trim();
        if let Some(dir) = include_target(line, "includedir") {
            let dir = resolve_include(path, dir);
            rules.extend(read_include_dir(&dir, depth + 1));
            continue;
        }
        if let Some(file) = include_target(line, "include") {
            rules.extend(read_sudoers(&resolve_include(path, file), depth + 1));
            continue;
        }
        let line = strip_comment(line);
        if let Some(rule) = parse_rule(line) {
            rules.push(rule);
        }
    }
    rules
}

/// Files of an include directory, in the order sudo reads them: names without `.` or a
/// trailing `~`, sorted.
fn read_include_dir(dir: &Path, depth: usize) -> Vec<Rule> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.contains('.') && !n.ends_with('~'))
        .collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| read_sudoers(&dir.join(n), depth))
        .collect()
}

/// A relative include is relative to the including file's directory.
fn resolve_include(from: &Path, target: &str) -> PathBuf {
    let target = Path::new(target);
    if target.is_absolute() {
        target.to_owned()
    } else {
        from.parent().unwrap_or(Path::new("/")).join(target)
    }
}

/// The argument of `@<word> X` or `#<word> X`.
fn include_target<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line
        .strip_prefix('@')
        .or_else(|| line.strip_prefix('#'))?
        .strip_prefix(word)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let target = rest.trim();
    (!target.is_empty()).then_some(target)
}

/// Joins backslash-continued lines.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Cuts a `#` comment, leaving `#uid` user specs (a `#` right after a separator and before a
/// digit) alone.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' {
            let next_is_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !next_is_digit {
                return &line[..i];
            }
        }
    }
    line
}

/// Parses `users hosts = [(runas)] [TAG:]... ALL`; `None` for anything else.
fn parse_rule(line: &str) -> Option<Rule> {
    let first = line.split_whitespace().next()?;
    if first.starts_with("Defaults")
        || first.ends_with("_Alias")
        || matches!(
            first,
            "User_Alias" | "Runas_Alias" | "Host_Alias" | "Cmnd_Alias"
        )
    {
        return None;
    }
    let (head, spec) = line.split_once('=')?;
    // `head` is "user, %group  host": the last word is the host list.
    let head = head.trim();
    let host_start = head.rfind(char::is_whitespace)?;
    let users: Vec<String> = head[..host_start]
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if users.is_empty() || users.iter().any(|u| u.starts_with('!')) {
        return None;
    }
    let mut spec = spec.trim();
    let runas = if let Some(rest) = spec.strip_prefix('(') {
        let (inside, after) = rest.split_once(')')?;
        spec = after.trim();
        let run_users = inside.split(':').next().unwrap_or("").trim();
        if run_users.is_empty() {
            // `(:group)`: only the caller themself, with another group; not supported.
            return None;
        }
        let list: Vec<String> = run_users
            .split(',')
            .map(str::trim)
            .map(str::to_owned)
            .collect();
        if list.iter().any(|u| u.starts_with('!')) {
            return None;
        }
        if list.iter().any(|u| u == "ALL") {
            Grant::Anyone
        } else {
            Grant::Only(list)
        }
    } else {
        Grant::Only(vec!["root".to_owned()])
    };
    // Tags such as NOPASSWD: and SETENV: come before the command.
    let mut command = spec;
    while let Some((tag, rest)) = command.split_once(':') {
        if !tag
            .trim()
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_')
            || tag.trim().is_empty()
        {
            break;
        }
        command = rest.trim();
    }
    (command.trim() == "ALL").then_some(Rule { users, runas })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, uid: u32, gid: u32) -> PasswdEntry {
        PasswdEntry {
            name: name.into(),
            uid,
            gid,
            home: format!("/home/{name}"),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn parses_rules_that_grant_everything() {
        let r = parse_rule("user ALL=(ALL:ALL) NOPASSWD: ALL").unwrap();
        assert_eq!(r.users, ["user"]);
        assert_eq!(r.runas, Grant::Anyone);
        let r = parse_rule("%admin, bob  ALL = (postgres, www-data) ALL").unwrap();
        assert_eq!(r.users, ["%admin", "bob"]);
        assert_eq!(
            r.runas,
            Grant::Only(vec!["postgres".into(), "www-data".into()])
        );
        let r = parse_rule("carol ALL=ALL").unwrap();
        assert_eq!(r.runas, Grant::Only(vec!["root".into()]));
        assert_eq!(parse_rule("dave ALL=(ALL) /usr/bin/apt"), None);
        assert_eq!(parse_rule("Defaults env_reset"), None);
        assert_eq!(parse_rule("User_Alias A = x, y"), None);
        assert_eq!(
            strip_comment("#1000 ALL=(ALL) ALL # me"),
            "#1000 ALL=(ALL) ALL "
        );
        assert_eq!(strip_comment("# a comment"), "");
    }

    #[test]
    fn reads_includes_and_decides() {
        let dir = std::env::temp_dir().join(format!("hutch-sudo-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sudoers.d")).unwrap();
        std::fs::write(
            dir.join("sudoers"),
            "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n@includedir sudoers.d\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sudoers.d/alice"),
            "alice ALL=(bob) NOPASSWD: ALL\n",
        )
        .unwrap();
        std::fs::write(dir.join("sudoers.d/x.bak"), "mallory ALL=(ALL) ALL\n").unwrap();
        std::fs::write(
            dir.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n\
             alice:x:1001:1001::/home/alice:\nbob:x:1002:1002::/home/bob:/bin/sh\n\
             mallory:x:1003:1003::/home/m:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("group"),
            "root:x:0:\nsudo:x:27:user\nalice:x:1001:\n",
        )
        .unwrap();
        let files = Files {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            sudoers: dir.join("sudoers"),
        };
        let alice = files.user_by_name("alice").unwrap();
        assert_eq!(alice.shell, "/bin/sh");
        assert_eq!(files.user_by_uid(1000).unwrap().name, "user");
        assert_eq!(files.group_id("sudo"), Some(27));
        assert_eq!(files.group_id("#5"), Some(5));

        assert_eq!(grant_for(&files, &entry("root", 0, 0)), Some(Grant::Anyone));
        assert_eq!(
            grant_for(&files, &entry("user", 1000, 1000)),
            Some(Grant::Anyone)
        );
        let g = grant_for(&files, &alice).unwrap();
        let bob = files.user_by_name("bob").unwrap();
        assert!(g.allows(&bob, &[]));
        assert!(!g.allows(&entry("root", 0, 0), &[]));
        // Files with a dot in their name are skipped, as sudo does.
        assert_eq!(grant_for(&files, &entry("mallory", 1003, 1003)), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
