//! The cgroup driver against fake hierarchies in a temp dir: plain directories and files
//! stand in for cgroupfs, so layout, limits, usage, freezing and cleanup are checked
//! without root.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::testutil::{get, put, TempDir};

const LIMITS: CgroupLimits = CgroupLimits {
    memory_bytes: 256 * 1024 * 1024,
    cpus: 1,
    pids: 100,
    io: None,
};

/// A v1 layout with each controller in its own directory below `root`.
fn v1_layout(root: &Path) -> CgroupLayout {
    CgroupLayout::V1 {
        controllers: V1_CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), root.join(c)))
            .collect(),
    }
}

fn v1(tmp: &TempDir) -> CgroupDriver {
    CgroupDriver::setup(&v1_layout(tmp.path()), "hutch").expect("v1 setup")
}

fn v2(tmp: &TempDir) -> CgroupDriver {
    CgroupDriver::setup(
        &CgroupLayout::V2 {
            root: tmp.path().to_path_buf(),
        },
        "hutch",
    )
    .expect("v2 setup")
}

#[test]
fn v1_setup_creates_the_parent_in_every_hierarchy_and_enables_hierarchical_memory() {
    let tmp = TempDir::new("cg-v1-setup");
    let driver = v1(&tmp);
    assert!(!driver.is_v2());
    for c in V1_CONTROLLERS {
        assert!(tmp.path().join(c).join("hutch").is_dir(), "{c}");
    }
    assert_eq!(get(tmp.path(), "memory/hutch/memory.use_hierarchy"), "1");
}

#[test]
fn v2_setup_creates_the_parent_and_delegates_controllers_on_each_level() {
    let tmp = TempDir::new("cg-v2-setup");
    let driver = v2(&tmp);
    assert!(driver.is_v2());
    assert!(tmp.path().join("hutch").is_dir());
    // A plain file keeps only the last write; on cgroupfs each write adds a controller.
    assert_eq!(get(tmp.path(), "cgroup.subtree_control"), "+io");
    assert_eq!(get(tmp.path(), "hutch/cgroup.subtree_control"), "+io");
}

#[test]
fn v1_create_writes_limits_into_each_controller_and_skips_absent_memsw() {
    let tmp = TempDir::new("cg-v1-create");
    let driver = v1(&tmp);
    driver.create("sbx", &LIMITS).expect("create");
    let r = tmp.path();
    assert_eq!(
        get(r, "memory/hutch/sbx/memory.limit_in_bytes"),
        "268435456"
    );
    assert!(!r
        .join("memory/hutch/sbx/memory.memsw.limit_in_bytes")
        .exists());
    assert_eq!(get(r, "cpu/hutch/sbx/cpu.cfs_period_us"), "100000");
    assert_eq!(get(r, "cpu/hutch/sbx/cpu.cfs_quota_us"), "100000");
    assert_eq!(get(r, "pids/hutch/sbx/pids.max"), "100");
    assert!(r.join("freezer/hutch/sbx").is_dir());
    assert!(r.join("cpuacct/hutch/sbx").is_dir());
}

#[test]
fn v1_create_forbids_swap_when_swap_accounting_exists_and_tolerates_an_existing_dir() {
    let tmp = TempDir::new("cg-v1-memsw");
    let driver = v1(&tmp);
    put(
        tmp.path(),
        "memory/hutch/sbx/memory.memsw.limit_in_bytes",
        "max",
    );
    driver.create("sbx", &LIMITS).expect("create");
    assert_eq!(
        get(tmp.path(), "memory/hutch/sbx/memory.memsw.limit_in_bytes"),
        "268435456"
    );
}

#[test]
fn v2_create_writes_unified_limits_and_zero_swap_when_offered() {
    let tmp = TempDir::new("cg-v2-create");
    let driver = v2(&tmp);
    put(tmp.path(), "hutch/sbx/memory.swap.max", "max");
    driver.create("sbx", &LIMITS).expect("create");
    let d = tmp.path().join("hutch/sbx");
    assert_eq!(get(&d, "memory.max"), "268435456");
    assert_eq!(get(&d, "memory.swap.max"), "0");
    assert_eq!(get(&d, "cpu.max"), "100000 100000");
    assert_eq!(get(&d, "pids.max"), "100");
}

#[test]
fn create_without_the_parent_reports_the_directory() {
    let tmp = TempDir::new("cg-noparent");
    let driver = CgroupDriver::V2 {
        parent: tmp.path().join("missing/hutch"),
        leaves: true,
    };
    let err = driver.create("sbx", &LIMITS).unwrap_err();
    assert!(err.to_string().starts_with("mkdir "), "{err}");
    assert!(err.to_string().contains("missing/hutch/sbx"), "{err}");
}

