"""Shared fixtures of the attack suite.

Every test here is an attack run as real code inside a real sandbox of the `hutch serve`
that scripts/test.sh started (the official `e2b` SDK, pointed at it by E2B_API_URL /
E2B_SANDBOX_URL / E2B_API_KEY), as the sandbox's user and as root inside. Each attack is
bounded (timeouts, small sizes) so that if it succeeded it could not harm the machine, and
its outcome is checked where it would show: inside the sandbox and on the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

# scripts/test.sh's work folder: the server's command line and its data directory.
WORK = Path(os.environ["HUTCH_TEST_WORK"])
DATA_DIR = WORK / "data"
API_URL = os.environ["E2B_API_URL"]


def hutch(*args: str) -> str:
    """Runs the test server's `hutch` binary (`keys`, `teams`...) on its data directory."""
    binary = (WORK / "server.cmd").read_text().splitlines()[0]
    out = subprocess.run([binary, *args, "--data-dir", str(DATA_DIR)], capture_output=True, text=True, check=True)
    return out.stdout


def key_id(key: str) -> str:
    """The id hutch gives a key (`hutch keys list`): the start of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def api(
    key: str, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """One call to hutch's E2B API (with `headers` besides the key); the status and the
    decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        API_URL + path,
        data=data,
        method=method,
        headers={"X-API-KEY": key, "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def record(sbx: Sandbox) -> dict[str, object]:
    """The server's stored record of `sbx` (its host pid, limits, team...)."""
    con = sqlite3.connect(str(DATA_DIR / "hutch.db"))
    try:
        row = con.execute("SELECT record FROM sandboxes WHERE id = ?", (sbx.sandbox_id,)).fetchone()
    finally:
        con.close()
    assert row, "sandbox record not found in the server's database"
    rec: dict[str, object] = json.loads(row[0])
    return rec


def host_pid_of(sbx: Sandbox) -> int:
    """Host pid of the sandbox's PID 1."""
    return int(str(record(sbx)["pid"]))


def cgroups_of(sbx: Sandbox) -> dict[str, str]:
    """The sandbox's cgroup paths by controller, as the host sees them ("" = cgroup v2)."""
    lines = Path(f"/proc/{host_pid_of(sbx)}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def base_sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create(template="base", timeout=120)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The sandbox an attack runs in."""
    yield from base_sandbox()


@pytest.fixture
def other() -> Iterator[Sandbox]:
    """A second sandbox: the neighbour an attack must not reach."""
    yield from base_sandbox()


# The start of an attack script that makes raw system calls (x86-64 numbers), so no library
# wrapper can hide an outcome: `call(nr, *args)` answers "ok" or the errno's name, `addr` is
# a 4 KiB scratch buffer.
SYSCALL_PRELUDE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
buf = ctypes.create_string_buffer(4096)
addr = ctypes.addressof(buf)
"""


def wait_for_file(sbx: Sandbox, path: str) -> str:
    """Waits (up to a minute) for a background attack to write `path`; its content."""
    for _ in range(240):
        if sbx.files.exists(path):
            break
        time.sleep(0.25)
    return sbx.files.read(path)


def python(sbx: Sandbox, code: str, user: str = "user") -> str:
    """Runs `code` with the sandbox's python3 as `user`; its stdout (stderr on failure)."""
    script = f"/tmp/attack-{user}.py"
    sbx.files.write(script, code, user=user)
    try:
        return sbx.commands.run(f"python3 {script}", user=user, timeout=30).stdout
    except CommandExitException as e:
        raise AssertionError(f"the attack script failed: {e.stderr}") from e
