"""Shared fixtures for the end-to-end tests.

They run against a live `hutch serve` started by scripts/test.sh, with the official
`e2b` SDK pointed at it through E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY.
HUTCH_TEST_WORK holds the server's command line, pid file and data dir, so that tests
can inspect host resources and restart the server.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from e2b import Sandbox

WORK = Path(os.environ["HUTCH_TEST_WORK"])
DATA_DIR = WORK / "data"
API_URL = os.environ["E2B_API_URL"]


def server_pid() -> int:
    return int((WORK / "server.pid").read_text().strip())


def health() -> int:
    try:
        with urllib.request.urlopen(f"{API_URL}/health", timeout=2) as r:
            return int(r.status)
    except Exception:
        return 0


def restart_server_hard() -> None:
    """kill -9 the running server (by its pid) and start it again on the same data dir."""
    pid = server_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # The server may be our grandchild's sibling; reap it if it is ours.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    cmd = (WORK / "server.cmd").read_text().splitlines()
    out = open(WORK / "server.out", "ab")
    log = open(WORK / "server.log", "ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=log, start_new_session=True)
    (WORK / "server.pid").write_text(str(proc.pid))
    deadline = time.time() + 60
    while time.time() < deadline:
        if health() == 200:
            return
        time.sleep(0.1)
    raise RuntimeError("hutch serve did not come back after the restart")


def cgroup_dirs() -> List[str]:
    """Every per-sandbox cgroup directory on the host (v1 and v2 layouts)."""
    found = set()
    for parent in glob.glob("/sys/fs/cgroup/*/hutch") + glob.glob("/sys/fs/cgroup/hutch"):
        for d in os.listdir(parent):
            if os.path.isdir(os.path.join(parent, d)):
                found.add(os.path.join(parent, d))
    return sorted(found)


def host_resources() -> Dict[str, List[str]]:
    """What sandboxes hold on the host: counted before and after to prove nothing leaks."""
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(DATA_DIR))
    ]
    veths = sorted(n for n in os.listdir("/sys/class/net") if n.startswith("hv"))
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    loops_ours = sorted(line for line in loops.splitlines() if str(DATA_DIR) in line)
    sandbox_dirs = sorted(os.listdir(DATA_DIR / "sandboxes")) if (DATA_DIR / "sandboxes").exists() else []
    procs = []
    for d in cgroup_dirs():
        try:
            procs += [p for p in Path(d, "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            pass
    netns = set()
    for p in glob.glob("/proc/[0-9]*/ns/net"):
        try:
            netns.add(os.readlink(p))
        except OSError:
            pass
    server = str(server_pid())
    zombies = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == server:
            zombies.append(stat)
    return {
        "zombies": sorted(zombies),
        "cgroups": cgroup_dirs(),
        "mounts": sorted(mounts),
        "veths": veths,
        "loops": loops_ours,
        "sandbox_dirs": sandbox_dirs,
        "processes": sorted(procs),
        "netns": sorted(netns),
    }


def wait_for(pred, timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        try:
            sbx.kill()
        except Exception:
            pass


def sandbox_ip(sbx: Sandbox) -> str:
    out = sbx.commands.run("ip -4 -o addr show eth0").stdout
    return out.split()[3].split("/")[0]


def host_pid_of(sbx: Sandbox) -> int:
    """Host pid of the sandbox's PID 1, from the server's database record."""
    import sqlite3

    con = sqlite3.connect(str(DATA_DIR / "hutch.db"))
    try:
        row = con.execute("SELECT record FROM sandboxes WHERE id = ?", (sbx.sandbox_id,)).fetchone()
    finally:
        con.close()
    assert row, "sandbox record not found in the server's database"
    return int(json.loads(row[0])["pid"])


def diff_resources(before: Dict[str, List[str]], after: Dict[str, List[str]]) -> Dict[str, object]:
    """The keys whose values differ, with what was added and removed (for failure messages)."""
    out: Dict[str, object] = {}
    for k in before:
        if before[k] != after.get(k):
            out[k] = {"added": sorted(set(after.get(k, [])) - set(before[k])), "removed": sorted(set(before[k]) - set(after.get(k, [])))}
    return out
