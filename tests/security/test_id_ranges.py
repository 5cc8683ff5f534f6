"""Every sandbox is a host user of its own: per-user kernel quotas are not shared.

The kernel counts some resources per host user, not per namespace or cgroup: pipe buffers
(`fs.pipe-user-pages-soft`), epoll watches, locked shared memory. When every sandbox mapped
its users to the same host ids, one sandbox could use up such a quota for all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from e2b import Sandbox

from conftest import host_pid_of, python, wait_for_file

# The range template layers are owned by on the host (hutch_template::SANDBOX_ID_BASE).
TEMPLATE_RANGE = range(1_000_000, 1_000_000 + 65_536)


def host_range(sbx: Sandbox) -> range:
    """The host ids the sandbox's user namespace maps its ids to (its uid_map, one line)."""
    lines = Path(f"/proc/{host_pid_of(sbx)}/uid_map").read_text().split("\n")
    inside, outside, count = (int(x) for x in lines[0].split())
    assert inside == 0 and lines[1:] == [""], lines
    return range(outside, outside + count)


def test_each_sandbox_maps_its_users_to_host_ids_no_other_uses(sandbox: Sandbox, other: Sandbox) -> None:
    a, b = host_range(sandbox), host_range(other)
    for r in (a, b):
        assert r.start >= TEMPLATE_RANGE.stop and len(r) == 65_536, r
    assert a.stop <= b.start or b.stop <= a.start, (a, b)
    # The template's files still look as they should inside (through idmapped layers),
    # and what each sandbox writes belongs to its own host ids.
    for sbx, r in ((sandbox, a), (other, b)):
        owners = sbx.commands.run("stat -c '%u:%g %n' /usr/bin /home/user /etc/shadow").stdout.split("\n")
        assert owners[:3] == ["0:0 /usr/bin", "1000:1000 /home/user", "0:42 /etc/shadow"], owners
        sbx.commands.run("touch /home/user/mine")
        sbx.commands.run("touch /root/roots", user="root")
        pid = host_pid_of(sbx)
        mine = Path(f"/proc/{pid}/root/home/user/mine").stat()
        roots = Path(f"/proc/{pid}/root/root/roots").stat()
        assert (mine.st_uid, mine.st_gid) == (r.start + 1000, r.start + 1000)
        assert (roots.st_uid, roots.st_gid) == (r.start, r.start)


def test_a_pipe_buffer_hog_leaves_a_neighbour_its_pipes(sandbox: Sandbox, other: Sandbox) -> None:
    # The user of one sandbox reserves 1 MiB pipes until the kernel refuses more (past
    # fs.pipe-user-pages-soft, 64 MiB by default, for that host user), and holds them.
    sandbox.files.write(
        "/tmp/hog.py",
        """
import fcntl, json, os, time
pipes, refused = [], None
while len(pipes) < 4096 and refused is None:
    r, w = os.pipe()
    pipes.append((r, w))
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError as e:
        refused = e.strerror
r, w = os.pipe()
with open("/tmp/hog-full", "w") as f:
    json.dump({"pipes": len(pipes), "refused": refused, "fresh": fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)}, f)
time.sleep(60)
""",
    )
    handle = sandbox.commands.run("python3 /tmp/hog.py", background=True)
    try:
        hog = json.loads(wait_for_file(sandbox, "/tmp/hog-full"))
        # The quota is real: the hog itself was refused, and its next pipe got a page.
        assert hog["refused"] is not None and hog["fresh"] < 65536, hog
        # The neighbour's user is another host user: full-size pipes, and room to grow.
        got = json.loads(
            python(
                other,
                """
import fcntl, json, os
r, w = os.pipe()
fresh = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
try:
    grown = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
except OSError as e:
    grown = e.strerror
print(json.dumps({"fresh": fresh, "grown": grown}))
""",
            )
        )
        assert got == {"fresh": 65536, "grown": 1 << 20}, got
    finally:
        handle.kill()
