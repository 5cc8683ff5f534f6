"""What a sandbox's code, or a holder of one sandbox's secrets, can reach beyond its share:
the host's CPU by real-time priority, its own agent by signals, another sandbox through a
token or a signed URL, the host's name, and processes of another user inside.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
from e2b import Sandbox, SandboxException

from conftest import API_URL, DATA_DIR, python


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_real_time_priority_and_negative_nice_are_refused_as_root(sandbox: Sandbox) -> None:
    # A SCHED_FIFO loop would own a host CPU outside the cgroup's CPU share.
    out = python(
        sandbox,
        """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
got = {}
class Param(ctypes.Structure):
    _fields_ = [("prio", ctypes.c_int)]
for name, policy, prio in (("fifo", 1, 99), ("rr", 2, 1)):
    r = libc.sched_setscheduler(0, policy, ctypes.byref(Param(prio)))
    got[name] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
try:
    os.setpriority(os.PRIO_PROCESS, 0, -20)
    got["nice -20"] = "ok"
except OSError as e:
    got["nice -20"] = e.strerror
# ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_RT << 13 | 0)
r = libc.syscall(251, 1, 0, (1 << 13) | 0)
got["ioprio rt"] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
print(json.dumps(got))
""",
        user="root",
    )
    got = json.loads(out)
    assert "ok" not in got.values(), got


def test_root_inside_cannot_kill_or_stop_its_agent(sandbox: Sandbox) -> None:
    # PID 1 of a PID namespace ignores signals from inside it that it has no handler for.
    r = sandbox.commands.run("kill -KILL 1; kill -STOP 1; kill -SEGV 1; echo sent", user="root")
    assert "sent" in r.stdout
    assert sandbox.commands.run("echo alive").stdout.strip() == "alive"
    assert sandbox.is_running()


def test_one_sandboxs_token_opens_no_other_sandbox(sandbox: Sandbox, other: Sandbox) -> None:
    token = sandbox._envd_access_token
    assert token
    url = f"{API_URL}/files?path=/etc/hostname"
    own = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}
    assert status_of(url, own) == 200
    theirs = {**own, "E2b-Sandbox-Id": other.sandbox_id}
    assert status_of(url, theirs) == 401
    # Through the host name form of the router too.
    host = urllib.parse.urlsplit(API_URL)
    with socket.create_connection((host.hostname, host.port or 80), timeout=30) as s:
        s.sendall(
            (
                f"GET /files?path=/etc/hostname HTTP/1.1\r\nHost: 49983-{other.sandbox_id}.hutch.test\r\n"
                f"X-Access-Token: {token}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        answer = s.recv(4096).decode("latin-1")
    assert answer.split()[1] == "401", answer[:200]


def test_tampered_or_borrowed_signed_urls_are_refused(sandbox: Sandbox, other: Sandbox) -> None:
    sandbox.files.write("/home/user/mine.txt", "mine")
    url = sandbox.download_url("/home/user/mine.txt", use_signature_expiration=600)
    assert status_of(url) == 200
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))

    def with_query(**changes: str) -> str:
        q = {**query, **changes}
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))

    for tampered in (
        with_query(path="/etc/shadow"),
        with_query(username="root"),
        with_query(signature_expiration=str(int(query.get("signature_expiration", "0")) + 3600)),
        with_query(signature="v1_" + "0" * 64),
    ):
        assert status_of(tampered) in (401, 403), tampered
    # The same signature sent to another sandbox (by its routing header) opens nothing there.
    other.files.write("/home/user/mine.txt", "theirs")
    assert status_of(url, {"E2b-Sandbox-Id": other.sandbox_id, "E2b-Sandbox-Port": "49983"}) in (401, 403)


def test_the_hosts_name_is_not_the_sandboxs_to_change(sandbox: Sandbox) -> None:
    before = socket.gethostname()
    # Root inside lacks CAP_SYS_ADMIN, so even its own UTS namespace's name stays; the
    # host's would not move either way.
    r = sandbox.commands.run("hostname evil-host 2>&1; hostname", user="root")
    assert r.stdout.strip().splitlines()[-1] != "evil-host", r.stdout
    assert socket.gethostname() == before


def test_the_user_cannot_signal_or_trace_roots_processes(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 600", background=True, user="root")
    try:
        out = python(
            sandbox,
            f"""
import ctypes, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
got = {{}}
try:
    os.kill({handle.pid}, signal.SIGKILL)
    got["kill"] = "ok"
except OSError as e:
    got["kill"] = e.strerror
r = libc.ptrace(16, {handle.pid}, None, None)
got["ptrace"] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
try:
    open("/proc/{handle.pid}/environ", "rb").read(1)
    got["environ"] = "ok"
except OSError as e:
    got["environ"] = e.strerror
print(json.dumps(got))
""",
        )
        got = json.loads(out)
        assert "ok" not in got.values(), got
        assert str(handle.pid) in sandbox.commands.run("ps -o pid= -p " + str(handle.pid), user="root").stdout
    finally:
        handle.kill()


def test_the_servers_own_files_are_out_of_reach_of_the_files_api(sandbox: Sandbox) -> None:
    db = str(DATA_DIR / "hutch.db")
    for path in (db, "/home/user/../../.." + db, f"/proc/1/root{db}", "/proc/self/root" + db):
        with pytest.raises(SandboxException):
            sandbox.files.read(path, user="root")
    assert not sandbox.files.exists(db, user="root")


def test_memory_cannot_be_pinned_past_the_locked_memory_limit(sandbox: Sandbox) -> None:
    # Locked pages cannot be reclaimed or swapped: root inside has no CAP_IPC_LOCK and cannot
    # raise RLIMIT_MEMLOCK (no CAP_SYS_RESOURCE).
    out = python(
        sandbox,
        """
import ctypes, json, mmap, os, resource
libc = ctypes.CDLL(None, use_errno=True)
got = {"limit": resource.getrlimit(resource.RLIMIT_MEMLOCK)}
try:
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    got["raise"] = "ok"
except (OSError, ValueError) as e:
    got["raise"] = str(e)
size = 256 << 20
buf = mmap.mmap(-1, size)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
r = libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(size))
got["mlock 256 MiB"] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
r = libc.mlockall(3)
got["mlockall"] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
print(json.dumps(got))
""",
        user="root",
    )
    got = json.loads(out)
    assert got["raise"] != "ok" and got["mlock 256 MiB"] != "ok" and got["mlockall"] != "ok", got
