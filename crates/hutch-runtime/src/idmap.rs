//! A host id range of its own for every sandbox.
//!
//! The kernel keeps some quotas per host user: pipe buffers (`pipe-user-pages-soft`), epoll
//! watches, locked shared memory, and the ucounts of user namespaces whose owner it is. With
//! one range for all sandboxes, root inside one sandbox was the same host user as root
//! inside every other, so one sandbox could use up those quotas for all of them.
//!
//! Template layers keep their files owned by the *template range* (`base..base+count`, see
//! `hutch_template::SANDBOX_ID_BASE`). Sandbox slot `s` gets the range
//! `base + count * (1 + s % ranges)`, and sees each template layer through an idmapped
//! mount that shifts the template range onto its own (`mount_setattr(MOUNT_ATTR_IDMAP)`).
//! The overlay keeps a private copy of each layer, so the idmapped mounts are released
//! right after it is mounted; on Linux 6.15 and later they are never attached anywhere
//! (the overlay takes them as `/proc/self/fd/N`), before that they are attached below the
//! sandbox's directory and detached again. What a sandbox writes lands on its own disk
//! with its own ids.
//!
//! The maps an idmapped mount reads come from a user namespace: one per range, kept open
//! for the life of the server (a namespace is a few hundred bytes).
//!
//! A host whose kernel or filesystem cannot do idmapped overlay layers (before Linux 5.19)
//! is detected at start ([`IdRanges::probe`]) and falls back to the single shared range,
//! with a warning.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Result, RuntimeError};

/// At most this many sandbox ranges: with 65,536 ids each above 1,000,000, 60,000 ranges
/// and the zygotes' ids (above them) stay inside the 32-bit id space. Slots beyond it share
/// ranges (`slot % ranges`).
pub const MAX_RANGES: u32 = 60_000;

/// The host id ranges of sandboxes.
#[derive(Debug)]
pub struct IdRanges {
    /// First id of the template range.
    base: u32,
    /// Ids per range.
    count: u32,
    /// Number of sandbox ranges; 0 when every sandbox uses the template range.
    ranges: u32,
    /// Per sandbox range (keyed by its first id): the user namespace whose maps show the
    /// template range as that range.
    userns: Mutex<HashMap<u32, Arc<OwnedFd>>>,
    /// The overlay takes its layers from detached mounts (`/proc/self/fd/N`, Linux 6.15
    /// and later), so nothing is attached in the host's mount table for a create.
    detached: bool,
}

impl IdRanges {
    /// One range per slot (up to [`MAX_RANGES`]) when this host can mount idmapped overlay
    /// layers, tried in a scratch directory below `scratch_parent` (on the filesystem
    /// holding the templates); otherwise the shared template range, with a warning.
    pub fn probe(base: u32, count: u32, slots: u32, scratch_parent: &Path) -> Self {
        let ranges = slots.clamp(1, MAX_RANGES);
        let mut ids = IdRanges {
            base,
            count,
            ranges,
            userns: Mutex::new(HashMap::new()),
            detached: true,
        };
        // One server per data directory: a fixed name, so a probe cut short by a crash is
        // cleaned up by the next.
        let scratch = scratch_parent.join(".idmap-probe");
        let clean = || {
            let _ = crate::mounts::unmount_below(&scratch, &mut crate::timing::Steps::start());
            if crate::mounts::mounts_below(&scratch).is_empty() {
                let _ = fs::remove_dir_all(&scratch);
            }
        };
        clean();
        let mut res = ids.try_overlay(&scratch);
        clean();
        if let Err(e) = &res {
            tracing::debug!(error = %e, "no overlay on detached idmapped layers; attaching them");
            ids.detached = false;
            res = ids.try_overlay(&scratch);
            clean();
        }
        if let Err(e) = res {
            tracing::warn!(
                error = %e,
                "this host cannot mount idmapped overlay layers: every sandbox's root is the \
                 same host user, and per-user kernel quotas (pipe buffers, epoll watches) are \
                 shared between sandboxes"
            );
            ids.ranges = 0;
            ids.userns = Mutex::new(HashMap::new());
        }
        ids
    }

    /// Every sandbox in the template range (what [`IdRanges::probe`] falls back to).
    pub fn shared(base: u32, count: u32) -> Self {
        IdRanges {
            base,
            count,
            ranges: 0,
            userns: Mutex::new(HashMap::new()),
            detached: false,
        }
    }

    /// Whether sandboxes get ranges of their own.
    pub fn per_sandbox(&self) -> bool {
        self.ranges > 0
    }

    /// The first id of the template range.
    pub fn template_base(&self) -> u32 {
        self.base
    }

