"""`sandbox.pty` / `sandbox.terminal` (blocking API) against a live `hutch serve`."""

from __future__ import annotations

import threading

import pytest
from helpers import eventually

import hutch
from hutch.exceptions import (
    CommandExitException,
    InvalidArgumentException,
    NotFoundError,
    TerminalError,
    TimeoutException,
)
from hutch.process_models import PtySize
from hutch.pty import PtyHandle


class Screen:
    """Collects what a terminal puts out (an `on_data` callback)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        with self._lock:
            self._data += data

    @property
    def text(self) -> str:
        with self._lock:
            return self._data.decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = 15.0) -> None:
        eventually(lambda: needle in self.text, timeout)


def test_create_runs_a_shell_whose_output_reaches_on_data(sandbox: hutch.Sandbox) -> None:
    screen = Screen()
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), on_data=screen)
    assert isinstance(handle, PtyHandle)
    assert handle.pid > 0
    # The arithmetic shows only when the shell runs the line, not in the terminal's echo of it.
    sandbox.pty.send_stdin(handle.pid, b"echo hut$((40+2))ch\n")
    screen.wait_for("hut42ch")
    sandbox.pty.send_stdin(handle.pid, b"exit\n")
    result = handle.wait()
    assert result.exit_code == 0


def test_the_terminal_has_the_size_and_term_asked_for_and_resizes(sandbox: hutch.Sandbox) -> None:
    screen = Screen()
    handle = sandbox.pty.create((30, 100), on_data=screen)
    try:
        handle.send_stdin(b'echo "size=$(stty size) term=$TERM"\n')
        screen.wait_for("size=30 100 term=xterm-256color")
        sandbox.pty.resize(handle.pid, PtySize(rows=40, cols=120))
        handle.send_stdin(b'echo "now=$(stty size)"\n')
        screen.wait_for("now=40 120")
        handle.resize((12, 34))
        handle.send_stdin(b'echo "then=$(stty size)"\n')
        screen.wait_for("then=12 34")
    finally:
        handle.kill()


def test_terminal_start_is_the_seed_form_with_on_data_first(sandbox: hutch.Sandbox) -> None:
    screen = Screen()
    handle = sandbox.terminal.start(screen, size=(24, 80), cmd="echo from-cmd; whoami")
    result = handle.wait()
    assert result.exit_code == 0
    assert "from-cmd" in screen.text
    assert "user" in screen.text


def test_send_data_and_send_input_are_names_of_send_stdin(sandbox: hutch.Sandbox) -> None:
    screen = Screen()
    handle = sandbox.terminal.start(screen)
    try:
        sandbox.terminal.send_data(handle.pid, b"echo a$((1+1))a\n")
        screen.wait_for("a2a")
        sandbox.terminal.send_input(handle.pid, "echo b$((2+1))b\n")
        screen.wait_for("b3b")
        handle.send_data(b"echo c$((3+1))c\n")
        screen.wait_for("c4c")
        handle.send_input(b"echo d$((4+1))d\n")
        screen.wait_for("d5d")
    finally:
        handle.kill()


def test_kill_ends_the_terminal_and_then_reports_false(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    assert sandbox.pty.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as caught:
        handle.wait()
    assert caught.value.exit_code != 0
    assert sandbox.pty.kill(handle.pid) is False
    assert handle.kill() is False


def test_exit_ends_wait(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    handle.send_stdin(b"exit 0\n")
    assert handle.wait().exit_code == 0


def test_exit_code_of_the_shell_is_reported(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    handle.send_stdin(b"exit 5\n")
    with pytest.raises(CommandExitException) as caught:
        handle.wait()
    assert caught.value.exit_code == 5


def test_wait_with_on_pty_and_iteration_give_the_bytes(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    handle.send_stdin(b"echo w$((5+5))w; exit\n")
    received = bytearray()
    handle.wait(on_pty=received.extend)
    assert b"w10w" in received

    other = sandbox.pty.create(PtySize(24, 80))
    other.send_stdin(b"echo i$((6+6))i; exit\n")
    data = bytearray()
    for stdout, stderr, chunk in other:
        assert stdout is None and stderr is None
        assert isinstance(chunk, bytes)
        data += chunk
    assert b"i12i" in data


def test_user_cwd_and_envs(sandbox: hutch.Sandbox) -> None:
    screen = Screen()
    handle = sandbox.pty.create(PtySize(24, 80), on_data=screen, user="root", cwd="/tmp", envs={"MARK": "m1"})
    try:
        handle.send_stdin(b'echo "who=$(whoami) at=$(pwd) mark=$MARK"\n')
        screen.wait_for("who=root at=/tmp mark=m1")
    finally:
        handle.kill()


def test_the_terminal_is_listed_as_a_process(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    try:
        info = next(p for p in sandbox.commands.list() if p.pid == handle.pid)
        assert info.cmd == "/bin/bash" and info.program == "/bin/bash"
        assert info.args == ["-i", "-l"]
        assert info.envs.get("TERM") == "xterm-256color"
    finally:
        handle.kill()


def test_connect_attaches_a_second_handle(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    screen = Screen()
    attached = sandbox.pty.connect(handle.pid, on_data=screen)
    assert attached.pid == handle.pid
    handle.send_stdin(b"echo c$((7*6))c\n")
    screen.wait_for("c42c")
    handle.send_stdin(b"exit\n")
    assert attached.wait().exit_code == 0


def test_disconnect_keeps_the_terminal_running(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80))
    handle.disconnect()
    with pytest.raises(TerminalError):
        handle.wait()
    screen = Screen()
    again = sandbox.pty.connect(handle.pid, on_data=screen)
    again.send_stdin(b"echo back$((1+1))\n")
    screen.wait_for("back2")
    again.kill()


def test_a_terminal_outliving_its_timeout_is_killed(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(24, 80), timeout=2)
    with pytest.raises(TimeoutException):
        handle.wait()
    # Killed as the deadline passes; it leaves the list once reaped, a moment later.
    eventually(lambda: handle.pid not in {p.pid for p in sandbox.commands.list()}, timeout=5)


def test_async_on_data_in_the_blocking_api(sandbox: hutch.Sandbox) -> None:
    chunks: list[bytes] = []

    async def on_data(data: bytes) -> None:
        chunks.append(data)

    handle = sandbox.pty.create(PtySize(24, 80), on_data=on_data)
    handle.send_stdin(b"echo z$((9+9))z; exit\n")
    handle.wait()
    assert b"z18z" in b"".join(chunks)


def test_unknown_pid(sandbox: hutch.Sandbox) -> None:
    assert sandbox.pty.kill(999_999) is False
    with pytest.raises(NotFoundError) as caught:
        sandbox.pty.connect(999_999)
    assert isinstance(caught.value, TerminalError)
    with pytest.raises(NotFoundError):
        sandbox.pty.resize(999_999, (10, 10))
    with pytest.raises(NotFoundError):
        sandbox.pty.send_stdin(999_999, b"x")


def test_bad_sizes_are_refused(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(InvalidArgumentException):
        sandbox.pty.create((0, 80))
    with pytest.raises(InvalidArgumentException):
        sandbox.pty.create("big")  # type: ignore[arg-type]


def test_pty_size_is_a_rows_cols_tuple() -> None:
    size = PtySize(rows=10, cols=20)
    assert size == (10, 20)
    rows, cols = size
    assert (rows, cols) == (size.rows, size.cols) == (10, 20)
