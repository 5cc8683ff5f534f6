"""Attacks on the kernel's surface from inside a sandbox: the OOM killer, sockets that
reach kernel code no sandbox needs (or sniff and spoof), terminal input injection, and
attaching to the agent (PID 1) to take its descriptors, memory and secrets.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

from conftest import DATA_DIR, cgroups_of, host_pid_of, python

USERS = ("user", "root")


def test_no_process_can_make_itself_immune_to_the_oom_killer(sandbox: Sandbox) -> None:
    for user in USERS:
        out = python(
            sandbox,
            """
import json
tried = {}
for value in ("-1000", "-1"):
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
        tried[value] = "written"
    except OSError as e:
        tried[value] = e.strerror
print(json.dumps({"tried": tried, "now": open("/proc/self/oom_score_adj").read().strip(),
                  "agent": open("/proc/1/oom_score_adj").read().strip()}))
""",
            user=user,
        )
        got = json.loads(out)
        assert got["tried"] == {"-1000": "Permission denied", "-1": "Permission denied"}, (user, got)
        assert got["now"] == "0" and got["agent"] == "0", (user, got)


def test_an_oom_among_the_sandboxs_processes_never_takes_the_agent(sandbox: Sandbox) -> None:
    """Root inside may raise the agent's OOM score (its /proc/1/oom_score_adj is root's to
    write) to make it the OOM killer's first choice. Everything the agent starts lives in a
    child cgroup whose memory limit is the sandbox's less a reserve for the agent, so a
    memory bomb's OOM kill stays among those processes."""
    raised = sandbox.commands.run(
        "echo 1000 > /proc/1/oom_score_adj 2>/dev/null; cat /proc/1/oom_score_adj", user="root"
    )
    assert raised.stdout.strip() in ("0", "1000"), raised.stdout
    sandbox.files.write("/tmp/mem.py", "b = []\nwhile True:\n    b.append(bytearray(64 << 20))\n")
    with pytest.raises(CommandExitException):
        sandbox.commands.run("python3 /tmp/mem.py", timeout=120)
    assert sandbox.commands.run("echo alive").stdout == "alive\n"
    assert sandbox.is_running()
    # From the host: the agent is not among its processes' cgroup (v1: the sandbox's own
    # memory cgroup; v2: its `agent` leaf).
    memory = cgroups_of(sandbox).get("memory", cgroups_of(sandbox).get(""))
    assert memory is not None and not memory.endswith("/work"), memory


SOCKETS = """
import json, socket
attempts = {
    "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
    "raw_ip": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
    "raw_icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "vsock": (40, socket.SOCK_STREAM, 0),
    "alg": (38, socket.SOCK_SEQPACKET, 0),
    "rds": (21, socket.SOCK_SEQPACKET, 0),
    "tipc": (30, socket.SOCK_RDM, 0),
    "bluetooth": (31, socket.SOCK_STREAM, 0),
    "sctp": (socket.AF_INET, socket.SOCK_STREAM, 132),
    "dccp": (socket.AF_INET6, 6, 33),
    "udplite": (socket.AF_INET, socket.SOCK_DGRAM, 136),
    "netlink_xfrm": (socket.AF_NETLINK, socket.SOCK_RAW, 6),
    "socketpair_inet": None,
}
out = {}
for name, args in attempts.items():
    try:
        if args is None:
            a, b = socket.socketpair(socket.AF_INET)
            a.close(); b.close()
        else:
            socket.socket(*args).close()
        out[name] = "opened"
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
"""


def loaded_modules() -> set[str]:
    """The host kernel's loaded modules (none on a kernel built without module support)."""
    modules = Path("/proc/modules")
    if not modules.exists():
        return set()
    return {line.split()[0] for line in modules.read_text().splitlines()}


def test_sockets_beyond_local_ip_and_netlink_are_refused(sandbox: Sandbox) -> None:
    before = loaded_modules()
    for user in USERS:
        got = json.loads(python(sandbox, SOCKETS, user=user))
        opened = [name for name, outcome in got.items() if outcome == "opened"]
        assert opened == [], (user, got)
    # Nothing the attempts asked for was loaded into the host's kernel.
    new = loaded_modules() - before
    assert not new & {"sctp", "dccp", "tipc", "rds", "af_alg", "vsock", "bluetooth", "udp_diag"}, new


def test_ordinary_sockets_and_unprivileged_ping_still_work(sandbox: Sandbox) -> None:
    for user in USERS:
        out = python(
            sandbox,
            """
import json, socket, struct
ok = {}
for fam, typ, proto in [(socket.AF_UNIX, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_STREAM, 0),
                        (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP),
                        (socket.AF_NETLINK, socket.SOCK_RAW, 0)]:
    socket.socket(fam, typ, proto).close()
    ok[f"{fam}/{typ}/{proto}"] = True
a, b = socket.socketpair()
a.sendall(b"x"); ok["socketpair"] = b.recv(1) == b"x"
# An ICMP echo over a datagram socket: what ping does without CAP_NET_RAW.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
s.settimeout(5)
s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"hutch", ("127.0.0.1", 0))
reply, _ = s.recvfrom(1024)
ok["echo_reply"] = reply[0] == 0 and reply.endswith(b"hutch")
print(json.dumps(ok))
""",
            user=user,
        )
        assert all(json.loads(out).values()), (user, out)


