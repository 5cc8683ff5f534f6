//! Parsing of `/proc/self/mountinfo`, kept apart from the reading so that cgroup detection
//! and the leftover-mount scan can be tested on text.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The fields of one mountinfo line that hutch looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
    /// The filesystem type (first field after the ` - ` separator).
    pub fstype: String,
    /// The per-superblock options (third field after the separator), comma separated.
    pub super_options: String,
}

impl MountEntry {
    /// The super options one by one (for cgroup v1 these name the controllers).
    pub fn options(&self) -> impl Iterator<Item = &str> {
        self.super_options.split(',')
    }
}

/// Every well-formed line of `text`, in mount-table order; lines without the ` - `
/// separator are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = unescape(pre.split(' ').nth(4)?);
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or_default().to_string();
            let _source = post.next();
            let super_options = post.next().unwrap_or_default().to_string();
            Some(MountEntry {
                mount_point,
                fstype,
                super_options,
            })
        })
        .collect()
}

/// Mount points of `text` at or below `dir`, in mount-table order (parents before children).
pub(crate) fn mounts_below(text: &str, dir: &Path) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The mount ids (first field) of every line of `text`.
pub(crate) fn mount_ids(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
}

/// Undoes mountinfo's octal escaping of spaces and friends (`\040` is a space).
pub(crate) fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 22 7:3 / /var/lib/hutch/sandboxes/a\\040b/disk rw - ext4 /dev/loop3 rw
91 90 0:50 / /var/lib/hutch/sandboxes/a\\040b/rootfs rw - overlay overlay rw,lowerdir=/t
";

    #[test]
    fn parse_reads_mount_point_type_and_super_options() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1].mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(entries[1].fstype, "cgroup");
        assert_eq!(entries[1].options().collect::<Vec<_>>(), ["rw", "memory"]);
        assert_eq!(entries[2].fstype, "cgroup2");
    }

    #[test]
    fn parse_skips_lines_without_separator() {
        assert!(parse("garbage line\n\n").is_empty());
    }

    #[test]
    fn unescape_decodes_octal_escapes_and_keeps_other_backslashes() {
        assert_eq!(unescape("/a\\040b"), Path::new("/a b"));
        assert_eq!(unescape("/tab\\011x\\134y"), Path::new("/tab\tx\\y"));
        assert_eq!(unescape("/not\\9zz"), Path::new("/not\\9zz"));
    }

    #[test]
    fn mounts_below_lists_only_the_directory_and_its_children_in_order() {
        let dir = Path::new("/var/lib/hutch/sandboxes/a b");
        assert_eq!(
            mounts_below(SAMPLE, dir),
            [dir.join("disk"), dir.join("rootfs")]
        );
        // A sibling whose name merely starts the same is not below.
        assert!(mounts_below(SAMPLE, Path::new("/var/lib/hutch/sandboxes/a")).is_empty());
    }
}
