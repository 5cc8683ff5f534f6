# hutch's zygote: imports the Jupyter kernel's machinery once, then forks kernels straight
# into sandboxes (see crates/hutch-runtime/src/zygote.rs and docs/design.md, "Cheap kernel
# starts"). Run as `python -c <this file>` with a connected AF_UNIX SOCK_SEQPACKET socket to
# the server on fd 3; every message is one packet of UTF-8 JSON (at most 1 MiB).
#
# Zygote -> server: {"op":"ready","pid","python","executable","envRead","forkServerPid"} once the imports are
# done (envRead: the variables read by the imports, see below), or
# {"op":"failed","id":"","error"} and exit 1 (an import failed, or the imports left a thread
# or a descriptor other than 0-3 behind). Then, per request (each reply carries its id):
#
#   fork  {"id","plan","capsDrop","seccomp","noNewPrivs"} + a pidfd of the sandbox's init
#         (SCM_RIGHTS)  -> {"op":"forked","id","hostPid"}: a process waits inside the
#         sandbox's namespaces (all of them, pid included), to be moved into its cgroup;
#   go    {"id"}      -> {"op":"started","id","nsPid"}: the kernel runs, pid nsPid in the
#         sandbox, reparented to its init (which adopts it);
#   abort {"id"}      -> {"op":"aborted","id"}: the waiting process is killed (an unknown id
#         is answered the same);
#   anything wrong    -> {"op":"failed","id","error"}; the zygote serves on.
#   End of file: kill what still waits, exit 0.
#
# A fork is refused when a cold start could differ: the plan's argv must be this Python's
# `-m ipykernel_launcher ...`, and its environment must agree with the one the zygote started
# with on every variable read at interpreter start (PYTHON*, LC_*, LANG, LANGUAGE; HOME when
# the user's site-packages is enabled) and on every variable the imports below read (HOME,
# PATH, USER, TERM, XDG_CACHE_HOME, ... : their values may be cached, as parso and jedi cache
# ~/.cache). Ready lists them (envRead), and so does stderr. What the imports themselves set
# in os.environ (debugpy: PYDEVD_USE_FRAME_EVAL) is set again in each kernel.
#
# Processes. The zygote Z talks to the server and parses plans, so its memory holds every
# sandbox's environment (their secrets). Kernels must not inherit that, so they are not forked
# from Z: right after the imports Z forks P, a fork server that never sees a plan (it gets
# four descriptors and the word "fork"). For each fork request Z writes the request into a
# memfd and hands P the sandbox's pidfd, the memfd, a report pipe and a go pipe:
#   C0 = fork of P: reads the plan, setns() into all of the sandbox's namespaces, forks C1,
#        writes C1's (host) pid to the report pipe, exits (P reaps it);
#   C1 (in the sandbox's pid namespace): takes on what a process started by the sandbox's
#        init would inherit (rlimits, umask, nice, CPU affinity; an OOM score of 0, as the
#        agent gives its kernels; argv and environment as /proc shows them), waits for the
#        go, then drops capabilities, installs the seccomp filters, becomes the plan's user
#        (with the capabilities an execve would leave it), opens the log file, enters the
#        working directory and forks C2; writes C2's pid (in the sandbox) to the report pipe,
#        exits, so that C2 is reparented to the sandbox's init;
#   C2: a new session, stdio on /dev/null and the log file, no other descriptor, the plan's
#        environment; returns all the way up to this script's last line, which runs
#        ipykernel_launcher as `python -m` would, in an emptied __main__.
# Failures in C0 and C1 go to the report pipe as "E <message>\n" (C1's before its go are
# held until the go: the pipe's first line is C0's).

import base64
import contextlib
import ctypes
import errno
import json
import os
import runpy  # what `python -m` runs modules with: imported here, not in each kernel
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

SOCKET_FD = 3
# What Python's locale coercion (PEP 538) sets LC_CTYPE to, in its order of preference.
LOCALE_COERCION_TARGETS = ("C.UTF-8", "C.utf8", "UTF-8")
MAX_MESSAGE = 1 << 20
REPORT_TIMEOUT = 5.0

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SANDBOX_NAMESPACES = (
    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWPID
)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_MM = 35
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_SET_MM_MAP = 14
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

