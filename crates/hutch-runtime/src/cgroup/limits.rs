//! What a sandbox's limits look like as cgroup files, in v1 and v2 syntax.

/// The CFS period hutch uses, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Limits applied to a sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit in bytes (swap is not allowed on top).
    pub memory_bytes: u64,
    /// CPU quota as a number of CPUs.
    pub cpus: u32,
    /// Maximum number of tasks.
    pub pids: u64,
    /// Throttling of the sandbox's own disk, when the operator set any.
    pub io: Option<IoLimits>,
}

/// Limits on the I/O a sandbox sends to its disk (its loop device). 0 = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoLimits {
    /// The disk's block device, `(major, minor)`.
    pub device: (u32, u32),
    /// Bytes read per second.
    pub read_bps: u64,
    /// Bytes written per second.
    pub write_bps: u64,
    /// Read operations per second.
    pub read_iops: u64,
    /// Write operations per second.
    pub write_iops: u64,
}

impl IoLimits {
    fn device(&self) -> String {
        format!("{}:{}", self.device.0, self.device.1)
    }

    /// v1: one `blkio.throttle.*_device` line per limit that is set.
    fn v1_files(&self) -> Vec<LimitFile> {
        [
            ("blkio.throttle.read_bps_device", self.read_bps),
            ("blkio.throttle.write_bps_device", self.write_bps),
            ("blkio.throttle.read_iops_device", self.read_iops),
            ("blkio.throttle.write_iops_device", self.write_iops),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(f, v)| optional("blkio", f, format!("{} {v}", self.device())))
        .collect()
    }

    /// v2: one `io.max` line, when any limit is set.
    fn v2_files(&self) -> Vec<LimitFile> {
        let all = [
            self.read_bps,
            self.write_bps,
            self.read_iops,
            self.write_iops,
        ];
        if all.iter().all(|v| *v == 0) {
            return Vec::new();
        }
        let v = |n: u64| {
            if n == 0 {
                "max".to_string()
            } else {
                n.to_string()
            }
        };
        vec![optional(
            "",
            "io.max",
            format!(
                "{} rbps={} wbps={} riops={} wiops={}",
                self.device(),
                v(self.read_bps),
                v(self.write_bps),
                v(self.read_iops),
                v(self.write_iops)
            ),
        )]
    }
}

/// One value to write into a sandbox's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFile {
    /// The v1 controller whose directory holds the file (unused on v2).
    pub controller: &'static str,
    /// The file name.
    pub file: &'static str,
    /// What to write.
    pub value: String,
    /// Write only if the kernel offers the file (swap accounting is optional).
    pub only_if_present: bool,
}

fn file(controller: &'static str, file: &'static str, value: impl ToString) -> LimitFile {
    LimitFile {
        controller,
        file,
        value: value.to_string(),
        only_if_present: false,
    }
}

fn optional(controller: &'static str, name: &'static str, value: impl ToString) -> LimitFile {
    LimitFile {
        only_if_present: true,
        ..file(controller, name, value)
    }
}

impl CgroupLimits {
    /// The CFS quota per period: at least one CPU's worth.
    pub fn cpu_quota_us(&self) -> u64 {
        u64::from(self.cpus.max(1)) * CPU_PERIOD_US
    }

    /// The files to write on a v1 host, in order.
    pub fn v1_files(&self) -> Vec<LimitFile> {
        let mut files = vec![
            file("memory", "memory.limit_in_bytes", self.memory_bytes),
            // memsw exists only with swap accounting; where it does, forbid swap on top.
            optional("memory", "memory.memsw.limit_in_bytes", self.memory_bytes),
            // v1 charges socket buffers to a memory cgroup only once its TCP limit is set
            // (v2 always does): without it a sandbox's sockets take host memory unbounded.
            optional(
                "memory",
                "memory.kmem.tcp.limit_in_bytes",
                self.memory_bytes,
            ),
            file("cpu", "cpu.cfs_period_us", CPU_PERIOD_US),
            file("cpu", "cpu.cfs_quota_us", self.cpu_quota_us()),
            file("pids", "pids.max", self.pids),
        ];
        files.extend(self.io.iter().flat_map(IoLimits::v1_files));
        files
    }

    /// The files to write on a v2 host, in order.
    pub fn v2_files(&self) -> Vec<LimitFile> {
        let mut files = vec![
            file("", "memory.max", self.memory_bytes),
            optional("", "memory.swap.max", 0),
            file(
                "",
                "cpu.max",
                format!("{} {CPU_PERIOD_US}", self.cpu_quota_us()),
            ),
            file("", "pids.max", self.pids),
        ];
        files.extend(self.io.iter().flat_map(IoLimits::v2_files));
        files
    }
}

/// Memory kept for the agent out of a sandbox's limit: everything it starts lives in a
/// child cgroup limited to the rest, so their OOM kills never reach the agent.
pub const AGENT_RESERVE_BYTES: u64 = 32 << 20;

impl CgroupLimits {
    /// What the agent's reserve is for these limits: [`AGENT_RESERVE_BYTES`], but never
    /// more than an eighth of the sandbox's memory.
    pub fn agent_reserve(&self) -> u64 {
        AGENT_RESERVE_BYTES.min(self.memory_bytes / 8)
    }

    /// The limit of the work leaf (what the agent starts): the sandbox's, less the
    /// agent's reserve.
    pub fn work_memory_bytes(&self) -> u64 {
        self.memory_bytes - self.agent_reserve()
    }

