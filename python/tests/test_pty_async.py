"""`sandbox.pty` / `sandbox.terminal` of an `AsyncSandbox` against a live `hutch serve`."""

from __future__ import annotations

import asyncio
import time

import pytest

import hutch
from hutch.exceptions import CommandExitException, NotFoundError, TerminalError, TimeoutException
from hutch.process_models import PtySize
from hutch.pty_async import AsyncPtyHandle


class Screen:
    """Collects what a terminal puts out (an `on_data` callback, here an `async def` one)."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.data += data

    async def wait_for(self, needle: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.data:
            assert time.monotonic() < deadline, f"{needle!r} not seen in {bytes(self.data)!r}"
            await asyncio.sleep(0.05)


async def test_create_runs_a_shell_whose_output_reaches_on_data(async_sandbox: hutch.AsyncSandbox) -> None:
    screen = Screen()
    handle = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=screen)
    assert isinstance(handle, AsyncPtyHandle)
    await async_sandbox.pty.send_stdin(handle.pid, b"echo hut$((40+2))ch\n")
    await screen.wait_for("hut42ch")
    await async_sandbox.pty.send_stdin(handle.pid, b"exit\n")
    assert (await handle.wait()).exit_code == 0


async def test_resize_changes_what_stty_reports(async_sandbox: hutch.AsyncSandbox) -> None:
    screen = Screen()
    handle = await async_sandbox.terminal.start(screen, size=(30, 100))
    try:
        await handle.send_stdin(b'echo "size=$(stty size)"\n')
        await screen.wait_for("size=30 100")
        await async_sandbox.terminal.resize(handle.pid, (40, 120))
        await handle.send_data(b'echo "now=$(stty size)"\n')
        await screen.wait_for("now=40 120")
        await handle.resize(PtySize(12, 34))
        await handle.send_input(b'echo "then=$(stty size)"\n')
        await screen.wait_for("then=12 34")
    finally:
        await handle.kill()


async def test_send_data_and_send_input_are_names_of_send_stdin(async_sandbox: hutch.AsyncSandbox) -> None:
    screen = Screen()
    handle = await async_sandbox.terminal.start(screen)
    try:
        await async_sandbox.terminal.send_data(handle.pid, b"echo a$((1+1))a\n")
        await screen.wait_for("a2a")
        await async_sandbox.terminal.send_input(handle.pid, "echo b$((2+1))b\n")
        await screen.wait_for("b3b")
    finally:
        await handle.kill()


async def test_start_with_cmd(async_sandbox: hutch.AsyncSandbox) -> None:
    chunks: list[bytes] = []
    handle = await async_sandbox.terminal.start(chunks.append, cmd="echo from-cmd; whoami", user="root")
    assert (await handle.wait()).exit_code == 0
    text = b"".join(chunks)
    assert b"from-cmd" in text and b"root" in text


async def test_kill_ends_the_terminal_and_then_reports_false(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.pty.create(PtySize(24, 80), on_data=lambda _: None)
    assert await handle.kill() is True
    with pytest.raises(CommandExitException):
        await handle.wait()
    assert await async_sandbox.pty.kill(handle.pid) is False


async def test_async_for_over_the_terminal_output(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.pty.create(PtySize(24, 80))
    await handle.send_stdin(b"echo i$((6+6))i; exit\n")
    data = bytearray()
    async for stdout, stderr, chunk in handle:
        assert stdout is None and stderr is None
        data += chunk or b""
    assert b"i12i" in data
    assert (await handle.wait()).exit_code == 0


async def test_connect_attaches_a_second_handle(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.pty.create(PtySize(24, 80))
    screen = Screen()
    attached = await async_sandbox.pty.connect(handle.pid, on_data=screen)
    await handle.send_stdin(b"echo c$((7*6))c\n")
    await screen.wait_for("c42c")
    await handle.send_stdin(b"exit\n")
    assert (await attached.wait()).exit_code == 0


async def test_disconnect_keeps_the_terminal_running(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.pty.create(PtySize(24, 80))
    await handle.disconnect()
    with pytest.raises(TerminalError):
        await handle.wait()
    assert handle.pid in {p.pid for p in await async_sandbox.commands.list()}
    assert await async_sandbox.pty.kill(handle.pid) is True


async def test_a_terminal_outliving_its_timeout_is_killed(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.pty.create(PtySize(24, 80), on_data=lambda _: None, timeout=2)
    with pytest.raises(TimeoutException):
        await handle.wait()


async def test_unknown_pid(async_sandbox: hutch.AsyncSandbox) -> None:
    assert await async_sandbox.pty.kill(999_999) is False
    with pytest.raises(NotFoundError) as caught:
        await async_sandbox.pty.connect(999_999, on_data=lambda _: None)
    assert isinstance(caught.value, TerminalError)
    with pytest.raises(NotFoundError):
        await async_sandbox.pty.resize(999_999, (10, 10))
