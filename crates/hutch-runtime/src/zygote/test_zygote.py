"""End-to-end test of hutch's zygote (zygote.py), without the server. Run as root:

    python3 crates/hutch-runtime/src/zygote/test_zygote.py

(It re-runs itself with the kernel venv's Python, which has ipykernel and jupyter_client.)

It runs the zygote twice: as host root, and confined as hutch runs it (user, mount, net, IPC
and UTS namespaces of its own, root of its user namespace, no /proc). It makes fake sandboxes
(a user namespace mapping 0..65535 to host 100000.., nested in the confined zygote's, and pid,
mount, net, IPC, UTS and cgroup namespaces of their own, with `sleep` as PID 1 and a /proc of
their own), has the zygote fork kernels into them and talks to the kernels with jupyter_client
over ipc sockets. It compares a forked kernel with a cold one started in the same sandbox
(`nsenter`), checks that a kernel's memory holds nothing of another sandbox's plan, goes
through the refusals, abort, failures after the go and end of file, and times it all. With
Python 3.12 and 3.13 from pyenv, where there is no ipykernel, it checks the fork mechanics with
stand-ins for the kernel's modules. Everything it starts is killed in a `finally`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import glob
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The kernel venv scripts/test.sh makes (ipykernel, jupyter_client).
KERNEL_VENV = os.environ.get("HUTCH_KERNEL_VENV", "/var/cache/hutch-test/kernel-venv-a4a9ec63cc3ada2d")
KERNEL_PY = os.path.join(KERNEL_VENV, "bin/python")
HERE = Path(__file__).resolve().parent
SCRIPT = (HERE / "zygote.py").read_text()
REPO = HERE.parents[3]
KERNEL_EXT = REPO / "python-kernel-ext"

# The fake sandboxes' id map: root inside is host 100000, the kernel's user 1000 is 101000.
ID_BASE = 100000
USER = 1000
KEPT_CAPS = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]  # hutch-runtime/src/caps.rs
DROPPED_CAPS = [c for c in range(41) if c not in KEPT_CAPS]
ALLOW_ALL = base64.b64encode(struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)).decode()
# sysinfo(2) fails with EPERM, everything else is allowed (x86_64 and aarch64 numbers).
SYSINFO_NR = {"x86_64": 99, "aarch64": 179}.get(os.uname().machine, 99)
DENY_SYSINFO = base64.b64encode(
    struct.pack("=HBBI", 0x20, 0, 0, 0)  # ld [nr]
    + struct.pack("=HBBI", 0x15, 0, 1, SYSINFO_NR)  # jeq sysinfo
    + struct.pack("=HBBI", 0x06, 0, 0, 0x00050000 | 1)  # ret ERRNO(EPERM)
    + struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)  # ret ALLOW
).decode()

# What the scripts below start with: libc through ctypes, and a check of its -1 returns.
CTYPES_PRELUDE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def ok(ret, what):
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
"""

# Makes a fake sandbox: a user namespace (the test writes its maps), then the others; PID 1 of
# the new pid namespace mounts its /proc and becomes `sleep`. Prints its host pid.
SANDBOX = (
    CTYPES_PRELUDE
    + r"""
if len(sys.argv) > 1:
    # Nested in the zygote's user namespace, as hutch's spawn helper does it: become root of
    # that namespace, make the sandbox's inside it and write its maps from there (ids 1.. of
    # the zygote's namespace).
    fd = os.open(f"/proc/{sys.argv[1]}/ns/user", os.O_RDONLY)
    ok(libc.setns(fd, 0x10000000), "setns into the zygote's user namespace")
    os.close(fd)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    ok(libc.prctl(4, 1, 0, 0, 0), "PR_SET_DUMPABLE")  # the switch of user cleared it
    r, w = os.pipe()
    child = os.fork()
    if child:
        os.close(w)
        os.read(r, 1)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child}/{name}", "w") as f:
                f.write("0 1 65536\n")
        print("mapped", flush=True)
        os.waitpid(child, 0)
        sys.exit(0)
    os.close(r)
    ok(libc.unshare(0x10000000), "unshare(CLONE_NEWUSER)")
    os.write(w, b"x")
    os.close(w)
else:
    ok(libc.unshare(0x10000000), "unshare(CLONE_NEWUSER)")
    print("mapped?", flush=True)
sys.stdin.readline()
os.setgroups([])
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
ok(libc.unshare(0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000 | 0x02000000), "unshare")
ok(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")
pid = os.fork()
if pid == 0:
    ok(libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None), "mount /proc")
    ok(libc.sethostname(b"sandbox", 7), "sethostname")
    os.execv("/bin/sleep", ["sleep", "600"])
print(pid, flush=True)
os.waitpid(pid, 0)
"""
)

# Runs the zygote as hutch does: in user, mount, net, IPC and UTS namespaces of its own, as
# root of its user namespace (host id 200000, with ids 1.. mapped to the sandboxes' host ids),
# without /proc, in the host's pid namespace. The test writes its maps (fds 5 and 6 are the
# handshake), then it execs the zygote with fd 3 as its socket.
ZYGOTE_HELPER = (
    CTYPES_PRELUDE
    + r"""
ok(libc.unshare(0x10000000 | 0x00020000 | 0x40000000 | 0x08000000 | 0x04000000), "unshare")
os.write(5, b"u\n")
if os.read(6, 1) != b"g":
    sys.exit(1)
os.close(5)
os.close(6)
os.setgroups([])
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
ok(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")
ok(libc.mount(b"tmpfs", b"/proc", b"tmpfs", 2 | 4 | 8, b"size=4k"), "hide /proc")
ok(libc.sethostname(b"zygote", 6), "sethostname")
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
"""
)
ZYGOTE_OWN_ID = 200000