LAUNCHER = "ipykernel_launcher"
# Imported once here, so that a kernel does not pay for them. Not numpy & co.: a random
# generator imported before the fork would be shared by every kernel.
PREIMPORTS = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython",
    "jupyter_client",
    LAUNCHER,
)
OPTIONAL_PREIMPORTS = ("hutch_kernel_ext",)
MUST_NOT_BE_IMPORTED = ("numpy", "pandas", "matplotlib")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.sbrk.restype = ctypes.c_void_p
_libc.sbrk.argtypes = [ctypes.c_ssize_t]

# What C2 hands to _run_kernel: the argv after "-m ipykernel_launcher", the plan's
# environment, and what the imports did to the environment (set, removed), to do again.
Kernel = tuple[list[str], dict[str, str], dict[str, str], list[str]]


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class _MmMap(ctypes.Structure):
    _fields_ = (
        ("start_code", ctypes.c_uint64),
        ("end_code", ctypes.c_uint64),
        ("start_data", ctypes.c_uint64),
        ("end_data", ctypes.c_uint64),
        ("start_brk", ctypes.c_uint64),
        ("brk", ctypes.c_uint64),
        ("start_stack", ctypes.c_uint64),
        ("arg_start", ctypes.c_uint64),
        ("arg_end", ctypes.c_uint64),
        ("env_start", ctypes.c_uint64),
        ("env_end", ctypes.c_uint64),
        ("auxv", ctypes.c_uint64),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    )


class RefusedError(Exception):
    """A request this zygote does not carry out (answered `failed`)."""


class ForkServerGoneError(Exception):
    """P is gone: nothing can be forked any more (answered `failed`, then exit 1)."""


# --- system calls ---------------------------------------------------------------------------


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    ret: int = _libc.prctl(ctypes.c_int(option), *args)
    if ret == -1:
        raise _errno_error(f"prctl({option}, {arg2})")
    return ret


def _setns(fd: int, flags: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(flags)) == -1:
        raise _errno_error("setns into the sandbox's namespaces")


def _close_all_but(keep: set[int]) -> None:
    """Closes every descriptor from 3 up except those in `keep`."""
    low = 3
    for fd in sorted(f for f in keep if f >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _fd_limit())


def _fd_limit() -> int:
    limit = os.sysconf("SC_OPEN_MAX")
    return limit if 0 < limit < (1 << 20) else 1 << 20


def _write_line(fd: int, line: str) -> None:
    """Reports to Z (one write, so one line stays whole); Z may have given up already."""
    data = (line.replace("\n", " ") + "\n").encode("utf-8", "replace")[:4000]
    if not data.endswith(b"\n"):
        data = data[:-1] + b"\n"
    with contextlib.suppress(OSError):
        os.write(fd, data)


def _read_line(fd: int, timeout: float) -> str | None:
    """One line from `fd`, or None on end of file or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


# --- start ----------------------------------------------------------------------------------


def _preimport() -> frozenset[str]:
    """Imports the kernel's modules; returns the environment variables read meanwhile (a
    kernel's environment must agree with the zygote's on them: their values may be cached).
    The imports may change os.environ too (debugpy sets PYDEVD_USE_FRAME_EVAL): a cold
    kernel's imports would make the same changes to its environment."""
    seen: set[str] = set()
    environ_class = type(os.environ)
    original = environ_class.__getitem__

    def traced(self: Any, key: Any) -> Any:
        seen.add(key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else str(key))
        return original(self, key)

    setattr(environ_class, "__getitem__", traced)  # noqa: B010
    try:
        import importlib
        import importlib.util

        for name in PREIMPORTS:
            importlib.import_module(name)
        for name in OPTIONAL_PREIMPORTS:
            if importlib.util.find_spec(name) is not None:
                try:
                    importlib.import_module(name)
                except ImportError as e:
                    print(f"zygote: not importing {name}: {e!r}", file=sys.stderr)
    finally:
        setattr(environ_class, "__getitem__", original)  # noqa: B010
    import site

    if site.ENABLE_USER_SITE:
        # The user's site-packages (on sys.path when it exists) is found through HOME.
        seen.add("HOME")
    return frozenset(seen)


