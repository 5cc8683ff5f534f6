"""Models of processes and terminals, and the request/response code the sync and async
`Commands` / `Pty` classes share.

The agent's `process.Process` service is spoken with Connect's JSON codec: field names are
lowerCamelCase, bytes are base64, enums are sent by name. A `Start` or `Connect` call answers
with a stream of `{"event": {...}}` messages: first `start` (the pid), then `data` (stdout,
stderr or pty bytes) and `keepalive`, and last `end` (the exit code).
"""

from __future__ import annotations

import base64
import codecs
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    ClassVar,
    NamedTuple,
    SupportsIndex,
    Union,
)

from ._dictlike import DictLike
from .exceptions import (
    CommandExitException,
    InvalidArgumentException,
    NotFoundError,
    ProcessError,
    SandboxException,
    SandboxNotFoundException,
)

Json = dict[str, Any]

PROCESS_SERVICE = "process.Process"
"""The agent's Connect service for processes and terminals."""

SHELL = "/bin/bash"
"""Every command and terminal runs in this shell."""

ASYNC_KEEPALIVE_SECONDS = 50
"""Asked-for keepalive interval of the streams of async handles (what the official SDK asks for)."""

KEEPALIVE_SECONDS = ASYNC_KEEPALIVE_SECONDS
"""The former name of `ASYNC_KEEPALIVE_SECONDS`."""

SYNC_KEEPALIVE_SECONDS = 10
"""Keepalive interval of the streams of blocking handles: a disconnected handle's reader thread
notices at the next message that it should stop, so this bounds how long it lingers."""

DEFAULT_PTY_SIZE: tuple[int, int] = (24, 80)
"""Rows and columns of a terminal whose size was not given."""

PTY_ENVS: dict[str, str] = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
"""Environment every terminal gets unless the caller sets these variables."""

Stdout = str
"""A chunk of a command's stdout (E2B's name)."""

Stderr = str
"""A chunk of a command's stderr (E2B's name)."""

PtyOutput = bytes
"""A chunk of a terminal's output (E2B's name)."""


class PtySize(NamedTuple):
    """The size of a terminal. It is also the tuple `(rows, cols)`, so either form can be passed
    wherever a size is asked for."""

    rows: int
    """Number of rows."""
    cols: int
    """Number of columns."""


SizeLike = Union[PtySize, tuple[int, int], Sequence[int], Mapping[str, int]]
"""A terminal size: a `PtySize`, a `(rows, cols)` tuple, or a `{"rows": .., "cols": ..}` dict."""


def pty_size(size: SizeLike | None) -> PtySize:
    """The `PtySize` that `size` describes (`None` means 24 rows by 80 columns)."""
    if size is None:
        return PtySize(*DEFAULT_PTY_SIZE)
    rows: Any
    cols: Any
    if isinstance(size, Mapping):
        rows, cols = size.get("rows"), size.get("cols")
    elif hasattr(size, "rows") and hasattr(size, "cols"):
        rows, cols = size.rows, size.cols
    else:
        try:
            rows, cols = size
        except (TypeError, ValueError):
            raise InvalidArgumentException(
                f"a terminal size is a PtySize or a (rows, cols) tuple, not {size!r}"
            ) from None
    if isinstance(rows, bool) or isinstance(cols, bool) or not isinstance(rows, int) or not isinstance(cols, int):
        raise InvalidArgumentException(f"terminal rows and cols must be integers, not {rows!r} and {cols!r}")
    if rows <= 0 or cols <= 0:
        raise InvalidArgumentException(f"terminal rows and cols must be positive, not {rows} and {cols}")
    return PtySize(rows=rows, cols=cols)


