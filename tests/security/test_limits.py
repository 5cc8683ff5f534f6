"""Resources the kernel hands out per process or per cgroup, attacked from inside: core
dumps (which would carry a sandbox's memory to the host's dump helper, running as host
root) and socket buffers (host memory no cgroup limit would bound on cgroup v1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from e2b import Sandbox

from conftest import DATA_DIR, cgroups_of, python


def test_no_process_can_dump_core_or_allow_itself_to(sandbox: Sandbox) -> None:
    for user in ("user", "root"):
        out = python(
            sandbox,
            """
import json, os, resource, signal
got = {"limit": resource.getrlimit(resource.RLIMIT_CORE)}
try:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    got["raise"] = "raised"
except (ValueError, OSError) as e:
    got["raise"] = "refused"
os.makedirs("/tmp/crash", exist_ok=True)
os.chdir("/tmp/crash")
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(0)
_, status = os.waitpid(pid, 0)
got["signalled"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
got["dumped"] = os.WCOREDUMP(status)
got["files"] = os.listdir(".")
print(json.dumps(got))
""",
            user=user,
        )
        got = json.loads(out)
        assert got == {
            "limit": [1, 1],
            "raise": "refused",
            "signalled": True,
            "dumped": False,
            "files": [],
        }, (user, got)
        sandbox.commands.run("rm -rf /tmp/crash", user="root")


def test_socket_buffers_count_against_the_sandboxs_memory_limit(sandbox: Sandbox) -> None:
    cgroups = cgroups_of(sandbox)
    if "memory" not in cgroups:
        # cgroup v2 charges socket memory to the cgroup always; memory.max bounds it.
        unified = Path("/sys/fs/cgroup") / cgroups[""].lstrip("/")
        assert (unified / "memory.max").read_text().strip() != "max"
        return
    memcg = Path("/sys/fs/cgroup/memory") / cgroups["memory"].lstrip("/")
    limit = int((memcg / "memory.limit_in_bytes").read_text())
    tcp = memcg / "memory.kmem.tcp.limit_in_bytes"
    assert int(tcp.read_text()) == limit
    # A sandbox filling socket buffers is charged for them.
    python(
        sandbox,
        """
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
c.setblocking(False)
sent = 0
try:
    while sent < 64 << 20:
        sent += c.send(b"x" * 65536)
except BlockingIOError:
    pass
print(sent)
""",
        user="user",
    )
    assert int((memcg / "memory.kmem.tcp.max_usage_in_bytes").read_text()) > 0


def test_a_sandboxs_disk_io_is_throttled_at_its_own_device(sandbox: Sandbox) -> None:
    # scripts/test.sh starts the server with --sandbox-disk-read-mbps 4000
    # --sandbox-disk-write-mbps 3000 --sandbox-disk-iops 200000.
    disk = DATA_DIR / "sandboxes" / sandbox.sandbox_id / "disk"
    dev = os.stat(disk).st_dev
    device = f"{os.major(dev)}:{os.minor(dev)}"
    assert os.major(dev) == 7, "a sandbox's disk is a loop device"
    cgroups = cgroups_of(sandbox)
    if "blkio" in cgroups:
        blkio = Path("/sys/fs/cgroup/blkio") / cgroups["blkio"].lstrip("/")
        got = {
            name: (blkio / f"blkio.throttle.{name}_device").read_text().split()
            for name in ("read_bps", "write_bps", "read_iops", "write_iops")
        }
        assert got == {
            "read_bps": [device, "4000000000"],
            "write_bps": [device, "3000000000"],
            "read_iops": [device, "200000"],
            "write_iops": [device, "200000"],
        }
    else:
        unified = Path("/sys/fs/cgroup") / cgroups[""].lstrip("/")
        assert (unified / "io.max").read_text().split() == [
            device,
            "rbps=4000000000",
            "wbps=3000000000",
            "riops=200000",
            "wiops=200000",
        ]
    # The sandbox still writes to its disk, and what it writes is charged there.
    sandbox.commands.run("dd if=/dev/zero of=/home/user/io.bin bs=1M count=16 oflag=direct", timeout=60)
    sandbox.commands.run("rm /home/user/io.bin")
