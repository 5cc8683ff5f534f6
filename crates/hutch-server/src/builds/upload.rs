//! The files of COPY steps: whether the server has an archive, and its upload (streamed to
//! disk, checked against the build's upload token).
//!
//! Archives are kept per team (`<data>/templates/files/<team>/<hash>`), so one team's upload
//! never stands in for another team's files. A build's token uploads only the hashes that
//! build asked about, an archive once stored is never replaced, a team's archives have a
//! quota, and archives no build used for [`FILES_KEPT`] are removed. The server cannot check
//! an archive against its hash: the SDK hashes the COPY instruction, the source paths, their
//! modes and contents as the client sees them (docs/security.md).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::spec::valid_hash;
use super::{Builds, Status};
use crate::sandbox::random_hex;
use crate::service::{lock, Invalid, Missing, Result, ServiceError};
use crate::tenancy::Scope;

/// The largest archive of one COPY step.
const MAX_UPLOAD_BYTES: u64 = 4 << 30;
/// The most bytes of archives one team keeps.
const MAX_TEAM_FILES_BYTES: u64 = 16 << 30;
/// How long an archive no build used is kept.
pub const FILES_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a partial upload may sit before the sweep removes it.
const PARTIAL_KEPT: Duration = Duration::from_secs(3600);

impl Builds {
    /// `GET /templates/{id}/files/{hash}`: whether the archive is here already, and the
    /// token its upload URL needs (that of the template's newest waiting build, which may
    /// from now on upload this hash).
    pub fn file_status(
        &self,
        template_id: &str,
        hash: &str,
        scope: &Scope,
    ) -> Result<(bool, String)> {
        if !valid_hash(hash) {
            return Err(Invalid::FilesHash(hash.to_string()).into());
        }
        let Some(build) = self.waiting_builds(template_id, scope).into_iter().next() else {
            return Err(if self.knows_template(template_id, scope) {
                Missing::WaitingBuild(template_id.to_string())
            } else {
                Missing::Template(template_id.to_string())
            }
            .into());
        };
        lock(&build.files_asked).insert(hash.to_string());
        let path = self.files_dir(build.team()).join(hash);
        let present = path.is_file();
        if present {
            touch(&path);
        }
        Ok((present, build.upload_token.clone()))
    }

    /// The upload of one archive (`PUT` to the URL [`Builds::file_status`] gave), streamed to
    /// disk; checks the token. An archive already stored is kept as it is.
    pub async fn upload(
        &self,
        template_id: &str,
        hash: &str,
        token: &str,
        body: axum::body::Body,
    ) -> Result<()> {
        if !valid_hash(hash) {
            return Err(Invalid::FilesHash(hash.to_string()).into());
        }
        let build = self
            .waiting_builds(template_id, &Scope::operator())
            .into_iter()
            .find(|b| {
                hutch_contracts::auth::constant_time_eq(b.upload_token.as_bytes(), token.as_bytes())
                    && lock(&b.files_asked).contains(hash)
            })
            .ok_or(ServiceError::UploadToken)?;
        let dir = self.files_dir(build.team());
        make_private_dir(&dir).await?;
        let dest = dir.join(hash);
        if dest.is_file() {
            return Ok(());
        }
        let used = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || dir_bytes(&dir)
        })
        .await
        .unwrap_or(0);
        let room = MAX_TEAM_FILES_BYTES.saturating_sub(used);
        let tmp = dir.join(format!(".{hash}.{}", random_hex(6)));
        let res = write_body(
            &tmp,
            body,
            room.min(MAX_UPLOAD_BYTES),
            room < MAX_UPLOAD_BYTES,
        )
        .await;
        let res = match res {
            // A link fails where a rename would replace: the first archive stored stays.
            Ok(()) => match tokio::fs::hard_link(&tmp, &dest).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(ServiceError::StoreUpload(e)),
            },
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        res
    }

    /// Moves archives of a server from before teams (kept in `files/` itself) to the
    /// default team's directory.
    pub(super) fn adopt_old_files(&self) {
        let root = self.dir.join("files");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        let default = self.files_dir(crate::tenancy::DEFAULT_TEAM);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if !valid_hash(&name) {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if std::fs::create_dir_all(&default).is_ok() {
                let _ = std::fs::rename(e.path(), default.join(&name));
            }
        }
        set_private(&root);
        set_private(&default);
    }

    /// Removes archives no build used for [`FILES_KEPT`], and partial uploads.
    pub fn sweep_files(&self) {
        let in_use: std::collections::HashSet<(String, String)> = lock(&self.builds)
            .values()
            .filter(|b| matches!(lock(&b.state).status, Status::Waiting | Status::Building))
            .flat_map(|b| {
                let team = b.team().to_string();
                lock(&b.files_asked)
                    .iter()
                    .map(|h| (team.clone(), h.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let now = SystemTime::now();
        let Ok(teams) = std::fs::read_dir(self.dir.join("files")) else {
            return;
        };
        for team in teams.flatten() {
            let team_name = team.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(team.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let age = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                let partial = name.starts_with('.');
                let stale = if partial {
                    age > PARTIAL_KEPT
                } else {
                    age > FILES_KEPT && !in_use.contains(&(team_name.clone(), name.clone()))
                };
                if stale {
                    tracing::info!(file = %f.path().display(), "removing an unused build file");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }

    /// Marks the archives a build uses as used now (the sweep keeps them).
    pub(super) fn touch_files(&self, team: &str, hashes: &[String]) {
        let dir = self.files_dir(team);
        for h in hashes {
            touch(&dir.join(h));
        }
    }
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// Creates `dir` (and the files root above it) readable by root only.
async fn make_private_dir(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ServiceError::io("mkdir", dir, e))?;
    set_private(dir);
    if let Some(parent) = dir.parent() {
        set_private(parent);
    }
    Ok(())
}

/// Bytes of the regular files in `dir` (not recursive).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Streams `body` into `path`, refusing it past `max` bytes (`quota`: that limit is the
/// team's quota rather than the size of one upload).
async fn write_body(path: &Path, body: axum::body::Body, max: u64, quota: bool) -> Result<()> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| ServiceError::io("create", path, e))?;
    let mut body = body;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Invalid::UploadBroken)?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > max {
                return Err(if quota {
                    Invalid::FilesQuota {
                        max_bytes: MAX_TEAM_FILES_BYTES,
                        kept_days: FILES_KEPT.as_secs() / 86_400,
                    }
                } else {
                    Invalid::UploadTooLarge {
                        max_bytes: MAX_UPLOAD_BYTES,
                    }
                }
                .into());
            }
            f.write_all(&data)
                .await
                .map_err(|e| ServiceError::io("write", path, e))?;
        }
    }
    f.flush()
        .await
        .map_err(|e| ServiceError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_written_to_disk() {
        let dir = crate::service::fake::TempDir::new();
        let path = dir.0.join("f");
        write_body(&path, axum::body::Body::from("hello"), 10, false)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    }

    #[tokio::test]
    async fn a_body_past_the_quota_is_refused_with_the_quota_named() {
        let dir = crate::service::fake::TempDir::new();
        let path = dir.0.join("f");
        let e = write_body(&path, axum::body::Body::from("hello"), 3, true)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("16 GiB"), "{e}");
    }

    #[test]
    fn the_upload_limit_reads_in_gib() {
        let e = Invalid::UploadTooLarge {
            max_bytes: MAX_UPLOAD_BYTES,
        };
        assert_eq!(e.to_string(), "the upload exceeds 4 GiB");
    }
}
