"""`sandbox.commands` / `sandbox.process` of an `AsyncSandbox` against a live `hutch serve`."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import eventually_async

import hutch
from hutch.commands_async import AsyncCommandHandle, AsyncProcessHandle
from hutch.exceptions import CommandExitException, NotFoundError, ProcessError, TimeoutException
from hutch.process_models import ProcessExecution, ProcessInfo, ProcessOutput


async def test_run_returns_stdout_stderr_and_exit_code(async_sandbox: hutch.AsyncSandbox) -> None:
    result = await async_sandbox.commands.run("echo out; echo err >&2")
    assert isinstance(result, ProcessExecution)
    assert (result.stdout, result.stderr, result.exit_code, result.error) == ("out\n", "err\n", 0, None)


async def test_process_start_is_the_seed_name_of_run(async_sandbox: hutch.AsyncSandbox) -> None:
    result = await async_sandbox.process.start("echo seed")
    assert result.stdout == "seed\n"


async def test_non_zero_exit_raises_command_exit_exception(async_sandbox: hutch.AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        await async_sandbox.commands.run("echo broken >&2; exit 7")
    assert caught.value.exit_code == 7
    assert caught.value.stderr == "broken\n"


async def test_envs_cwd_and_user(async_sandbox: hutch.AsyncSandbox) -> None:
    result = await async_sandbox.commands.run('echo "$FOO"; pwd; whoami', envs={"FOO": "bar"}, cwd="/tmp")
    assert result.stdout == "bar\n/tmp\nuser\n"
    root = await async_sandbox.commands.run("whoami", user="root")
    assert root.stdout == "root\n"


async def test_a_command_that_outlives_its_timeout_is_killed(async_sandbox: hutch.AsyncSandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 30", timeout=2)
    assert time.monotonic() - started < 15


async def test_plain_and_async_callbacks_get_the_output_in_order(async_sandbox: hutch.AsyncSandbox) -> None:
    out: list[ProcessOutput] = []
    err: list[str] = []

    async def on_stderr(chunk: ProcessOutput) -> None:
        await asyncio.sleep(0)
        err.append(chunk)

    await async_sandbox.commands.run(
        "for i in 1 2 3 4 5; do echo $i; sleep 0.05; done; echo e1 >&2; echo e2 >&2",
        on_stdout=out.append,
        on_stderr=on_stderr,
    )
    assert "".join(out) == "1\n2\n3\n4\n5\n"
    assert "".join(err) == "e1\ne2\n"
    assert out[0].get("line") == str(out[0]) and out[0]["error"] is False


async def test_background_handle_pid_list_kill_and_wait(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("sleep 60", background=True)
    assert isinstance(handle, AsyncProcessHandle)
    assert AsyncCommandHandle is AsyncProcessHandle
    listed = await async_sandbox.commands.list()
    assert all(isinstance(p, ProcessInfo) for p in listed)
    info = next(p for p in listed if p.pid == handle.pid)
    assert info.command == "sleep 60" and info.user == "user"
    assert await handle.kill() is True
    with pytest.raises(CommandExitException):
        await handle.wait()
    assert await async_sandbox.commands.kill(handle.pid) is False


async def test_send_stdin_and_close_stdin_feed_a_background_cat(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("cat", background=True)
    await async_sandbox.commands.send_stdin(handle.pid, "hello\n")
    await handle.send_stdin(b"more\n")
    await eventually_async(lambda: handle.stdout == "hello\nmore\n")
    await handle.close_stdin()
    result = await handle.wait()
    assert result.stdout == "hello\nmore\n"


async def test_background_callbacks_are_called_live(async_sandbox: hutch.AsyncSandbox) -> None:
    seen: list[str] = []

    async def on_stdout(chunk: str) -> None:
        seen.append(chunk)

    handle = await async_sandbox.commands.run(
        "echo a; sleep 0.2; echo b; sleep 60", background=True, on_stdout=on_stdout
    )
    try:
        await eventually_async(lambda: "".join(seen) == "a\nb\n")
    finally:
        await handle.kill()


async def test_async_for_yields_the_output(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("echo x; sleep 0.1; echo y >&2", background=True)
    stdout, stderr = "", ""
    async for out, err, pty in handle:
        assert pty is None
        stdout += out or ""
        stderr += err or ""
    assert (stdout, stderr) == ("x\n", "y\n")
    assert (await handle.wait()).exit_code == 0


async def test_connect_receives_the_output_of_a_running_command(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run(
        "sleep 1; for i in $(seq 1 10); do echo line$i; sleep 0.1; done", background=True
    )
    seen: list[str] = []
    other = await async_sandbox.commands.connect(handle.pid, on_stdout=seen.append)
    result = await other.wait()
    assert result.stdout.endswith("line10\n")
    assert "".join(seen) == result.stdout
    assert (await handle.wait()).stdout.startswith("line1\n")


async def test_disconnect_leaves_the_command_running(async_sandbox: hutch.AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("sleep 2; echo after", background=True)
    await handle.disconnect()
    with pytest.raises(ProcessError):
        await handle.wait()
    again = await async_sandbox.commands.connect(handle.pid)
    assert (await again.wait()).stdout == "after\n"


async def test_unknown_pid(async_sandbox: hutch.AsyncSandbox) -> None:
    assert await async_sandbox.commands.kill(999_999) is False
    with pytest.raises(NotFoundError) as caught:
        await async_sandbox.commands.connect(999_999)
    assert isinstance(caught.value, ProcessError)
    with pytest.raises(NotFoundError):
        await async_sandbox.commands.send_stdin(999_999, b"x")


async def test_cancelling_a_foreground_run_stops_waiting(async_sandbox: hutch.AsyncSandbox) -> None:
    task = asyncio.ensure_future(async_sandbox.commands.run("sleep 30"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The sandbox still answers afterwards.
    assert (await async_sandbox.commands.run("echo still here")).stdout == "still here\n"


async def test_commands_run_concurrently(async_sandbox: hutch.AsyncSandbox) -> None:
    started = time.monotonic()
    results = await asyncio.gather(*(async_sandbox.commands.run(f"sleep 1; echo {i}") for i in range(5)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
    assert time.monotonic() - started < 4
