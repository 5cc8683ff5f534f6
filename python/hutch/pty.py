# Generated from python/hutch/pty_async.py by scripts/gen-sync-sdk.py: do not edit.
# Change the asyncio module and run `python3 scripts/gen-sync-sdk.py` (python/README.md, "Developing the SDK").
"""Interactive terminals (PTYs) in the sandbox, blocking API (`sandbox.pty`, also `sandbox.terminal`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from ._config import DEFAULT_USER, SandboxTarget
from ._connect import Json, Rpc
from .commands import StreamHandle, open_stream
from .exceptions import SandboxException, TerminalError
from .process_models import (
    PROCESS_SERVICE,
    SYNC_KEEPALIVE_SECONDS,
    DataCallback,
    OutputCallback,
    ProcessExecution,
    SizeLike,
    input_request,
    is_missing_process,
    kill_request,
    lifetime,
    pty_size,
    remember_user,
    resize_request,
    selector,
    start_request,
    terminal_args,
    terminal_envs,
)


class PtyHandle(StreamHandle):
    """A running terminal: its pid, `send_stdin()` (also `send_data` / `send_input`),
    `resize()`, `wait()`, `kill()`, `disconnect()`, and iteration over its output (each item
    an `OutputEvent` whose `pty` holds the bytes, so `for _, _, data in handle` works as with
    the official SDK).

    The `on_data` callback given when the terminal was started is called with every chunk of
    output as it arrives, from a reader thread."""

    def __init__(self, pid: int, events: Iterator[Json], pty: Pty, on_data: DataCallback | None = None) -> None:
        super().__init__(pid, events, lambda: pty.kill(pid), TerminalError, on_pty=on_data)
        self._pty = pty

    def wait(
        self,
        on_pty: DataCallback | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ProcessExecution:
        """Waits for the terminal's shell to end (for example after `exit`) and returns its
        `ProcessExecution` (a terminal's output is not collected in `stdout`).

        `on_pty` (plain or `async def`) gets the output not yet read by iterating over the handle;
        `on_stdout` / `on_stderr` are there for E2B compatibility and are never called. Raises
        `CommandExitException` when the exit code is not 0 (-1 after `kill()`), `TimeoutException`
        when the terminal outlived its `timeout`, and `TerminalError` when the handle was
        disconnected first.
        """
        return self._wait(on_pty, None, None)

    def send_stdin(self, data: bytes | str, request_timeout: float | None = None) -> None:
        """Types `data` into the terminal (str is sent as UTF-8), as `Pty.send_stdin(pid, data)`."""
        self._pty.send_stdin(self._pid, data, request_timeout=request_timeout)

    send_data = send_stdin
    """The seed's name for `send_stdin`."""

    send_input = send_stdin
    """Another name for `send_stdin`."""

    def resize(self, size: SizeLike, request_timeout: float | None = None) -> None:
        """Changes the terminal's size to `size`: a `PtySize` or a `(rows, cols)` tuple."""
        self._pty.resize(self._pid, size, request_timeout=request_timeout)


class Pty:
    """Interactive terminals in the sandbox (`sandbox.pty`, also `sandbox.terminal`).

    A terminal runs `/bin/bash -i -l` (or `cmd`) on a pseudo-terminal with `TERM=xterm-256color`;
    what it puts out arrives as bytes, to the `on_data` callback and to the `PtyHandle`.
    """

    def __init__(self, rpc: Rpc, target: SandboxTarget, default_cwd: Callable[[], str | None] = lambda: None) -> None:
        self._rpc = rpc
        self._target = target
        # The sandbox's working directory (`Sandbox(cwd=...)`), for starts that name none.
        self._default_cwd = default_cwd

    def create(
        self,
        size: SizeLike | None = None,
        on_data: DataCallback | None = None,
        user: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
        cmd: str | None = None,
    ) -> PtyHandle:
        """Starts a terminal and returns its `PtyHandle`.

        :param size: a `PtySize` or a `(rows, cols)` tuple (default 24 rows by 80 columns).
        :param on_data: called with every chunk of output (bytes) as it arrives (plain or
            `async def`), from a reader thread.
        :param user: who the shell runs as (`"root"` or `"user"`, the default).
        :param cwd: working directory (default: the sandbox's `cwd`, else the user's home).
        :param envs: environment variables, over `TERM=xterm-256color` and the sandbox's.
        :param timeout: seconds the terminal may live; it is killed then. 0 or None: no limit.
        :param request_timeout: seconds to connect to the sandbox.
        :param cmd: a command line to run on the terminal instead of an interactive shell.
        """
        if cwd is None:
            cwd = self._default_cwd()
        body = start_request(terminal_args(cmd), terminal_envs(envs), cwd, size=pty_size(size))
        events = self._rpc.stream(
            f"{PROCESS_SERVICE}/Start",
            body,
            user=user,
            request_timeout=request_timeout,
            lifetime=lifetime(timeout),
            keepalive=SYNC_KEEPALIVE_SECONDS,
        )
        pid = open_stream(events, "start terminal", TerminalError)
        remember_user(self._target.sandbox_id, pid, user, DEFAULT_USER)
        return PtyHandle(pid, events, self, on_data)

    def start(
        self,
        on_data: DataCallback | None,
        size: SizeLike | None = None,
        cmd: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> PtyHandle:
        """Starts a terminal whose output goes to `on_data` (the seed's form of `create`).

        :param on_data: called with every chunk of output (bytes) as it arrives (plain or
            `async def`), from a reader thread.
        :param size: a `(rows, cols)` tuple or a `PtySize` (default 24 rows by 80 columns).
        :param cmd: a command line to run on the terminal instead of an interactive shell.
        :param cwd: working directory (default: the sandbox's `cwd`, else the user's home).
        :param envs: environment variables, over `TERM=xterm-256color` and the sandbox's.
        :param user: who the shell runs as (`"root"` or `"user"`, the default).
        :param timeout: seconds the terminal may live; it is killed then. 0 or None: no limit.
        :param request_timeout: seconds to connect to the sandbox.
        """
        return self.create(
            size,
            on_data=on_data,
            user=user,
            cwd=cwd,
            envs=envs,
            timeout=timeout,
            request_timeout=request_timeout,
            cmd=cmd,
        )

    def connect(
        self,
        pid: int,
        on_data: DataCallback | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> PtyHandle:
        """Attaches to the running terminal `pid`; its output from now on goes to `on_data` and to
        the returned `PtyHandle`.

        :param timeout: seconds this handle listens (the terminal is not affected). 0 or None: no
            limit.
        :raises NotFoundError: there is no such process.
        """
        events = self._rpc.stream(
            f"{PROCESS_SERVICE}/Connect",
            {"process": selector(pid)},
            request_timeout=request_timeout,
            lifetime=lifetime(timeout),
            keepalive=SYNC_KEEPALIVE_SECONDS,
        )
        pid = open_stream(events, "connect to terminal", TerminalError)
        return PtyHandle(pid, events, self, on_data)

    def send_stdin(self, pid: int, data: bytes | str, request_timeout: float | None = None) -> None:
        """Types `data` into terminal `pid` (str is sent as UTF-8).

        :raises NotFoundError: there is no such process.
        """
        body = input_request(pid, data, "pty")
        self._rpc.unary(f"{PROCESS_SERVICE}/SendInput", body, request_timeout=request_timeout)

    send_data = send_stdin
    """The seed's name for `send_stdin`."""

    send_input = send_stdin
    """Another name for `send_stdin`."""

    def resize(self, pid: int, size: SizeLike, request_timeout: float | None = None) -> None:
        """Changes the size of terminal `pid` to `size`: a `PtySize` or a `(rows, cols)` tuple.

        :raises NotFoundError: there is no such process.
        """
        body = resize_request(pid, size)
        self._rpc.unary(f"{PROCESS_SERVICE}/Update", body, request_timeout=request_timeout)

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """Kills terminal `pid` (SIGKILL). Returns False when there is no such process."""
        try:
            self._rpc.unary(f"{PROCESS_SERVICE}/SendSignal", kill_request(pid), request_timeout=request_timeout)
        except SandboxException as err:
            if is_missing_process(err):
                return False
            raise
        return True

    def __repr__(self) -> str:
        return f"Pty(sandbox_id={self._target.sandbox_id!r})"


Terminal = Pty
"""The seed's other name for `Pty` (`sandbox.terminal`)."""

__all__ = ["Pty", "PtyHandle", "Terminal"]