#[test]
fn comounted_controllers_give_one_directory_and_one_procs_file_each() {
    let tmp = TempDir::new("cg-comount");
    let shared = tmp.path().join("cpu,cpuacct");
    let layout = CgroupLayout::V1 {
        controllers: vec![
            ("cpu".into(), shared.clone()),
            ("cpuacct".into(), shared.clone()),
            ("memory".into(), tmp.path().join("memory")),
            ("pids".into(), tmp.path().join("pids")),
            ("freezer".into(), tmp.path().join("freezer")),
        ],
    };
    let driver = CgroupDriver::setup(&layout, "hutch").expect("setup");
    let dirs = driver.dirs("x");
    assert_eq!(dirs.len(), 4);
    assert!(dirs.contains(&shared.join("hutch/x")));
    let procs = driver.procs_files("x");
    assert_eq!(procs.len(), 4);
    assert!(procs.iter().all(|p| p.ends_with("hutch/x/cgroup.procs")));
    let tasks = driver.self_join_files("x");
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|p| p.ends_with("hutch/x/tasks")));
}

#[test]
fn v1_stats_read_usage_minus_inactive_file_cache_cpu_and_pids() {
    let tmp = TempDir::new("cg-v1-stats");
    let driver = v1(&tmp);
    let r = tmp.path();
    put(r, "memory/hutch/s/memory.usage_in_bytes", "10000\n");
    put(
        r,
        "memory/hutch/s/memory.stat",
        "cache 100\ntotal_cache 300\ntotal_inactive_file 4000\n",
    );
    put(r, "cpuacct/hutch/s/cpuacct.usage", "123456789\n");
    put(r, "pids/hutch/s/pids.current", "7\n");
    let st = driver.stats("s").expect("stats");
    assert_eq!(st.cpu_usage_ns, 123_456_789);
    assert_eq!(st.mem_used, 6000);
    assert_eq!(st.mem_cache, 300);
    assert_eq!(st.pids, 7);
}

#[test]
fn v2_stats_convert_usec_to_ns_and_never_underflow() {
    let tmp = TempDir::new("cg-v2-stats");
    let driver = v2(&tmp);
    let d = tmp.path().join("hutch/s");
    put(&d, "memory.current", "1000");
    put(
        &d,
        "memory.stat",
        "anon 900\nfile 640\ninactive_file 5000\n",
    );
    put(&d, "cpu.stat", "usage_usec 42\nuser_usec 40\n");
    put(&d, "pids.current", "3");
    let st = driver.stats("s").expect("stats");
    assert_eq!(st.cpu_usage_ns, 42_000);
    assert_eq!(st.mem_used, 0);
    assert_eq!(st.mem_cache, 640);
    assert_eq!(st.pids, 3);
}

#[test]
fn stats_report_an_unparsable_counter_with_its_path() {
    let tmp = TempDir::new("cg-badstat");
    let driver = v2(&tmp);
    put(tmp.path(), "hutch/s/memory.current", "lots");
    let err = driver.stats("s").unwrap_err();
    assert!(err.to_string().starts_with("parse "), "{err}");
    assert!(err.to_string().contains("memory.current"), "{err}");
}

#[test]
fn v1_freeze_and_thaw_round_trip_through_freezer_state() {
    let tmp = TempDir::new("cg-v1-freeze");
    let driver = v1(&tmp);
    driver.create("s", &LIMITS).expect("create");
    assert!(!driver.is_frozen("s"));
    driver.set_frozen("s", true).expect("freeze");
    assert_eq!(get(tmp.path(), "freezer/hutch/s/freezer.state"), "FROZEN");
    assert!(driver.is_frozen("s"));
    driver.set_frozen("s", false).expect("thaw");
    assert!(!driver.is_frozen("s"));
}

#[test]
fn v2_freeze_writes_cgroup_freeze_and_reads_the_events_file() {
    let tmp = TempDir::new("cg-v2-freeze");
    let driver = v2(&tmp);
    let d = tmp.path().join("hutch/s");
    put(&d, "cgroup.events", "populated 1\nfrozen 1\n");
    driver.set_frozen("s", true).expect("freeze");
    assert_eq!(get(&d, "cgroup.freeze"), "1");
    assert!(driver.is_frozen("s"));
    put(&d, "cgroup.events", "populated 1\nfrozen 0\n");
    driver.set_frozen("s", false).expect("thaw");
    assert_eq!(get(&d, "cgroup.freeze"), "0");
    assert!(!driver.is_frozen("s"));
}