def test_no_input_can_be_pushed_into_a_terminal(sandbox: Sandbox) -> None:
    for user in USERS:
        out = python(
            sandbox,
            """
import fcntl, json, os, struct, termios
master, slave = os.openpty()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    # The terminal becomes this process's controlling terminal: the one TIOCSTI works on.
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    out = {}
    for name, request, arg in [("TIOCSTI", 0x5412, b"x"), ("TIOCLINUX", 0x541C, struct.pack("b", 12)),
                               ("TIOCSTI_high_bits", 0x7_0000_5412, b"x")]:
        try:
            fcntl.ioctl(slave, request, arg)
            out[name] = "done"
        except (OSError, OverflowError) as e:
            out[name] = getattr(e, "errno", None) or type(e).__name__
    fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\\0" * 8)  # ordinary terminal calls still work
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.waitpid(pid, 0)
out = json.loads(os.read(r, 4096))
# What would have been typed never reaches the terminal's reader.
os.set_blocking(slave, False)
try:
    out["typed"] = os.read(slave, 100).decode(errors="replace")
except BlockingIOError:
    out["typed"] = ""
print(json.dumps(out))
""",
            user=user,
        )
        got = json.loads(out)
        assert got["TIOCSTI"] == 1 and got["TIOCLINUX"] == 1, (user, got)  # EPERM
        assert got["TIOCSTI_high_bits"] != "done", (user, got)
        assert "x" not in got["typed"], (user, got)


def test_root_inside_cannot_attach_to_the_agent(sandbox: Sandbox) -> None:
    out = python(
        sandbox,
        """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
out["ptrace_attach"] = libc.ptrace(16, 1, None, None) == 0 or ctypes.get_errno()
pidfd = libc.syscall(434, 1, 0)  # pidfd_open(1)
out["pidfd_getfd"] = (pidfd >= 0 and libc.syscall(438, pidfd, 0, 0) >= 0) or ctypes.get_errno()
for path in ("/proc/1/environ", "/proc/1/mem", "/proc/1/maps"):
    try:
        with open(path, "rb") as f:
            f.read(1)
        out[path] = "read"
    except OSError as e:
        out[path] = e.errno
# The descriptor numbers may be listed; what they are, or opening them, must not work.
for fd in os.listdir("/proc/1/fd"):
    for name, attempt in (("readlink", os.readlink), ("open", lambda p: os.close(os.open(p, os.O_RDONLY)))):
        try:
            attempt(f"/proc/1/fd/{fd}")
            out[f"fd {fd} {name}"] = "done"
        except OSError as e:
            out[f"fd {fd} {name}"] = e.errno
out["status_readable"] = "Name:" in open("/proc/1/status").read()
print(json.dumps(out))
""",
        user="root",
    )
    got = json.loads(out)
    assert got.pop("status_readable") is True, got
    # EPERM or EACCES everywhere: nothing of the agent's is reachable.
    assert all(v in (1, 13) for v in got.values()), got
    # The agent still works.
    assert sandbox.commands.run("echo alive").stdout.strip() == "alive"


def test_no_process_finds_the_agents_token_in_its_environment(sandbox: Sandbox) -> None:
    """The agent's configuration (with the sandbox's access token, which opens its API as
    root) reaches it in its environment. The kernel refuses `/proc/1/environ` to both users
    (the agent is not dumpable); gVisor's `/proc` lets anyone read it, so the agent zeroes
    those strings before it serves: either way nothing of the configuration is there."""
    token = sandbox._envd_access_token
    assert token
    for user in USERS:
        out = python(
            sandbox,
            """
import json
try:
    with open("/proc/1/environ", "rb") as f:
        got = {"read": f.read().decode("latin-1")}
except OSError as e:
    got = {"errno": e.errno}
print(json.dumps(got))
""",
            user=user,
        )
        got = json.loads(out)
        if "errno" in got:
            assert got["errno"] in (1, 13), (user, got)
        else:
            assert "HUTCH_AGENT_CONFIG" not in got["read"], user
            assert token not in got["read"], user


def test_the_agents_log_reaches_the_host_through_a_pipe_only(sandbox: Sandbox) -> None:
    """The test server runs with `--agent-log`: the agent's output goes to a host file, but
    the agent holds only a pipe's write end, so whoever took its descriptors could not
    write, truncate or grow that file. Checked from the host."""
    pid = host_pid_of(sandbox)
    own = DATA_DIR / "sandboxes" / sandbox.sandbox_id
    assert (own / "agent.log").is_file()
    fifo = (own / "agent.log.fifo").stat()
    assert stat.S_ISFIFO(fifo.st_mode) and fifo.st_uid == 0, fifo
    assert stat.S_IMODE(fifo.st_mode) == 0o600, oct(fifo.st_mode)
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    for fd in (1, 2):
        held = os.stat(f"/proc/{pid}/fd/{fd}")
        assert stat.S_ISFIFO(held.st_mode), (fd, oct(held.st_mode))
        assert (held.st_dev, held.st_ino) == (fifo.st_dev, fifo.st_ino), fd


def test_nothing_the_agent_was_handed_at_start_reaches_its_processes(sandbox: Sandbox) -> None:
    """The agent's configuration (`HUTCH_AGENT_CONFIG`) and its readiness pipe
    (`HUTCH_READY_FD`, descriptor 3) are the agent's alone: no process it starts sees the
    variables or inherits a descriptor beyond stdio."""
    for user in USERS:
        out = python(
            sandbox,
            """
import json, os
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
print(json.dumps({"env": sorted(k for k in os.environ if k.startswith("HUTCH_")), "fds": fds}))
""",
            user=user,
        )
        got = json.loads(out)
        assert got["env"] == [], (user, got)
        # stdio, and the directory listing's own descriptor (gone by the time it is read).
        assert set(got["fds"]) <= {"0", "1", "2", "3"}, (user, got)
        assert "pipe:" not in got["fds"].get("3", ""), (user, got)
