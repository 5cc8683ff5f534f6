//! The files of COPY steps: whether the server has an archive, and its upload (streamed to
//! disk, checked against the build's upload token).

use std::path::Path;

use super::spec::valid_hash;
use super::Builds;
use crate::sandbox::random_hex;
use crate::service::{Invalid, Missing, Result, ServiceError};

/// The largest archive of one COPY step.
const MAX_UPLOAD_BYTES: u64 = 4 << 30;

impl Builds {
    /// `GET /templates/{id}/files/{hash}`: whether the archive is here already, and the
    /// token its upload URL needs.
    pub fn file_status(&self, template_id: &str, hash: &str) -> Result<(bool, String)> {
        if !valid_hash(hash) {
            return Err(Invalid::FilesHash(hash.to_string()).into());
        }
        let Some(token) = self.waiting_tokens(template_id).into_iter().next() else {
            return Err(if self.knows_template(template_id) {
                Missing::WaitingBuild(template_id.to_string())
            } else {
                Missing::Template(template_id.to_string())
            }
            .into());
        };
        Ok((self.files_dir().join(hash).is_file(), token))
    }

    /// The upload of one archive (`PUT` to the URL [`Builds::file_status`] gave), streamed to
    /// disk; checks the token.
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
        let allowed = self
            .waiting_tokens(template_id)
            .iter()
            .any(|t| hutch_contracts::auth::constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !allowed {
            return Err(ServiceError::UploadToken);
        }
        let dir = self.files_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ServiceError::io("mkdir", &dir, e))?;
        let tmp = dir.join(format!(".{hash}.{}", random_hex(6)));
        let res = write_body(&tmp, body).await;
        match res {
            Ok(()) => tokio::fs::rename(&tmp, dir.join(hash))
                .await
                .map_err(ServiceError::StoreUpload),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

async fn write_body(path: &Path, body: axum::body::Body) -> Result<()> {
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
            if total > MAX_UPLOAD_BYTES {
                return Err(Invalid::UploadTooLarge {
                    max_bytes: MAX_UPLOAD_BYTES,
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
        write_body(&path, axum::body::Body::from("hello"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    }

    #[test]
    fn the_upload_limit_reads_in_gib() {
        let e = Invalid::UploadTooLarge {
            max_bytes: MAX_UPLOAD_BYTES,
        };
        assert_eq!(e.to_string(), "the upload exceeds 4 GiB");
    }
}
