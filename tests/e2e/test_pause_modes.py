"""Pause modes with the official SDK: `pause(mode="filesystem")` (and the deprecated
`keep_memory=False`) ends every process and frees the sandbox's memory, cgroup, disk and
network, keeping only its files; a connect boots it again (a new PID 1, fresh kernels)
with its id, token, variables and files. `on_resume="reboot"` does the same for a sandbox
paused with memory, and `lifecycle={"on_timeout": {"action": "pause", "mode":
"filesystem"}}` pauses that way at the end time."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxNotFoundException

from ci_helpers import code_sandbox
from conftest import DATA_DIR, host_pid_of
from sdk_helpers import wait_until

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]


def detail(sandbox_id: str) -> dict[str, object]:
    with httpx.Client(timeout=30) as c:
        r = c.get(f"{API_URL}/sandboxes/{sandbox_id}", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def init_start(sbx: Sandbox) -> str:
    """When the sandbox's PID 1 started (clock ticks after the host's boot)."""
    return sbx.commands.run("cut -d' ' -f22 /proc/1/stat").stdout.strip()


def saved_dirs() -> set[str]:
    d = DATA_DIR / "paused"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_a_filesystem_pause_frees_everything_and_resume_boots_on_the_files() -> None:
    tag = uuid.uuid4().hex
    with code_sandbox(envs={"FROM_CREATE": "kept"}, metadata={"pm": tag}) as sbx:
        sbx.files.write("/home/user/notes/a.txt", "written before the pause")
        sbx.commands.run("sudo rm /etc/debian_version && sudo sh -c 'echo r > /root/r.txt'")
        sbx.commands.run("sleep 600", background=True)
        assert sbx.run_code("x = 7; x").text == "7"
        started = init_start(sbx)
        pid = host_pid_of(sbx)
        before = saved_dirs()

        assert sbx.pause(mode="filesystem") is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        assert detail(sbx.sandbox_id)["pauseMode"] == "filesystem"
        # Nothing of it runs or stays mounted: its files wait in the data directory.
        assert not Path(f"/proc/{pid}").exists()
        assert not (DATA_DIR / "sandboxes" / sbx.sandbox_id).exists()
        assert len(saved_dirs() - before) == 1
        paused = Sandbox.list(query=SandboxQuery(metadata={"pm": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [p.sandbox_id for p in paused] == [sbx.sandbox_id]
        # A second pause finds it paused.
        assert sbx.pause(mode="filesystem") is False

        again = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING
        assert saved_dirs() == before
        for s in (again, sbx):  # the first handle's token still opens it
            assert s.files.read("/home/user/notes/a.txt") == "written before the pause"
        assert not sbx.files.exists("/etc/debian_version")
        assert sbx.commands.run("sudo cat /root/r.txt").stdout.strip() == "r"
        assert sbx.commands.run("stat -c %U /home/user/notes/a.txt").stdout.strip() == "user"
        assert sbx.commands.run("echo $FROM_CREATE").stdout.strip() == "kept"
        # It booted: a new PID 1, no process of before, a fresh kernel that runs code.
        assert init_start(sbx) != started
        assert "sleep 600" not in sbx.commands.run("ps -eo args").stdout
        assert sbx.run_code("x").error is not None
        assert sbx.run_code("6 * 7").text == "42"
        # And it pauses and boots again.
        assert sbx.pause(keep_memory=False) is True
        assert Sandbox.connect(sbx.sandbox_id).files.read("/home/user/notes/a.txt") == "written before the pause"


def test_reboot_on_resume_drops_the_memory_of_a_paused_sandbox(sandbox: Sandbox) -> None:
    sandbox.files.write("/home/user/f.txt", "on disk")
    sandbox.commands.run("sleep 600", background=True)
    started = init_start(sandbox)
    sandbox.pause()
    assert detail(sandbox.sandbox_id)["pauseMode"] == "full"
    rebooted = Sandbox.connect(sandbox.sandbox_id, on_resume="reboot")
    assert rebooted.files.read("/home/user/f.txt") == "on disk"
    assert init_start(rebooted) != started
    assert "sleep 600" not in rebooted.commands.run("ps -eo args").stdout
    # Without `reboot`, a memory pause keeps its processes.
    rebooted.commands.run("sleep 700", background=True)
    rebooted.pause()
    kept = Sandbox.connect(sandbox.sandbox_id)
    assert "sleep 700" in kept.commands.run("ps -eo args").stdout


def test_on_timeout_pause_in_filesystem_mode_and_the_agent_wakes_it() -> None:
    sbx = Sandbox.create(
        timeout=3,
        lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}},
    )
    try:
        sbx.files.write("/home/user/x", "timeout")
        assert wait_until(lambda: Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED, timeout=30)
        assert detail(sbx.sandbox_id)["pauseMode"] == "filesystem"
        # Paused time does not count: the connect gives it its timeout from now.
        again = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert again.files.read("/home/user/x") == "timeout"
        assert again.get_info().state == SandboxState.RUNNING
    finally:
        sbx.kill()

    woken = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        woken.files.write("/home/user/y", "auto")
        woken.pause(mode="filesystem")
        # The SDK's call to the agent reaches it through the router, which boots it.
        assert woken.files.read("/home/user/y") == "auto"
        assert Sandbox.get_info(woken.sandbox_id).state == SandboxState.RUNNING
    finally:
        woken.kill()


def test_a_filesystem_paused_sandbox_snapshots_forks_and_dies_cleanly() -> None:
    sbx = Sandbox.create(timeout=120)
    before = saved_dirs()
    sbx.files.write("/home/user/z", "stopped")
    sbx.pause(mode="filesystem")
    snap = Sandbox.create_snapshot(sbx.sandbox_id)
    forks = Sandbox.fork(sbx.sandbox_id, count=1, timeout=60)
    try:
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        from_snap = Sandbox.create(snap.snapshot_id, timeout=60)
        assert from_snap.files.read("/home/user/z") == "stopped"
        from_snap.kill()
        fork = forks[0]
        assert isinstance(fork, Sandbox)
        assert fork.files.read("/home/user/z") == "stopped"
        fork.kill()
    finally:
        Sandbox.delete_snapshot(snap.snapshot_id)
    assert sbx.kill() is True
    assert saved_dirs() == before
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id)


@pytest.mark.asyncio
async def test_async_filesystem_pause_and_resume() -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        await sbx.files.write("/home/user/async.txt", "a")
        assert await sbx.pause(mode="filesystem") is True
        info = await AsyncSandbox.get_info(sbx.sandbox_id)
        assert info.state == SandboxState.PAUSED
        again = await AsyncSandbox.connect(sbx.sandbox_id)
        assert await again.files.read("/home/user/async.txt") == "a"
    finally:
        await sbx.kill()
