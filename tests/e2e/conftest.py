"""Shared fixtures for the end-to-end tests.

They run against a live `hutch serve` started by scripts/test.sh, with the official
`e2b` SDK pointed at it through E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY.
HUTCH_TEST_WORK holds the server's command line, pid file and data dir, so that tests
can inspect host resources and restart the server.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2b import AsyncSandbox, Sandbox

from ci_helpers import AsyncCodeSandbox, CodeSandbox, async_code_sandbox, code_sandbox

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


def stop_server(sig: int = signal.SIGKILL) -> None:
    """Stops the running server (by its pid) with `sig` and waits until it is gone."""
    pid = server_pid()
    os.kill(pid, sig)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # The server may be our grandchild's sibling; reap it if it is ours.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    raise RuntimeError(f"hutch serve (pid {pid}) did not stop")


def start_server(cmd: list[str] | None = None) -> None:
    """Starts the server (its usual command line unless `cmd`) and waits until it answers."""
    cmd = cmd or (WORK / "server.cmd").read_text().splitlines()
    # The server keeps its own copies of these; ours are closed once it has started.
    with open(WORK / "server.out", "ab") as out, open(WORK / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=out, stderr=log, start_new_session=True)
    (WORK / "server.pid").write_text(str(proc.pid))
    deadline = time.time() + 60
    while time.time() < deadline:
        if health() == 200:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"hutch serve exited with {proc.returncode}; see {WORK / 'server.log'}")
        time.sleep(0.1)
    raise RuntimeError("hutch serve did not answer after its start")


def restart_server_hard() -> None:
    """kill -9 the running server (by its pid) and start it again on the same data dir."""
    stop_server()
    start_server()


def cgroup_dirs() -> list[str]:
    """Every per-sandbox cgroup directory on the host (v1 and v2 layouts)."""
    found = set()
    for parent in glob.glob("/sys/fs/cgroup/*/hutch") + glob.glob("/sys/fs/cgroup/hutch"):
        for d in os.listdir(parent):
            if os.path.isdir(os.path.join(parent, d)):
                found.add(os.path.join(parent, d))
    return sorted(found)


# How a zygote's command line starts its script (crates/hutch-runtime/src/zygote/zygote.py).
ZYGOTE_MARK = b"# hutch's zygote:"


def _peer_veth(ns_path: str, by_index: dict[int, str]) -> str | None:
    """The host end of the `eth0` veth in the network namespace at `ns_path`, if any."""
    out = subprocess.run(
        ["nsenter", f"--net={ns_path}", "ip", "-o", "link", "show", "eth0"],
        capture_output=True,
        text=True,
    ).stdout
    # "2: eth0@if1234: <...>": the host end's index.
    peer = out.split(":", 2)[1].strip().partition("@if")[2] if out.count(":") >= 2 else ""
    return by_index.get(int(peer)) if peer.isdigit() else None


def _host_links() -> dict[int, str]:
    by_index: dict[int, str] = {}
    for name in os.listdir("/sys/class/net"):
        with contextlib.suppress(OSError, ValueError):
            by_index[int(Path("/sys/class/net", name, "ifindex").read_text())] = name
    return by_index


def kept_networks() -> dict[str, str]:
    """The slot networks the server's spawn helper keeps for each slot's next sandbox
    (docs/design.md, "Slot networks"): host veth name -> network namespace."""
    server = str(server_pid())
    helpers = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if Path(stat).read_text().rsplit(")", 1)[1].split()[1] != server:
                continue
            environ = Path(stat).parent.joinpath("environ").read_bytes().split(b"\0")
            if b"HUTCH_SPAWN_SERVE=1" in environ:
                helpers.append(Path(stat).parent)
    by_index = _host_links()
    kept: dict[str, str] = {}
    for helper in helpers:
        fds: list[Path] = []
        with contextlib.suppress(OSError):
            fds = list((helper / "fd").iterdir())
        for fd in fds:
            with contextlib.suppress(OSError):
                ns = os.readlink(fd)
                if ns.startswith("net:[") and (veth := _peer_veth(str(fd), by_index)):
                    kept[veth] = ns
    return kept


def veths_in_use() -> set[str]:
    """Host veth ends whose network namespace is kept by the spawn helper or has processes
    in it (a sandbox's, also one adopted after a restart, whose helper is gone)."""
    used = set(kept_networks())
    host = os.readlink("/proc/self/ns/net")
    by_index = _host_links()
    seen: set[str] = {host}
    for p in glob.glob("/proc/[0-9]*/ns/net"):
        with contextlib.suppress(OSError):
            ns = os.readlink(p)
            if ns in seen:
                continue
            seen.add(ns)
            if veth := _peer_veth(p, by_index):
                used.add(veth)
    return used


def disk_of(sandbox_id: str) -> Path | None:
    """The directory of the disk a sandbox holds (its image and mount point), if any."""
    with contextlib.suppress(OSError):
        return Path(os.readlink(DATA_DIR / "sandboxes" / sandbox_id / "disk")).parent
    return None


def kept_disks() -> set[str]:
    """Disks the server keeps, emptied, for its next sandboxes (docs/design.md, "Kept
    disks"): those of its disk store that no sandbox's `disk` link names."""
    store = DATA_DIR / "disks"
    if not store.is_dir():
        return set()
    used = {str(d) for sid in os.listdir(DATA_DIR / "sandboxes") if (d := disk_of(sid))}
    return {str(d) for d in store.iterdir() if str(d) not in used}


def host_resources() -> dict[str, list[str]]:
    """What sandboxes hold on the host: counted before and after to prove nothing leaks."""
    # A disk emptied and kept for the next sandbox is not a leftover (it goes with the server).
    kept = tuple(d + "/" for d in kept_disks())
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(DATA_DIR)) and not line.split()[4].startswith(kept)
    ]
    # A slot's network outlives its sandbox, kept for the slot's next one: only a veth of
    # neither a kept network nor a live namespace is left over.
    used = veths_in_use()
    veths = sorted(n for n in os.listdir("/sys/class/net") if n.startswith("hv") and n not in used)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    loops_ours = sorted(
        line for line in loops.splitlines() if str(DATA_DIR) in line and not any(d in line for d in kept)
    )
    sandbox_dirs = sorted(os.listdir(DATA_DIR / "sandboxes")) if (DATA_DIR / "sandboxes").exists() else []
    procs: list[str] = []
    for d in cgroup_dirs():
        with contextlib.suppress(FileNotFoundError):
            procs += Path(d, "cgroup.procs").read_text().split()
    netns = set()
    for p in glob.glob("/proc/[0-9]*/ns/net"):
        with contextlib.suppress(OSError):
            # Templates' zygotes (and their fork servers) come and go with the server, each
            # in a network namespace of its own: not a sandbox's.
            if ZYGOTE_MARK in Path(p).parent.parent.joinpath("cmdline").read_bytes():
                continue
            netns.add(os.readlink(p))
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