#[test]
fn v2_kill_all_uses_cgroup_kill() {
    let tmp = TempDir::new("cg-v2-kill");
    let driver = v2(&tmp);
    let d = tmp.path().join("hutch/s");
    put(&d, "cgroup.events", "populated 1\nfrozen 0\n");
    put(&d, "cgroup.kill", "");
    driver.kill_all("s");
    assert_eq!(get(&d, "cgroup.kill"), "1");
}

#[test]
fn kill_all_of_a_missing_sandbox_does_nothing() {
    let tmp = TempDir::new("cg-kill-missing");
    let driver = v1(&tmp);
    driver.kill_all("nope");
    assert!(!tmp.path().join("memory/hutch/nope").exists());
}

#[test]
fn pids_reads_cgroup_procs_and_skips_garbage() {
    let tmp = TempDir::new("cg-pids");
    let driver = v1(&tmp);
    put(tmp.path(), "pids/hutch/s/cgroup.procs", "12\n 34 \nx\n");
    assert_eq!(driver.pids("s"), [12, 34]);
    assert!(driver.pids("absent").is_empty());
}

#[test]
fn remove_deletes_every_directory_and_is_idempotent() {
    let tmp = TempDir::new("cg-remove");
    let driver = v1(&tmp);
    for d in driver.dirs("s") {
        fs::create_dir(&d).expect("mkdir");
    }
    driver.remove("s").expect("remove");
    assert!(driver.dirs("s").iter().all(|d| !d.exists()));
    driver.remove("s").expect("second remove");
}

#[test]
fn existing_lists_sandbox_directories_across_hierarchies_once() {
    let tmp = TempDir::new("cg-existing");
    let driver = v1(&tmp);
    let r = tmp.path();
    fs::create_dir_all(r.join("memory/hutch/b")).expect("mkdir");
    fs::create_dir_all(r.join("pids/hutch/b")).expect("mkdir");
    fs::create_dir_all(r.join("cpu/hutch/a")).expect("mkdir");
    put(r, "memory/hutch/memory.limit_in_bytes", "1");
    assert_eq!(driver.existing(), ["a", "b"]);
}

#[test]
fn v1_dir_of_an_unknown_controller_is_empty() {
    let driver = CgroupDriver::V1 {
        parents: vec![("memory".into(), PathBuf::from("/cg/memory/hutch"))],
    };
    assert_eq!(driver.dirs("s"), [PathBuf::from("/cg/memory/hutch/s")]);
    assert_eq!(driver.dir("pids", "s"), PathBuf::new());
}

/// True when the tests run as root (effective uid 0), read from `/proc/self/status`.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_owned();
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Removes a real parent cgroup (and its sandbox child) even when the test fails.
struct RealParent(CgroupDriver);

impl Drop for RealParent {
    fn drop(&mut self) {
        let _ = self.0.remove("t");
        let parents: Vec<PathBuf> = match &self.0 {
            CgroupDriver::V1 { parents } => parents.iter().map(|(_, p)| p.clone()).collect(),
            CgroupDriver::V2 { parent, .. } => vec![parent.clone()],
        };
        for p in parents {
            let _ = fs::remove_dir(p);
        }
    }
}

#[test]
fn real_host_cgroup_round_trip_when_root() {
    if !running_as_root() {
        eprintln!("skipped: needs root to create cgroups");
        return;
    }
    let name = format!("hutch-rtest-{}", std::process::id());
    let driver = match CgroupDriver::detect(&name) {
        Ok(d) => RealParent(d),
        Err(e) => {
            eprintln!("skipped: no usable cgroup hierarchy here: {e}");
            return;
        }
    };
    let d = &driver.0;
    d.create("t", &LIMITS).expect("create");
    let st = d.stats("t").expect("stats");
    assert_eq!(st.pids, 0);
    d.set_frozen("t", true).expect("freeze an empty cgroup");
    assert!(d.is_frozen("t"));
    d.set_frozen("t", false).expect("thaw");
    assert_eq!(d.existing(), ["t"]);
    d.remove("t").expect("remove");
    assert!(d.existing().is_empty());
}

#[test]
fn a_low_priority_sandbox_gets_the_least_cpu_share_and_back() {
    let tmp = TempDir::new("cg-prio");
    let v1d = v1(&tmp);
    v1d.create("sbx", &LIMITS).expect("create");
    put(tmp.path(), "cpu/hutch/sbx/cpu.shares", "1024");
    v1d.set_low_priority("sbx", true).expect("low");
    assert_eq!(get(tmp.path(), "cpu/hutch/sbx/cpu.shares"), "2");
    v1d.set_low_priority("sbx", false).expect("normal");
    assert_eq!(get(tmp.path(), "cpu/hutch/sbx/cpu.shares"), "1024");

    let tmp2 = TempDir::new("cg-prio-v2");
    let v2d = v2(&tmp2);
    v2d.create("sbx", &LIMITS).expect("create");
    // Without the cpu controller there is no weight to set, and that is not an error.
    v2d.set_low_priority("sbx", true)
        .expect("no cpu controller");
    put(tmp2.path(), "hutch/sbx/cpu.weight", "100");
    v2d.set_low_priority("sbx", true).expect("low");
    assert_eq!(get(tmp2.path(), "hutch/sbx/cpu.weight"), "1");
}