def _check_clean() -> None:
    """Refuses to serve from a process a fork of which would carry more than it should."""
    imported = [m for m in MUST_NOT_BE_IMPORTED if m in sys.modules]
    if imported:
        raise RuntimeError(f"the kernel's modules imported {', '.join(imported)}")
    if threading.active_count() != 1:
        names = ", ".join(t.name for t in threading.enumerate())
        raise RuntimeError(f"the imports started threads ({names}); a fork would lose them")
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        tasks = []  # no /proc in a zygote's namespaces: threading's count is all there is
    if len(tasks) > 1:
        raise RuntimeError(f"the imports started {len(tasks) - 1} native threads")
    extra = []
    # Without /proc, every number is tried (40 ms for 65536; past that, nothing looks).
    for fd in range(SOCKET_FD + 1, min(_fd_limit(), 1 << 16)):
        try:
            os.fstat(fd)
        except OSError:
            continue
        extra.append(str(fd))
    if extra:
        raise RuntimeError(f"descriptors other than 0-3 are open: {', '.join(extra[:20])}")


def _main() -> Kernel:
    """The zygote. Returns only in a forked kernel (C2), with what it is to run."""
    sock = socket.socket(fileno=SOCKET_FD)
    startup_env = dict(os.environ)
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        import_env = _preimport()
        _check_clean()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_pid = os.getpid()
        _flush_stdio()
        server = os.fork()
    except BaseException as e:
        _send(sock, {"op": "failed", "id": "", "error": f"zygote start: {e!r}"})
        _flush_stdio()
        os._exit(1)
    if server != 0:
        theirs.close()
        if import_env:
            print(f"zygote: environment read by the imports: {' '.join(sorted(import_env))}", file=sys.stderr)
            _flush_stdio()
        ready = {"op": "ready", "pid": os.getpid(), "python": sys.version, "executable": sys.executable}
        ready["envRead"] = sorted(import_env)
        # Its parent ends with the zygote, and the server, a subreaper, inherits it: the server
        # reaps it (and the zygote) when the zygote is gone.
        ready["forkServerPid"] = server
        _send(sock, ready)
        Zygote(sock, ours, server, startup_env, import_env).serve()
    ours.detach()  # the objects are gone with this frame; the descriptors must go too
    sock.detach()
    _close_all_but({theirs.fileno()})
    return _fork_server(theirs, zygote_pid)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(json.dumps(msg).encode("utf-8"))


# --- Z: the protocol ------------------------------------------------------------------------