# --- fixtures: a fresh sandbox for one test, killed afterwards whatever happened ----------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@pytest_asyncio.fixture
async def async_sandbox() -> AsyncIterator[AsyncSandbox]:
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            await sbx.kill()


@pytest.fixture
def ci_sandbox() -> Iterator[CodeSandbox]:
    """A code-interpreter sandbox (`code-interpreter-v1`)."""
    with code_sandbox() as sbx:
        yield sbx


@pytest_asyncio.fixture
async def async_ci_sandbox() -> AsyncIterator[AsyncCodeSandbox]:
    """A code-interpreter AsyncSandbox (`code-interpreter-v1`)."""
    async with async_code_sandbox() as sbx:
        yield sbx


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


def diff_resources(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, object]:
    """The keys whose values differ, with what was added and removed (for failure messages)."""
    out: dict[str, object] = {}
    for k in before:
        if before[k] != after.get(k):
            out[k] = {
                "added": sorted(set(after.get(k, [])) - set(before[k])),
                "removed": sorted(set(before[k]) - set(after.get(k, []))),
            }
    return out


# --- warm pools: hutch's own API (GET/PUT /pools/{template}) ------------------------------------


def pools_api(method: str, path: str = "", body: dict[str, int] | None = None) -> tuple[int, object]:
    """Calls hutch's pool API; returns (status, decoded JSON body)."""
    req = urllib.request.Request(
        f"{API_URL}/pools{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-KEY": os.environ["E2B_API_KEY"], "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"null")


def set_pools(sizes: dict[str, tuple[int, int]], settle: float = 180) -> None:
    """Sets each template's pool to (min, max) and waits until no pool is above its size
    and nothing is being started for it."""
    for name, (lo, hi) in sizes.items():
        status, body = pools_api("PUT", f"/{name}", {"min": lo, "max": hi})
        assert status == 200, body

    def settled() -> bool:
        _, pools = pools_api("GET")
        assert isinstance(pools, list)
        return all(
            p["starting"] == 0 and p["stopping"] == 0 and p["min"] <= p["ready"] <= p["max"]
            for p in pools
            if p["name"] in sizes or p["templateID"] in sizes
        )

    deadline = time.time() + settle
    while not settled():
        assert time.time() < deadline, f"pools did not settle: {pools_api('GET')[1]}"
        time.sleep(0.2)


@pytest.fixture
def pools_off() -> Iterator[None]:
    """No warm pools during the test (their sandboxes come and go in the background, which
    tests counting host resources must not see); the sizes are restored afterwards."""
    _, pools = pools_api("GET")
    assert isinstance(pools, list)
    saved = {p["templateID"]: (p["min"], p["max"]) for p in pools}
    set_pools(dict.fromkeys(saved, (0, 0)))
    try:
        yield
    finally:
        set_pools(saved)
