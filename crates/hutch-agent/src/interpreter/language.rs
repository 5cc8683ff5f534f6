//! Languages: the names clients use, which kernel spec serves each, and the small snippets
//! that set and unset an environment variable inside a running kernel of that language.

use hutch_kernel::KernelSpec;

/// The language of a request that names none.
pub const DEFAULT_LANGUAGE: &str = "python";

/// A client's language name in E2B's canonical form: trimmed, lowercase, `js` → `javascript`,
/// `ts` → `typescript`, nothing → `python`.
pub fn normalize(language: Option<&str>) -> String {
    let language = language.map(str::trim).unwrap_or_default().to_lowercase();
    match language.as_str() {
        "" => DEFAULT_LANGUAGE.to_owned(),
        "js" => "javascript".to_owned(),
        "ts" => "typescript".to_owned(),
        _ => language,
    }
}

/// The kernel spec that runs `language` (already normalized), if one is installed.
///
/// Specs are matched by the `language` their `kernel.json` declares, case-insensitively (IRkernel
/// says `R`). JavaScript and TypeScript stand in for each other: E2B runs TypeScript on its
/// JavaScript kernel, and Deno's kernel declares `typescript` but runs both. When several specs
/// declare the language, the one named after it wins (`python3` for Python), then the first by
/// name, so the choice does not depend on directory order. A spec whose *name* is the language
/// is the last resort, for kernels that declare something odd.
pub fn select_spec<'a>(language: &str, specs: &'a [KernelSpec]) -> Option<&'a KernelSpec> {
    let mut wanted = vec![language];
    match language {
        "javascript" => wanted.push("typescript"),
        "typescript" => wanted.push("javascript"),
        _ => {}
    }
    for want in &wanted {
        let mut matching: Vec<&KernelSpec> = specs
            .iter()
            .filter(|s| s.language.trim().eq_ignore_ascii_case(want))
            .collect();
        matching.sort_by_key(|s| {
            let named_after = s.name == *want || (*want == "python" && s.name == "python3");
            (!named_after, s.name.clone())
        });
        if let Some(spec) = matching.first() {
            return Some(spec);
        }
    }
    specs.iter().find(|s| s.name == language)
}

/// Which statement syntax a kernel understands, for the environment snippets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// IPython.
    Python,
    /// Node (IJavascript) or Deno, JavaScript or TypeScript.
    JavaScript,
    /// IRkernel.
    R,
    /// IJava / JJava: there is no settable environment, so E2B sets system properties.
    Java,
    /// bash_kernel.
    Bash,
}

impl Dialect {
    /// The dialect of `language` (normalized), if we know how to set variables in it.
    pub fn of(language: &str) -> Option<Self> {
        match language {
            "python" => Some(Dialect::Python),
            "javascript" | "typescript" => Some(Dialect::JavaScript),
            "r" => Some(Dialect::R),
            "java" => Some(Dialect::Java),
            "bash" => Some(Dialect::Bash),
            _ => None,
        }
    }

    /// Statements that set every pair of `vars`, one per line.
    pub fn set_all<'a>(self, vars: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
        vars.into_iter()
            .map(|(k, v)| self.set(k, v))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A statement that sets `key` to `value`.
    pub fn set(self, key: &str, value: &str) -> String {
        let (k, v) = (quoted(key), quoted(value));
        match self {
            // `__import__` rather than `import os`, which would bind `os` in the user's namespace.
            Dialect::Python => format!("__import__('os').environ[{k}] = {v}"),
            // Deno's `process.env` is a view of `Deno.env`, but `process` is not a global in
            // every Deno mode; Node has no `Deno`.
            Dialect::JavaScript => format!(
                "if (globalThis.Deno) {{ globalThis.Deno.env.set({k}, {v}); }} else {{ process.env[{k}] = {v}; }}"
            ),
            Dialect::R => format!("do.call(Sys.setenv, structure(list({v}), names = {k}))"),
            Dialect::Java => format!("System.setProperty({k}, {v});"),
            Dialect::Bash => format!("export {}", bash_quoted(&format!("{key}={value}"))),
        }
    }