class ProcessOutput(str):
    """A chunk of a command's output as the `on_stdout` / `on_stderr` callbacks receive it.

    It *is* the `str` of the chunk (what the official E2B SDK passes, so `print(chunk)` and
    `chunk.strip()` work as there), and it also reads like the log message of the seed's
    streaming example: `chunk.line`, `chunk.error`, `chunk.timestamp`, `chunk.get("line")`,
    `chunk["error"]`. A chunk is whatever the process wrote at once: it may hold several lines,
    or part of one.
    """

    _fields: ClassVar[tuple[str, ...]] = ("line", "timestamp", "error")

    error: bool
    """True for stderr output, False for stdout."""
    timestamp: int
    """When the chunk arrived, in nanoseconds since the Unix epoch."""

    def __new__(cls, text: str, error: bool = False, timestamp: int | None = None) -> ProcessOutput:
        """A chunk of `text`, from stderr when `error` is true."""
        chunk = super().__new__(cls, text)
        chunk.error = error
        chunk.timestamp = time.time_ns() if timestamp is None else timestamp
        return chunk

    @property
    def line(self) -> str:
        """The text of the chunk, as a plain `str`."""
        return str.__str__(self)

    def get(self, key: str, default: Any = None) -> Any:
        """The field `key` (`"line"`, `"timestamp"` or `"error"`), or `default`."""
        if key not in self._fields:
            return default
        return getattr(self, key)

    def __getitem__(self, key: SupportsIndex | slice | str) -> Any:
        """`chunk["line"]` reads a field; an index or a slice reads the text, as for any `str`."""
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return str.__getitem__(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return {"line": self.line, "timestamp": self.timestamp, "error": self.error}

    def __repr__(self) -> str:
        stream = "stderr" if self.error else "stdout"
        return f"ProcessOutput({self.line!r}, {stream})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcessOutput, (self.line, self.error, self.timestamp))


class OutputEvent(NamedTuple):
    """One piece of output of a process, as iterating over a handle yields it: exactly one of the
    three is set. It unpacks like the official SDK's `(stdout, stderr, pty)` tuples."""

    stdout: ProcessOutput | None
    """Text the process wrote to stdout."""
    stderr: ProcessOutput | None
    """Text the process wrote to stderr."""
    pty: bytes | None
    """Bytes the terminal put out."""


@dataclass
class ProcessInfo(DictLike):
    """A process running in the sandbox (a command or a terminal), as `list()` reports it. Reads
    as attributes and as a dict (`info.pid`, `info["cmd"]`)."""

    _fields = ("pid", "tag", "cmd", "program", "args", "envs", "cwd", "user")

    pid: int
    """Process id."""
    tag: str | None
    """Tag of a specially started process (such as a template's start command), if any."""
    cmd: str
    """The command executed: for a command, the command line passed to `run()`; for a
    terminal or any other process, the program that was started (`program`)."""
    program: str = ""
    """The program that was started (`/bin/bash` for commands and terminals)."""
    args: list[str] = field(default_factory=list)
    """The program's arguments (for a command: `-l -c <the command line>`)."""
    envs: dict[str, str] = field(default_factory=dict)
    """Environment variables the start request set."""
    cwd: str | None = None
    """Working directory the start request set."""
    user: str | None = None
    """The user it runs as: known for processes this SDK started in this program, else None (the
    agent's list does not say)."""

    @property
    def command(self) -> str:
        """The command line: what was passed to `run()` for a command, else `program` and
        `args`."""
        return shell_command(self.program, self.args) or " ".join([self.program, *self.args])


def shell_command(program: str, args: list[str]) -> str | None:
    """The command line of a command started as `/bin/bash [-l] -c <line>`, else None."""
    if program == SHELL and len(args) >= 2 and args[-2] == "-c":
        return args[-1]
    return None


@dataclass
class ProcessExecution(DictLike):
    """How a command ended: everything it wrote and its exit code (E2B's `CommandResult`). Reads as
    attributes and as a dict (`result.stdout`, `result["exit_code"]`)."""

    _fields = ("stdout", "stderr", "exit_code", "error")

    stderr: str
    """Everything the command wrote to stderr."""
    stdout: str
    """Everything the command wrote to stdout."""
    exit_code: int
    """Its exit code: 0 when it succeeded, -1 when a signal ended it."""
    error: str | None = None
    """The agent's description of an abnormal end (such as `signal: killed`), if any."""

    @property
    def text(self) -> str:
        """stdout followed by stderr."""
        return self.stdout + self.stderr


CommandResult = ProcessExecution
"""E2B's name for `ProcessExecution`."""


def _b64(data: str | bytes | bytearray | memoryview) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        return b""
    # The proto3 JSON mapping accepts the URL-safe alphabet and missing padding too.
    text = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def selector(pid: int) -> Json:
    """The `ProcessSelector` naming `pid`."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise InvalidArgumentException(f"a process id is an int, not {pid!r}")
    return {"pid": pid}


def command_args(cmd: str) -> list[str]:
    """The shell arguments that run the command line `cmd` (as the official SDK does)."""
    return ["-l", "-c", cmd]


def terminal_args(cmd: str | None) -> list[str]:
    """The shell arguments of a terminal: an interactive login shell, or `cmd` when given."""
    return ["-i", "-l"] if cmd is None else ["-l", "-c", cmd]


def start_request(
    args: list[str],
    envs: Mapping[str, str] | None,
    cwd: str | None,
    stdin: bool | None = None,
    size: PtySize | None = None,
) -> Json:
    """The body of `Start` for `/bin/bash <args>`, on a terminal of `size` when given."""
    process: Json = {"cmd": SHELL, "args": args}
    if envs:
        process["envs"] = {str(k): str(v) for k, v in envs.items()}
    if cwd is not None:
        process["cwd"] = cwd
    body: Json = {"process": process}
    if stdin is not None:
        body["stdin"] = stdin
    if size is not None:
        body["pty"] = {"size": {"rows": size.rows, "cols": size.cols}}
    return body


def terminal_envs(envs: Mapping[str, str] | None) -> dict[str, str]:
    """A terminal's environment: `envs` over `TERM=xterm-256color` and a UTF-8 locale."""
    merged = dict(PTY_ENVS)
    merged.update(envs or {})
    return merged


def kill_request(pid: int) -> Json:
    """The body of `SendSignal` that kills `pid` with SIGKILL."""
    return {"process": selector(pid), "signal": "SIGNAL_SIGKILL"}


def input_request(pid: int, data: str | bytes | bytearray | memoryview, kind: str) -> Json:
    """The body of `SendInput` writing `data` to `pid`'s stdin (`kind="stdin"`) or terminal (`"pty"`)."""
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise InvalidArgumentException(f"input is str or bytes, not {type(data).__name__}")
    return {"process": selector(pid), "input": {kind: _b64(data)}}


def resize_request(pid: int, size: SizeLike) -> Json:
    """The body of `Update` resizing `pid`'s terminal."""
    new = pty_size(size)
    return {"process": selector(pid), "pty": {"size": {"rows": new.rows, "cols": new.cols}}}


def start_pid(message: Json, action: str, domain: type[SandboxException] = ProcessError) -> int:
    """The pid in the `start` event that opens every `Start` / `Connect` stream."""
    event = message.get("event")
    start = event.get("start") if isinstance(event, dict) else None
    if not isinstance(start, dict) or "pid" not in start:
        raise domain(f"Failed to {action}: the agent's first message was not the process's start: {message!r}")
    return int(start["pid"])


def is_missing_process(err: BaseException) -> bool:
    """Whether `err` says the process does not exist (as opposed to the sandbox)."""
    return isinstance(err, NotFoundError) and not isinstance(err, SandboxNotFoundException)


# pid → user of processes this program started, per sandbox: the agent's `List` does not say.
_users_lock = threading.Lock()
_users: dict[tuple[str, int], str] = {}


def remember_user(sandbox_id: str, pid: int, user: str | None, default: str) -> None:
    """Notes who `pid` in `sandbox_id` runs as, for `ProcessInfo.user`."""
    with _users_lock:
        _users[(sandbox_id, pid)] = user or default


def process_list(reply: Json, sandbox_id: str) -> list[ProcessInfo]:
    """The `ProcessInfo`s of a `List` reply."""
    infos: list[ProcessInfo] = []
    for item in reply.get("processes") or []:
        if not isinstance(item, dict):
            continue
        config = item.get("config") or {}
        pid = int(item.get("pid", 0))
        program = str(config.get("cmd", ""))
        args = [str(a) for a in config.get("args") or []]
        infos.append(
            ProcessInfo(
                pid=pid,
                tag=item.get("tag") or None,
                cmd=shell_command(program, args) or program,
                program=program,
                args=args,
                envs={str(k): str(v) for k, v in (config.get("envs") or {}).items()},
                cwd=config.get("cwd") or None,
            )
        )
    running = {info.pid for info in infos}
    with _users_lock:
        for key in [k for k in _users if k[0] == sandbox_id and k[1] not in running]:
            del _users[key]
        for info in infos:
            info.user = _users.get((sandbox_id, info.pid))
    return infos


class ProcessState:
    """What a process's event stream said so far: its output and, once over, how it ended. The
    sync and async handles and the foreground `run()` all read their streams through it."""

    def __init__(self, pid: int, domain: type[SandboxException] = ProcessError) -> None:
        self.pid = pid
        self.domain = domain
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._out_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._err_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.exit_code: int | None = None
        self.error: str | None = None
        self.ended = False

    @property
    def stdout(self) -> str:
        """stdout received so far."""
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        """stderr received so far."""
        return "".join(self._stderr)

    def _text(self, raw: bytes, stderr: bool, final: bool = False) -> list[OutputEvent]:
        decoder = self._err_decoder if stderr else self._out_decoder
        text = decoder.decode(raw, final=final)
        if not text:
            return []
        if stderr:
            self._stderr.append(text)
            return [OutputEvent(None, ProcessOutput(text, error=True), None)]
        self._stdout.append(text)
        return [OutputEvent(ProcessOutput(text), None, None)]

    def flush(self) -> list[OutputEvent]:
        """Output of a multi-byte character cut off by the end of the stream (as U+FFFD)."""
        return self._text(b"", False, final=True) + self._text(b"", True, final=True)

    def feed(self, message: Json) -> list[OutputEvent]:
        """Takes in one stream message; returns the output it carried."""
        event = message.get("event")
        if not isinstance(event, dict):
            return []
        data = event.get("data")
        if isinstance(data, dict):
            if "stdout" in data:
                return self._text(_unb64(data["stdout"]), False)
            if "stderr" in data:
                return self._text(_unb64(data["stderr"]), True)
            if "pty" in data:
                raw = _unb64(data["pty"])
                return [OutputEvent(None, None, raw)] if raw else []
            return []
        end = event.get("end")
        if isinstance(end, dict):
            flushed = self.flush()
            self.exit_code = int(end.get("exitCode", end.get("exit_code", 0)) or 0)
            error = end.get("error")
            self.error = str(error) if error else None
            self.ended = True
            return flushed
        return []

    def result(self) -> ProcessExecution:
        """How the process ended so far as known; the exit code is None while it runs."""
        return ProcessExecution(stderr=self.stderr, stdout=self.stdout, exit_code=self.exit_code or 0, error=self.error)

    def outcome(self, disconnected: bool = False) -> ProcessExecution:
        """The result of a process whose stream is over: raises `CommandExitException` for a
        non-zero exit code, and the domain's error when the stream ended before the process."""
        if not self.ended or self.exit_code is None:
            if disconnected:
                raise self.domain(
                    f"Disconnected from process {self.pid} before it ended; it may still be running: "
                    "connect to it again with connect(pid)"
                )
            raise self.domain(f"The stream of process {self.pid} ended without telling how the process ended")
        if self.exit_code != 0:
            raise CommandExitException(
                stdout=self.stdout, stderr=self.stderr, exit_code=self.exit_code, error=self.error
            )
        return self.result()


OutputCallback = Callable[[ProcessOutput], Any]
"""An `on_stdout` / `on_stderr` callback: a plain function or an `async def` one."""

DataCallback = Callable[[bytes], Any]
"""An `on_data` (terminal output) callback: a plain function or an `async def` one."""


def pick_callback(
    event: OutputEvent,
    on_stdout: OutputCallback | None,
    on_stderr: OutputCallback | None,
    on_pty: DataCallback | None,
) -> tuple[Callable[[Any], Any] | None, Any]:
    """The callback that `event` goes to, and the value to pass."""
    if event.stdout is not None:
        return on_stdout, event.stdout
    if event.stderr is not None:
        return on_stderr, event.stderr
    return on_pty, event.pty


def lifetime(timeout: float | None) -> float | None:
    """The `Connect-Timeout-Ms` lifetime of a timeout in seconds: 0 and None mean no limit."""
    if timeout is None or timeout == 0:
        return None
    if timeout < 0:
        raise InvalidArgumentException(f"timeout must be 0 (no limit) or positive, not {timeout}")
    return max(float(timeout), 0.001)


__all__ = [
    "CommandResult",
    "OutputEvent",
    "ProcessExecution",
    "ProcessInfo",
    "ProcessOutput",
    "PtyOutput",
    "PtySize",
    "Stderr",
    "Stdout",
]
