"""Isolation: what a sandbox can see and do, checked from inside and from the host."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

from conftest import host_pid_of


def run(sbx: Sandbox, cmd: str, user: str = "user") -> str:
    return sbx.commands.run(cmd, user=user, timeout=120).stdout


def test_two_sandboxes_cannot_see_each_other() -> None:
    a = Sandbox.create()
    b = Sandbox.create()
    try:
        marker = f"marker-{uuid.uuid4().hex}"
        a.commands.run(f"exec -a {marker} sleep 600", background=True)
        a.commands.run(f"echo secret > /tmp/{marker}")
        assert marker in run(a, "ps -eo args")
        assert marker not in run(b, "ps -eo args")
        assert run(b, f"ls /tmp/{marker} 2>&1 || true").find("No such file") >= 0
        # every pid b can see belongs to b: its pid namespace starts at 1 with the agent
        pids = run(b, "ls /proc | grep -E '^[0-9]+$' | sort -n").split()
        assert pids[0] == "1"
        assert "hutch-agent" in run(b, "cat /proc/1/cmdline")
        assert run(a, "hostname").strip() == a.sandbox_id
        assert run(b, "hostname").strip() == b.sandbox_id
    finally:
        a.kill()
        b.kill()


def test_sandbox_sees_no_host_process_or_file(sandbox: Sandbox) -> None:
    marker = f"hutch-host-marker-{uuid.uuid4().hex}"
    host_proc = subprocess.Popen(["sleep", "600"], executable="sleep")
    host_file = f"/root/{marker}"
    with open(host_file, "w") as f:
        f.write("host secret")
    try:
        ps = run(sandbox, "ps -eo pid,args")
        assert "sleep 600" not in ps
        assert str(host_proc.pid) not in ps.split()
        out = run(sandbox, f"cat {host_file} 2>&1 || true", user="root")
        assert "host secret" not in out
        # the sandbox's / is its template: no host directories such as the repo or /work
        assert run(sandbox, "ls / ").split() == sorted(run(sandbox, "ls /").split())
        assert run(sandbox, "test -e /work && echo yes || echo no").strip() == "no"
        assert run(sandbox, "test -e /var/lib/hutch && echo yes || echo no").strip() == "no"
    finally:
        host_proc.kill()
        host_proc.wait()
        os.unlink(host_file)


def test_root_inside_is_not_root_outside(sandbox: Sandbox) -> None:
    assert run(sandbox, "id -u", user="root").strip() == "0"
    pid = host_pid_of(sandbox)
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    host_uids = [int(u) for u in uid_line.split()[1:]]
    assert all(u >= 1_000_000 for u in host_uids), uid_line
    # root inside holds no dangerous capability: mounting and changing the clock fail
    with pytest.raises(CommandExitException):
        sandbox.commands.run("mount -t tmpfs none /mnt", user="root")
    with pytest.raises(CommandExitException):
        sandbox.commands.run("date -s '2001-01-01'", user="root")
    with pytest.raises(CommandExitException):
        sandbox.commands.run("unshare -U true", user="root")


def test_setuid_sudo_gains_only_the_sandboxs_own_root(sandbox: Sandbox) -> None:
    # Debian's setuid sudo works (no_new_privs is off), but what it gains is the same
    # filtered root as user="root": same bounding set, still under seccomp, no mount.
    def status(user: str, prefix: str) -> str:
        cmd = "grep -E '^(CapBnd|Seccomp):' /proc/self/status"
        return run(sandbox, prefix + cmd, user=user)

    via_sudo = status("user", "sudo -n ")
    assert via_sudo == status("root", "")
    assert "Seccomp:\t2" in via_sudo
    pid = host_pid_of(sandbox)
    for cmd in ["mount -t tmpfs none /mnt", "unshare -U true", "date -s '2001-01-01'"]:
        with pytest.raises(CommandExitException):
            sandbox.commands.run("sudo -n " + cmd)
    # and sudo's root is still an unprivileged uid on the host
    run(sandbox, "sudo -n sh -c 'sleep 60 >/dev/null 2>&1 &'")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        uid_line = next(
            line for line in Path(f"/proc/{child}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        assert all(int(u) >= 1_000_000 for u in uid_line.split()[1:]), uid_line


def test_memory_limit_stops_the_hog_not_the_sandbox(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException):
        # 3 GiB against a 1 GiB limit: killed by the cgroup's OOM killer (or MemoryError)
        sandbox.commands.run(
            "python3 -c 'b = bytearray(3 * 1024**3); b[::4096] = b\"x\" * len(b[::4096])'", timeout=120
        )
    assert run(sandbox, "echo alive").strip() == "alive"


FORK_BOMB = """
import os, time
pids, err = [], None
while len(pids) < 1500:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    pids.append(pid)
print("started", len(pids), "errno", err)
for p in pids:
    os.kill(p, 9)
for p in pids:
    os.waitpid(p, 0)
"""


def test_pids_limit_stops_a_fork_bomb(sandbox: Sandbox) -> None:
    sandbox.files.write("/tmp/bomb.py", FORK_BOMB)
    out = run(sandbox, "python3 /tmp/bomb.py").split()
    started, errno = int(out[1]), out[3]
    # the cgroup's pids limit (1024) refuses the fork with EAGAIN long before 1500
    assert started < 1500
    assert errno == "11"
    assert run(sandbox, "echo alive").strip() == "alive"


def test_disk_limit_stops_a_filler_without_touching_the_host(sandbox: Sandbox) -> None:
    before = os.statvfs("/")
    with pytest.raises(CommandExitException) as err:
        sandbox.commands.run("dd if=/dev/zero of=/home/user/fill bs=4M count=2000", timeout=300)
    assert "No space left on device" in err.value.stderr
    after = os.statvfs("/")
    used = (before.f_bfree - after.f_bfree) * after.f_frsize
    assert used < 5 * 1024**3
    sandbox.commands.run("rm -f /home/user/fill")
    assert run(sandbox, "echo alive > /home/user/ok && cat /home/user/ok").strip() == "alive"