    /// A statement that removes `key`.
    pub fn unset(self, key: &str) -> String {
        let k = quoted(key);
        match self {
            Dialect::Python => format!("__import__('os').environ.pop({k}, None)"),
            Dialect::JavaScript => format!(
                "if (globalThis.Deno) {{ globalThis.Deno.env.delete({k}); }} else {{ delete process.env[{k}]; }}"
            ),
            Dialect::R => format!("Sys.unsetenv({k})"),
            Dialect::Java => format!("System.clearProperty({k});"),
            Dialect::Bash => format!("unset {}", bash_quoted(key)),
        }
    }
}

/// `s` as a double-quoted string literal valid in Python, JavaScript, TypeScript, R and Java.
///
/// JSON's escapes are a subset of all five: serde writes `\"`, `\\`, the short forms for
/// `\n`, `\r`, `\t`, `\b`, `\f`, and `\u00XX` for other control characters. Java would
/// mis-read only `\u000a`, `\u000d`, `\u0022` and `\u005c` (unicode escapes are decoded
/// before lexing), and serde writes none of those in that form.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `s` as one single-quoted shell word.
fn bash_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(name: &str, language: &str) -> KernelSpec {
        let json = format!(r#"{{"argv": ["k", "{{connection_file}}"], "language": "{language}"}}"#);
        KernelSpec::parse(name, Path::new("/k"), json.as_bytes()).unwrap()
    }

    #[test]
    fn normalizes_like_e2b() {
        assert_eq!(normalize(None), "python");
        assert_eq!(normalize(Some("")), "python");
        assert_eq!(normalize(Some(" JS ")), "javascript");
        assert_eq!(normalize(Some("ts")), "typescript");
        assert_eq!(normalize(Some("R")), "r");
        assert_eq!(normalize(Some("Bash")), "bash");
    }

    #[test]
    fn selects_specs_by_declared_language() {
        let specs = vec![
            spec("bash", "bash"),
            spec("deno", "typescript"),
            spec("ir", "R"),
            spec("java", "java"),
            spec("other-python", "python"),
            spec("python3", "python"),
        ];
        let name = |lang: &str| select_spec(lang, &specs).map(|s| s.name.clone());
        assert_eq!(name("python").as_deref(), Some("python3"));
        assert_eq!(name("javascript").as_deref(), Some("deno"));
        assert_eq!(name("typescript").as_deref(), Some("deno"));
        assert_eq!(name("r").as_deref(), Some("ir"));
        assert_eq!(name("java").as_deref(), Some("java"));
        assert_eq!(name("bash").as_deref(), Some("bash"));
        assert_eq!(name("cobol"), None);

        let node = vec![
            spec("javascript", "javascript"),
            spec("tslab", "typescript"),
        ];
        assert_eq!(
            select_spec("typescript", &node).map(|s| s.name.as_str()),
            Some("tslab")
        );
        assert_eq!(
            select_spec("javascript", &node).map(|s| s.name.as_str()),
            Some("javascript")
        );
        let odd = vec![spec("julia", "")];
        assert_eq!(
            select_spec("julia", &odd).map(|s| s.name.as_str()),
            Some("julia")
        );
    }

    #[test]
    fn snippets_quote_hostile_values() {
        let v = "it's \"x\" \\ $HOME\nend";
        assert_eq!(
            Dialect::Python.set("K", v),
            r#"__import__('os').environ["K"] = "it's \"x\" \\ $HOME\nend""#
        );
        assert_eq!(
            Dialect::Bash.set("K", v),
            "export 'K=it'\\''s \"x\" \\ $HOME\nend'"
        );
        assert_eq!(Dialect::Bash.unset("K"), "unset 'K'");
        assert_eq!(
            Dialect::Java.set("K", "v"),
            r#"System.setProperty("K", "v");"#
        );
        assert_eq!(Dialect::R.unset("K"), r#"Sys.unsetenv("K")"#);
        assert!(Dialect::JavaScript
            .set("K", "v")
            .contains(r#"process.env["K"] = "v""#));
        assert_eq!(Dialect::of("ts"), None, "takes normalized names only");
        assert_eq!(Dialect::of("typescript"), Some(Dialect::JavaScript));
    }

    #[test]
    fn quoted_strings_round_trip_through_python() {
        // The Python literal must evaluate back to the original, control characters included.
        let v = "a\u{1}b\té'\"\\";
        let lit = quoted(v);
        assert!(!lit.contains('\u{1}'));
        assert_eq!(serde_json::from_str::<String>(&lit).unwrap(), v);
    }
}