    /// v1: the files of the memory hierarchy's `work` child, in order.
    pub fn v1_work_files(&self) -> Vec<LimitFile> {
        let work = self.work_memory_bytes();
        vec![
            file("memory", "memory.limit_in_bytes", work),
            optional("memory", "memory.memsw.limit_in_bytes", work),
        ]
    }

    /// v2: the files of the `agent` and `work` leaves, as (leaf, file) pairs in order.
    pub fn v2_leaf_files(&self) -> Vec<(&'static str, LimitFile)> {
        vec![
            ("agent", file("", "memory.min", self.agent_reserve())),
            ("work", file("", "memory.max", self.work_memory_bytes())),
            ("work", optional("", "memory.swap.max", 0)),
        ]
    }
}

/// The value of `key` in a flat-keyed cgroup file (`memory.stat`, `cpu.stat`).
pub fn stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_bytes: 512 * 1024 * 1024,
        cpus: 2,
        pids: 1024,
        io: None,
    };

    fn as_pairs(files: &[LimitFile]) -> Vec<(&str, &str, &str, bool)> {
        files
            .iter()
            .map(|f| (f.controller, f.file, f.value.as_str(), f.only_if_present))
            .collect()
    }

    #[test]
    fn the_agent_keeps_a_reserve_its_processes_cannot_take() {
        assert_eq!(LIMITS.agent_reserve(), 32 << 20);
        assert_eq!(LIMITS.work_memory_bytes(), 480 << 20);
        let small = CgroupLimits {
            memory_bytes: 128 << 20,
            ..LIMITS
        };
        assert_eq!(small.agent_reserve(), 16 << 20);
        assert_eq!(
            as_pairs(&LIMITS.v1_work_files()),
            [
                ("memory", "memory.limit_in_bytes", "503316480", false),
                ("memory", "memory.memsw.limit_in_bytes", "503316480", true),
            ]
        );
        let v2: Vec<(&str, &str, String)> = LIMITS
            .v2_leaf_files()
            .into_iter()
            .map(|(leaf, f)| (leaf, f.file, f.value))
            .collect();
        assert_eq!(
            v2,
            [
                ("agent", "memory.min", "33554432".to_string()),
                ("work", "memory.max", "503316480".to_string()),
                ("work", "memory.swap.max", "0".to_string()),
            ]
        );
    }

    #[test]
    fn v1_files_set_memory_without_swap_cfs_quota_and_pids() {
        assert_eq!(
            as_pairs(&LIMITS.v1_files()),
            [
                ("memory", "memory.limit_in_bytes", "536870912", false),
                ("memory", "memory.memsw.limit_in_bytes", "536870912", true),
                (
                    "memory",
                    "memory.kmem.tcp.limit_in_bytes",
                    "536870912",
                    true
                ),
                ("cpu", "cpu.cfs_period_us", "100000", false),
                ("cpu", "cpu.cfs_quota_us", "200000", false),
                ("pids", "pids.max", "1024", false),
            ]
        );
    }

    #[test]
    fn v2_files_use_unified_syntax() {
        assert_eq!(
            as_pairs(&LIMITS.v2_files()),
            [
                ("", "memory.max", "536870912", false),
                ("", "memory.swap.max", "0", true),
                ("", "cpu.max", "200000 100000", false),
                ("", "pids.max", "1024", false),
            ]
        );
    }

    #[test]
    fn disk_limits_name_the_sandboxs_device_and_only_what_is_set() {
        let io = IoLimits {
            device: (7, 3),
            write_bps: 100 << 20,
            read_iops: 500,
            ..IoLimits::default()
        };
        let l = CgroupLimits {
            io: Some(io),
            ..LIMITS
        };
        let v1 = l.v1_files();
        assert_eq!(
            as_pairs(&v1[v1.len() - 2..]),
            [
                (
                    "blkio",
                    "blkio.throttle.write_bps_device",
                    "7:3 104857600",
                    true
                ),
                ("blkio", "blkio.throttle.read_iops_device", "7:3 500", true),
            ]
        );
        let v2 = l.v2_files();
        assert_eq!(
            as_pairs(&v2[v2.len() - 1..]),
            [(
                "",
                "io.max",
                "7:3 rbps=max wbps=104857600 riops=500 wiops=max",
                true
            )]
        );
        let none = CgroupLimits {
            io: Some(IoLimits {
                device: (7, 3),
                ..IoLimits::default()
            }),
            ..LIMITS
        };
        assert_eq!(none.v1_files(), LIMITS.v1_files());
        assert_eq!(none.v2_files(), LIMITS.v2_files());
    }

    #[test]
    fn zero_cpus_still_gets_one_cpu_of_quota() {
        let l = CgroupLimits { cpus: 0, ..LIMITS };
        assert_eq!(l.cpu_quota_us(), 100_000);
    }

    #[test]
    fn stat_field_finds_exact_keys_only() {
        let stat = "cache 4096\ntotal_cache 8192\ninactive_file 12\nbad x\n";
        assert_eq!(stat_field(stat, "cache"), Some(4096));
        assert_eq!(stat_field(stat, "total_cache"), Some(8192));
        assert_eq!(stat_field(stat, "inactive_file"), Some(12));
        assert_eq!(stat_field(stat, "bad"), None);
        assert_eq!(stat_field(stat, "missing"), None);
    }
}
