"""Nothing leaks: kill and a hard server restart leave the host as they found it.

Named to run last: the restart test kills the shared server with SIGKILL and starts a
new one on the same data directory.
"""

from __future__ import annotations

import uuid

import pytest
from e2b import Sandbox, SandboxQuery

from conftest import diff_resources, host_resources, restart_server_hard
from sdk_helpers import wait_until


@pytest.mark.usefixtures("pools_off")
def test_kill_releases_processes_mounts_cgroups_netns_veths_and_disk() -> None:
    before = host_resources()
    sandboxes = [Sandbox.create() for _ in range(3)]
    for s in sandboxes:
        s.commands.run("sleep 600", background=True)
        s.commands.run("head -c 10000000 /dev/urandom > /home/user/data")
    during = host_resources()
    assert len(during["cgroups"]) >= len(before["cgroups"]) + 3
    assert len(during["veths"]) == len(before["veths"]) + 3
    assert len(during["loops"]) == len(before["loops"]) + 3
    assert len(during["netns"]) == len(before["netns"]) + 3
    assert len(during["processes"]) > len(before["processes"])
    for s in sandboxes:
        assert s.kill() is True
    assert wait_until(lambda: host_resources() == before, timeout=10), diff_resources(before, host_resources())
    # every sandbox init was reaped by the server (none left as a zombie)
    assert host_resources()["zombies"] == []


@pytest.mark.usefixtures("pools_off")
def test_hard_restart_adopts_running_sandboxes_and_leaks_nothing() -> None:
    before = host_resources()
    tag = uuid.uuid4().hex
    kept = Sandbox.create(metadata={"restart": tag}, timeout=300)
    paused = Sandbox.create(metadata={"restart": tag}, timeout=300)
    kept.commands.run("echo survived > /home/user/note")
    paused.pause()

    restart_server_hard()

    listed = Sandbox.list(query=SandboxQuery(metadata={"restart": tag})).next_items()
    assert sorted(s.sandbox_id for s in listed) == sorted([kept.sandbox_id, paused.sandbox_id])
    again = Sandbox.connect(kept.sandbox_id)
    assert again.commands.run("cat /home/user/note").stdout.strip() == "survived"
    resumed = Sandbox.connect(paused.sandbox_id)
    assert resumed.commands.run("echo awake").stdout.strip() == "awake"
    # timeouts still apply after the restart
    again.set_timeout(2)
    assert wait_until(lambda: not again.is_running(), timeout=15)
    assert resumed.kill() is True
    assert wait_until(lambda: host_resources() == before, timeout=10), diff_resources(before, host_resources())