#[test]
fn v1_create_gives_the_memory_hierarchy_a_work_child_below_the_sandboxs_limit() {
    let tmp = TempDir::new("cg-v1-work");
    let driver = v1(&tmp);
    put(
        tmp.path(),
        "memory/hutch/sbx/work/memory.memsw.limit_in_bytes",
        "max",
    );
    driver.create("sbx", &LIMITS).expect("create");
    let r = tmp.path();
    let work = (256 - 32) * 1024 * 1024;
    assert_eq!(
        get(r, "memory/hutch/sbx/work/memory.limit_in_bytes"),
        work.to_string()
    );
    assert_eq!(
        get(r, "memory/hutch/sbx/work/memory.memsw.limit_in_bytes"),
        work.to_string()
    );
    // Only the memory hierarchy has one.
    assert!(!r.join("pids/hutch/sbx/work").exists());
    assert_eq!(
        driver.work_join_file("sbx"),
        Some(r.join("memory/hutch/sbx/work/tasks"))
    );
    assert!(driver.agent_procs_files("sbx").is_empty());
    let work_procs = driver.work_procs_files("sbx");
    assert!(work_procs.contains(&r.join("memory/hutch/sbx/work/cgroup.procs")));
    assert!(work_procs.contains(&r.join("pids/hutch/sbx/cgroup.procs")));
}

#[test]
fn v2_create_puts_the_agent_and_its_processes_in_leaves_of_their_own() {
    let tmp = TempDir::new("cg-v2-leaves");
    let driver = v2(&tmp);
    put(tmp.path(), "hutch/sbx/work/memory.swap.max", "max");
    driver.create("sbx", &LIMITS).expect("create");
    let d = tmp.path().join("hutch/sbx");
    assert_eq!(get(&d, "cgroup.subtree_control"), "+memory");
    assert_eq!(get(&d, "agent/memory.min"), (32 << 20).to_string());
    assert_eq!(get(&d, "work/memory.max"), ((256 - 32) << 20).to_string());
    assert_eq!(get(&d, "work/memory.swap.max"), "0");
    assert_eq!(
        driver.agent_procs_files("sbx"),
        [d.join("agent/cgroup.procs")]
    );
    assert_eq!(
        driver.work_join_file("sbx"),
        Some(d.join("work/cgroup.procs"))
    );
    assert_eq!(
        driver.work_procs_files("sbx"),
        [d.join("work/cgroup.procs")]
    );
}

#[test]
fn pids_and_remove_cover_the_leaves() {
    let tmp = TempDir::new("cg-leaves");
    let driver = v2(&tmp);
    let d = tmp.path().join("hutch/s");
    put(&d, "agent/cgroup.procs", "7\n");
    put(&d, "work/cgroup.procs", "8\n9\n");
    assert_eq!(driver.pids("s"), [7, 8, 9]);
    for f in ["agent/cgroup.procs", "work/cgroup.procs"] {
        fs::remove_file(d.join(f)).expect("rm");
    }
    driver.remove("s").expect("remove");
    assert!(!d.exists());
}

#[test]
fn v2_without_favordynmods_keeps_the_agent_with_its_processes() {
    let tmp = TempDir::new("cg-v2-noleaves");
    let CgroupDriver::V2 { parent, .. } = v2(&tmp) else {
        panic!("v2");
    };
    let driver = CgroupDriver::V2 {
        parent: parent.clone(),
        leaves: false,
    };
    driver.create("sbx", &LIMITS).expect("create");
    let d = parent.join("sbx");
    assert!(!d.join("work").exists() && !d.join("agent").exists());
    assert_eq!(driver.work_join_file("sbx"), None);
    assert_eq!(driver.agent_procs_files("sbx"), [d.join("cgroup.procs")]);
    assert_eq!(driver.work_procs_files("sbx"), [d.join("cgroup.procs")]);
}

#[test]
fn favordynmods_is_read_from_the_cgroup2_mount_options() {
    let with = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot\n";
    let without = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    let root = Path::new("/sys/fs/cgroup");
    assert!(detect::favors_dynmods(with, root));
    assert!(!detect::favors_dynmods(without, root));
    assert!(!detect::favors_dynmods(with, Path::new("/elsewhere")));
}
