"""Commands in a sandbox through the official async SDK (`AsyncSandbox.commands`).

Mirrors test_commands.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    TimeoutException,
)

pytestmark = pytest.mark.asyncio


async def wait_until_async(pred: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.1) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await pred():
            return True
        await asyncio.sleep(interval)
    return await pred()


async def test_echo_returns_stdout_and_exit_code_zero(async_sandbox: AsyncSandbox) -> None:
    r = await async_sandbox.commands.run('echo "Hello, World!"')
    assert r.exit_code == 0
    assert r.stdout == "Hello, World!\n"
    assert r.stderr == ""

    special = await async_sandbox.commands.run("echo '!@#$%^&*()_+'; printf 'line1\\nline2\\n'")
    assert special.stdout == "!@#$%^&*()_+\nline1\nline2\n"


async def test_stdout_and_stderr_reach_sync_and_async_callbacks(async_sandbox: AsyncSandbox) -> None:
    out: list[str] = []
    err: list[str] = []

    async def on_err(chunk: str) -> None:
        err.append(chunk)

    r = await async_sandbox.commands.run(
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done",
        on_stdout=out.append,
        on_stderr=on_err,
    )
    assert "".join(out) == "out1\nout2\nout3\n" == r.stdout
    assert "".join(err) == "err1\nerr2\nerr3\n" == r.stderr


async def test_non_zero_exit_raises_command_exit_exception(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("echo partial; echo 'something broke' >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "something broke\n"


async def test_cwd_is_home_by_default_and_can_be_set(async_sandbox: AsyncSandbox) -> None:
    assert (await async_sandbox.commands.run("pwd")).stdout.strip() == "/home/user"
    assert (await async_sandbox.commands.run("pwd", cwd="/tmp")).stdout.strip() == "/tmp"
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.commands.run("pwd", cwd="/no/such/dir")


async def test_envs_per_command_and_per_sandbox() -> None:
    sbx = await AsyncSandbox.create(envs={"SBX_VAR": "from-create"}, timeout=120)
    try:
        assert (await sbx.commands.run("echo $SBX_VAR")).stdout.strip() == "from-create"
        r = await sbx.commands.run("echo $FOO $SBX_VAR", envs={"FOO": "bar", "SBX_VAR": "overridden"})
        assert r.stdout.strip() == "bar overridden"
        assert (await sbx.commands.run('echo "[$FOO]"')).stdout.strip() == "[]"
    finally:
        await sbx.kill()


async def test_user_root_and_sudo_give_root(async_sandbox: AsyncSandbox) -> None:
    r = await async_sandbox.commands.run("whoami; id -u; echo $HOME", user="root")
    assert r.stdout.split() == ["root", "0", "/root"]
    assert (await async_sandbox.commands.run("whoami")).stdout.strip() == "user"
    assert (await async_sandbox.commands.run("sudo -n whoami")).stdout.strip() == "root"


async def test_three_megabytes_of_output_arrive_intact(async_sandbox: AsyncSandbox) -> None:
    size = 3 * 1024 * 1024
    chunks: list[str] = []
    r = await async_sandbox.commands.run(
        f"python3 -c \"import sys; sys.stdout.write(''.join(chr(97 + i % 26) for i in range({size})))\"",
        on_stdout=chunks.append,
    )
    expected = "".join(chr(97 + i % 26) for i in range(size))
    assert r.stdout == expected
    assert "".join(chunks) == expected


async def test_broken_utf8_in_output_becomes_replacement_characters(async_sandbox: AsyncSandbox) -> None:
    long_str = "a" * 8191 + "\\xe2"
    r = await async_sandbox.commands.run(f'printf "{long_str}"')
    assert r.stdout == "a" * 8191 + "\ufffd"
    mixed = await async_sandbox.commands.run("printf 'ok\\xff\\xfeok \\xc3\\xa9'")
    assert mixed.stdout == "ok\ufffd\ufffdok \u00e9"


async def test_timeout_kills_a_long_command(async_sandbox: AsyncSandbox) -> None:
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run(f"sleep 10 # {tag}", timeout=2)

    async def gone() -> bool:
        return not any(tag in " ".join(p.args) for p in await async_sandbox.commands.list())

    assert await wait_until_async(gone, timeout=5), "the timed-out command is still running"
    handle = await async_sandbox.commands.run("sleep 10", timeout=2, background=True)
    with pytest.raises(TimeoutException):
        await handle.wait()


async def test_background_command_with_stdin_list_and_close(async_sandbox: AsyncSandbox) -> None:
    got = asyncio.Event()
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True, on_stdout=lambda _: got.set())
    procs = {p.pid: p for p in await async_sandbox.commands.list()}
    assert handle.pid in procs
    assert procs[handle.pid].args == ["-l", "-c", "cat"]

    await async_sandbox.commands.send_stdin(handle.pid, "Hello, ")
    await asyncio.wait_for(got.wait(), 15)
    await handle.send_stdin(b"World!\n")
    await handle.close_stdin()
    result = await handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "Hello, World!\n"
    assert handle.stdout == "Hello, World!\n"

    async def gone() -> bool:
        return handle.pid not in [p.pid for p in await async_sandbox.commands.list()]

    assert await wait_until_async(gone, timeout=10)


async def test_kill_ends_a_background_command(async_sandbox: AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("sleep 30", background=True)
    assert await async_sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        await handle.wait()
    assert await async_sandbox.commands.kill(handle.pid) is False
    assert await async_sandbox.commands.kill(999999) is False


async def test_connect_follows_a_running_command_to_its_end(async_sandbox: AsyncSandbox) -> None:
    started = asyncio.Event()
    handle = await async_sandbox.commands.run(
        "echo started; read line; echo got:$line; exit 5",
        background=True,
        stdin=True,
        on_stdout=lambda _: started.set(),
    )
    await asyncio.wait_for(started.wait(), 15)
    await handle.disconnect()

    seen: list[str] = []
    again = await async_sandbox.commands.connect(handle.pid, on_stdout=seen.append)
    assert again.pid == handle.pid
    await again.send_stdin("hello\n")
    with pytest.raises(CommandExitException) as info:
        await again.wait()
    assert info.value.exit_code == 5
    assert "got:hello\n" in "".join(seen)


async def test_connect_to_unknown_pid_raises_not_found(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(NotFoundException):
        await async_sandbox.commands.connect(999999)


@pytest.mark.timeout(90)
async def test_killing_the_sandbox_ends_a_streaming_command() -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    tag = uuid.uuid4().hex[:8]
    try:
        # timeout=0: no client-side deadline; a stream that never ends hangs into the test timeout
        run = asyncio.create_task(sbx.commands.run(f"sleep 30 # {tag}", timeout=0))
        other = await AsyncSandbox.connect(sbx.sandbox_id)

        async def running() -> bool:
            return any(f"sleep 30 # {tag}" in " ".join(p.args) for p in await other.commands.list())

        assert await wait_until_async(running, timeout=20)
        assert await AsyncSandbox.kill(sbx.sandbox_id) is True
        with pytest.raises(TimeoutException):
            await run
        assert await sbx.is_running() is False
    finally:
        with contextlib.suppress(Exception):
            await sbx.kill()
