//! Trusting the host's locally added CA certificates in the tree while post-install steps
//! run, and taking them out again.

use std::path::{Path, PathBuf};

use super::jailed::Jailed;
use super::tree::write_tree_file;
use crate::mounts;
use crate::{Progress, TemplateError};

/// Where Debian and Ubuntu hosts keep locally added CA certificates.
pub(super) const HOST_LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

/// Folder (inside the tree's own local-CA folder) that holds the host's
/// certificates while post-install steps run.
const BUILD_CAS: &str = "usr/local/share/ca-certificates/hutch-build-host";

/// Copies the host's locally added CA certificates (`*.crt` directly in
/// `host_dir`) into the tree and makes the tree trust them, if the tree has
/// `update-ca-certificates`. Returns how many were added.
pub(super) fn trust_host_cas(
    root: &Path,
    host_dir: &Path,
    jail: &Jailed<'_>,
    progress: &mut dyn FnMut(Progress),
    step: u64,
    total: u64,
) -> Result<usize, TemplateError> {
    let Ok(entries) = std::fs::read_dir(host_dir) else {
        return Ok(0);
    };
    let mut certs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt") && p.is_file())
        .collect();
    if certs.is_empty() || !root.join("usr/sbin/update-ca-certificates").exists() {
        return Ok(0);
    }
    certs.sort();
    let dir = root.join(BUILD_CAS);
    std::fs::create_dir_all(&dir).map_err(TemplateError::io("could not create directory", &dir))?;
    for cert in &certs {
        let name = cert.file_name().unwrap_or_default();
        let contents = std::fs::read(cert).map_err(TemplateError::io("could not read", cert))?;
        let rel = Path::new(BUILD_CAS).join(name);
        write_tree_file(root, &rel.to_string_lossy(), &contents, 0o644)?;
    }
    tracing::info!(
        count = certs.len(),
        from = %host_dir.display(),
        "trusting the host's local CA certificates during post-install steps"
    );
    jail.run(&["update-ca-certificates"], progress, step, total)?;
    Ok(certs.len())
}

/// Undoes [`trust_host_cas`].
pub(super) fn untrust_host_cas(
    root: &Path,
    jail: &Jailed<'_>,
    progress: &mut dyn FnMut(Progress),
    step: u64,
    total: u64,
) -> Result<(), TemplateError> {
    mounts::remove_tree(&root.join(BUILD_CAS))?;
    jail.run(
        &["update-ca-certificates", "--fresh"],
        progress,
        step,
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn host_cas_are_skipped_without_certificates_or_update_tool() {
        let tmp = TempDir::new("setup-cas");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        let helper = crate::JailHelper {
            program: PathBuf::from("/nonexistent/hutch"),
            args: vec!["__template-jail".into()],
        };
        let jail = Jailed {
            root: &root,
            helper: &helper,
            template: "t",
        };
        let mut progress = |_: Progress| {};
        let missing = tmp.path().join("no-such-dir");
        let n = trust_host_cas(&root, &missing, &jail, &mut progress, 0, 1).expect("no dir");
        assert_eq!(n, 0);

        // Certificates, but a tree without update-ca-certificates.
        let host = tmp.path().join("host-cas");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(host.join("proxy.crt"), b"cert").expect("write");
        let n = trust_host_cas(&root, &host, &jail, &mut progress, 0, 1).expect("no tool");
        assert_eq!(n, 0);
        assert!(!root.join(BUILD_CAS).exists());
    }
}
