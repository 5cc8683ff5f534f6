//! Template recipes and their content-addressed cache keys.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{TemplateError, SANDBOX_ID_BASE, SANDBOX_ID_COUNT};

mod code_interpreter;

/// Version of the build procedure. It is part of every cache key, so bump it
/// whenever a change to this crate changes what ends up in a rootfs (user
/// setup, cleanup, id shifting, ...): old cache entries then stop matching and
/// are rebuilt instead of being reused with stale contents.
pub const RECIPE_FORMAT: u32 = 3;

/// Debian mirror used by the built-in recipes.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Debian suite used by the built-in recipes.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Packages installed into every built-in template on top of debootstrap's
/// `minbase` variant.
pub const BASE_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "curl",
    "git",
    "procps",
    "iproute2",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
    "ca-certificates",
    // useradd/groupadd; minbase has it already, listed so the recipe does not
    // silently depend on that.
    "passwd",
];

/// Everything needed to build one template rootfs.
///
/// Only the content fields feed [`Recipe::key`]; `name` does not, so recipes
/// that differ only in name share one built tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Template name as clients ask for it (E2B's `templateID`), e.g. `base`.
    pub name: String,
    /// Debian suite handed to debootstrap, e.g. `bookworm`.
    pub suite: String,
    /// Debian mirror URL handed to debootstrap.
    pub mirror: String,
    /// debootstrap `--variant`, normally `minbase`.
    pub variant: String,
    /// Extra packages for debootstrap's `--include` (order is irrelevant).
    pub packages: Vec<String>,
    /// Shell commands run in order as root inside the build jail (with `sh
    /// -ec`; see [`crate::jail`]) after the `user` account exists and before
    /// the final cleanup. They see their own `/proc`, a minimal `/dev`, the
    /// host's network and its DNS configuration.
    pub post_install: Vec<String>,
}

impl Recipe {
    /// A recipe for `suite` from `mirror` with the `minbase` variant, the given
    /// packages and no post-install steps.
    pub fn new(name: &str, suite: &str, mirror: &str, packages: &[&str]) -> Recipe {
        Recipe {
            name: name.to_string(),
            suite: suite.to_string(),
            mirror: mirror.to_string(),
            variant: "minbase".to_string(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            post_install: Vec::new(),
        }
    }

    /// Cache key: hex sha256 over a canonical serialisation of everything
    /// that changes the output — [`RECIPE_FORMAT`], the id shift, the host
    /// architecture (debootstrap builds for it), suite, mirror, variant, the
    /// sorted and de-duplicated package set and the post-install commands.
    /// The name is deliberately left out.
    pub fn key(&self) -> String {
        self.key_for_arch(std::env::consts::ARCH)
    }

    /// [`Recipe::key`] for an explicit architecture; split out so tests can
    /// pin key values independent of the machine they run on.
    pub(crate) fn key_for_arch(&self, arch: &str) -> String {
        let mut packages: Vec<&str> = self.packages.iter().map(|p| p.trim()).collect();
        packages.sort_unstable();
        packages.dedup();

        // Canonical form: one `field:<byte length>:<value>` record per line.
        // The length prefix keeps values containing newlines or colons from
        // ever colliding with a different recipe.
        let mut canonical = String::new();
        let mut field = |name: &str, value: &str| {
            canonical.push_str(&format!("{name}:{}:{value}\n", value.len()));
        };
        field("format", &RECIPE_FORMAT.to_string());
        field("id_base", &SANDBOX_ID_BASE.to_string());
        field("id_count", &SANDBOX_ID_COUNT.to_string());
        field("arch", arch);
        field("suite", self.suite.trim());
        // A trailing slash does not change what gets downloaded.
        field("mirror", self.mirror.trim().trim_end_matches('/'));
        field("variant", self.variant.trim());
        for p in packages {
            field("package", p);
        }
        for c in &self.post_install {
            field("post_install", c);
        }
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Rejects recipes that would make debootstrap or the shell misbehave
    /// before any work is done.
    pub(crate) fn validate(&self) -> Result<(), TemplateError> {
        let invalid = |reason: String| TemplateError::InvalidRecipe {
            name: self.name.clone(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        let word_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        };
        if !word_ok(self.suite.trim()) {
            return Err(invalid(format!(
                "suite {:?} is not a Debian suite name",
                self.suite
            )));
        }
        if !word_ok(self.variant.trim()) {
            return Err(invalid(format!(
                "variant {:?} is not a debootstrap variant",
                self.variant
            )));
        }
        let mirror = self.mirror.trim();
        let scheme_ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|s| mirror.starts_with(s));
        if !scheme_ok || mirror.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "mirror {:?} must be an http://, https:// or file:/// URL",
                self.mirror
            )));
        }
        for p in &self.packages {
            // Debian package names: lower case alphanumerics and + - . ; a
            // comma would split debootstrap's --include list.
            let ok = !p.trim().is_empty()
                && p.trim().chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
                });
            if !ok {
                return Err(invalid(format!(
                    "package name {p:?} is not a valid Debian package name"
                )));
            }
        }
        Ok(())
    }
}

