//! What a build is asked to do: the start request's body, its checks (names, hashes,
//! steps), the parent template it starts from, and build ids.

use hutch_contracts::template::{BuildStep, WireStep};
use serde::Deserialize;

use crate::sandbox::random_hex;
use crate::service::{Invalid, ServiceError};

/// What `POST /v2/templates/{id}/builds/{build}` carries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// A Docker image to start from; only E2B's own images are known (see [`image_template`]).
    #[serde(default)]
    pub from_image: Option<String>,
    /// A template to start from.
    #[serde(default)]
    pub from_template: Option<String>,
    /// A private registry image (not supported).
    #[serde(default)]
    pub from_image_registry: Option<serde_json::Value>,
    /// The steps, as sent; [`parse_steps`] checks and types them.
    #[serde(default)]
    pub steps: Option<Vec<WireStep>>,
    /// Started in every sandbox of the template.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Says when the start command is ready.
    #[serde(default)]
    pub ready_cmd: Option<String>,
}

/// Types every step of a build, in order; the first bad one is the error. `uploaded` says
/// whether a COPY step's archive (by hash) is on the server.
pub fn parse_steps(
    steps: &[WireStep],
    mut uploaded: impl FnMut(&str) -> bool,
) -> Result<Vec<BuildStep>, ServiceError> {
    let mut typed = Vec::with_capacity(steps.len());
    for (i, wire) in steps.iter().enumerate() {
        let number = i + 1;
        let step = BuildStep::parse(wire).map_err(|source| Invalid::Step { number, source })?;
        if let BuildStep::Copy {
            src, files_hash, ..
        } = &step
        {
            let hash = files_hash.as_deref().unwrap_or("");
            if !valid_hash(hash) || !uploaded(hash) {
                return Err(Invalid::CopyFilesMissing {
                    number,
                    src: src.clone(),
                    hash: hash.to_string(),
                }
                .into());
            }
        }
        typed.push(step);
    }
    Ok(typed)
}

/// The template an E2B image name stands for: hutch builds no Docker images, but E2B's own
/// images have hutch twins.
pub fn image_template(image: &str) -> Option<&'static str> {
    let name = image.strip_prefix("docker.io/").unwrap_or(image);
    let repo = name.split([':', '@']).next().unwrap_or(name);
    match repo {
        "e2bdev/code-interpreter" | "e2bdev/code-interpreter-v1" => Some("code-interpreter-v1"),
        "e2bdev/base" => Some("base"),
        _ => None,
    }
}

/// The template a build starts from: `fromTemplate`, else the hutch twin of `fromImage`,
/// else `base` (the twin of the SDK's default image).
pub fn parent_name(spec: &BuildSpec) -> Result<String, String> {
    if spec.from_image_registry.is_some() {
        return Err("hutch does not pull images from registries: build FROM a template (base, code-interpreter-v1 or one built here)".into());
    }
    match (&spec.from_template, &spec.from_image) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(image)) => image_template(image).map(str::to_string).ok_or_else(|| {
            format!(
                "hutch does not pull Docker images ('{image}'): build FROM a template (base, code-interpreter-v1 or one built here), or from e2bdev/base or e2bdev/code-interpreter"
            )
        }),
        (None, None) => Ok("base".to_string()),
    }
}

/// A template name as E2B accepts it: lowercase letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A COPY files hash: hex, so it is safe as a file name.
pub fn valid_hash(hash: &str) -> bool {
    !hash.is_empty() && hash.len() <= 128 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new build id, shaped like a UUID as E2B's are.
pub fn new_build_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: serde_json::Value) -> Vec<WireStep> {
        serde_json::from_value(json).expect("wire steps")
    }

    #[test]
    fn template_names_follow_e2b() {
        assert!(valid_name("my-custom-template"));
        assert!(valid_name("a1.b_c"));
        assert!(!valid_name("My"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(129)));
    }

    #[test]
    fn files_hashes_are_hex_only() {
        assert!(valid_hash("abcdef0123"));
        assert!(!valid_hash("../x"));
        assert!(!valid_hash(""));
        assert!(!valid_hash(&"a".repeat(129)));
    }

    #[test]
    fn e2b_images_map_to_templates() {
        assert_eq!(
            image_template("e2bdev/code-interpreter:latest"),
            Some("code-interpreter-v1")
        );
        assert_eq!(image_template("docker.io/e2bdev/base"), Some("base"));
        assert_eq!(image_template("python:3.12"), None);
    }

    #[test]
    fn the_parent_is_the_template_then_the_image_then_base() {
        let mut spec = BuildSpec::default();
        assert_eq!(parent_name(&spec).unwrap(), "base");
        spec.from_image = Some("e2bdev/code-interpreter".into());
        assert_eq!(parent_name(&spec).unwrap(), "code-interpreter-v1");
        spec.from_template = Some("mine".into());
        assert_eq!(parent_name(&spec).unwrap(), "mine");
        spec.from_image_registry = Some(serde_json::json!({}));
        assert!(parent_name(&spec).unwrap_err().contains("registries"));
    }

    #[test]
    fn unknown_docker_images_are_refused() {
        let spec = BuildSpec {
            from_image: Some("python:3.12".into()),
            ..BuildSpec::default()
        };
        assert!(parent_name(&spec)
            .unwrap_err()
            .contains("does not pull Docker images ('python:3.12')"));
    }

    #[test]
    fn build_ids_look_like_uuids() {
        let id = new_build_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, new_build_id());
    }

    #[test]
    fn good_steps_are_typed_in_order() {
        let steps = parse_steps(
            &wire(serde_json::json!([
                {"type": "RUN", "args": ["make"], "force": false},
                {"type": "COPY", "args": ["a", "b"], "filesHash": "ab12"},
            ])),
            |h| h == "ab12",
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].kind(), "RUN");
        assert_eq!(steps[1].kind(), "COPY");
    }

    #[test]
    fn bad_steps_are_named_by_number() {
        let err = parse_steps(
            &wire(serde_json::json!([
                {"type": "RUN", "args": ["ok"]},
                {"type": "ENV", "args": ["A"]},
            ])),
            |_| true,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"step 2 (ENV): malformed arguments ["A"]"#
        );
        let err = parse_steps(&wire(serde_json::json!([{"type": "FROM"}])), |_| true).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"step 1: unknown step type "FROM" (RUN, COPY, ENV, WORKDIR and USER are known)"#
        );
    }

    #[test]
    fn copy_without_uploaded_files_is_refused() {
        let err = parse_steps(
            &wire(serde_json::json!([{"type": "COPY", "args": ["src", "/d"], "filesHash": "ff"}])),
            |_| false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"step 1 (COPY src): its files (hash "ff") were not uploaded"#
        );
        let err = parse_steps(
            &wire(serde_json::json!([{"type": "COPY", "args": ["src", "/d"]}])),
            |_| true,
        )
        .unwrap_err();
        assert!(err.to_string().contains(r#"(hash "")"#));
    }
}
