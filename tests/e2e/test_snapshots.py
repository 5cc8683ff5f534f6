"""Snapshots and forks with the official SDK (sync and async): a sandbox's filesystem, taken
while it keeps running, starts new sandboxes any number of times; forks start at once from
one copy and are independent of the source and of each other. Processes and memory are not
carried (hutch has no checkpoint/restore): the new sandboxes boot from the copied disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxException
from e2b.exceptions import RateLimitException, SandboxNotFoundException

from ci_helpers import code_sandbox
from conftest import DATA_DIR, WORK

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]


def api(method: str, path: str, body: object | None = None, key: str = API_KEY) -> httpx.Response:
    with httpx.Client(timeout=60) as c:
        return c.request(method, f"{API_URL}{path}", json=body, headers={"X-API-Key": key})


def hutch(*args: str) -> str:
    binary = (WORK / "server.cmd").read_text().splitlines()[0]
    out = subprocess.run([binary, *args, "--data-dir", str(DATA_DIR)], capture_output=True, text=True, check=True)
    return out.stdout


def read(sbx: Sandbox, path: str) -> str:
    return sbx.files.read(path)


def test_a_snapshot_starts_sandboxes_with_the_sources_files_and_outlives_it() -> None:
    with code_sandbox(envs={"FROM_SOURCE": "yes"}, timeout=300) as src:
        marker = uuid.uuid4().hex
        src.files.write("/home/user/data/marker.txt", marker)
        src.commands.run("sudo rm /etc/debian_version")  # a deletion: a whiteout in the layer
        assert src.run_code("x = 41; x + 1").text == "42"

        snap = src.create_snapshot()
        assert snap.snapshot_id.endswith(":default") and len(snap.names) == 1

        # The source goes on as it was, memory included.
        assert src.run_code("x").text == "41"
        src.files.write("/home/user/data/after.txt", "later")

        with code_sandbox(template=snap.snapshot_id) as a, code_sandbox(template=snap.snapshot_id) as b:
            for s in (a, b):
                assert read(s, "/home/user/data/marker.txt") == marker
                assert not s.files.exists("/home/user/data/after.txt")
                assert not s.files.exists("/etc/debian_version")
                assert s.commands.run("echo $FROM_SOURCE").stdout.strip() == "yes"
                # A fresh kernel: the source's variables are not there, code runs.
                assert s.run_code("x").error is not None
                assert s.run_code("1 + 1").text == "2"
            a.files.write("/home/user/data/marker.txt", "changed in a")
            assert read(b, "/home/user/data/marker.txt") == marker
            assert read(src, "/home/user/data/marker.txt") == marker

    # The source is gone; its snapshot is not.
    c = Sandbox.create(snap.snapshot_id, timeout=60)
    try:
        assert read(c, "/home/user/data/marker.txt") == marker
        # Deleting it while a sandbox runs on it leaves that sandbox whole.
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
        assert Sandbox.delete_snapshot(snap.snapshot_id) is False
        assert read(c, "/home/user/data/marker.txt") == marker
        assert c.commands.run("ls /home/user/data").stdout.split() == ["marker.txt"]
    finally:
        c.kill()
    with pytest.raises(SandboxException):
        Sandbox.create(snap.snapshot_id, timeout=60)


def test_named_snapshots_list_filter_and_take_new_builds(sandbox: Sandbox) -> None:
    name = f"snap-{uuid.uuid4().hex[:8]}"
    sandbox.files.write("/tmp/v", "1")
    first = sandbox.create_snapshot(name=name)
    assert first.snapshot_id == f"default/{name}:default" and first.names == [first.snapshot_id]
    sandbox.files.write("/tmp/v", "2")
    # The same name again: a new build of the same snapshot, which now holds the newer files.
    second = Sandbox.create_snapshot(sandbox.sandbox_id, name=name)
    assert second.snapshot_id == first.snapshot_id
    unnamed = sandbox.create_snapshot()
    try:
        mine = Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items()
        assert {s.snapshot_id for s in mine} == {first.snapshot_id, unnamed.snapshot_id}
        by_name = Sandbox.list_snapshots(name=name).next_items()
        assert [s.snapshot_id for s in by_name] == [first.snapshot_id]
        # Paged: one at a time.
        pages = Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id, limit=1)
        seen: list[str] = []
        while pages.has_next:
            seen.extend(s.snapshot_id for s in pages.next_items())
        assert sorted(seen) == sorted({first.snapshot_id, unnamed.snapshot_id})
        for ref in (name, first.snapshot_id):
            s = Sandbox.create(ref, timeout=60)
            try:
                assert read(s, "/tmp/v") == "2"
            finally:
                s.kill()
    finally:
        Sandbox.delete_snapshot(first.snapshot_id)
        Sandbox.delete_snapshot(unnamed.snapshot_id)
    assert Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items() == []


def test_fork_starts_independent_sandboxes_from_one_instant(sandbox: Sandbox) -> None:
    sandbox.files.write("/home/user/state.txt", "before")
    sandbox.commands.run("sleep 600", background=True)
    forks = sandbox.fork(count=3, timeout=120)
    try:
        assert len(forks) == 3 and all(isinstance(f, Sandbox) for f in forks)
        ids = {f.sandbox_id for f in forks if isinstance(f, Sandbox)}
        assert len(ids) == 3 and sandbox.sandbox_id not in ids
        sandbox.files.write("/home/user/state.txt", "source moved on")
        for i, f in enumerate(forks):
            assert isinstance(f, Sandbox)
            assert read(f, "/home/user/state.txt") == "before"
            f.files.write("/home/user/mine.txt", str(i))
            # Processes are not carried: the source's `sleep` is not in the fork.
            assert "sleep 600" not in f.commands.run("ps -eo args").stdout
            info = f.get_info()
            assert info.template_id == sandbox.get_info().template_id
        for i, f in enumerate(forks):
            assert isinstance(f, Sandbox)
            assert read(f, "/home/user/mine.txt") == str(i)
        assert not sandbox.files.exists("/home/user/mine.txt")
        assert "sleep 600" in sandbox.commands.run("ps -eo args").stdout
        # The class variant.
        more = Sandbox.fork(sandbox.sandbox_id, count=1, timeout=60)
        assert len(more) == 1 and isinstance(more[0], Sandbox)
        assert read(more[0], "/home/user/state.txt") == "source moved on"
        more[0].kill()
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                f.kill()


def test_forks_beyond_the_keys_limit_fail_one_by_one() -> None:
    key = hutch("keys", "create", "--name", "forks", "--max-sandboxes", "2").strip()
    src = Sandbox.create(template="base", api_key=key, timeout=120)
    try:
        results = src.fork(count=3, timeout=60)
        started = [r for r in results if isinstance(r, Sandbox)]
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(started) == 1 and len(refused) == 2
        assert all(isinstance(r, RateLimitException) for r in refused)
        for s in started:
            s.kill()
    finally:
        src.kill()
        hutch("keys", "revoke", key)


def test_snapshot_and_fork_bad_input_is_refused_and_changes_nothing(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.create_snapshot("nosuchsandbox0000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.fork("nosuchsandbox0000000", count=1)
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create("nosuchsnapshot0000000:default")
    with pytest.raises(SandboxException, match="filesystem only"):
        sandbox.create_snapshot(mode="full")
    for count in (0, -1, 101):
        r = api("POST", f"/sandboxes/{sandbox.sandbox_id}/fork", {"count": count})
        assert r.status_code == 400 and "count" in r.json()["message"], r.text
    for name in ("Bad Name", "../x", "code-interpreter-v1"):
        r = api("POST", f"/sandboxes/{sandbox.sandbox_id}/snapshots", {"name": name})
        assert r.status_code == 400, r.text
    r = api("POST", f"/sandboxes/{sandbox.sandbox_id}/snapshots", {"name": "x", "extra": 1})
    assert r.status_code == 400
    r = api("GET", "/snapshots?limit=0")
    assert r.status_code == 400
    r = api("GET", "/snapshots?nextToken=abc")
    assert r.status_code == 400
    assert Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items() == []
    assert sandbox.commands.run("echo fine").stdout.strip() == "fine"


def test_another_teams_sandbox_and_snapshots_are_out_of_reach(sandbox: Sandbox) -> None:
    team = f"snapteam{uuid.uuid4().hex[:6]}"
    hutch("teams", "create", team)
    key = hutch("keys", "create", "--name", team, "--team", team).strip().splitlines()[-1]
    try:
        with pytest.raises(SandboxNotFoundException):
            Sandbox.create_snapshot(sandbox.sandbox_id, api_key=key)
        with pytest.raises(SandboxNotFoundException):
            Sandbox.fork(sandbox.sandbox_id, api_key=key)
        snap = sandbox.create_snapshot()
        try:
            assert Sandbox.list_snapshots(api_key=key).next_items() == []
            with pytest.raises(SandboxException):
                Sandbox.create(snap.snapshot_id, api_key=key)
            assert Sandbox.delete_snapshot(snap.snapshot_id, api_key=key) is False
        finally:
            Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        hutch("keys", "revoke", key)


@pytest.mark.asyncio
async def test_async_snapshot_and_fork() -> None:
    src = await AsyncSandbox.create(timeout=120)
    try:
        await src.files.write("/home/user/a.txt", "async")
        snap = await src.create_snapshot()
        forks = await src.fork(count=2, timeout=60)
        try:
            for f in forks:
                assert isinstance(f, AsyncSandbox)
                assert await f.files.read("/home/user/a.txt") == "async"
            listed = await AsyncSandbox.list_snapshots(sandbox_id=src.sandbox_id).next_items()
            assert [s.snapshot_id for s in listed] == [snap.snapshot_id]
            s = await AsyncSandbox.create(snap.snapshot_id, timeout=60)
            assert await s.files.read("/home/user/a.txt") == "async"
            await s.kill()
        finally:
            for f in forks:
                if isinstance(f, AsyncSandbox):
                    await f.kill()
            assert await AsyncSandbox.delete_snapshot(snap.snapshot_id) is True
    finally:
        await src.kill()


def test_a_long_chain_of_snapshots_keeps_every_change_past_the_layer_limit() -> None:
    # An agent checkpointing as it goes: snapshot, start from it, change, snapshot again.
    # Each round stacks a layer; past the overlay's limit hutch squashes the chain
    # (docs/snapshots.md), and nothing of any round may be lost or come back.
    sbx = Sandbox.create(timeout=120)
    snaps: list[str] = []
    try:
        sbx.files.write("/home/user/doomed.txt", "x")
        sbx.commands.run("mkdir -p /home/user/d && echo a > /home/user/d/a")
        for i in range(30):
            sbx.files.write(f"/home/user/step-{i}.txt", str(i))
            sbx.files.write("/home/user/latest.txt", str(i))
            if i == 3:
                sbx.commands.run("rm -f /etc/motd", user="root")  # a file of the template
            if i == 8:
                sbx.commands.run("rm -rf /home/user/d && mkdir /home/user/d && echo b > /home/user/d/b")
            if i == 10:
                sbx.files.remove("/home/user/doomed.txt")
            if i == 20:
                sbx.files.write("/home/user/doomed.txt", "back")
            snaps.append(sbx.create_snapshot().snapshot_id)
            following = Sandbox.create(snaps[-1], timeout=120)
            sbx.kill()
            sbx = following
        listing = sbx.commands.run("ls /home/user | sort; ls /home/user/d; test -e /etc/motd || echo no-motd").stdout
        for i in range(30):
            assert f"step-{i}.txt" in listing, listing
        assert sbx.files.read("/home/user/latest.txt") == "29"
        assert sbx.files.read("/home/user/doomed.txt") == "back"
        assert sbx.files.read("/home/user/d/b") == "b\n"
        assert "no-motd" in listing and not sbx.files.exists("/home/user/d/a"), listing
        # The template's own files are still there below.
        assert sbx.commands.run("test -x /bin/bash && echo ok").stdout.strip() == "ok"
    finally:
        sbx.kill()
        for s in snaps:
            with contextlib.suppress(Exception):
                Sandbox.delete_snapshot(s)