class Pending:
    """A fork waiting for its go."""

    def __init__(self, go_w: int, report_r: int, pidfd: int | None) -> None:
        self.go_w = go_w
        self.report_r = report_r
        self.pidfd = pidfd

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        for fd in (self.go_w, self.report_r, self.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Zygote:
    def __init__(
        self,
        sock: socket.socket,
        server: socket.socket,
        server_pid: int,
        startup_env: dict[str, str],
        import_env: frozenset[str],
    ) -> None:
        self.sock = sock
        self.server = server
        self.server_pid = server_pid
        # Plans are compared with the environment the zygote started with; what the imports
        # changed in it is done again in each kernel.
        self.startup_env = startup_env
        self.import_env = import_env
        self.env_set = {k: v for k, v in os.environ.items() if startup_env.get(k) != v}
        # PEP 538: an interpreter started in the C locale sets LC_CTYPE itself (to C.UTF-8)
        # before anything runs. The zygote's own startup_env shows that; a plan does not.
        ctype = startup_env.get("LC_CTYPE")
        self.coercion = (
            ctype
            if ctype in LOCALE_COERCION_TARGETS
            and "LC_ALL" not in startup_env
            and startup_env.get("PYTHONCOERCECLOCALE") != "0"
            else None
        )
        self.env_removed = sorted(set(startup_env) - set(os.environ))
        self.pending: dict[str, Pending] = {}
        self.fatal = False

    def serve(self) -> NoReturn:
        while True:
            received = _receive(self.sock, MAX_MESSAGE, 16)
            if received is None:
                self.exit(0)
            data, fds, flags = received
            try:
                reply = self.handle(data, fds, flags)
            except Exception as e:  # never let a request end the zygote
                reply = {"op": "failed", "id": _id_of(data), "error": f"zygote: {e!r}"}
            finally:
                for fd in fds:
                    _close_quietly(fd)
            try:
                _send(self.sock, reply)
            except OSError:
                self.exit(0)
            if self.fatal:
                self.exit(1)

    def exit(self, code: int) -> NoReturn:
        for pending in self.pending.values():
            pending.kill()
        try:
            os.kill(self.server_pid, signal.SIGKILL)
            os.waitpid(self.server_pid, 0)
        except OSError:
            pass
        _flush_stdio()
        os._exit(code)

    def handle(self, data: bytes, fds: list[int], flags: int) -> dict[str, Any]:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return {"op": "failed", "id": "", "error": "message too long (or too many descriptors)"}
        try:
            msg = json.loads(data.decode("utf-8"))
        except ValueError as e:
            return {"op": "failed", "id": "", "error": f"bad JSON: {e}"}
        if not isinstance(msg, dict):
            return {"op": "failed", "id": "", "error": "a message must be a JSON object"}
        id_ = msg.get("id")
        if not isinstance(id_, str):
            return {"op": "failed", "id": "", "error": 'a request needs an "id" string'}
        op = msg.get("op")
        try:
            if op == "fork":
                if len(fds) != 1:
                    raise RefusedError(f"a fork needs exactly one descriptor (a pidfd), got {len(fds)}")
                host_pid = self.fork(id_, msg, fds.pop())
                return {"op": "forked", "id": id_, "hostPid": host_pid}
            if op == "go":
                return {"op": "started", "id": id_, "nsPid": self.go(id_)}
            if op == "abort":
                self.abort(id_)
                return {"op": "aborted", "id": id_}
            raise RefusedError(f"unknown op {op!r}")
        except RefusedError as e:
            return {"op": "failed", "id": id_, "error": str(e)}
        except ForkServerGoneError as e:
            self.fatal = True
            return {"op": "failed", "id": id_, "error": f"the zygote's fork server is gone: {e}"}

    def fork(self, id_: str, msg: dict[str, Any], pidfd: int) -> int:
        # Descriptors to close whatever happens, and those to close on failure only.
        transient = [pidfd]
        on_failure: list[int] = []
        try:
            if id_ in self.pending:
                raise RefusedError(f"{id_} is already forked")
            payload = json.dumps(self.check(msg)).encode("utf-8")
            memfd = os.memfd_create("hutch-kernel-plan", os.MFD_CLOEXEC)
            transient.append(memfd)
            view = memoryview(payload)
            while view:
                view = view[os.write(memfd, view) :]
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            on_failure.append(report_r)
            transient.append(report_w)
            go_r, go_w = os.pipe2(os.O_CLOEXEC)
            on_failure.append(go_w)
            transient.append(go_r)
            fds = struct.pack("4i", pidfd, memfd, report_w, go_r)
            try:
                self.server.sendmsg([b"fork"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            except OSError as e:
                raise ForkServerGoneError(e) from None
            for fd in transient:
                os.close(fd)
            transient = []
            line = _read_line(report_r, REPORT_TIMEOUT)
            if line is None or not line.isdigit():
                # C1, if there is one, sees the go pipe's end of file and exits.
                raise RefusedError(_failure("entering the sandbox", line))
        except BaseException:
            for fd in transient + on_failure:
                _close_quietly(fd)
            raise
        host_pid = int(line)
        try:
            # C1 waits for its go: it cannot be gone unless killed, so this is its pid.
            c1: int | None = os.pidfd_open(host_pid)
        except OSError:
            c1 = None
        self.pending[id_] = Pending(go_w, report_r, c1)
        return host_pid

    def check(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The request, checked: what a fork can carry out exactly as a cold start would."""
        plan = msg.get("plan")
        if not isinstance(plan, dict):
            raise RefusedError('a fork needs a "plan" object')
        argv = plan.get("argv")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise RefusedError("plan.argv must be a list of strings")
        if argv[:3] != [sys.executable, "-m", LAUNCHER]:
            raise RefusedError(f"plan.argv must start with {[sys.executable, '-m', LAUNCHER]}, not {argv[:3]}")
        env = plan.get("env")
        if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise RefusedError("plan.env must map strings to strings")
        if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
            raise RefusedError("plan.env has a name or value a process environment cannot hold")
        coerced = self.coerced_locale(env)
        effective = {**env, "LC_CTYPE": coerced} if coerced else env
        differ = sorted(
            name
            for name in set(effective) | set(self.startup_env)
            if self.startup_relevant(name) and effective.get(name) != self.startup_env.get(name)
        )
        if differ:
            raise RefusedError(
                "the plan's environment differs from the zygote's in variables read at interpreter start "
                f"or while importing the kernel's modules: {', '.join(differ)}"
            )
        for key in ("cwd", "logFile"):
            if not isinstance(plan.get(key), str) or not plan[key]:
                raise RefusedError(f"plan.{key} must be a non-empty string")
        for key in ("uid", "gid"):
            if not _is_id(plan.get(key)):
                raise RefusedError(f"plan.{key} must be an id")
        groups = plan.get("groups", [])
        if not (isinstance(groups, list) and all(_is_id(g) for g in groups)):
            raise RefusedError("plan.groups must be a list of ids")
        caps = msg.get("capsDrop", [])
        if not (isinstance(caps, list) and all(isinstance(c, int) and 0 <= c < 64 for c in caps)):
            raise RefusedError("capsDrop must be a list of capability numbers")
        programs = msg.get("seccomp", [])
        if not (isinstance(programs, list) and all(isinstance(p, str) for p in programs)):
            raise RefusedError("seccomp must be a list of base64 strings")
        for i, program in enumerate(programs):
            try:
                raw = base64.b64decode(program, validate=True)
            except ValueError as e:
                raise RefusedError(f"seccomp[{i}] is not base64: {e}") from None
            if not raw or len(raw) % 8 or len(raw) // 8 > 0xFFFF:
                raise RefusedError(f"seccomp[{i}] is not an array of sock_filter (8 bytes each)")
        nnp = msg.get("noNewPrivs", False)
        if not isinstance(nnp, bool):
            raise RefusedError("noNewPrivs must be a boolean")
        return {
            "argv": argv,
            "env": env,
            "cwd": plan["cwd"],
            "uid": plan["uid"],
            "gid": plan["gid"],
            "groups": groups,
            "logFile": plan["logFile"],
            "capsDrop": caps,
            "seccomp": programs,
            "noNewPrivs": nnp,
            "envSet": {**({"LC_CTYPE": coerced} if coerced else {}), **self.env_set},
            "envRemoved": self.env_removed,
        }

    def coerced_locale(self, env: dict[str, str]) -> str | None:
        """The LC_CTYPE a cold interpreter started with `env` would set itself (PEP 538's
        locale coercion, which the zygote's own start went through), if any."""
        if self.coercion is None or "LC_ALL" in env or env.get("PYTHONCOERCECLOCALE") == "0":
            return None
        locale = env.get("LC_CTYPE") or env.get("LANG") or "C"
        return self.coercion if locale in ("C", "POSIX") else None

    def startup_relevant(self, name: str) -> bool:
        return name.startswith(("PYTHON", "LC_")) or name in ("LANG", "LANGUAGE") or name in self.import_env

    def go(self, id_: str) -> int:
        pending = self.pending.pop(id_, None)
        if pending is None:
            raise RefusedError(f"{id_} is not forked (or was started or aborted already)")
        try:
            try:
                os.write(pending.go_w, b"g")
            except OSError as e:
                pending.kill()
                raise RefusedError(f"the forked process is gone: {e}") from None
            line = _read_line(pending.report_r, REPORT_TIMEOUT)
            if line is None or not line.isdigit():
                pending.kill()
                raise RefusedError(_failure("starting the kernel", line))
            return int(line)
        finally:
            pending.close()

    def abort(self, id_: str) -> None:
        pending = self.pending.pop(id_, None)
        if pending is not None:
            pending.kill()
            pending.close()


def _failure(what: str, line: str | None) -> str:
    if line is None:
        return f"{what}: no report (the process died or took longer than {REPORT_TIMEOUT:g} s)"
    return f"{what}: {line[2:] if line.startswith('E ') else line}"


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 32) - 1


def _id_of(data: bytes) -> str:
    try:
        id_ = json.loads(data.decode("utf-8")).get("id")
    except (ValueError, AttributeError):
        return ""
    return id_ if isinstance(id_, str) else ""


def _receive(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int], int] | None:
    """One message (its bytes, the descriptors it carried, recvmsg's flags); None once the
    peer is gone."""
    while True:
        try:
            data, ancdata, flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(max_fds * 4))
        except InterruptedError:
            continue
        except OSError:
            return None
        fds = _fds_of(ancdata)
        if not data and not fds:
            return None
        return data, fds, flags


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(struct.unpack(f"{n}i", data[: n * 4]))
    return fds


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# --- P: the fork server ---------------------------------------------------------------------


def _fork_server(ctl: socket.socket, zygote_pid: int) -> Kernel:
    """P: forks C0 for each request of Z. Returns only in a forked kernel."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote_pid:
        os._exit(0)
    # C1 is orphaned when C0 exits and must not become a zombie of the server's, which
    # does not know it: a zombie in a sandbox's pid namespace keeps its init from exiting
    # when the sandbox is killed. As a subreaper, P inherits C1 and reaps it at once.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGCHLD, _reap_exited)
    while True:
        received = _receive(ctl, 16, 4)
        if received is None:
            os._exit(0)
        data, fds, _ = received
        if data != b"fork" or len(fds) != 4:
            for fd in fds:
                _close_quietly(fd)
            continue
        pidfd, memfd, report_w, go_r = fds
        _flush_stdio()
        try:
            c0 = os.fork()
        except OSError as e:
            _write_line(report_w, f"E fork: {e}")
            c0 = -1
        if c0 == 0:
            return _c0(ctl, pidfd, memfd, report_w, go_r)
        for fd in fds:
            _close_quietly(fd)
        if c0 > 0:
            try:
                _reap(c0)
            except Exception as e:  # the fork server must go on
                print(f"zygote fork server: reaping {c0}: {e!r}", file=sys.stderr)


def _reap_exited(_signum: int = 0, _frame: object = None) -> None:
    """Reaps every exited child of the fork server (C0s and the orphaned C1s)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap(pid: int) -> None:
    """Waits for C0 (it exits right after its fork), killing it when it hangs."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(REPORT_TIMEOUT * 1000):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
    # The SIGCHLD handler may have reaped it already.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- C0, C1, C2 -----------------------------------------------------------------------------


def _c0(ctl: socket.socket, pidfd: int, memfd: int, report_w: int, go_r: int) -> Kernel:
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.detach()
        _close_all_but({pidfd, memfd, report_w, go_r})
        request = json.loads(os.pread(memfd, os.fstat(memfd).st_size, 0).decode("utf-8"))
        os.close(memfd)
        _setns(pidfd, SANDBOX_NAMESPACES)
        os.close(pidfd)
        _flush_stdio()
        c1 = os.fork()
    except BaseException as e:
        _write_line(report_w, f"E {e}")
        os._exit(1)
    if c1 == 0:
        return _c1(request, report_w, go_r)
    _write_line(report_w, str(c1))
    os._exit(0)


def _c1(request: dict[str, Any], report_w: int, go_r: int) -> Kernel:
    plan = request
    argv: list[str] = plan["argv"]
    env: dict[str, str] = plan["env"]
    try:
        # Before the go, in parallel with the server's work. A failure here is reported after
        # the go (the report pipe's first line is C0's).
        try:
            _inherit_from_init(argv, env)
            early: BaseException | None = None
        except BaseException as e:
            early = e
        if not os.read(go_r, 1):
            os._exit(1)
        os.close(go_r)
        if early is not None:
            raise early
        for cap in plan["capsDrop"]:
            try:
                _prctl(PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != errno.EINVAL:  # a capability this kernel does not know
                    raise
        for program in plan["seccomp"]:
            raw = base64.b64decode(program)
            filters = ctypes.create_string_buffer(raw, len(raw))
            fprog = _SockFprog(len(raw) // 8, ctypes.addressof(filters))
            _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
        os.setgroups(plan["groups"])
        os.setresgid(plan["gid"], plan["gid"], plan["gid"])
        os.setresuid(plan["uid"], plan["uid"], plan["uid"])
        _set_capabilities(plan["uid"], plan["capsDrop"])
        _prctl(PR_SET_DUMPABLE, 1)
        if plan["noNewPrivs"]:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
        log = os.open(plan["logFile"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        os.chdir(plan["cwd"])
        # The kernel waits for this process to be gone, so that from its first instruction its
        # parent is the sandbox's init, as it is for a kernel the agent starts itself.
        gone_r, gone_w = os.pipe()
        me = os.getpid()
        _flush_stdio()
        c2 = os.fork()
    except BaseException as e:
        _write_line(report_w, f"E {e}")
        os._exit(1)
    if c2 == 0:
        try:
            os.close(gone_w)
            while os.read(gone_r, 1):
                pass
            # The pipe closes as the parent exits, a moment before it is reparented.
            while os.getppid() == me:
                pass
            os.setsid()
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, _fd_limit())
        except BaseException:
            os._exit(1)
        return argv[3:], env, plan["envSet"], plan["envRemoved"]
    _write_line(report_w, str(c2))
    os._exit(0)


def _set_capabilities(uid: int, dropped: list[int]) -> None:
    """Leaves the capabilities an execve of the kernel would: for root, the bounding set
    (everything but `dropped`); for any other user, none. (The switch of user does not clear
    them by itself here: the zygote's id is not root in the sandbox's user namespace, so the
    kernel sees no switch away from root.)"""
    with contextlib.suppress(OSError):
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) == -1:
        raise _errno_error("capget")
    for i, word in enumerate(data):
        keep = 0
        if uid == 0:
            keep = 0xFFFFFFFF
            for cap in dropped:
                if cap // 32 == i:
                    keep &= ~(1 << (cap % 32))
        word.effective &= keep
        word.permitted &= keep
        word.inheritable = 0
    if _libc.capset(ctypes.byref(header), data) == -1:
        raise _errno_error("capset")


def _inherit_from_init(argv: list[str], env: dict[str, str]) -> None:
    """What a process started by the sandbox's init inherits from it, or gets from the
    agent (an OOM score of 0), instead of the zygote's."""
    import resource

    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            which = getattr(resource, name)
            theirs = resource.prlimit(1, which)
            if resource.getrlimit(which) != theirs:
                try:
                    resource.setrlimit(which, theirs)
                except (OSError, ValueError) as e:
                    raise OSError(f"taking the sandbox init's {name} {theirs}: {e}") from None
    nice = os.getpriority(os.PRIO_PROCESS, 1)
    if os.getpriority(os.PRIO_PROCESS, 0) != nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            raise OSError(f"taking the sandbox init's nice value {nice}: {e}") from None
    cpus = os.sched_getaffinity(1)
    if os.sched_getaffinity(0) != cpus:
        os.sched_setaffinity(0, cpus)
    try:
        with open("/proc/1/status", encoding="ascii") as f:
            umask = next((line.split()[1] for line in f if line.startswith("Umask:")), None)
    except OSError:
        umask = None
    if umask is not None:
        os.umask(int(umask, 8))
    try:
        with open("/proc/self/oom_score_adj", "r+", encoding="ascii") as f:
            if f.read().strip() != "0":
                f.seek(0)
                f.write("0")
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OSError(f"resetting the OOM score adjustment to 0: {e}") from None
    with contextlib.suppress(Exception):
        _set_proc_cmdline(argv, env)


def _set_proc_cmdline(argv: list[str], env: dict[str, str]) -> None:
    """Points /proc/<pid>/cmdline and /proc/<pid>/environ at the kernel's argv and
    environment (PR_SET_MM_MAP, which needs no privilege when the executable stays); they
    would show the zygote's otherwise. Best effort: on failure they stay as they were."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return
    fields = stat[stat.rindex(b")") + 2 :].split()
    field = [0, 0, 0, *(int(x) if x.lstrip(b"-").isdigit() else 0 for x in fields)]
    blob = b"".join(os.fsencode(a) + b"\0" for a in argv)
    env_blob = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
    address = _libc.malloc(len(blob) + len(env_blob) + 1)  # never freed: exec would keep it too
    if not address:
        return
    ctypes.memmove(address, blob + env_blob + b"\0", len(blob) + len(env_blob) + 1)
    mm = _MmMap()
    mm.start_code, mm.end_code, mm.start_stack = field[26], field[27], field[28]
    mm.start_data, mm.end_data, mm.start_brk = field[45], field[46], field[47]
    mm.arg_start, mm.arg_end = address, address + len(blob)
    mm.env_start, mm.env_end = address + len(blob), address + len(blob) + max(len(env_blob), 1)
    mm.auxv, mm.auxv_size, mm.exe_fd = 0, 0, 0xFFFFFFFF
    size = ctypes.sizeof(mm)
    # The heap's end must stay what it is: read it right before the call, and again after it.
    for _ in range(8):
        brk = _libc.sbrk(0)
        mm.brk = brk
        try:
            _prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(mm), size)
        except OSError:
            return
        if _libc.sbrk(0) == brk:
            return


def _run_kernel(kernel: Kernel) -> Callable[[str], object]:
    """C2, back at the script's top level: makes this process what `python -m
    ipykernel_launcher <args>` is when it starts (environment, sys.argv, sys.path, signals,
    an empty __main__) and returns runpy's function that runs a module as __main__, for the
    top level to call: so this function's frame is gone by then, and the script's own frame
    is the only one of the zygote's under the kernel's."""
    import importlib.machinery  # (imported by runpy already: no file is read here)

    args, env, env_set, env_removed = kernel
    # os.environ's data is posix.environ, as in a fresh interpreter: both change in place.
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(env_set)
    for name in env_removed:
        os.environ.pop(name, None)
    time.tzset()
    # Caches filled by the imports with what the zygote saw (gettempdir(), uname()).
    for module, attribute in (("tempfile", "tempdir"), ("platform", "_uname_cache")):
        if module in sys.modules:
            setattr(sys.modules[module], attribute, None)
    # A fresh interpreter: default dispositions but for the three Python sets, nothing blocked.
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # `python -m`: sys.path[0] is the working directory; argv[0] becomes the module's file,
    # which is looked up again (from the working directory first, as a cold start would).
    sys.argv = ["-m", *args]
    sys.orig_argv = [sys.executable, "-m", LAUNCHER, *args]
    if not sys.flags.safe_path and sys.path and sys.path[0] == "":
        sys.path[0] = os.getcwd()
    sys.modules.pop(LAUNCHER, None)
    # The zygote's import caches describe its own view of the files.
    if "importlib.metadata" in sys.modules:
        importlib.invalidate_caches()
    else:  # the same, without importing importlib.metadata (and email, zipfile...) for it
        for finder in sys.meta_path:
            if finder is not importlib.machinery.PathFinder and hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()
        for name, entry in list(sys.path_importer_cache.items()):
            if entry is None or not os.path.isabs(name):
                del sys.path_importer_cache[name]
            elif hasattr(entry, "invalidate_caches"):
                entry.invalidate_caches()
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.clearcache()
    run_module_as_main: Callable[[str], object] = runpy.__dict__["_run_module_as_main"]
    # Nothing of this script stays in __main__, which the launcher runs in.
    main = sys.modules["__main__"].__dict__
    builtins = main["__builtins__"]
    main.clear()
    main.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __loader__=None,
        __spec__=None,
        __annotations__={},
        __builtins__=builtins,
    )
    return run_module_as_main


# The module's name is a literal: by the time it is evaluated, this script's globals are gone.
if __name__ == "__main__":
    _run_kernel(_main())("ipykernel_launcher")