    /// The first host id of slot `slot`'s sandbox range.
    pub fn base_for_slot(&self, slot: u32) -> u32 {
        if self.ranges == 0 {
            return self.base;
        }
        self.base + self.count * (1 + slot % self.ranges)
    }

    /// How many ids from the template range's first on are the template's or sandboxes'
    /// (what a zygote maps, and where zygotes' own ids start).
    pub fn span(&self) -> u32 {
        self.count * (1 + self.ranges)
    }

    /// The first id of the range host id `id` belongs to (the template range for ids below
    /// the sandboxes').
    pub fn range_of(&self, id: u32) -> u32 {
        if id < self.base {
            return self.base;
        }
        self.base + (id - self.base) / self.count * self.count
    }

    /// The user namespace that shows the template range as the range starting at
    /// `range_base` (None for the template range itself: no mapping needed).
    fn layer_userns(&self, range_base: u32) -> Result<Option<Arc<OwnedFd>>> {
        if range_base == self.base {
            return Ok(None);
        }
        let mut cache = self.userns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = cache.get(&range_base) {
            return Ok(Some(Arc::clone(ns)));
        }
        let ns = Arc::new(shift_userns(self.base, range_base, self.count)?);
        cache.insert(range_base, Arc::clone(&ns));
        Ok(Some(ns))
    }

    /// Idmapped copies of the template's `layers` as a sandbox whose range starts at
    /// `range_base` sees them, for its overlay: detached when this host allows, else
    /// attached below `dir`. None for the template range: the layers serve as they are.
    pub(crate) fn map_layers(
        &self,
        range_base: u32,
        layers: &[PathBuf],
        dir: &Path,
    ) -> Result<Option<MappedLayers>> {
        let Some(ns) = self.layer_userns(range_base)? else {
            return Ok(None);
        };
        map_layers(layers, ns.as_fd(), (!self.detached).then_some(dir)).map(Some)
    }

    /// A detached copy of the mount at `src` (a volume, owned in the template range) as a
    /// sandbox whose range starts at `range_base` sees it: its ids shown in that range.
    pub(crate) fn map_volume(&self, range_base: u32, src: &Path) -> Result<OwnedFd> {
        let tree = match self.layer_userns(range_base)? {
            Some(ns) => hutch_sys::mount::clone_idmapped(src, ns.as_fd()),
            None => hutch_sys::mount::clone_tree(src),
        };
        tree.map_err(|e| RuntimeError::sys(format!("a copy of the volume at {}", src.display()), e))
    }

    /// The user namespace that shows the range starting at `range_base` as the template
    /// range (to copy a sandbox's files into a template layer).
    pub fn back_userns(&self, range_base: u32) -> Result<OwnedFd> {
        shift_userns(range_base, self.base, self.count)
    }

