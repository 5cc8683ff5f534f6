"""Interactive terminals through the official async SDK (`AsyncSandbox.pty`). Mirrors test_pty.py."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException
from e2b.sandbox.commands.command_handle import PtySize

pytestmark = pytest.mark.asyncio


def text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")


async def wait_for_text(chunks: list[bytes], needle: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in text(chunks):
        assert loop.time() < deadline, f"{needle!r} never appeared in the terminal: {text(chunks)!r}"
        await asyncio.sleep(0.05)


async def test_pty_runs_an_interactive_login_shell(async_sandbox: AsyncSandbox) -> None:
    chunks: list[bytes] = []
    terminal = await async_sandbox.pty.create(
        PtySize(rows=24, cols=80), on_data=chunks.append, envs={"ABC": "123"}, cwd="/tmp"
    )
    assert terminal.pid in [p.pid for p in await async_sandbox.commands.list()]
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo [$ABC] [$TERM] [$(pwd)] [$(whoami)]\n")
    await async_sandbox.pty.send_stdin(terminal.pid, b"exit\n")
    result = await terminal.wait()
    assert result.exit_code == 0
    assert terminal.exit_code == 0
    assert "[123] [xterm-256color] [/tmp] [user]" in text(chunks)


async def test_pty_resize_changes_what_the_terminal_reports(async_sandbox: AsyncSandbox) -> None:
    chunks: list[bytes] = []
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=chunks.append)
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols)\n")
    await wait_for_text(chunks, "cols=80")
    await async_sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo cols=$(tput cols) lines=$(tput lines); exit\n")
    assert (await terminal.wait()).exit_code == 0
    assert "cols=100 lines=30" in text(chunks)


async def test_pty_kill_ends_the_terminal(async_sandbox: AsyncSandbox) -> None:
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=lambda _: None)
    assert await async_sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitException):
        await terminal.wait()
    assert await async_sandbox.pty.kill(terminal.pid) is False


async def test_pty_connect_resumes_a_disconnected_terminal(async_sandbox: AsyncSandbox) -> None:
    first: list[bytes] = []
    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=first.append, envs={"FOO": "bar"})
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo first-$FOO-$((1+1))\n")
    await wait_for_text(first, "first-bar-2")
    await terminal.disconnect()

    second: list[bytes] = []
    again = await async_sandbox.pty.connect(terminal.pid, on_data=second.append)
    assert again.pid == terminal.pid
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo second-$FOO-$((2+2))\nexit\n")
    await again.wait()
    assert again.exit_code == 0
    assert "second-bar-4" in text(second)
