"""Nothing leaks: kill and a hard server restart leave the host as they found it, also
when the server is killed in the middle of a load, and when a sandbox's agent dies.

Named to run last: the restart tests kill the shared server with SIGKILL and start a
new one on the same data directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
from e2b import NotFoundException, Sandbox, SandboxQuery, Volume

from conftest import diff_resources, host_pid_of, host_resources, kept_networks, restart_server_hard
from sdk_helpers import wait_until


@pytest.mark.usefixtures("pools_off")
def test_kill_releases_processes_mounts_cgroups_netns_veths_and_disk() -> None:
    """Everything but the slots' networks, which the spawn helper keeps for the next sandbox
    of each slot (they go with the server)."""
    before = host_resources()
    sandboxes = [Sandbox.create() for _ in range(3)]
    for s in sandboxes:
        s.commands.run("sleep 600", background=True)
        s.commands.run("head -c 10000000 /dev/urandom > /home/user/data")
    during = host_resources()
    assert len(during["cgroups"]) >= len(before["cgroups"]) + 3
    # Each sandbox is in a slot network the spawn helper keeps (not a leftover veth).
    kept = set(kept_networks().values())
    for s in sandboxes:
        assert os.readlink(f"/proc/{host_pid_of(s)}/ns/net") in kept
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
    # Paused without memory: nothing of it runs, its files wait on disk.
    stopped = Sandbox.create(metadata={"restart": tag}, timeout=300)
    stopped.files.write("/home/user/kept", "on disk")
    stopped.pause(mode="filesystem")
    # A snapshot and a fork (which carries the source's metadata) of the first.
    snap = kept.create_snapshot()
    fork = kept.fork(count=1, timeout=300)[0]
    assert isinstance(fork, Sandbox)
    # A volume, mounted in a sandbox that goes on running across the restart.
    vol = Volume.create(f"restart-{tag[:8]}")
    mounting = Sandbox.create(volume_mounts={"/mnt/v": vol}, timeout=300)
    mounting.files.write("/mnt/v/before.txt", "before")

    restart_server_hard()

    # The volume, its files and its mount in the adopted sandbox are all there.
    assert Volume.get_info(vol.volume_id).name == vol.name
    assert vol.read_file("/before.txt") == "before"
    mounting.files.write("/mnt/v/after.txt", "after")
    assert vol.read_file("/after.txt") == "after"
    reader = Sandbox.create(volume_mounts={"/data": vol}, timeout=60)
    assert reader.files.read("/data/after.txt") == "after"
    assert reader.kill() is True and mounting.kill() is True
    assert Volume.destroy(vol.volume_id) is True

    listed = Sandbox.list(query=SandboxQuery(metadata={"restart": tag})).next_items()
    assert sorted(s.sandbox_id for s in listed) == sorted(
        [kept.sandbox_id, paused.sandbox_id, fork.sandbox_id, stopped.sandbox_id]
    )
    assert Sandbox.connect(stopped.sandbox_id).files.read("/home/user/kept") == "on disk"
    assert stopped.kill() is True
    again = Sandbox.connect(kept.sandbox_id)
    assert again.commands.run("cat /home/user/note").stdout.strip() == "survived"
    # The fork's layer and the snapshot were kept.
    assert Sandbox.connect(fork.sandbox_id).files.read("/home/user/note").strip() == "survived"
    from_snap = Sandbox.create(snap.snapshot_id, timeout=60)
    assert from_snap.files.read("/home/user/note").strip() == "survived"
    assert from_snap.kill() is True and fork.kill() is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    resumed = Sandbox.connect(paused.sandbox_id)
    assert resumed.commands.run("echo awake").stdout.strip() == "awake"
    # timeouts still apply after the restart
    again.set_timeout(2)
    assert wait_until(lambda: not again.is_running(), timeout=15)
    assert resumed.kill() is True
    assert wait_until(lambda: host_resources() == before, timeout=10), diff_resources(before, host_resources())


@pytest.mark.usefixtures("pools_off")
def test_kill_9_under_load_keeps_every_answered_sandbox_and_leaks_nothing() -> None:
    """Clients create, use and kill sandboxes while the server is killed with SIGKILL and
    started again: every sandbox whose create was answered and that was not killed comes
    back working, none that was killed does, a create cut off half-way either comes back
    whole or not at all, and once everything is killed the host is as it was."""
    before = host_resources()
    tag = uuid.uuid4().hex
    lock = threading.Lock()
    answered: set[str] = set()
    # Odd clients never kill: every sandbox they were answered for must come back.
    must_stay: set[str] = set()
    killed: set[str] = set()
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            try:
                sbx = Sandbox.create(metadata={"load": tag}, timeout=300)
                with lock:
                    answered.add(sbx.sandbox_id)
                    if n % 2:
                        must_stay.add(sbx.sandbox_id)
                sbx.commands.run(f"echo {n} > /home/user/mine")
                if n % 2 == 0 and sbx.kill():
                    with lock:
                        killed.add(sbx.sandbox_id)
            except Exception:  # the server is down for a moment: the client carries on
                time.sleep(0.05)

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    for t in clients:
        t.start()
    assert wait_until(lambda: len(answered) >= 6, timeout=120), "the load did not start"
    restart_server_hard()
    # The server serves the load again after the restart.
    served_after = len(answered) + 4
    assert wait_until(lambda: len(answered) >= served_after, timeout=120), "no creates after the restart"
    stop.set()
    for t in clients:
        t.join(timeout=120)

    listed = {s.sandbox_id for s in Sandbox.list(query=SandboxQuery(metadata={"load": tag})).next_items()}
    assert not listed & killed, "a sandbox whose kill was answered came back"
    for sid in listed:
        # Every sandbox listed works, whether its create was answered or cut off.
        assert Sandbox.connect(sid).commands.run("echo ok").stdout.strip() == "ok"
    assert must_stay <= listed, f"answered creates lost in the restart: {must_stay - listed}"
    for sid in listed:
        Sandbox.kill(sid)
    assert wait_until(lambda: host_resources() == before, timeout=30), diff_resources(before, host_resources())


@pytest.mark.usefixtures("pools_off")
def test_a_sandbox_whose_agent_dies_is_reported_gone_and_released() -> None:
    before = host_resources()
    sbx = Sandbox.create(timeout=120)
    neighbour = Sandbox.create(timeout=120)
    os.kill(host_pid_of(sbx), signal.SIGKILL)

    def gone() -> bool:
        try:
            Sandbox.get_info(sbx.sandbox_id)
        except NotFoundException:
            return True
        return False

    assert wait_until(gone, timeout=30), "a sandbox whose agent died is still reported"
    assert not sbx.is_running()
    assert sbx.sandbox_id not in {s.sandbox_id for s in Sandbox.list().next_items()}
    assert Sandbox.kill(sbx.sandbox_id) is False
    # The neighbour is untouched.
    assert neighbour.commands.run("echo fine").stdout.strip() == "fine"
    assert neighbour.kill() is True
    assert wait_until(lambda: host_resources() == before, timeout=30), diff_resources(before, host_resources())
