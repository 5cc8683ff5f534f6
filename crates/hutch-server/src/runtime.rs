//! [`SandboxRuntime`]: what the service needs from the host's sandbox runtime, so the
//! service's bookkeeping (slots, quotas, timeouts, recovery) runs the same over the real
//! [`Runtime`] and over an in-memory fake in tests.
//!
//! Every method blocks; async callers run them on the blocking pool.

use std::path::Path;

use hutch_runtime::runtime::{Usage, Zygote, ZygoteSpec};
use hutch_runtime::{Runtime, RuntimeError, SandboxNet, SandboxSpec, Spawned};

/// Result of runtime operations.
pub type RuntimeResult<T> = std::result::Result<T, RuntimeError>;

/// The sandbox operations the service uses.
pub trait SandboxRuntime: Send + Sync + 'static {
    /// Creates and starts a sandbox; on failure nothing of it is left behind.
    fn create(&self, spec: &SandboxSpec) -> RuntimeResult<Spawned>;

    /// Kills sandbox `id` and releases everything it holds (idempotent). `init` is its
    /// PID 1's (pid, start time) when known.
    fn destroy(
        &self,
        id: &str,
        net: Option<&SandboxNet>,
        init: Option<(i32, u64)>,
    ) -> RuntimeResult<()>;

    /// Freezes every process of sandbox `id`.
    fn pause(&self, id: &str) -> RuntimeResult<()>;

    /// Thaws sandbox `id`.
    fn resume(&self, id: &str) -> RuntimeResult<()>;

    /// Usage figures of sandbox `id`.
    fn usage(&self, id: &str) -> RuntimeResult<Usage>;

    /// Copies sandbox `id`'s upper dir to `dest` as a layer; with `stop` (its init) every
    /// process of it is ended first, else the caller keeps it frozen meanwhile.
    fn commit_upper(&self, id: &str, stop: Option<(i32, u64)>, dest: &Path) -> RuntimeResult<()>;

    /// Ids of sandboxes with something left on the host.
    fn leftover_ids(&self) -> Vec<String>;

    /// Slots whose host-side network pieces exist.
    fn leftover_slots(&self) -> Vec<u32>;

    /// Removes the host side of a slot's network no sandbox uses and lifts its no-egress rule.
    fn release_slot(&self, slot: u32);

    /// Allows or denies egress from the sandbox in `slot`.
    fn set_internet(&self, slot: u32, allowed: bool) -> RuntimeResult<()>;

    /// Gives the sandbox in `slot` an egress filter, or none.
    fn set_egress_filter(
        &self,
        slot: u32,
        filter: Option<hutch_runtime::net::EgressFilter>,
    ) -> RuntimeResult<()>;

    /// Gives sandbox `id` the least CPU share (`low`, while it warms up for a pool) or
    /// the default one.
    fn set_low_priority(&self, id: &str, low: bool) -> RuntimeResult<()>;

    /// Network facts of a slot.
    fn net_for(&self, slot: u32) -> SandboxNet;

    /// Number of slots.
    fn slots(&self) -> u32;

    /// The first host id above every sandbox's id range: zygotes' own ids start there.
    fn ids_end(&self) -> u32;

    /// Bytes the disks of the sandboxes on this host (pooled ones included) may still take.
    fn disks_unfilled(&self) -> u64;

    /// Where per-sandbox and template state lives (`<data>`).
    fn state_dir(&self) -> &Path;

    /// True while the process `pid` started at `start` runs (a sandbox's init).
    fn is_alive(&self, pid: i32, start: u64) -> bool;

    /// Reaps `pid` if it is an exited child of the server, so it does not stay a zombie.
    fn reap(&self, pid: i32);

    /// Starts a zygote (see [`hutch_runtime::zygote`]).
    fn start_zygote(&self, spec: &ZygoteSpec) -> RuntimeResult<Zygote>;

    /// Moves host process `pid` into sandbox `id`'s cgroup.
    fn join_cgroup(&self, id: &str, pid: i32) -> RuntimeResult<()>;

    /// Ends process `pid` (when it is still the one started at `start`) and reaps it.
    fn end_process(&self, pid: i32, start: u64);

    /// Reads on the agent log of sandbox `id`, adopted after a restart (with
    /// `--agent-log`; best effort).
    fn reattach_log(&self, _id: &str) {}

    /// Readies sandbox `id`'s disk for a large write that is about to come (best effort).
    fn before_large_write(&self, _id: &str) {}

    /// Gives up whatever is kept for sandboxes to come (emptied disks): the server stops.
    fn release_kept(&self) {}

    /// Whether the server may take descriptors of files from a sandbox's agent for large
    /// downloads and uploads (not under gVisor, whose descriptors are not host ones).
    fn hands_off_files(&self) -> bool {
        true
    }
}