# Run in each kernel: what a cold kernel and a forked one are compared on.
FINGERPRINT = r"""
def _hutch_fingerprint():
    import json, os, platform, posix, random, resource, signal, site, socket, sys, tempfile, threading, time
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    fds = {}
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    frames = []
    f = sys._getframe()
    while f is not None:
        frames.append(f"{f.f_code.co_filename}:{f.f_code.co_name}")
        launcher = f.f_globals if f.f_code.co_filename.endswith("ipykernel_launcher.py") else None
        if launcher is not None:
            launcher_globals = sorted(launcher)
        f = f.f_back
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read()
    with open("/proc/self/environ", "rb") as f:
        environ = f.read()
    with open("/proc/self/oom_score_adj") as f:
        oom = f.read().strip()
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    dumpable = libc.prctl(3, 0, 0, 0, 0)
    ret = libc.sysinfo(ctypes.create_string_buffer(256))
    sysinfo_errno = ctypes.get_errno() if ret == -1 else 0
    parso = sys.modules.get("parso.cache")
    jedi = sys.modules.get("jedi.settings")
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "session_leader": os.getsid(0) == os.getpid() or os.getsid(0) == os.getppid(),
        "pgid_is_sid": os.getpgid(0) == os.getsid(0),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "posix_environ": sorted(k.decode() for k in posix.environ),
        "proc_cmdline": cmdline.decode(errors="replace").split("\0"),
        "proc_environ": sorted(environ.decode(errors="replace").split("\0")),
        "random": random.random(),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "path": sys.path,
        "executable": sys.executable,
        "flags": str(sys.flags),
        "signals": {s.name: repr(signal.getsignal(s)) for s in signal.Signals},
        "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "umask": status.get("Umask"),
        "oom_score_adj": oom,
        "uid": status.get("Uid"),
        "gid": status.get("Gid"),
        "groups": status.get("Groups"),
        "caps": {k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status.get("NoNewPrivs"),
        "seccomp": status.get("Seccomp"),
        "seccomp_filters": status.get("Seccomp_filters"),
        "nspid": status.get("NSpid"),
        "dumpable": dumpable,
        "sysinfo_errno": sysinfo_errno,
        "threads_os": status.get("Threads"),
        "fds": fds,
        "threads_py": sorted(t.name for t in threading.enumerate()),
        "modules": sorted(sys.modules),
        "frames": frames,
        "launcher_globals": launcher_globals,
        "hostname": socket.gethostname(),
        "platform_node": platform.node(),
        "tempdir": tempfile.gettempdir(),
        "tzname": list(time.tzname),
        "user_site": [site.ENABLE_USER_SITE, site.USER_SITE],
        "parso_cache": str(parso._default_cache_path) if parso else None,
        "jedi_cache": jedi.cache_directory if jedi else None,
    }
print("HUTCH-FP " + __import__("json").dumps(_hutch_fingerprint()))
del _hutch_fingerprint
"""

# --- reporting --------------------------------------------------------------------------------

FAILURES: list[str] = []


def check(ok: bool, what: str, detail: Any = None) -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok or detail is None else f": {detail}"))
    if not ok:
        FAILURES.append(what)
    return ok


def section(title: str) -> None:
    print(f"\n== {title}")


# --- the zygote -------------------------------------------------------------------------------


class Zygote:
    """A zygote process and the server's end of its socket."""

    def __init__(
        self,
        env: dict[str, str],
        extra_fd: bool = False,
        python: str = KERNEL_PY,
        confined: bool = False,
        nice: int = 0,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.log = tempfile.NamedTemporaryFile(prefix="zygote-", suffix=".log", delete=False)  # noqa: SIM115
        # Descriptors of the child: 3 its socket, 7 a stray one, 5 and 6 the helper's handshake.
        child_fds = {3: theirs.fileno()}
        if extra_fd:
            child_fds[7] = os.open("/dev/null", os.O_RDONLY)
        up_r = go_w = -1
        if confined:
            up_r, child_fds[5] = os.pipe()
            child_fds[6], go_w = os.pipe()

        def child_setup() -> None:
            moved = {n: fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for n, fd in child_fds.items()}  # out of the way
            for n, fd in moved.items():
                os.dup2(fd, n)
            low = 4
            for n in sorted(child_fds):
                if n >= low:
                    os.closerange(low, n)
                    low = n + 1
            os.closerange(low, 65536)
            os.umask(0o077)  # the kernels must take the sandbox init's instead
            if nice:
                os.nice(nice)

        started = time.monotonic()
        argv = [python, "-c", ZYGOTE_HELPER, SCRIPT] if confined else [python, "-c", SCRIPT]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            close_fds=False,
            preexec_fn=child_setup,
            cwd="/",
        )
        theirs.close()
        for n, fd in child_fds.items():
            if n != 3:
                os.close(fd)
        if confined:
            if _readline(up_r) != "u":
                raise RuntimeError("the zygote's helper failed")
            maps = f"0 {ZYGOTE_OWN_ID} 1\n1 {ID_BASE} 65536\n"
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{self.proc.pid}/{name}").write_text(maps)
            os.write(go_w, b"g")
            os.close(up_r)
            os.close(go_w)
        self.ready = self.recv(60)
        self.start_seconds = time.monotonic() - started

    def send(self, msg: Any, fds: list[int] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(msg).encode()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv(self, timeout: float = 30) -> dict[str, Any]:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            raise TimeoutError("no answer from the zygote")
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("the zygote closed its socket")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def ask(self, msg: Any, fds: list[int] | None = None, raw: bytes | None = None) -> dict[str, Any]:
        self.send(msg, fds, raw)
        return self.recv()

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def fork_server_pid(self) -> int | None:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0]) if children else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


# --- fake sandboxes ---------------------------------------------------------------------------


