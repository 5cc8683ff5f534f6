"""`sandbox.commands` / `sandbox.process` (blocking API) against a live `hutch serve`."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import eventually

import hutch
from hutch.commands import CommandHandle, ProcessHandle
from hutch.exceptions import (
    CommandExitException,
    NotFoundError,
    ProcessError,
    SandboxException,
    TimeoutException,
)
from hutch.process_models import CommandResult, ProcessExecution, ProcessInfo, ProcessOutput


def test_run_returns_stdout_stderr_and_exit_code(sandbox: hutch.Sandbox) -> None:
    result = sandbox.commands.run("echo out; echo err >&2")
    assert isinstance(result, ProcessExecution)
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 0
    assert result.error is None
    assert result["stdout"] == "out\n"
    assert result.get("exit_code") == 0
    assert CommandResult is ProcessExecution


def test_process_start_is_the_seed_name_of_run(sandbox: hutch.Sandbox) -> None:
    result = sandbox.process.start("printf '%s' \"$0\"")
    assert result.stdout == "/bin/bash"
    assert result.exit_code == 0


def test_non_zero_exit_raises_command_exit_exception(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        sandbox.commands.run("echo partial; echo broken >&2; exit 3")
    err = caught.value
    assert err.exit_code == 3
    assert err.stderr == "broken\n"
    assert err.stdout == "partial\n"
    assert isinstance(err, ProcessError)
    assert "exited with code 3" in str(err)


def test_envs_and_cwd_apply_to_the_command(sandbox: hutch.Sandbox) -> None:
    result = sandbox.commands.run('echo "$GREETING"; pwd', envs={"GREETING": "hello there"}, cwd="/tmp")
    assert result.stdout == "hello there\n/tmp\n"


def test_default_cwd_is_the_users_home(sandbox: hutch.Sandbox) -> None:
    assert sandbox.commands.run("pwd").stdout == "/home/user\n"


def test_the_sandboxs_cwd_is_the_default_of_commands_terminals_and_code() -> None:
    with hutch.Sandbox(cwd="/tmp", timeout=120) as sbx:
        assert sbx.commands.run("pwd").stdout == "/tmp\n"
        # A start that names its own directory still gets it.
        assert sbx.commands.run("pwd", cwd="/srv").stdout == "/srv\n"
        assert sbx.run_code("import os; os.getcwd()").text == "/tmp"
        chunks: list[bytes] = []
        sbx.pty.create(cmd="pwd").wait(on_pty=chunks.append)
        assert b"/tmp" in b"".join(chunks), chunks
        listed = sbx.commands.run("sleep 30", background=True)
        try:
            info = next(p for p in sbx.commands.list() if p.pid == listed.pid)
            assert info.cwd == "/tmp"
        finally:
            listed.kill()


def test_commands_run_as_user_by_default_and_as_root_when_asked(sandbox: hutch.Sandbox) -> None:
    assert sandbox.commands.run("whoami").stdout == "user\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    assert sandbox.commands.run("whoami", user="user").stdout == "user\n"


def test_a_command_that_outlives_its_timeout_is_killed(sandbox: hutch.Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException) as caught:
        sandbox.commands.run("echo begun; sleep 30; echo never", timeout=2)
    assert time.monotonic() - started < 15
    assert isinstance(caught.value, ProcessError)
    # The agent kills it as the deadline passes; it leaves the list once reaped, a moment later.
    eventually(lambda: not [p for p in sandbox.commands.list() if "sleep 30" in p.command], timeout=5)


def test_timeout_zero_means_no_limit(sandbox: hutch.Sandbox) -> None:
    assert sandbox.commands.run("sleep 1; echo done", timeout=0).stdout == "done\n"


def test_callbacks_get_the_output_in_order_as_str_chunks(sandbox: hutch.Sandbox) -> None:
    out: list[ProcessOutput] = []
    err: list[ProcessOutput] = []
    result = sandbox.commands.run(
        "for i in 1 2 3 4 5; do echo $i; sleep 0.05; done; echo oops >&2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "1\n2\n3\n4\n5\n" == result.stdout
    assert "".join(err) == "oops\n"
    chunk = out[0]
    assert isinstance(chunk, str)
    assert chunk.line == chunk.get("line") == str(chunk)
    assert chunk.error is False and chunk["error"] is False
    assert err[0].error is True
    assert isinstance(chunk.timestamp, int) and chunk.timestamp > 0


def test_async_def_callbacks_work_in_the_blocking_api(sandbox: hutch.Sandbox) -> None:
    seen: list[str] = []

    async def on_stdout(chunk: str) -> None:
        seen.append(chunk)

    sandbox.commands.run("echo a; sleep 0.1; echo b", on_stdout=on_stdout)
    assert "".join(seen) == "a\nb\n"


def test_callbacks_get_output_while_the_command_runs(sandbox: hutch.Sandbox) -> None:
    arrived: list[float] = []
    started = time.monotonic()
    sandbox.commands.run("echo early; sleep 2; echo late", on_stdout=lambda _: arrived.append(time.monotonic()))
    assert len(arrived) == 2
    assert arrived[0] - started < 1.5 < arrived[1] - started


def test_background_command_gives_a_handle_listed_and_killable(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("sleep 60", background=True, envs={"MARK": "x"}, cwd="/tmp")
    assert isinstance(handle, ProcessHandle)
    assert CommandHandle is ProcessHandle
    assert isinstance(handle.pid, int) and handle.pid > 0
    listed = {p.pid: p for p in sandbox.commands.list()}
    assert handle.pid in listed
    info = listed[handle.pid]
    assert isinstance(info, ProcessInfo)
    # `cmd` is the command executed, as the user gave it; the program is the shell.
    assert info.cmd == "sleep 60" and info["cmd"] == "sleep 60"
    assert info.program == "/bin/bash"
    assert info.args[-1] == "sleep 60"
    assert info.command == "sleep 60"
    assert info.cwd == "/tmp"
    assert info.envs.get("MARK") == "x"
    assert info.user == "user"
    assert info["pid"] == handle.pid
    assert (handle.exit_code, handle.finished) == (None, False)

    assert handle.kill() is True
    with pytest.raises(CommandExitException) as caught:
        handle.wait()
    assert caught.value.exit_code != 0
    assert handle.exit_code == caught.value.exit_code
    assert sandbox.commands.kill(handle.pid) is False
    assert handle.pid not in {p.pid for p in sandbox.commands.list()}


def test_list_reports_the_user_a_process_was_started_as(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("sleep 60", background=True, user="root")
    try:
        info = next(p for p in sandbox.commands.list() if p.pid == handle.pid)
        assert info.user == "root"
    finally:
        handle.kill()


def test_send_stdin_and_close_stdin_feed_a_background_cat(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True)
    sandbox.commands.send_stdin(handle.pid, "hello\n")
    handle.send_stdin(b"bytes too\n")
    eventually(lambda: handle.stdout == "hello\nbytes too\n")
    sandbox.commands.close_stdin(handle.pid)
    result = handle.wait()
    assert result.stdout == "hello\nbytes too\n"
    assert result.exit_code == 0


def test_handle_close_stdin_ends_a_reader(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("wc -c", background=True)
    handle.send_stdin("12345")
    handle.close_stdin()
    assert handle.wait().stdout.strip() == "5"


def test_foreground_command_reads_no_stdin_by_default(sandbox: hutch.Sandbox) -> None:
    # A foreground `cat` must not hang waiting for input (stdin is /dev/null unless asked for).
    assert sandbox.commands.run("cat", timeout=10).stdout == ""


def test_background_handle_collects_output_so_far(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("echo ready; echo warn >&2; sleep 60", background=True)
    try:
        eventually(lambda: handle.stdout == "ready\n" and handle.stderr == "warn\n")
    finally:
        handle.kill()


def test_background_callbacks_are_called_as_output_arrives(sandbox: hutch.Sandbox) -> None:
    seen: list[str] = []
    handle = sandbox.commands.run(
        "for i in 1 2 3; do echo n$i; sleep 0.1; done; sleep 60", background=True, on_stdout=seen.append
    )
    try:
        eventually(lambda: "".join(seen) == "n1\nn2\nn3\n")
    finally:
        handle.kill()


def test_wait_with_callbacks_gets_the_remaining_output(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("echo one; echo two >&2; exit 0", background=True)
    out: list[str] = []
    err: list[str] = []
    result = handle.wait(on_stdout=out.append, on_stderr=err.append)
    assert "".join(out) == "one\n" and "".join(err) == "two\n"
    assert result.stdout == "one\n"


def test_iterating_a_handle_yields_stdout_stderr_pty_tuples(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("echo x; echo y >&2", background=True)
    stdout, stderr = "", ""
    for out, err, pty in handle:
        assert pty is None
        stdout += out or ""
        stderr += err or ""
    assert (stdout, stderr) == ("x\n", "y\n")
    assert handle.wait().exit_code == 0


def test_connect_receives_the_output_of_a_running_command(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("sleep 1; for i in $(seq 1 20); do echo line$i; sleep 0.1; done", background=True)
    other = sandbox.commands.connect(handle.pid)
    assert other.pid == handle.pid
    result = other.wait()
    assert "line20\n" in result.stdout
    assert handle.wait().stdout.endswith("line20\n")


def test_connect_with_callbacks(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("sleep 1; echo from-afar", background=True)
    seen: list[str] = []
    attached = sandbox.commands.connect(handle.pid, on_stdout=seen.append)
    attached.wait()
    assert "".join(seen) == "from-afar\n"


def test_disconnect_leaves_the_command_running(sandbox: hutch.Sandbox) -> None:
    handle = sandbox.commands.run("sleep 2; echo after", background=True)
    handle.disconnect()
    with pytest.raises(ProcessError):
        handle.wait()
    assert handle.pid in {p.pid for p in sandbox.commands.list()}
    again = sandbox.commands.connect(handle.pid)
    assert again.wait().stdout == "after\n"


def test_unknown_pid(sandbox: hutch.Sandbox) -> None:
    assert sandbox.commands.kill(999_999) is False
    with pytest.raises(NotFoundError) as caught:
        sandbox.commands.connect(999_999)
    assert isinstance(caught.value, ProcessError)
    with pytest.raises(NotFoundError):
        sandbox.commands.send_stdin(999_999, "x")
    with pytest.raises(NotFoundError):
        sandbox.commands.close_stdin(999_999)


def test_a_missing_cwd_is_an_error(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(SandboxException):
        sandbox.commands.run("true", cwd="/no/such/dir")


def test_utf8_output_survives_chunking(sandbox: hutch.Sandbox) -> None:
    result = sandbox.commands.run("printf 'h\\xc3'; sleep 0.2; printf '\\xa9llo \\xe2\\x9c\\x93\\n'")
    assert result.stdout == "héllo ✓\n"


def test_many_commands_can_run_at_once(sandbox: hutch.Sandbox) -> None:
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = sandbox.commands.run(f"sleep 0.5; echo {i}").stdout

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i}\n" for i in range(5)}


def test_output_chunks_are_str_and_read_as_log_dicts() -> None:
    chunk = ProcessOutput("two\nlines\n", error=True, timestamp=123)
    assert chunk == "two\nlines\n" and chunk.splitlines() == ["two", "lines"]
    assert chunk[0] == "t" and chunk[:3] == "two"
    assert (chunk["line"], chunk["error"], chunk["timestamp"]) == ("two\nlines\n", True, 123)
    assert chunk.get("line") == "two\nlines\n" and chunk.get("nope", "dflt") == "dflt"
    assert chunk.to_dict() == {"line": "two\nlines\n", "timestamp": 123, "error": True}
    with pytest.raises(KeyError):
        chunk["nope"]
