# Generated from python/hutch/commands_async.py by scripts/gen-sync-sdk.py: do not edit.
# Change the asyncio module and run `python3 scripts/gen-sync-sdk.py` (python/README.md, "Developing the SDK").
"""Running commands in the sandbox, blocking API (`sandbox.commands`, also `sandbox.process`)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import Callable, Literal, overload

from ._callbacks import call_sync
from ._concurrency import SyncQueue, SyncWorker
from ._config import DEFAULT_USER, SandboxTarget
from ._connect import Json, Rpc
from .exceptions import ProcessError, SandboxException
from .process_models import (
    PROCESS_SERVICE,
    SYNC_KEEPALIVE_SECONDS,
    DataCallback,
    OutputCallback,
    OutputEvent,
    ProcessExecution,
    ProcessInfo,
    ProcessState,
    command_args,
    input_request,
    is_missing_process,
    kill_request,
    lifetime,
    pick_callback,
    process_list,
    remember_user,
    selector,
    start_pid,
    start_request,
)


def _dispatch(
    event: OutputEvent,
    on_stdout: OutputCallback | None,
    on_stderr: OutputCallback | None,
    on_pty: DataCallback | None,
) -> None:
    callback, value = pick_callback(event, on_stdout, on_stderr, on_pty)
    call_sync(callback, value)


def _close(events: Iterator[Json]) -> None:
    close = getattr(events, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def open_stream(events: Iterator[Json], action: str, domain: type[SandboxException]) -> int:
    """Reads the `start` event of a fresh `Start` / `Connect` stream and returns the pid; closes
    the stream if that fails."""
    try:
        first = next_or_none(events)
        if first is None:
            raise domain(f"Failed to {action}: the agent ended the stream before the process started")
        return start_pid(first, action, domain)
    except BaseException:
        _close(events)
        raise


def next_or_none(events: Iterator[Json]) -> Json | None:
    """The next message of `events`, or None at its end."""
    try:
        return events.__next__()
    except StopIteration:
        return None


def drive(
    events: Iterator[Json],
    state: ProcessState,
    on_stdout: OutputCallback | None = None,
    on_stderr: OutputCallback | None = None,
    on_pty: DataCallback | None = None,
) -> ProcessExecution:
    """Reads a process's stream to its end in the calling thread, passing output to the callbacks;
    returns the result (or raises as `ProcessState.outcome` does)."""
    try:
        for message in events:
            for event in state.feed(message):
                _dispatch(event, on_stdout, on_stderr, on_pty)
        for event in state.flush():
            _dispatch(event, on_stdout, on_stderr, on_pty)
    finally:
        _close(events)
    return state.outcome()


class StreamHandle:
    """What the blocking handles of commands and terminals share: a thread reads the process's event
    stream as it comes, so the output so far (`stdout`, `stderr`) is always current and the
    callbacks given when the process was started are called as output arrives (from that thread).
    Iterating over the handle, or `wait()` with callbacks, reads the same output in order."""

    def __init__(
        self,
        pid: int,
        events: Iterator[Json],
        kill: Callable[[], bool],
        domain: type[SandboxException] = ProcessError,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        on_pty: DataCallback | None = None,
    ) -> None:
        self._pid = pid
        self._events = events
        self._kill = kill
        self._state = ProcessState(pid, domain)
        self._callbacks = (on_stdout, on_stderr, on_pty)
        self._queue: SyncQueue[OutputEvent | None] = SyncQueue()
        self._error: BaseException | None = None
        self._disconnected = False
        self._ended = False
        self._worker = SyncWorker(self._pump, f"hutch-process-{pid}")

    def _pump(self) -> None:
        try:
            for message in self._events:
                if self._disconnected:
                    # A reader thread cannot be cancelled: it stops at the next message.
                    break
                for event in self._state.feed(message):
                    self._deliver(event)
            else:
                for event in self._state.flush():
                    self._deliver(event)
        except SyncWorker.failures as err:
            if not self._disconnected:
                self._error = err
        finally:
            _close(self._events)
            self._ended = True
            self._queue.put_nowait(None)

    def _deliver(self, event: OutputEvent) -> None:
        if self._disconnected:
            return
        _dispatch(event, *self._callbacks)
        self._queue.put_nowait(event)

    @property
    def pid(self) -> int:
        """The process id."""
        return self._pid

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self._state.stdout

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self._state.stderr

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process ended, else None."""
        return self._state.exit_code

    @property
    def error(self) -> str | None:
        """The agent's description of an abnormal end (such as `signal: killed`), once it ended."""
        return self._state.error

    @property
    def finished(self) -> bool:
        """Whether the process's stream is over (it ended, or the handle was disconnected)."""
        return self._ended or self._disconnected

    def __iter__(self) -> Iterator[OutputEvent]:
        """The process's output as it arrives, each an `OutputEvent` `(stdout, stderr, pty)` with one
        of the three set, until the process ends. Raises what ended the stream abnormally (such as
        `TimeoutException`). Output already read by an earlier iteration is not repeated."""
        while True:
            event = self._queue.get()
            if event is None:
                self._queue.put_nowait(None)  # the end stays visible to every later reader
                break
            yield event
        if self._error is not None and not self._disconnected:
            raise self._error

    def _wait(
        self,
        on_pty: DataCallback | None,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> ProcessExecution:
        if on_pty is None and on_stdout is None and on_stderr is None:
            self._worker.wait()
        else:
            for event in self:
                _dispatch(event, on_stdout, on_stderr, on_pty)
        if self._error is not None and not self._disconnected:
            raise self._error
        return self._state.outcome(disconnected=self._disconnected)

    def wait(
        self,
        on_pty: DataCallback | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ProcessExecution:
        """Waits for the process to end and returns its `ProcessExecution` (stdout, stderr,
        exit_code, error).

        The callbacks (plain or `async def`) get the output not yet read by iterating over the
        handle. Raises `CommandExitException` when the exit code is not 0, `TimeoutException` when
        the process outlived its `timeout` (it was killed), and `ProcessError` when the handle was
        disconnected first.
        """
        return self._wait(on_pty, on_stdout, on_stderr)

    def kill(self) -> bool:
        """Kills the process with SIGKILL. Returns False when it was no longer running."""
        return self._kill()

    def disconnect(self) -> None:
        """Stops receiving the process's output; the process keeps running. `connect(pid)` attaches
        to it again. Iterations and waits in progress end."""
        self._disconnected = True
        self._worker.stop()
        self._queue.put_nowait(None)

    def __repr__(self) -> str:
        state = f"exit_code={self.exit_code}" if self._state.ended else "running"
        return f"{type(self).__name__}(pid={self._pid}, {state})"


class ProcessHandle(StreamHandle):
    """A command started with `background=True` or attached to with `connect()`
    (E2B's `CommandHandle`): its pid, its output so far, `wait()`, `kill()`,
    `send_stdin()`, `disconnect()`, and iteration over its output."""

    def __init__(
        self,
        pid: int,
        events: Iterator[Json],
        commands: Commands,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> None:
        super().__init__(
            pid, events, lambda: commands.kill(pid), ProcessError, on_stdout=on_stdout, on_stderr=on_stderr
        )
        self._commands = commands

    def wait(
        self,
        on_pty: DataCallback | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ProcessExecution:
        """Waits for the command to end and returns its `ProcessExecution` (stdout, stderr,
        exit_code, error).

        `on_stdout` / `on_stderr` (plain or `async def`) get the output not yet read by iterating
        over the handle; `on_pty` is there for E2B compatibility (a command has no terminal).
        Raises `CommandExitException` when the exit code is not 0, `TimeoutException` when the
        command outlived its `timeout` (it was killed), and `ProcessError` when the handle was
        disconnected first.
        """
        return self._wait(on_pty, on_stdout, on_stderr)

    def send_stdin(self, data: str | bytes, request_timeout: float | None = None) -> None:
        """Writes `data` to the command's stdin (str is sent as UTF-8)."""
        self._commands.send_stdin(self._pid, data, request_timeout=request_timeout)

    def close_stdin(self, request_timeout: float | None = None) -> None:
        """Closes the command's stdin, so it reads end-of-file."""
        self._commands.close_stdin(self._pid, request_timeout=request_timeout)


CommandHandle = ProcessHandle
"""E2B's name for `ProcessHandle`."""


class Commands:
    """Runs commands in the sandbox and manages the processes (`sandbox.commands`,
    also `sandbox.process`).

    Commands run as `/bin/bash -l -c <cmd>`, as the user `user` unless told otherwise. Output
    callbacks (plain or `async def`) receive each chunk of output as a `ProcessOutput`, which is
    the chunk's `str` (as in the official SDK) and also has `.line`, `.error` and `.timestamp`
    (readable as a dict too).
    """

    def __init__(self, rpc: Rpc, target: SandboxTarget, default_cwd: Callable[[], str | None] = lambda: None) -> None:
        self._rpc = rpc
        self._target = target
        # The sandbox's working directory (`Sandbox(cwd=...)`), for starts that name none.
        self._default_cwd = default_cwd

    @overload
    def run(
        self,
        cmd: str,
        background: Literal[False] | None = None,
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> ProcessExecution: ...

    @overload
    def run(
        self,
        cmd: str,
        background: Literal[True],
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> ProcessHandle: ...

    @overload
    def run(
        self,
        cmd: str,
        background: bool | None = None,
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> ProcessExecution | ProcessHandle: ...

    def run(
        self,
        cmd: str,
        background: bool | None = None,
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        stdin: bool | None = None,
        timeout: float | None = 60,
        request_timeout: float | None = None,
    ) -> ProcessExecution | ProcessHandle:
        """Runs the command line `cmd` in `/bin/bash -l -c`.

        In the foreground (the default) it waits for the command to end and returns its
        `ProcessExecution` (stdout, stderr, exit_code, error); a non-zero exit code raises
        `CommandExitException` (which carries the same fields). With `background=True` it returns
        a `ProcessHandle` as soon as the command started; its callbacks keep being called
        as output arrives.

        :param cmd: the command line.
        :param background: return a handle at once instead of waiting.
        :param envs: environment variables, over the sandbox's.
        :param user: who to run as (`"root"` or `"user"`, the default).
        :param cwd: working directory (default: the sandbox's `cwd`, else the user's home).
        :param on_stdout: called with every chunk of stdout as it arrives (plain or `async def`).
        :param on_stderr: called with every chunk of stderr as it arrives (plain or `async def`).
        :param stdin: whether the command gets a stdin pipe for `send_stdin()`; by default a
            background command gets one and a foreground command reads /dev/null.
        :param timeout: seconds the command may run; when it runs longer it is killed and
            `TimeoutException` is raised. 0 or None: no limit.
        :param request_timeout: seconds to connect to the sandbox.
        """
        if stdin is None:
            stdin = bool(background)
        events = self._rpc.stream(
            f"{PROCESS_SERVICE}/Start",
            start_request(command_args(cmd), envs, cwd if cwd is not None else self._default_cwd(), stdin=stdin),
            user=user,
            request_timeout=request_timeout,
            lifetime=lifetime(timeout),
            keepalive=SYNC_KEEPALIVE_SECONDS,
        )
        pid = open_stream(events, "start process", ProcessError)
        remember_user(self._target.sandbox_id, pid, user, DEFAULT_USER)
        if background:
            return ProcessHandle(pid, events, self, on_stdout=on_stdout, on_stderr=on_stderr)
        return drive(events, ProcessState(pid, ProcessError), on_stdout, on_stderr)

    start = run
    """The seed's name for `run`."""

    def connect(
        self,
        pid: int,
        timeout: float | None = 60,
        request_timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ProcessHandle:
        """Attaches to the running process `pid` and returns a `ProcessHandle` that receives
        its output from now on (a process that ended moments ago reports just its end).

        :param timeout: seconds this handle listens (the process is not affected); when they pass,
            `wait()` raises `TimeoutException`. 0 or None: no limit.
        :raises NotFoundError: there is no such process.
        """
        events = self._rpc.stream(
            f"{PROCESS_SERVICE}/Connect",
            {"process": selector(pid)},
            request_timeout=request_timeout,
            lifetime=lifetime(timeout),
            keepalive=SYNC_KEEPALIVE_SECONDS,
        )
        pid = open_stream(events, "connect to process", ProcessError)
        return ProcessHandle(pid, events, self, on_stdout=on_stdout, on_stderr=on_stderr)

    def list(self, request_timeout: float | None = None) -> builtins.list[ProcessInfo]:
        """The running processes: commands and terminals, including those started by others."""
        reply = self._rpc.unary(f"{PROCESS_SERVICE}/List", {}, request_timeout=request_timeout)
        return process_list(reply, self._target.sandbox_id)

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """Kills the process `pid` with SIGKILL. Returns False when there is no such process."""
        try:
            self._rpc.unary(f"{PROCESS_SERVICE}/SendSignal", kill_request(pid), request_timeout=request_timeout)
        except SandboxException as err:
            if is_missing_process(err):
                return False
            raise
        return True

    def send_stdin(self, pid: int, data: str | bytes, request_timeout: float | None = None) -> None:
        """Writes `data` to the stdin of process `pid` (str is sent as UTF-8).

        :raises NotFoundError: there is no such process.
        """
        body = input_request(pid, data, "stdin")
        self._rpc.unary(f"{PROCESS_SERVICE}/SendInput", body, request_timeout=request_timeout)

    def close_stdin(self, pid: int, request_timeout: float | None = None) -> None:
        """Closes the stdin of process `pid`, so it reads end-of-file.

        :raises NotFoundError: there is no such process.
        """
        body = {"process": selector(pid)}
        self._rpc.unary(f"{PROCESS_SERVICE}/CloseStdin", body, request_timeout=request_timeout)

    def __repr__(self) -> str:
        return f"Commands(sandbox_id={self._target.sandbox_id!r})"


Process = Commands
"""The seed's other name for `Commands` (`sandbox.process`)."""

__all__ = ["CommandHandle", "Commands", "Process", "ProcessHandle"]