/// The two built-in templates under E2B's names: `base`, and
/// `code-interpreter-v1`, which is `base` plus Jupyter kernels for python3,
/// bash, JavaScript/TypeScript (Deno), R and Java and hutch's IPython
/// extension (see `docs/kernels.md`).
pub fn default_recipes() -> Vec<Recipe> {
    let base = Recipe::new("base", DEFAULT_SUITE, DEFAULT_MIRROR, BASE_PACKAGES);
    let code_interpreter = code_interpreter::recipe(&base);
    vec![base, code_interpreter]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_name_and_package_order() {
        let recipes = default_recipes();
        assert_eq!(recipes.len(), 2);
        assert_eq!(recipes[0].name, "base");
        assert_eq!(recipes[1].name, "code-interpreter-v1");
        // The code interpreter installs more, so it is a tree of its own.
        assert_ne!(recipes[0].key(), recipes[1].key());

        let mut renamed = recipes[0].clone();
        renamed.name = "anything".into();
        assert_eq!(renamed.key(), recipes[0].key());

        let mut shuffled = recipes[0].clone();
        shuffled.packages.reverse();
        shuffled.packages.push("git".into());
        shuffled.mirror.push('/');
        assert_eq!(shuffled.key(), recipes[0].key());
    }

    #[test]
    fn key_changes_with_content() {
        let base = default_recipes().remove(0);
        let k = base.key();
        assert_eq!(k.len(), 64);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));

        let mut other = base.clone();
        other.packages.push("vim".into());
        assert_ne!(other.key(), k);

        let mut other = base.clone();
        other.suite = "trixie".into();
        assert_ne!(other.key(), k);

        let mut other = base.clone();
        other.post_install.push("true".into());
        assert_ne!(other.key(), k);

        assert_ne!(base.key_for_arch("aarch64"), base.key_for_arch("x86_64"));
    }

    #[test]
    fn key_is_stable() {
        // Pinned so that an accidental change to the canonical form (which
        // would silently rebuild every cached template) fails loudly. If the
        // change is intended, bump RECIPE_FORMAT and update this value.
        let r = Recipe::new(
            "anything",
            "bookworm",
            "http://deb.debian.org/debian",
            &["python3", "bash"],
        );
        assert_eq!(r.key_for_arch("x86_64"), PINNED_KEY);
    }

    #[test]
    fn base_key_is_unchanged() {
        // `base` trees already built stay valid: adding the code interpreter
        // must not change base's recipe. Update only together with a
        // deliberate change to base.
        let base = default_recipes().remove(0);
        assert_eq!(
            base.key_for_arch("x86_64"),
            "4630290d5e168182f1a006b6e730d590e3f524a5d61e49e21704a53ce1a979f4"
        );
    }

    // sha256 of "format:1:3\nid_base:7:1000000\nid_count:5:65536\narch:6:x86_64\n...".
    const PINNED_KEY: &str = "f458f7d97d6b7008f62fa79af391b6e27d2756d049d994836ac1c53a1bbd101f";

    #[test]
    fn validation() {
        for r in default_recipes() {
            r.validate().expect("built-in recipes are valid");
        }
        let mut r = default_recipes().remove(0);
        r.packages.push("a,b".into());
        let err = r.validate().expect_err("comma must be rejected");
        assert!(err.to_string().contains("\"a,b\""), "{err}");

        let mut r = default_recipes().remove(0);
        r.mirror = "ftp://example".into();
        assert!(r.validate().is_err());

        let mut r = default_recipes().remove(0);
        r.suite = "book worm".into();
        assert!(r.validate().is_err());
    }
}
