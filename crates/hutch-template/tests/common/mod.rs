//! Helpers shared by the full-build tests.

use std::path::{Path, PathBuf};

use hutch_template::JailHelper;

pub fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The build jail of the `hutch` binary named by `HUTCH_BIN`, else the workspace's release
/// build (`cargo build --release -p hutch`).
pub fn jail() -> JailHelper {
    let program = std::env::var_os("HUTCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/hutch")
        });
    assert!(
        program.is_file(),
        "{} does not exist: build it (cargo build --release -p hutch) or set HUTCH_BIN",
        program.display()
    );
    JailHelper {
        program,
        args: vec!["__template-jail".into()],
    }
}