class Sandbox:
    """A fake sandbox: its user namespace maps 0..count-1 to host ids from `id_base`, or, with
    `parent` (a confined zygote's pid), is nested in that process's user namespace."""

    def __init__(self, id_base: int = ID_BASE, count: int = 65536, parent: int | None = None) -> None:
        self.helper = subprocess.Popen(
            [KERNEL_PY, "-c", SANDBOX, *([str(parent)] if parent else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.helper.stdin is not None and self.helper.stdout is not None
        line = _readline(self.helper.stdout.fileno())
        if line == "mapped?":
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{self.helper.pid}/{name}").write_text(f"0 {id_base} {count}\n")
        elif line != "mapped":
            raise RuntimeError("sandbox helper failed")
        self.helper.stdin.write(b"go\n")
        line = _readline(self.helper.stdout.fileno())
        if not line.isdigit():
            raise RuntimeError(f"sandbox helper failed: {line!r}")
        self.init = int(line)
        self.pidns = os.stat(f"/proc/{self.init}/ns/pid").st_ino
        self.pidfd = os.pidfd_open(self.init)

    def host_pid(self, ns_pid: int) -> int | None:
        """The host pid of the process that is `ns_pid` in this sandbox."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino != self.pidns:
                    continue
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == str(ns_pid):
                        return int(entry)
            except OSError:
                continue
        return None

    def exit_code(self, ns_pid: int) -> int | None:
        """The exit code of the child `ns_pid` of the sandbox's init, once it is a zombie (the
        fake init never reaps)."""
        for child in Path(f"/proc/{self.init}/task/{self.init}/children").read_text().split():
            try:
                status = Path(f"/proc/{child}/status").read_text()
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            nspid = next((line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")), None)
            fields = stat[stat.rindex(")") + 2 :].split()
            if nspid == str(ns_pid) and fields[0] == "Z":
                return (int(fields[49]) >> 8) & 0xFF
        return None

    def exited(self, ns_pid: int) -> bool:
        return self.exit_code(ns_pid) is not None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init, signal.SIGKILL)  # PID 1: the whole pid namespace goes with it
        if self.helper.poll() is None:
            self.helper.kill()
        self.helper.wait()


# --- kernels ----------------------------------------------------------------------------------


class Files:
    """A directory for connection files, sockets and logs that the kernels' users can use."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hutch-zygote-"))
        self.dir.chmod(0o777)
        self.home = self.dir / "home"
        self.home.mkdir(mode=0o777)
        self.home.chmod(0o777)
        self.count = 0

    def kernel(self, uid: int) -> tuple[str, str]:
        """A connection file and a log file for a kernel run by `uid` (inside the sandbox)."""
        from jupyter_client.connect import write_connection_file

        self.count += 1
        conn = self.dir / f"kernel-{self.count}.json"
        write_connection_file(
            str(conn), transport="ipc", ip=str(self.dir / f"k{self.count}"), key=secrets.token_hex(16).encode()
        )
        log = self.dir / f"kernel-{self.count}.log"
        log.touch()
        for p in (conn, log):
            os.chown(p, ID_BASE + uid, ID_BASE + uid)
        return str(conn), str(log)


def connect(conn: str, timeout: float = 60) -> tuple[Any, float, float]:
    """A client of the kernel of `conn`, once the kernel answers; with the times at which its
    shell socket appeared and its first kernel_info reply arrived."""
    from jupyter_client import BlockingKernelClient

    info = json.loads(Path(conn).read_text())
    shell = f"{info['ip']}-{info['shell_port']}"
    if not wait_for(lambda: os.path.exists(shell), timeout):
        raise TimeoutError(f"the kernel of {conn} did not bind its sockets")
    t_bound = time.monotonic()
    kc = BlockingKernelClient(connection_file=conn)
    kc.load_connection_file()
    kc.start_channels()
    kc.kernel_info()
    kc.get_shell_msg(timeout=timeout)
    t_info = time.monotonic()
    kc.wait_for_ready(timeout=timeout)
    return kc, t_bound, t_info


def run(kc: Any, code: str, timeout: float = 60) -> tuple[str, dict[str, Any]]:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    return "".join(out), reply["content"]


def fingerprint(kc: Any) -> dict[str, Any]:
    text, reply = run(kc, FINGERPRINT)
    for line in text.splitlines():
        if line.startswith("HUTCH-FP "):
            fp: dict[str, Any] = json.loads(line[len("HUTCH-FP ") :])
            return fp
    raise RuntimeError(f"no fingerprint: {reply.get('status')} {text[-2000:]}")


def memory_contains(pid: int, needle: bytes) -> bool:
    """Whether the readable memory of `pid` holds `needle`."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


def state_of(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        pass
    return "gone"


def wait_for(cond: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


# The kernel's modules, as empty stand-ins, and an ipykernel_launcher that writes what it sees.
STUB_LAUNCHER = r"""
import json, os, random, signal, sys
if __name__ == "__main__":
    out = sys.argv[sys.argv.index("-f") + 1]
    frames = []
    f = sys._getframe()
    while f is not None:
        frames.append(f"{f.f_code.co_filename}:{f.f_code.co_name}")
        f = f.f_back
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    data = {
        "name": __name__,
        "file": __file__,
        "spec": __spec__.name if __spec__ else None,
        "main_keys": sorted(globals()),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "path": sys.path,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "session_leader": os.getsid(0) == os.getpid(),
        "random": random.random(),
        "signals": {s.name: repr(signal.getsignal(s)) for s in signal.Signals},
        "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "fds": sorted(os.listdir("/proc/self/fd"), key=int),
        "frames": frames,
        "modules": sorted(sys.modules),
        "launcher_in_modules": "ipykernel_launcher" in sys.modules,
        "version": sys.version,
        "umask": status.get("Umask"),
        "threads": status.get("Threads"),
    }
    with open(out + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(out + ".tmp", out)
    sys.exit(3)
"""


def stub_tree(root: Path) -> Path:
    """A PYTHONPATH entry with stand-ins for everything the zygote imports."""
    stub = root / "stub"
    for pkg in ("ipykernel", "IPython", "jupyter_client"):
        (stub / pkg).mkdir(parents=True, exist_ok=True)
        (stub / pkg / "__init__.py").write_text("")
    for mod in ("kernelapp", "ipkernel", "zmqshell", "debugger"):
        (stub / "ipykernel" / f"{mod}.py").write_text("")
    (stub / "ipykernel_launcher.py").write_text(STUB_LAUNCHER)
    return stub


def stub_test(py: str, files: Files, cleanups: list[Callable[[], None]]) -> None:
    """The fork mechanics on another Python (no ipykernel there): a stand-in launcher reports
    what it sees, in a forked process and in a cold one."""
    section(f"fork mechanics on {py} (stand-in kernel modules)")
    stub = stub_tree(files.dir)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(files.home), "LANG": "C.UTF-8", "PYTHONPATH": str(stub)}
    z = Zygote(env, python=py)
    cleanups.append(z.close)
    if not check(z.ready.get("op") == "ready", "ready", (z.ready, z.log_text())):
        return
    print(f"  (python {z.ready['python'].split()[0]}, start to ready {z.start_seconds * 1000:.0f} ms)")
    # Root only, mapped to host root: this Python lives under /root.
    sb = Sandbox(id_base=0, count=1)
    cleanups.append(sb.close)
    outs = []
    for n in range(2):
        out = files.dir / f"stub-{Path(py).parents[1].name}-{n}.json"
        log = files.dir / f"stub-{Path(py).parents[1].name}-{n}.log"
        log.touch()
        plan: dict[str, Any] = {
            "id": f"stub-{n}",
            "argv": [py, "-m", "ipykernel_launcher", "-f", str(out)],
            "env": {**env, "HUTCH_TEST_VAR": str(n)},
            "cwd": "/tmp",
            "uid": 0,
            "gid": 0,
            "groups": [],
            "connectionFile": str(out),
            "logFile": str(log),
        }
        forked = z.ask(
            {
                "op": "fork",
                "id": plan["id"],
                "plan": plan,
                "capsDrop": DROPPED_CAPS,
                "seccomp": [ALLOW_ALL],
                "noNewPrivs": True,
            },
            [sb.pidfd],
        )
        started = z.ask({"op": "go", "id": plan["id"]})
        if not check(started.get("op") == "started", f"fork {n}", (forked, started, log.read_text())):
            return
        if not check(wait_for(out.exists, 20), f"kernel {n} ran", log.read_text()):
            return
        data = json.loads(out.read_text())
        ns_pid = started["nsPid"]
        wait_for(functools.partial(sb.exited, ns_pid), 10)
        code = sb.exit_code(ns_pid)
        check(code == 3, f"kernel {n} exited with its sys.exit code", code)
        check(data["pid"] == started["nsPid"] and data["ppid"] == 1, f"kernel {n}: pid and parent", data)
        check(data["env"] == plan["env"], f"kernel {n}: environment", data["env"])
        check(data["session_leader"], f"kernel {n}: leads its session")
        text = log.read_text()
        check("Warning" not in text and "Traceback" not in text, f"kernel {n}: nothing in its log", text)
        outs.append((plan, data))
    (plan_a, a), (_, b) = outs
    check(a["random"] != b["random"], "random.random() differs between forks")
    # The same, cold, in the same sandbox.
    out = files.dir / f"stub-{Path(py).parents[1].name}-cold.json"
    cold = subprocess.run(
        ["nsenter", f"--target={sb.init}", "--all", "--wd=/tmp", "--", py, "-m", "ipykernel_launcher", "-f", str(out)],
        env=plan_a["env"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    check(cold.returncode == 3, "the cold run", cold.stderr)
    c = json.loads(out.read_text())
    for data, path in ((a, outs[0][0]["connectionFile"]), (c, str(out))):
        for key in ("argv", "orig_argv"):
            data[key] = [x.replace(path, "OUT") for x in data[key]]
        data["frames"] = [f for f in data["frames"] if f != "<string>:<module>"]
    for key in (
        "name",
        "file",
        "spec",
        "main_keys",
        "argv",
        "orig_argv",
        "path",
        "cwd",
        "signals",
        "sigmask",
        "fds",
        "frames",
        "launcher_in_modules",
        "umask",
        "threads",
    ):
        check(a[key] == c[key], f"forked and cold agree on {key}", (a[key], c[key]))
    extra = sorted(set(a["modules"]) - set(c["modules"]))
    print(f"  modules only in the forked process ({len(extra)}): {' '.join(extra)}")
    print(f"  modules only in the cold one: {' '.join(sorted(set(c['modules']) - set(a['modules'])))}")


# --- the test ---------------------------------------------------------------------------------


class Test:
    def __init__(self) -> None:
        self.cleanups: list[Callable[[], None]] = []
        self.files = Files()
        self.cleanups.append(lambda: shutil.rmtree(self.files.dir, ignore_errors=True))
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.files.home),
            "USER": "user",
            "LOGNAME": "user",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(KERNEL_EXT),
        }

    def later(self, f: Callable[[], None]) -> None:
        self.cleanups.append(f)

    def plan(self, uid: int = USER, **extra_env: str) -> dict[str, Any]:
        conn, log = self.files.kernel(uid)
        return {
            "id": f"plan-{self.files.count}",
            "argv": [KERNEL_PY, "-m", "ipykernel_launcher", "-f", conn],
            "env": {**self.env, "HUTCH_TEST_VAR": f"value-{self.files.count}", **extra_env},
            "cwd": "/tmp",
            "uid": uid,
            "gid": uid,
            "groups": [uid],
            "connectionFile": conn,
            "logFile": log,
        }

    def fork_request(self, id_: str, plan: dict[str, Any], **over: Any) -> dict[str, Any]:
        msg = {
            "op": "fork",
            "id": id_,
            "plan": plan,
            "capsDrop": DROPPED_CAPS,
            "seccomp": [ALLOW_ALL, DENY_SYSINFO],
            "noNewPrivs": True,
        }
        msg.update(over)
        return msg

    def start_kernel(
        self, z: Zygote, sb: Sandbox, plan: dict[str, Any], **over: Any
    ) -> tuple[int, int, dict[str, float]]:
        """Forks and starts `plan`'s kernel; returns its host pid, its pid in the sandbox and timings."""
        t0 = time.monotonic()
        forked = z.ask(self.fork_request(plan["id"], plan, **over), [sb.pidfd])
        t1 = time.monotonic()
        if forked.get("op") != "forked":
            raise RuntimeError(f"fork failed: {forked}")
        waiting = forked["hostPid"]
        check(
            os.stat(f"/proc/{waiting}/ns/pid").st_ino == sb.pidns,
            f"{plan['id']}: the forked process (host pid {waiting}) is in the sandbox's pid namespace",
        )
        t2 = time.monotonic()
        started = z.ask({"op": "go", "id": plan["id"]})
        t3 = time.monotonic()
        if started.get("op") != "started":
            raise RuntimeError(f"go failed: {started}; log: {Path(plan['logFile']).read_text()}")
        ns_pid = started["nsPid"]
        host = sb.host_pid(ns_pid)
        if host is None:
            raise RuntimeError(f"no process {ns_pid} in the sandbox; log: {Path(plan['logFile']).read_text()}")
        self.later(lambda: _kill(host))
        return host, ns_pid, {"fork_ms": (t1 - t0) * 1000, "go_ms": (t3 - t2) * 1000, "started_at": t3}

    def main(self, confined: bool) -> None:
        mode = "confined zygote" if confined else "zygote as host root"
        section(f"{mode}: start")
        z = Zygote(self.env, confined=confined)
        self.later(z.close)
        ready = z.ready
        check(ready.get("op") == "ready", "the zygote says ready", ready)
        check(ready.get("executable") == KERNEL_PY, "ready names its executable", ready.get("executable"))
        check(ready.get("pid") == z.proc.pid, "ready carries the zygote's pid")
        check(isinstance(ready.get("python"), str) and ready["python"].startswith("3."), "ready carries sys.version")
        check(
            {"HOME", "PATH", "PYDEVD_USE_FRAME_EVAL"} <= set(ready.get("envRead", [])),
            "ready lists the variables the imports read",
            ready.get("envRead"),
        )
        print(f"  (zygote start to ready: {z.start_seconds * 1000:.0f} ms)")
        server_pid = z.fork_server_pid()
        check(server_pid is not None, "the zygote has its fork server")
        # The fork server closes what it inherited from the zygote right after its fork.
        wait_for(lambda: len(os.listdir(f"/proc/{server_pid}/fd")) <= 4)
        for name, pid in (("zygote", z.proc.pid), ("fork server", server_pid)):
            tasks = os.listdir(f"/proc/{pid}/task")
            check(len(tasks) == 1, f"the {name} has one thread", tasks)
            fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            others = sorted(v for fd, v in fds.items() if fd > 2)
            want = set(range(5)) if name == "zygote" else None
            check(
                (set(fds) == want) if want else (len(fds) == 4 and others[0].startswith("socket:")),
                f"the {name} has only its stdio and sockets open",
                fds,
            )
        print("  zygote log: " + z.log_text().strip().replace("\n", "\n    "))
        # The forks inherit the zygote's OOM score; the kernels must have 0, as the agent's do.
        self.zygote_oom = "0"
        try:
            for pid in (z.proc.pid, server_pid):
                Path(f"/proc/{pid}/oom_score_adj").write_text("-500")
            self.zygote_oom = "-500"
        except PermissionError:
            print("  (cannot give the zygote an OOM score below 0 here: no CAP_SYS_RESOURCE)")

        if confined:
            check(
                os.stat(f"/proc/{z.proc.pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino,
                "the zygote has a user namespace of its own",
            )
            uid_map = Path(f"/proc/{z.proc.pid}/uid_map").read_text().split()
            check(uid_map[:3] == ["0", str(ZYGOTE_OWN_ID), "1"], "its root is its own host id", uid_map)
            check(os.listdir(f"/proc/{z.proc.pid}/root/proc") == [], "it has no /proc")
        sb = Sandbox(parent=z.proc.pid if confined else None)
        self.later(sb.close)

        section(f"{mode}: a kernel forked into a sandbox (user 1000)")
        secret_a = "secret-" + secrets.token_hex(16)
        plan_a = self.plan(HUTCH_TEST_SECRET=secret_a)
        host_a, ns_a, t_a = self.start_kernel(z, sb, plan_a)
        check(os.stat(f"/proc/{host_a}/ns/pid").st_ino == sb.pidns, "the kernel is in the sandbox's pid namespace")
        for ns in ("user", "mnt", "net", "ipc", "uts", "cgroup"):
            check(
                os.stat(f"/proc/{host_a}/ns/{ns}").st_ino == os.stat(f"/proc/{sb.init}/ns/{ns}").st_ino,
                f"the kernel is in the sandbox's {ns} namespace",
            )
        kc_a, t_bound, t_info = connect(plan_a["connectionFile"])
        self.later(kc_a.stop_channels)
        t_ready = time.monotonic()
        text, reply = run(kc_a, "1+1")
        t_exec = time.monotonic()
        check(reply["status"] == "ok", "the kernel executes code", text)
        cpu_a = cpu_ms(host_a)
        timings = {
            "forked: fork→forked": t_a["fork_ms"],
            "forked: go→started": t_a["go_ms"],
            "forked: started→sockets bound": (t_bound - t_a["started_at"]) * 1000,
            "forked: started→first kernel_info reply": (t_info - t_a["started_at"]) * 1000,
            "forked: first execute (1+1) round trip": (t_exec - t_ready) * 1000,
        }
        fp_a = fingerprint(kc_a)
        check(fp_a["nspid"].split()[-1] == str(ns_a), "nsPid is the kernel's pid in the sandbox", fp_a["nspid"])
        check(fp_a["pid"] == ns_a, "os.getpid() in the kernel is nsPid")
        check(fp_a["ppid"] == 1, "the kernel's parent is the sandbox's init", fp_a["ppid"])
        check(fp_a["session_leader"] and fp_a["pgid_is_sid"], "the kernel leads its own session and group")
        check(fp_a["cwd"] == "/tmp", "cwd", fp_a["cwd"])
        # Plus what the imports set (debugpy: PYDEVD_USE_FRAME_EVAL=NO), as in a cold kernel.
        imports_set = {k: v for k, v in fp_a["env"].items() if k not in plan_a["env"]}
        check(
            {k: v for k, v in fp_a["env"].items() if k in plan_a["env"]} == plan_a["env"],
            "the environment is the plan's",
            fp_a["env"],
        )
        print(f"  (set by the imports: {imports_set})")
        check(fp_a["uid"].split() == [str(USER)] * 4 and fp_a["gid"].split() == [str(USER)] * 4, "uid/gid")
        check(fp_a["groups"] == str(USER), "supplementary groups", fp_a["groups"])
        check(
            all(fp_a["caps"][k] == "0" * 16 for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")),
            "no capabilities",
            fp_a["caps"],
        )
        kept_mask = sum(1 << c for c in KEPT_CAPS)
        check(int(fp_a["caps"]["CapBnd"], 16) == kept_mask, "bounding set: the kept ones", fp_a["caps"]["CapBnd"])
        check(fp_a["no_new_privs"] == "1", "no_new_privs")
        check(fp_a["seccomp"] == "2" and fp_a["seccomp_filters"] == "2", "two seccomp filters", fp_a["seccomp_filters"])
        check(fp_a["sysinfo_errno"] == 1, "the second filter denies sysinfo(2) (EPERM)", fp_a["sysinfo_errno"])
        check(fp_a["dumpable"] == 1, "the kernel is dumpable, as a cold one is", fp_a["dumpable"])
        check(
            fp_a["oom_score_adj"] == "0",
            f"OOM score adjustment 0 (the zygote's: {self.zygote_oom})",
            fp_a["oom_score_adj"],
        )
        check(fp_a["umask"] == "0022", "umask of the sandbox's init (the zygote's is 077)", fp_a["umask"])
        check(fp_a["hostname"] == "sandbox" and fp_a["platform_node"] == "sandbox", "hostname", fp_a["hostname"])
        check(set(fp_a["fds"]) >= {"0", "1", "2"}, "stdio open")
        check(fp_a["fds"]["0"] == "/dev/null", "stdin is /dev/null", fp_a["fds"]["0"])
        # ipykernel moves fds 1 and 2 onto pipes of its own; the log file stays open under
        # other numbers.
        logs = [fd for fd, target in fp_a["fds"].items() if target == plan_a["logFile"]]
        check(len(logs) == 2, "stdout/stderr were the log file", fp_a["fds"])
        check(
            fp_a["proc_cmdline"][:-1] == plan_a["argv"], "/proc/<pid>/cmdline is the plan's argv", fp_a["proc_cmdline"]
        )
        want_environ = sorted([f"{k}={v}" for k, v in plan_a["env"].items()] + [""])
        check(
            fp_a["proc_environ"] == want_environ, "/proc/<pid>/environ is the plan's environment", fp_a["proc_environ"]
        )
        check(fp_a["posix_environ"] == sorted(fp_a["env"]), "posix.environ is os.environ's data")

        section(f"{mode}: a second kernel (root in the sandbox, no seccomp, no no_new_privs)")
        plan_b = self.plan(uid=0)
        host_b, _, t_b = self.start_kernel(z, sb, plan_b, seccomp=[], noNewPrivs=False)
        kc_b, _, _ = connect(plan_b["connectionFile"])
        self.later(kc_b.stop_channels)
        fp_b = fingerprint(kc_b)
        check(
            fp_b["random"] != fp_a["random"],
            "random.random() differs between kernels",
            (fp_a["random"], fp_b["random"]),
        )
        check(fp_b["uid"].split() == ["0"] * 4, "root")
        check(
            int(fp_b["caps"]["CapEff"], 16) == int(fp_b["caps"]["CapPrm"], 16) == kept_mask
            and fp_b["caps"]["CapInh"] == "0" * 16,
            "root keeps exactly the bounding set, as after an execve",
            fp_b["caps"],
        )
        check(fp_b["no_new_privs"] == "0" and fp_b["seccomp"] == "0", "no seccomp, no no_new_privs")
        check(fp_b["sysinfo_errno"] == 0, "sysinfo(2) works there")
        check(
            not memory_contains(host_b, secret_a.encode()),
            "the second kernel's memory holds nothing of the first sandbox's plan",
        )
        check(memory_contains(host_a, secret_a.encode()), "(the first kernel's own memory does hold it)")
        check(memory_contains(z.proc.pid, secret_a.encode()), "(and so does the zygote's, which parsed it)")
        if server_pid:
            check(not memory_contains(server_pid, secret_a.encode()), "the fork server's memory does not")

        section(f"{mode}: a cold kernel in the same sandbox, for comparison")
        plan_c = self.plan()
        t0 = time.monotonic()
        with open(plan_c["logFile"], "ab") as log:
            cold = subprocess.Popen(
                ["nsenter", f"--target={sb.init}", "--all", f"--setuid={USER}", f"--setgid={USER}", "--wd=/tmp", "--"]
                + plan_c["argv"],
                env=plan_c["env"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.later(functools.partial(_stop, cold))
        kc_c, t_bound, t_info = connect(plan_c["connectionFile"])
        self.later(kc_c.stop_channels)
        t1 = time.monotonic()
        text, _ = run(kc_c, "1+1")
        t2 = time.monotonic()
        timings["cold: spawn→sockets bound"] = (t_bound - t0) * 1000
        timings["cold: spawn→first kernel_info reply"] = (t_info - t0) * 1000
        timings["cold: first execute (1+1) round trip"] = (t2 - t1) * 1000
        host_c = (
            sb.host_pid(int(fp_c_pid)) if (fp_c_pid := run(kc_c, "import os; print(os.getpid())")[0].strip()) else None
        )
        timings["forked: CPU of the kernel process until its first execute"] = cpu_a
        if host_c:
            timings["cold: CPU of the kernel process until its first execute"] = cpu_ms(host_c)
        fp_c = fingerprint(kc_c)
        same = [
            "cwd",
            "argv",
            "orig_argv",
            "path",
            "executable",
            "flags",
            "signals",
            "sigmask",
            "rlimits",
            "nice",
            "affinity",
            "umask",
            "oom_score_adj",
            "uid",
            "gid",
            "hostname",
            "platform_node",
            "tempdir",
            "tzname",
            "user_site",
            "parso_cache",
            "jedi_cache",
            "threads_py",
            "threads_os",
            "dumpable",
            "launcher_globals",
        ]
        for fp, plan in ((fp_a, plan_a), (fp_c, plan_c)):
            # The plans differ in their connection files; threads are numbered in the order
            # their objects are made (debugpy makes one while being imported, which a forked
            # kernel did in the zygote, a cold one after its I/O threads).
            for key in ("argv", "orig_argv"):
                fp[key] = [a.replace(plan["connectionFile"], "CONN") for a in fp[key]]
            fp["threads_py"] = sorted(re.sub(r"-\d+", "-N", t) for t in fp["threads_py"])
            # IPython's history thread opens its journal and directory now and then.
            fp["fds"] = {
                k: v for k, v in fp["fds"].items() if not v.endswith(("-journal", "/.ipython/profile_default"))
            }
        for key in same:
            check(fp_a[key] == fp_c[key], f"forked and cold kernels agree on {key}", (fp_a[key], fp_c[key]))
        check(
            {k: v for k, v in fp_c["env"].items() if k not in plan_c["env"]} == imports_set,
            "the imports set the same variables in the cold kernel",
            fp_c["env"],
        )
        # A cold kernel has one eventfd more: so does one that imports the zygote's modules
        # before running ipykernel_launcher, without any fork (libzmq objects made in another
        # order); allow that one.
        kinds = [Counter(_kind(v) for v in fp["fds"].values()) for fp in (fp_a, fp_c)]
        eventfds = [k.pop("anon_inode:[eventfd]", 0) for k in kinds]
        check(
            kinds[0] == kinds[1] and 0 <= eventfds[1] - eventfds[0] <= 1,
            "same kinds of open descriptors",
            (kinds, eventfds),
        )
        print(f"  (eventfds: forked {eventfds[0]}, cold {eventfds[1]})")
        print(f"  (cold /proc cmdline {fp_c['proc_cmdline'][:-1]})")
        extra = sorted(set(fp_a["modules"]) - set(fp_c["modules"]))
        missing = sorted(set(fp_c["modules"]) - set(fp_a["modules"]))
        print(f"  modules only in the forked kernel ({len(extra)}): {' '.join(extra)}")
        print(f"  modules only in the cold kernel ({len(missing)}): {' '.join(missing)}")
        frames_a = [f for f in fp_a["frames"] if "<string>" in f or "runpy" in f or "ipykernel_launcher" in f]
        frames_c = [f for f in fp_c["frames"] if "<string>" in f or "runpy" in f or "ipykernel_launcher" in f]
        print(f"  bottom of the stack, forked: {frames_a}")
        print(f"  bottom of the stack, cold:   {frames_c}")

        section(f"{mode}: refusals")
        self.refusals(z, sb)

        section(f"{mode}: abort, and a go for a bad working directory")
        plan_d = self.plan()
        forked = z.ask(self.fork_request(plan_d["id"], plan_d), [sb.pidfd])
        check(forked.get("op") == "forked", "fork", forked)
        waiting = forked.get("hostPid", 0)
        check(wait_for(lambda: state_of(waiting) == "S"), "the forked process waits", state_of(waiting))
        check(z.ask({"op": "abort", "id": plan_d["id"]}) == {"op": "aborted", "id": plan_d["id"]}, "aborted")
        check(wait_for(lambda: state_of(waiting) in ("Z", "gone")), "the waiting process is dead", state_of(waiting))
        again = z.ask({"op": "go", "id": plan_d["id"]})
        check(again.get("op") == "failed", "a go after the abort fails", again)
        plan_e = self.plan()
        plan_e["cwd"] = "/no/such/dir"
        forked = z.ask(self.fork_request(plan_e["id"], plan_e), [sb.pidfd])
        check(forked.get("op") == "forked", "fork (bad cwd)", forked)
        failed = z.ask({"op": "go", "id": plan_e["id"]})
        check(
            failed.get("op") == "failed" and "/no/such/dir" in failed.get("error", ""),
            "the go fails, saying why",
            failed,
        )
        waiting = forked.get("hostPid", 0)
        check(wait_for(lambda: state_of(waiting) in ("Z", "gone")), "and the forked process is gone")

        section(f"{mode}: interleaved requests, then a last kernel")
        plan_f, plan_g = self.plan(), self.plan()
        f1 = z.ask(self.fork_request(plan_f["id"], plan_f), [sb.pidfd])
        f2 = z.ask(self.fork_request(plan_g["id"], plan_g), [sb.pidfd])
        check(f1.get("op") == f2.get("op") == "forked", "two forks in a row", (f1, f2))
        g2 = z.ask({"op": "go", "id": plan_g["id"]})
        g1 = z.ask({"op": "go", "id": plan_f["id"]})
        check(g1.get("op") == g2.get("op") == "started", "their gos in the other order", (g1, g2))
        for plan, started in ((plan_f, g1), (plan_g, g2)):
            if started.get("op") == "started":
                host = sb.host_pid(started["nsPid"])
                if host:
                    self.later(functools.partial(_kill, host))
                kc, _, _ = connect(plan["connectionFile"])
                self.later(kc.stop_channels)
                fp = fingerprint(kc)
                check(fp["env"]["HUTCH_TEST_VAR"] == plan["env"]["HUTCH_TEST_VAR"], f"{plan['id']} has its own env")

        section(f"{mode}: a burst: 10 kernels forked back to back into one sandbox")
        plans = [self.plan() for _ in range(10)]
        t0 = time.monotonic()
        for plan in plans:
            forked = z.ask(self.fork_request(plan["id"], plan), [sb.pidfd])
            started = z.ask({"op": "go", "id": plan["id"]})
            check(forked.get("op") == "forked" and started.get("op") == "started", f"{plan['id']} started")
        t1 = time.monotonic()
        from jupyter_client import BlockingKernelClient

        clients = []
        for plan in plans:
            info = json.loads(Path(plan["connectionFile"]).read_text())
            wait_for(functools.partial(os.path.exists, f"{info['ip']}-{info['shell_port']}"), 30)
            kc = BlockingKernelClient(connection_file=plan["connectionFile"])
            kc.load_connection_file()
            kc.start_channels()
            self.later(kc.stop_channels)
            kc.kernel_info()
            clients.append(kc)
        for kc in clients:
            kc.get_shell_msg(timeout=60)
        t2 = time.monotonic()
        for kc in clients:
            kc.wait_for_ready(timeout=60)
        t3 = time.monotonic()
        replies = [run(kc, "1+1")[1]["status"] for kc in clients]
        t4 = time.monotonic()
        check(replies == ["ok"] * len(plans), "all of them execute code", replies)
        timings["burst of 10: all forked and started"] = (t1 - t0) * 1000
        timings["burst of 10: all answered kernel_info"] = (t2 - t0) * 1000
        timings["burst of 10: then 1+1 on each, one after the other"] = (t4 - t3) * 1000

        section(f"{mode}: end of file")
        plan_h = self.plan()
        pending = z.ask(self.fork_request(plan_h["id"], plan_h), [sb.pidfd])
        check(pending.get("op") == "forked", "a fork left waiting", pending)
        waiting = pending.get("hostPid", 0)
        z.sock.shutdown(socket.SHUT_RDWR)
        try:
            code = z.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        check(code == 0, "the zygote exits 0 at end of file", code)
        check(wait_for(lambda: state_of(waiting) in ("Z", "gone")), "its waiting fork is dead", state_of(waiting))
        if server_pid:
            check(wait_for(lambda: state_of(server_pid) == "gone"), "its fork server is gone")

        if confined:
            self.print_timings(mode, timings, t_b)
            return

        section(f"{mode}: a zygote started with a stray descriptor")
        bad = Zygote(self.env, extra_fd=True)
        self.later(bad.close)
        check(
            bad.ready.get("op") == "failed" and "7" in bad.ready.get("error", ""),
            "refuses to serve",
            bad.ready,
        )
        check(bad.proc.wait(timeout=10) == 1, "and exits 1")

        section(f"{mode}: a zygote less favoured than the sandbox's init, then without its fork server")
        slow = Zygote(self.env, nice=5)
        self.later(slow.close)
        check(slow.ready.get("op") == "ready", "ready", slow.ready)
        plan = self.plan()
        forked = slow.ask(self.fork_request(plan["id"], plan), [sb.pidfd])
        check(forked.get("op") == "forked", "fork", forked)
        failed = slow.ask({"op": "go", "id": plan["id"]})
        check(
            failed.get("op") == "failed" and "nice" in failed.get("error", ""),
            "the go fails: a kernel cannot take the sandbox init's nice value",
            failed,
        )
        print(f"         ({failed.get('error')})")
        fork_server = slow.fork_server_pid()
        assert fork_server is not None
        # With the fork server's nice value put back (and an OOM score above 0, which an
        # unprivileged process may lower again, down to what a privileged one set), it works.
        os.setpriority(os.PRIO_PROCESS, fork_server, 0)
        Path(f"/proc/{fork_server}/oom_score_adj").write_text("300")
        plan = self.plan()
        forked = slow.ask(self.fork_request(plan["id"], plan), [sb.pidfd])
        started = slow.ask({"op": "go", "id": plan["id"]})
        host = sb.host_pid(started.get("nsPid", -1))
        if host:
            self.later(functools.partial(_kill, host))
        check(
            started.get("op") == "started"
            and host is not None
            and Path(f"/proc/{host}/oom_score_adj").read_text().strip() == "0",
            "a fork of a zygote with an OOM score of 300 gets 0",
            (forked, started),
        )
        os.kill(fork_server, signal.SIGKILL)
        wait_for(lambda: state_of(fork_server) in ("Z", "gone"))
        plan = self.plan()
        failed = slow.ask(self.fork_request(plan["id"], plan), [sb.pidfd])
        check(
            failed.get("op") == "failed" and "fork server" in failed.get("error", ""),
            "a fork fails once the fork server is gone",
            failed,
        )
        check(slow.proc.wait(timeout=10) == 1, "and the zygote exits 1")

        for py in sorted(glob.glob("/root/.pyenv/versions/3.1[23]*/bin/python3")):
            stub_test(py, self.files, self.cleanups)

        self.print_timings(mode, timings, t_b)

    def print_timings(self, mode: str, timings: dict[str, float], t_b: dict[str, float]) -> None:
        section(f"{mode}: timings (ms)")
        for name, ms in timings.items():
            print(f"  {name}: {ms:.1f}")
        print(f"  (second kernel: fork→forked {t_b['fork_ms']:.1f}, go→started {t_b['go_ms']:.1f})")

    def refusals(self, z: Zygote, sb: Sandbox) -> None:
        def refused(
            what: str, msg: Any, fds: list[int] | None = None, raw: bytes | None = None, want: str = ""
        ) -> None:
            reply = z.ask(msg, fds, raw)
            ok = reply.get("op") == "failed" and want in reply.get("error", "")
            check(ok, f"refused: {what}", reply)
            if ok:
                print(f"         ({reply['error']})")

        plan = self.plan()
        bad_argv = {**plan, "argv": [KERNEL_PY, "-m", "ipykernel", "-f", plan["connectionFile"]]}
        refused("argv of another module", self.fork_request("r1", bad_argv), [sb.pidfd], want="argv")
        bad_exe = {**plan, "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", plan["connectionFile"]]}
        refused("another interpreter", self.fork_request("r2", bad_exe), [sb.pidfd], want="argv")
        for name, env in (
            ("PYTHONPATH differs", {**plan["env"], "PYTHONPATH": "/elsewhere"}),
            ("PYTHONHASHSEED added", {**plan["env"], "PYTHONHASHSEED": "0"}),
            ("LANG missing", {k: v for k, v in plan["env"].items() if k != "LANG"}),
            ("LC_ALL added", {**plan["env"], "LC_ALL": "C"}),
            ("HOME differs (read while importing)", {**plan["env"], "HOME": "/root"}),
        ):
            refused(name, self.fork_request("r3", {**plan, "env": env}), [sb.pidfd], want="environment")
        refused("no pidfd", self.fork_request("r4", plan), want="descriptor")
        extra = os.open("/dev/null", os.O_RDONLY)
        refused("two descriptors", self.fork_request("r5", plan), [sb.pidfd, extra], want="descriptor")
        os.close(extra)
        refused("bad seccomp program", self.fork_request("r6", plan, seccomp=["AAAA"]), [sb.pidfd], want="seccomp")
        refused("bad JSON", None, raw=b"{not json", want="JSON")
        reply = z.ask({"op": "dance", "id": "r7"})
        check(reply.get("op") == "failed" and reply.get("id") == "r7", "unknown op: failed, with its id", reply)
        refused("go for an unknown id", {"op": "go", "id": "nobody"})
        reply = z.ask({"op": "abort", "id": "nobody"})
        check(reply == {"op": "aborted", "id": "nobody"}, "abort of an unknown id: aborted", reply)
        own = sorted(int(fd) for fd in os.listdir(f"/proc/{z.proc.pid}/fd"))
        check(own == [0, 1, 2, 3, 4], "the zygote kept no descriptor of the refused requests", own)


def _readline(fd: int, timeout: float = 20) -> str:
    """A line from the pipe `fd` (unbuffered), or what came before end of file or the timeout."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace").strip()


def _kind(link: str) -> str:
    if link.startswith("anon_inode:"):
        return link
    return link.split(":", 1)[0] if ":" in link else ("log" if link.endswith(".log") else link)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def cpu_ms(pid: int) -> float:
    """User plus system CPU time of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def cleaning(test: Test) -> Iterator[None]:
    try:
        yield
    finally:
        for f in reversed(test.cleanups):
            try:
                f()
            except Exception as e:  # cleanup goes on
                print(f"  (cleanup: {e!r})")


def main() -> int:
    if os.geteuid() != 0:
        print("test_zygote.py: must run as root")
        return 2
    if not os.path.exists(KERNEL_PY):
        print(f"test_zygote.py: {KERNEL_PY} is missing (the kernel venv of the tests)")
        return 2
    try:
        import jupyter_client  # noqa: F401
    except ImportError:
        os.execv(KERNEL_PY, [KERNEL_PY, __file__, *sys.argv[1:]])
    # Cold kernels started here inherit what this process ignores (a shell's background job
    # ignores SIGINT and SIGQUIT), forked ones start from a fresh interpreter's dispositions,
    # as kernels in a sandbox do (hutch starts sandboxes with default dispositions).
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    test = Test()
    with cleaning(test):
        try:
            test.main(confined=False)
            test.main(confined=True)
        except Exception as e:
            import traceback

            traceback.print_exc()
            FAILURES.append(f"exception: {e!r}")
    print()
    if FAILURES:
        print(f"FAILED ({len(FAILURES)}): " + "; ".join(FAILURES))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
