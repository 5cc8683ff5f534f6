"""A full data disk: clear errors, nothing else breaks, and service returns with the space.

The shared server is stopped for this test and a second one runs (same cache, port and
key) on a data directory of its own: a small ext4 filesystem on a loop device that the test
fills with one big file. Named to run near the end; the shared server is started again
afterwards, on its own data directory, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from e2b import Sandbox

from conftest import API_URL, WORK, start_server, stop_server

KEY = os.environ["E2B_API_KEY"]
# Each sandbox's disk on the small server, MiB: the free-space check refuses a create when
# less than this is left.
DISK_MB = 64


def create(template: str = "base") -> tuple[int, dict[str, object]]:
    """POST /sandboxes; the status and the JSON answer."""
    req = urllib.request.Request(
        f"{API_URL}/sandboxes",
        data=json.dumps({"templateID": template, "timeout": 300}).encode(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_mb(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize >> 20


@contextlib.contextmanager
def small_server(*extra: str) -> Iterator[Path]:
    """The shared server stopped, a second one (with `extra` options) on a 768 MiB data
    filesystem; undone after."""
    image = WORK / "small-data.img"
    mnt = WORK / "small-data"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["truncate", "-s", "768M", str(image)], check=True)
    # No blocks reserved for root: the server runs as root and would otherwise see room
    # where a sandbox's disk (written by the loop driver) has none.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    shared_cmd = (WORK / "server.cmd").read_text().splitlines()
    cmd = list(shared_cmd)
    cmd[cmd.index("--data-dir") + 1] = str(mnt / "data")
    cmd += ["--sandbox-disk-mb", str(DISK_MB), "--zygotes", "off", *extra]
    cmd += ["--pool", "code-interpreter-v1=0", "--pool", "base=0"]
    stop_server(signal.SIGTERM)
    try:
        start_server(cmd)
        try:
            yield mnt
        finally:
            for s in Sandbox.list().next_items():
                with contextlib.suppress(Exception):
                    Sandbox.kill(s.sandbox_id)
            stop_server(signal.SIGTERM)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()
        start_server(shared_cmd)


def test_a_full_data_disk_refuses_creates_clearly_and_recovers() -> None:
    with small_server() as mnt:
        full_disk(mnt)


def full_disk(mnt: Path) -> None:
    running = Sandbox.create(template="base", timeout=300)
    running.files.write("/home/user/before.txt", "kept")
    filler = mnt / "filler"
    # Leave less than one sandbox's disk free.
    subprocess.run(["fallocate", "-l", f"{free_mb(mnt) - DISK_MB // 2}M", str(filler)], check=True)
    assert free_mb(mnt) < DISK_MB

    # A create is refused with E2B's error shape and a message that says why; nothing is
    # left of it.
    status, body = create()
    assert status == 503, (status, body)
    assert "disk space" in str(body.get("message")), body
    assert body.get("code") == 503, body
    assert len(os.listdir(mnt / "data" / "sandboxes")) == 1

    # What runs keeps running: the sandbox answers, lists, reads what it had, and its own
    # small writes fit in what its disk already holds.
    assert running.commands.run("echo alive").stdout.strip() == "alive"
    assert running.files.read("/home/user/before.txt") == "kept"
    assert [s.sandbox_id for s in Sandbox.list().next_items()] == [running.sandbox_id]
    with urllib.request.urlopen(f"{API_URL}/health", timeout=5) as r:
        assert r.status == 200

    # Filling the rest of the host's disk from inside fails inside the sandbox (an error,
    # not a hang), and the server stays up.
    with contextlib.suppress(Exception):
        running.commands.run(
            f"dd if=/dev/urandom of=/home/user/big bs=1M count={DISK_MB} oflag=direct",
            timeout=120,
        )
    with urllib.request.urlopen(f"{API_URL}/health", timeout=5) as r:
        assert r.status == 200

    # Killing works on a full disk, and frees the sandbox's space.
    running.kill()
    assert Sandbox.list().next_items() == []

    # Space returns: creates work again.
    filler.unlink()
    status, body = create()
    assert status == 201, (status, body)
    again = Sandbox.connect(str(body["sandboxID"]))
    assert again.commands.run("echo back").stdout.strip() == "back"
    again.kill()


def test_with_an_overcommit_ratio_creates_stop_before_the_disks_could_fill_the_host() -> None:
    # Ratio 1: the sandboxes' disks together may never be able to outgrow the free space.
    with small_server("--disk-overcommit", "1"):
        made: list[str] = []
        status, body = 201, dict[str, object]()
        while status == 201 and len(made) < 40:
            status, body = create()
            if status == 201:
                made.append(str(body["sandboxID"]))
        # About 740 MiB free, 64 MiB disks: roughly a dozen, far fewer than 40.
        print(f"{len(made)} sandboxes of {DISK_MB} MiB before the refusal: {body}")
        assert 2 <= len(made) < 40, len(made)
        assert status == 503 and body.get("code") == 503, (status, body)
        assert "--disk-overcommit" in str(body.get("message")), body
        # One ends: the next create fits again.
        Sandbox.kill(made.pop())
        status, body = create()
        assert status == 201, (status, body)
