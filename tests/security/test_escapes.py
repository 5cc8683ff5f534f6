"""Escapes tried as root inside a sandbox: kernel interfaces that reach the host (modules,
kexec, BPF, perf, swap, the clock, sysrq, core_pattern), devices, cgroup limits, the
network (the host, another sandbox, its own address) and the host's processes. Each attempt
must fail inside, and its outcome is also checked on the host where it would show.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from e2b import Sandbox

from conftest import DATA_DIR, SYSCALL_PRELUDE, python

SYSCALLS = (
    SYSCALL_PRELUDE
    + """
got = {
    "init_module": call(175, addr, 16, addr),
    "finit_module": call(313, 0, addr, 0),
    "kexec_load": call(246, 0, 0, 0, 0),
    "bpf_prog_load": call(321, 5, addr, 128),
    "perf_event_open": call(298, addr, 0, -1, -1, 0),
    "swapon": call(167, addr, 0),
    "clock_settime": call(227, 0, addr),
    "acct": call(163, addr),
    "settimeofday": call(164, addr, 0),
}
print(json.dumps(got))
"""
)


def sandbox_ip(sbx: Sandbox) -> str:
    out = sbx.commands.run("ip -4 -o addr show dev eth0").stdout
    return out.split()[3].split("/")[0]


def test_kernel_interfaces_that_reach_the_host_are_refused_as_root(sandbox: Sandbox) -> None:
    got = json.loads(python(sandbox, SYSCALLS, user="root"))
    assert all(v in ("EPERM", "EACCES", "ENOSYS") for v in got.values()), got


def write_as_root(sbx: Sandbox, writes: list[tuple[str, str]]) -> dict[str, str]:
    """Writes each value to its path as root inside `sbx` (paths that do not exist there are
    skipped); the outcome by path: "written" or the error."""
    out = python(
        sbx,
        f"""
import json, os
got = {{}}
for path, value in {writes!r}:
    if not os.path.exists(path):
        continue
    try:
        with open(path, "w") as f:
            f.write(value)
        got[path] = "written"
    except OSError as e:
        got[path] = e.strerror
print(json.dumps(got))
""",
        user="root",
    )
    got: dict[str, str] = json.loads(out)
    return got


def test_procfs_and_sysfs_knobs_of_the_host_cannot_be_written(sandbox: Sandbox) -> None:
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    got = write_as_root(
        sandbox,
        [
            ("/proc/sysrq-trigger", "h"),
            ("/proc/sys/kernel/core_pattern", "|/tmp/evil"),
            ("/proc/sys/vm/drop_caches", "3"),
            ("/proc/sys/kernel/modprobe", "/tmp/evil"),
            ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
            ("/proc/sys/fs/file-max", "100"),
        ],
    )
    assert "written" not in got.values(), got
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_no_host_device_is_reachable_and_none_can_be_made(sandbox: Sandbox) -> None:
    out = python(
        sandbox,
        """
import json, os
devs = sorted(os.listdir("/dev"))
got = {"devs": devs}
try:
    os.mknod("/tmp/disk", 0o600 | 0o060000, os.makedev(8, 0))
    try:
        open("/tmp/disk", "rb").read(512)
        got["mknod"] = "read"
    except OSError as e:
        got["mknod"] = "made, open: " + e.strerror
except OSError as e:
    got["mknod"] = e.strerror
print(json.dumps(got))
""",
        user="root",
    )
    got = json.loads(out)
    host_only = {"mem", "kmem", "port", "sda", "vda", "nvme0n1", "kvm", "loop-control", "mapper"}
    assert not host_only & set(got["devs"]), got["devs"]
    assert got["mknod"] != "read", got


def test_root_inside_cannot_raise_its_own_cgroup_limits(sandbox: Sandbox) -> None:
    got = write_as_root(
        sandbox,
        [
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"),
            ("/sys/fs/cgroup/memory.max", "max"),
            ("/sys/fs/cgroup/pids/pids.max", "max"),
            ("/sys/fs/cgroup/pids.max", "max"),
        ],
    )
    assert "written" not in got.values(), got


def test_the_network_reaches_neither_the_host_nor_another_sandbox(sandbox: Sandbox, other: Sandbox) -> None:
    target = sandbox_ip(other)
    gateway = sandbox.commands.run("ip -4 route show default").stdout.split()[2]
    out = python(
        sandbox,
        f"""
import json, socket
got = {{}}
for host, port in [("{gateway}", 49982), ("{gateway}", 22), ("{target}", 49983), ("{target}", 49999)]:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        got[f"{{host}}:{{port}}"] = "connected"
    except OSError as e:
        got[f"{{host}}:{{port}}"] = type(e).__name__
    finally:
        s.close()
print(json.dumps(got))
""",
        user="root",
    )
    got = json.loads(out)
    assert "connected" not in got.values(), got
    # Nor can root inside take another address (no NET_ADMIN over the host's network).
    r = sandbox.commands.run("ip addr add 10.201.255.1/32 dev eth0 2>&1 || echo refused", user="root")
    assert "refused" in r.stdout, r.stdout


def test_the_hosts_processes_names_and_files_stay_out_of_sight(sandbox: Sandbox) -> None:
    host_name = socket.gethostname()
    out = python(
        sandbox,
        """
import json, os, socket
cmds = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            cmds.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
os.system("hostname evil-host")
print(json.dumps({"cmds": cmds, "hostname": socket.gethostname()}))
""",
        user="root",
    )
    got = json.loads(out)
    assert not any("hutch serve" in c or "__spawn" in c for c in got["cmds"]), got["cmds"]
    assert len(got["cmds"]) < 30, got["cmds"]
    # Renaming is refused (no CAP_SYS_ADMIN) or stays in the sandbox's UTS namespace.
    assert got["hostname"] in ("evil-host", sandbox.sandbox_id), got["hostname"]
    assert socket.gethostname() == host_name
    # The server's database is not in the sandbox's filesystem.
    r = sandbox.commands.run(f"test -e {DATA_DIR}/hutch.db && echo visible || echo absent", user="root")
    assert r.stdout.strip() == "absent"
