"""Interactive terminals in a sandbox through the official sync SDK (`Sandbox.pty`).

Typed input is echoed by the terminal, so the tests look for output the input itself does not
contain (for example `echo $((40+2))` and then `42`). The async mirror is test_pty_async.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2b import CommandExitException, Sandbox
from e2b.sandbox.commands.command_handle import PtySize


def collect(chunks: list[bytes]) -> Callable[[bytes], None]:
    return chunks.append


def text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_pty_runs_an_interactive_login_shell(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"ABC": "123"}, cwd="/tmp")
    assert terminal.pid > 0
    procs = {p.pid: p for p in sandbox.commands.list()}
    assert terminal.pid in procs
    assert procs[terminal.pid].cmd == "/bin/bash"
    assert procs[terminal.pid].args == ["-i", "-l"]

    sandbox.pty.send_stdin(terminal.pid, b"echo [$ABC] [$TERM] [$(pwd)] [$(whoami)]; tty; exit\n")
    chunks: list[bytes] = []
    result = terminal.wait(on_pty=collect(chunks))
    assert result.exit_code == 0
    out = text(chunks)
    assert "[123] [xterm-256color] [/tmp] [user]" in out
    assert "/dev/pts/" in out


def test_pty_input_can_interrupt_with_ctrl_c(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"sleep 100\n")
    sandbox.commands.run("for i in $(seq 100); do pgrep -x sleep && exit 0; sleep 0.1; done; exit 1")
    sandbox.pty.send_stdin(terminal.pid, b"\x03")
    sandbox.pty.send_stdin(terminal.pid, b"echo after-$((40+2))\nexit\n")
    chunks: list[bytes] = []
    result = terminal.wait(on_pty=collect(chunks))
    assert result.exit_code == 0
    assert "after-42" in text(chunks)


def test_pty_resize_changes_what_the_terminal_reports(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols) lines=$(tput lines); exit\n")
    chunks: list[bytes] = []
    assert terminal.wait(on_pty=collect(chunks)).exit_code == 0
    assert "cols=80 lines=24" in text(chunks)

    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols) lines=$(tput lines) size=$(stty size); exit\n")
    chunks = []
    assert terminal.wait(on_pty=collect(chunks)).exit_code == 0
    assert "cols=100 lines=30 size=30 100" in text(chunks)


def test_pty_kill_ends_the_terminal(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    assert sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitException):
        terminal.wait()
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"kill -0 {terminal.pid}")
    assert sandbox.pty.kill(terminal.pid) is False
    assert sandbox.pty.kill(999999) is False


def test_pty_connect_resumes_a_disconnected_terminal(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"FOO": "b" + "ar"})
    sandbox.pty.send_stdin(terminal.pid, b"echo first-$((1+1))\n")
    first: list[bytes] = []
    for _, _, pty in terminal:
        if pty is not None:
            first.append(pty)
        if "first-2" in text(first):
            break
    terminal.disconnect()

    again = sandbox.pty.connect(terminal.pid)
    assert again.pid == terminal.pid
    sandbox.pty.send_stdin(terminal.pid, b"echo second-$FOO-$((2+2))\nexit\n")
    chunks: list[bytes] = []
    result = again.wait(on_pty=collect(chunks))
    assert result.exit_code == 0
    assert "second-bar-4" in text(chunks)


def test_pty_as_root(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), user="root")
    sandbox.pty.send_stdin(terminal.pid, b"echo who=$(whoami) home=$HOME; exit\n")
    chunks: list[bytes] = []
    assert terminal.wait(on_pty=collect(chunks)).exit_code == 0
    assert "who=root home=/root" in text(chunks)
