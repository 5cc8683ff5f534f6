"""Abuse under limits: bombs of every kind run inside a sandbox, each bounded so that even
unchecked it could not harm the machine, while the server's `/health` and a neighbouring
sandbox's code interpreter keep answering. Each outcome is checked where it shows: the
error the bomb meets inside, the sandbox's cgroup on the host, and the neighbour.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox
from e2b_code_interpreter.code_interpreter_sync import Sandbox as CodeSandbox

from conftest import DATA_DIR, host_pid_of, python, record, wait_for_file

API_URL = os.environ["E2B_API_URL"]


@pytest.fixture(scope="module")
def neighbour() -> Iterator[CodeSandbox]:
    sbx = CodeSandbox.create(timeout=600)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


def still_served(neighbour: CodeSandbox) -> None:
    """The server and another tenant's code interpreter answer (no timing is asserted)."""
    with urllib.request.urlopen(f"{API_URL}/health", timeout=120) as r:
        assert r.status == 200
    execution = neighbour.run_code("sum(range(10))", timeout=120)
    assert execution.error is None and execution.text == "45", execution


def test_a_fork_bomb_stops_at_the_sandboxs_process_limit(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    out = python(
        sandbox,
        """
import errno, json, os, time
n, err = 0, None
try:
    while n < 5000:
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    err = errno.errorcode[e.errno]
print(json.dumps({"forked": n, "error": err}))
""",
    )
    got = json.loads(out)
    assert got["error"] == "EAGAIN" and got["forked"] < 1024, got
    still_served(neighbour)
    # Killing the sandbox ends every one of them.
    pid = host_pid_of(sandbox)
    sandbox.kill()
    assert not Path(f"/proc/{pid}").exists()


def test_a_memory_bomb_is_killed_inside_and_the_sandbox_lives_on(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    code = "b = []\nwhile True:\n    b.append(bytearray(64 << 20))\n"
    sandbox.files.write("/tmp/mem.py", code)
    with pytest.raises(CommandExitException) as died:
        sandbox.commands.run("python3 /tmp/mem.py", timeout=120)
    # The kernel's OOM killer inside the sandbox's cgroup (reported as E2B does: exit code
    # -1, "signal: killed") or Python's MemoryError (1): never the host's.
    e = died.value
    assert (e.exit_code == -1 and "killed" in str(e.error)) or e.exit_code == 1, e
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
    still_served(neighbour)


def test_a_disk_bomb_fills_only_the_sandboxs_own_disk(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    with pytest.raises(CommandExitException) as full:
        sandbox.commands.run("dd if=/dev/zero of=/home/user/fill bs=16M status=none", timeout=300)
    assert "No space left on device" in full.value.stderr
    disk_mb = int(str(record(sandbox)["disk_mb"]))
    # The sandbox's `disk` links to the mount point next to its image (docs/design.md).
    image = (DATA_DIR / "sandboxes" / sandbox.sandbox_id / "disk").resolve().parent / "disk.img"
    assert image.stat().st_blocks * 512 <= (disk_mb + 64) << 20
    still_served(neighbour)
    sandbox.commands.run("rm /home/user/fill")
    assert sandbox.commands.run("echo fits > /home/user/after && cat /home/user/after").stdout == "fits\n"


def test_an_inode_bomb_runs_out_of_the_sandboxs_own_inodes(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    out = python(
        sandbox,
        """
import errno, json, os
os.makedirs("/home/user/inodes", exist_ok=True)
n, err = 0, None
try:
    while n < 2_000_000:
        os.close(os.open(f"/home/user/inodes/{n}", os.O_CREAT | os.O_WRONLY))
        n += 1
except OSError as e:
    err = errno.errorcode[e.errno]
print(json.dumps({"files": n, "error": err}))
""",
    )
    got = json.loads(out)
    assert got["error"] == "ENOSPC", got
    still_served(neighbour)
    sandbox.commands.run("rm -rf /home/user/inodes", timeout=300)


def test_descriptor_and_pipe_bombs_meet_per_process_and_cgroup_limits(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    out = python(
        sandbox,
        """
import errno, json, os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds, err = [], None
try:
    while len(fds) < 10_000_000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    err = errno.errorcode[e.errno]
print(json.dumps({"opened": len(fds), "limit": hard, "error": err}))
""",
    )
    got = json.loads(out)
    # The process's own limit, never the host's file table (ENFILE).
    assert got["error"] == "EMFILE" and got["opened"] <= got["limit"], got

    # Pipes holding as much as the kernel lets them: 256 of up to 1 MiB each. While they are
    # held, the neighbour's code interpreter (pipes of its own) keeps answering.
    sandbox.files.write(
        "/tmp/pipes.py",
        """
import fcntl, json, os, time
pipes, held, refused = [], 0, None
for _ in range(256):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError as e:
        refused = e.strerror
    os.set_blocking(w, False)
    try:
        while True:
            held += os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    pipes.append((r, w))
with open("/tmp/pipes-full", "w") as f:
    json.dump({"held": held, "refused": refused}, f)
time.sleep(30)
""",
    )
    handle = sandbox.commands.run("python3 /tmp/pipes.py", background=True)
    try:
        got = json.loads(wait_for_file(sandbox, "/tmp/pipes-full"))
        assert got["held"] > 0, got
        still_served(neighbour)
    finally:
        handle.kill()


def host_root_can_watch() -> bool:
    """Whether host root (this test runs as it) can still create an inotify instance."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0o2000000)  # IN_CLOEXEC
    if fd < 0:
        return False
    os.close(fd)
    return True


def test_an_inotify_bomb_takes_only_the_sandboxs_own_share(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    # Root inside opens inotify instances until the kernel says no, and holds them. The
    # kernel charges them up the chain of user namespaces to each one's owner: with a
    # sandbox's owned by host root, this took root's own 128 instances (`hutch serve`,
    # systemd and everything else running as root could then watch nothing); with all
    # sandboxes' owned by one uid at the host's default of 128, it took every other
    # sandbox's. Now the sandbox stops at its own maximum.
    sandbox.files.write(
        "/tmp/inotify.py",
        """
import ctypes, json, os, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 100_000:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
with open("/tmp/inotify-held", "w") as f:
    json.dump({"held": len(fds), "error": os.strerror(ctypes.get_errno())}, f)
time.sleep(30)
""",
    )
    handle = sandbox.commands.run("python3 /tmp/inotify.py", background=True, user="root")
    try:
        got = json.loads(wait_for_file(sandbox, "/tmp/inotify-held"))
        assert 0 < got["held"] <= 128, got
        assert host_root_can_watch(), f"a sandbox holding {got['held']} inotify instances starved host root"
        # Another tenant still watches directories.
        neighbour.files.watch_dir("/tmp").stop()
        still_served(neighbour)
    finally:
        handle.kill()
    assert host_root_can_watch()


def test_a_cpu_bomb_leaves_the_host_and_neighbours_answering(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    sandbox.commands.run(
        "for i in 1 2 3 4 5 6 7 8; do timeout 20 sh -c 'while :; do :; done' & done",
        background=True,
    )
    time.sleep(2)
    still_served(neighbour)
    assert sandbox.commands.run("echo responsive", timeout=120).stdout == "responsive\n"


def test_an_output_bomb_is_streamed_without_harm(sandbox: Sandbox, neighbour: CodeSandbox) -> None:
    # One 32 MiB line (no newline at all) and 200,000 short ones.
    result = sandbox.commands.run("head -c 33554432 /dev/zero | tr '\\0' x", timeout=300)
    assert len(result.stdout) == 33554432
    result = sandbox.commands.run("seq 200000", timeout=300)
    assert result.stdout.count("\n") == 200000
    still_served(neighbour)


def test_a_process_that_ignores_sigterm_still_dies_with_its_sandbox(neighbour: CodeSandbox) -> None:
    sbx = Sandbox.create(template="base", timeout=120)
    try:
        sbx.commands.run("sh -c \"trap '' TERM HUP INT; while :; do sleep 1; done\"", background=True)
        sbx.commands.run("sh -c \"trap '' TERM; sleep 1000\"", background=True, user="root")
        init = host_pid_of(sbx)
    finally:
        sbx.kill()
    assert not Path(f"/proc/{init}").exists()
    # Nothing of the sandbox is left running on the host.
    leftovers = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if sbx.sandbox_id in (p / "cgroup").read_text():
                    leftovers.append(p.name)
    assert leftovers == []
    still_served(neighbour)