impl SandboxRuntime for Runtime {
    fn hands_off_files(&self) -> bool {
        self.config().gvisor.is_none()
    }

    fn release_kept(&self) {
        Runtime::release_kept_disks(self);
    }

    fn before_large_write(&self, id: &str) {
        if let Err(e) = Runtime::before_large_write(self, id) {
            tracing::debug!(sandbox = %id, error = %e, "the sandbox disk stays on the page cache");
        }
    }

    fn create(&self, spec: &SandboxSpec) -> RuntimeResult<Spawned> {
        Runtime::create(self, spec)
    }

    fn destroy(
        &self,
        id: &str,
        net: Option<&SandboxNet>,
        init: Option<(i32, u64)>,
    ) -> RuntimeResult<()> {
        Runtime::destroy(self, id, net, init)
    }

    fn pause(&self, id: &str) -> RuntimeResult<()> {
        Runtime::pause(self, id)
    }

    fn resume(&self, id: &str) -> RuntimeResult<()> {
        Runtime::resume(self, id)
    }

    fn usage(&self, id: &str) -> RuntimeResult<Usage> {
        Runtime::usage(self, id)
    }

    fn commit_upper(&self, id: &str, stop: Option<(i32, u64)>, dest: &Path) -> RuntimeResult<()> {
        Runtime::commit_upper(self, id, stop, dest)
    }

    fn leftover_ids(&self) -> Vec<String> {
        Runtime::leftover_ids(self)
    }

    fn leftover_slots(&self) -> Vec<u32> {
        Runtime::leftover_slots(self)
    }

    fn release_slot(&self, slot: u32) {
        let net = self.net_for(slot);
        hutch_runtime::net::remove_host_side(&net);
        let _ = hutch_runtime::net::set_internet(net.sandbox_ip, true);
        let _ = Runtime::set_egress_filter(self, net.sandbox_ip, None);
    }

    fn set_internet(&self, slot: u32, allowed: bool) -> RuntimeResult<()> {
        Runtime::set_internet(self, self.net_for(slot).sandbox_ip, allowed)
    }

    fn set_egress_filter(
        &self,
        slot: u32,
        filter: Option<hutch_runtime::net::EgressFilter>,
    ) -> RuntimeResult<()> {
        Runtime::set_egress_filter(self, self.net_for(slot).sandbox_ip, filter)
    }

    fn set_low_priority(&self, id: &str, low: bool) -> RuntimeResult<()> {
        self.cgroups().set_low_priority(id, low)
    }

    fn net_for(&self, slot: u32) -> SandboxNet {
        Runtime::net_for(self, slot)
    }

    fn slots(&self) -> u32 {
        Runtime::slots(self)
    }

    fn ids_end(&self) -> u32 {
        Runtime::ids_end(self)
    }

    fn disks_unfilled(&self) -> u64 {
        Runtime::disks_unfilled(self)
    }

    fn state_dir(&self) -> &Path {
        &self.config().state_dir
    }

    fn is_alive(&self, pid: i32, start: u64) -> bool {
        hutch_runtime::proc::is_alive(pid, start)
    }

    fn reap(&self, pid: i32) {
        let _ = hutch_runtime::proc::try_reap(pid);
    }

    fn start_zygote(&self, spec: &ZygoteSpec) -> RuntimeResult<Zygote> {
        Runtime::start_zygote(self, spec)
    }

    fn join_cgroup(&self, id: &str, pid: i32) -> RuntimeResult<()> {
        Runtime::join_cgroup(self, id, pid)
    }

    fn reattach_log(&self, id: &str) {
        Runtime::reattach_log(self, id)
    }

    fn end_process(&self, pid: i32, start: u64) {
        hutch_runtime::proc::signal(pid, start, hutch_sys::signal::Signal::KILL);
        // A zygote is the server's child once its helper has exited.
        for _ in 0..50 {
            if !matches!(
                hutch_runtime::proc::try_reap(pid),
                hutch_runtime::proc::Reap::Running
            ) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