    /// Mounts an overlay as a sandbox would see it and checks the owners it shows.
    fn try_overlay(&self, scratch: &Path) -> Result<()> {
        let lower = scratch.join("lower");
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        let merged = scratch.join("merged");
        for d in [&lower, &upper, &work, &merged] {
            fs::create_dir_all(d).map_err(|e| RuntimeError::io("mkdir", d, e))?;
        }
        let file = lower.join("f");
        fs::write(&file, b"").map_err(|e| RuntimeError::io("write", &file, e))?;
        chown(&file, Some(self.base + 1), Some(self.base + 1))
            .map_err(|e| RuntimeError::io("chown", &file, e))?;
        let range = self.base_for_slot(0);
        let mapped = self
            .map_layers(range, &[lower], scratch)?
            .ok_or_else(|| RuntimeError::Spawn("no sandbox range".into()))?;
        let opts = crate::mounts::plan::overlay_options(&mapped.paths, &upper, &work);
        let res = hutch_sys::mount::mount(
            Some(Path::new("overlay")),
            &merged,
            Some("overlay"),
            0,
            Some(&opts),
        )
        .map_err(|e| RuntimeError::sys(format!("mount overlay ({opts})"), e));
        mapped.detach();
        res?;
        let owner = fs::metadata(merged.join("f"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .map_err(|e| RuntimeError::io("stat", &merged, e))?;
        if owner != range + 1 {
            return Err(RuntimeError::Spawn(format!(
                "an idmapped layer showed a file of {} as owned by {owner}, not {}",
                self.base + 1,
                range + 1
            )));
        }
        Ok(())
    }
}

/// A user namespace mapping ids `from..from+count` (read as ids inside it) to host ids
/// `to..to+count`: through an idmapped mount, files owned by `from + n` show as `to + n`.
fn shift_userns(from: u32, to: u32, count: u32) -> Result<OwnedFd> {
    hutch_sys::ns::user_namespace_with_maps(&format!("{from} {to} {count}\n")).map_err(|e| {
        RuntimeError::Spawn(format!(
            "a user namespace mapping {from}.. to {to}.. ({count} ids): {e}"
        ))
    })
}

/// Idmapped copies of template layers, held until an overlay has taken its own copies of
/// them: detached (named by `/proc/self/fd/N`, for this process only) or attached below a
/// directory.
#[derive(Debug)]
pub(crate) struct MappedLayers {
    /// How to name each layer, in the order given.
    pub(crate) paths: Vec<PathBuf>,
    /// The detached mounts (dropping them releases them).
    trees: Vec<OwnedFd>,
    /// Whether `paths` are mount points to detach.
    attached: bool,
}

impl MappedLayers {
    /// Releases the copies: detaches attached ones and removes their (empty) mount points.
    pub(crate) fn detach(self) {
        if self.attached {
            for p in &self.paths {
                let _ = hutch_sys::mount::detach(p);
                let _ = fs::remove_dir(p);
            }
        }
    }
}

/// An idmapped copy (through `userns`) of each of `layers`: attached at `dir/lower<i>` with
/// `dir`, else left detached. On failure nothing stays attached.
pub(crate) fn map_layers(
    layers: &[PathBuf],
    userns: BorrowedFd<'_>,
    dir: Option<&Path>,
) -> Result<MappedLayers> {
    let mut mapped = MappedLayers {
        paths: Vec::new(),
        trees: Vec::new(),
        attached: dir.is_some(),
    };
    for (i, layer) in layers.iter().enumerate() {
        let tree = match hutch_sys::mount::clone_idmapped(layer, userns) {
            Ok(t) => t,
            Err(e) => {
                mapped.detach();
                return Err(RuntimeError::sys(
                    format!("idmapped copy of {}", layer.display()),
                    e,
                ));
            }
        };
        let Some(dir) = dir else {
            mapped
                .paths
                .push(PathBuf::from(format!("/proc/self/fd/{}", tree.as_raw_fd())));
            mapped.trees.push(tree);
            continue;
        };
        let target = dir.join(format!("lower{i}"));
        let res = fs::create_dir(&target)
            .map_err(|e| RuntimeError::io("mkdir", &target, e))
            .and_then(|()| {
                hutch_sys::mount::attach(tree.as_fd(), &target)
                    .map_err(|e| RuntimeError::sys(format!("attach on {}", target.display()), e))
            });
        if let Err(e) = res {
            let _ = fs::remove_dir(&target);
            mapped.detach();
            return Err(e);
        }
        mapped.paths.push(target);
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_template_range_and_wrap_past_the_last() {
        let ids = IdRanges {
            base: 1_000_000,
            count: 65_536,
            ranges: 3,
            userns: Mutex::new(HashMap::new()),
            detached: false,
        };
        assert_eq!(ids.base_for_slot(0), 1_065_536);
        assert_eq!(ids.base_for_slot(2), 1_000_000 + 3 * 65_536);
        assert_eq!(ids.base_for_slot(3), 1_065_536);
        assert_eq!(ids.span(), 4 * 65_536);
        assert_eq!(ids.range_of(1_065_536 + 1000), 1_065_536);
        assert_eq!(ids.range_of(1_000_000 + 2 * 65_536 - 1), 1_065_536);
        assert_eq!(ids.range_of(12), 1_000_000);
        let shared = IdRanges::shared(1_000_000, 65_536);
        assert_eq!(shared.base_for_slot(7), 1_000_000);
        assert!(!shared.per_sandbox());
    }

    #[test]
    fn the_most_ranges_and_the_zygotes_fit_in_32_bits() {
        let top = 1_000_000 + 65_536 * (1 + u64::from(MAX_RANGES));
        assert!(top + 65_536 < u64::from(u32::MAX));
    }

    #[test]
    fn this_host_mounts_idmapped_overlay_layers() {
        use std::os::unix::fs::MetadataExt;
        if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            return;
        }
        let dir = crate::testutil::TempDir::new("idmap");
        let ids = IdRanges::probe(1_000_000, 65_536, 16, dir.path());
        assert!(ids.per_sandbox(), "see the warning above");
        assert!(crate::mounts::mounts_below(dir.path()).is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // Attached layers (older kernels) work too, and leave nothing attached.
        let attached = IdRanges {
            ranges: 16,
            detached: false,
            ..IdRanges::shared(1_000_000, 65_536)
        };
        let scratch = dir.path().join("attached");
        let res = attached.try_overlay(&scratch);
        let mounted = crate::mounts::mounts_below(&scratch);
        let _ = crate::mounts::unmount_below(&scratch, &mut crate::timing::Steps::start());
        res.unwrap();
        assert_eq!(
            mounted,
            vec![scratch.join("merged")],
            "only the overlay itself"
        );
    }
}
