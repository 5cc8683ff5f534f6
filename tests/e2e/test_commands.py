"""Commands in a sandbox through the official sync SDK (`Sandbox.commands`).

The async mirror is test_commands_async.py.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest
from e2b import (
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    TimeoutException,
)

from sdk_helpers import wait_until


def test_echo_returns_stdout_and_exit_code_zero(sandbox: Sandbox) -> None:
    r = sandbox.commands.run('echo "Hello, World!"')
    assert r.exit_code == 0
    assert r.stdout == "Hello, World!\n"
    assert r.stderr == ""
    assert r.error is None

    special = sandbox.commands.run("echo '!@#$%^&*()_+'; printf 'line1\\nline2\\n'")
    assert special.stdout == "!@#$%^&*()_+\nline1\nline2\n"


def test_stdout_and_stderr_reach_callbacks_in_order(sandbox: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    r = sandbox.commands.run(
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "out1\nout2\nout3\n" == r.stdout
    assert "".join(err) == "err1\nerr2\nerr3\n" == r.stderr


def test_non_zero_exit_raises_command_exit_exception(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; echo 'something broke' >&2; exit 3")
    err = info.value
    assert err.exit_code == 3
    assert err.stdout == "partial\n"
    assert err.stderr == "something broke\n"
    assert "something broke" in str(err)

    with pytest.raises(CommandExitException) as missing:
        sandbox.commands.run("no-such-command-xyz")
    assert missing.value.exit_code == 127
    assert "not found" in missing.value.stderr


def test_cwd_is_home_by_default_and_can_be_set(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("pwd").stdout.strip() == "/home/user"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout.strip() == "/tmp"
    # a cwd that does not exist is refused before anything runs
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("pwd", cwd="/no/such/dir")


def test_envs_per_command_do_not_leak_to_the_next_one(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("echo $FOO-$BAR", envs={"FOO": "foo value", "BAR": "b=a=r"})
    assert r.stdout.strip() == "foo value-b=a=r"
    py = sandbox.commands.run("python3 -c \"import os; print(os.environ['FOO'])\"", envs={"FOO": "bar"})
    assert py.stdout.strip() == "bar"
    assert sandbox.commands.run('echo "[$FOO]"').stdout.strip() == "[]"


def test_sandbox_envs_apply_to_every_command_and_commands_override_them() -> None:
    sbx = Sandbox.create(envs={"SBX_VAR": "from-create", "SHARED": "sandbox"}, timeout=120)
    try:
        assert sbx.commands.run("echo $SBX_VAR").stdout.strip() == "from-create"
        assert sbx.commands.run("echo $SBX_VAR", user="root").stdout.strip() == "from-create"
        assert sbx.commands.run("echo $SHARED", envs={"SHARED": "command"}).stdout.strip() == "command"
        # the default environment is still there
        env = sbx.commands.run("echo $HOME:$USER").stdout.strip()
        assert env == "/home/user:user"
    finally:
        sbx.kill()


def test_user_root_runs_as_root_with_roots_home(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("whoami").stdout.strip() == "user"
    assert sandbox.commands.run("id -u").stdout.strip() == "1000"
    r = sandbox.commands.run("whoami; id -u; echo $HOME; pwd", user="root")
    assert r.stdout.split() == ["root", "0", "/root", "/root"]
    # a file root made is root's
    sandbox.commands.run("touch /root/made-by-root", user="root")
    assert sandbox.commands.run("stat -c %U /root/made-by-root", user="root").stdout.strip() == "root"


def test_passwordless_sudo_gives_root(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("sudo -n whoami").stdout.strip() == "root"
    assert sandbox.commands.run("sudo -n id -u").stdout.strip() == "0"
    # sudo runs a root-only action for the default user
    sandbox.commands.run("sudo -n sh -c 'echo hi > /root/by-sudo'")
    assert sandbox.commands.run("cat /root/by-sudo", user="root").stdout == "hi\n"


def test_three_megabytes_of_output_arrive_intact(sandbox: Sandbox) -> None:
    size = 3 * 1024 * 1024
    r = sandbox.commands.run(
        f"python3 -c \"import sys; sys.stdout.write(''.join(chr(97 + i % 26) for i in range({size})))\""
    )
    assert len(r.stdout) == size
    assert r.stdout == "".join(chr(97 + i % 26) for i in range(size))

    err = sandbox.commands.run(f"head -c {size} /dev/zero | tr '\\0' 'x' >&2")
    assert err.stderr == "x" * size


def test_broken_utf8_in_output_becomes_replacement_characters(sandbox: Sandbox) -> None:
    long_str = "a" * 8191 + "\\xe2"
    r = sandbox.commands.run(f'printf "{long_str}"')
    assert r.stdout == "a" * 8191 + "\ufffd"

    mixed = sandbox.commands.run("printf 'ok\\xff\\xfeok \\xc3\\xa9'")
    assert mixed.stdout == "ok\ufffd\ufffdok \u00e9"


def test_timeout_kills_a_long_command(sandbox: Sandbox) -> None:
    assert sandbox.commands.run('echo "fast enough"', timeout=10).stdout == "fast enough\n"

    tag = uuid.uuid4().hex[:8]
    with pytest.raises(TimeoutException):
        sandbox.commands.run(f"sleep 10 # {tag}", timeout=2)
    # the timeout is the command's lifetime: the process is gone too, not just the stream
    assert wait_until(lambda: not any(tag in " ".join(p.args) for p in sandbox.commands.list()), timeout=5), (
        "the timed-out command is still running"
    )
    assert sandbox.commands.run("pgrep -x sleep || true").stdout == ""

    handle = sandbox.commands.run("sleep 10", timeout=2, background=True)
    with pytest.raises(TimeoutException):
        for _ in handle:
            pass


def test_background_command_with_stdin_list_and_close(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    assert handle.pid > 0

    procs = {p.pid: p for p in sandbox.commands.list()}
    assert handle.pid in procs
    info = procs[handle.pid]
    assert info.cmd == "/bin/bash"
    assert info.args == ["-l", "-c", "cat"]

    sandbox.commands.send_stdin(handle.pid, "Hello, ")
    handle.send_stdin(b"World!\n")
    sandbox.commands.send_stdin(handle.pid, "!@#$%^&*()_+ multi\nline")
    handle.close_stdin()
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "Hello, World!\n!@#$%^&*()_+ multi\nline"
    assert wait_until(lambda: handle.pid not in [p.pid for p in sandbox.commands.list()], timeout=10)


def test_stdin_chunks_come_back_while_the_command_runs(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    try:
        handle.send_stdin("first chunk")
        for stdout, _, _ in handle:
            assert stdout == "first chunk"
            break
    finally:
        handle.kill()


def test_command_without_stdin_reads_eof(sandbox: Sandbox) -> None:
    # stdin is not requested: the command must not block waiting for input
    r = sandbox.commands.run("cat; echo done", timeout=10)
    assert r.stdout == "done\n"


def test_list_shows_background_commands_with_tags_envs_and_cwd(sandbox: Sandbox) -> None:
    c1 = sandbox.commands.run("sleep 30", background=True, cwd="/tmp", envs={"MARK": "one"})
    c2 = sandbox.commands.run("sleep 31", background=True)
    procs = {p.pid: p for p in sandbox.commands.list()}
    assert c1.pid in procs and c2.pid in procs
    assert procs[c1.pid].args == ["-l", "-c", "sleep 30"]
    assert procs[c1.pid].cwd == "/tmp"
    assert procs[c1.pid].envs.get("MARK") == "one"
    assert procs[c2.pid].args == ["-l", "-c", "sleep 31"]
    c1.kill()
    c2.kill()


def test_kill_ends_a_background_command(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code != 0
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"kill -0 {handle.pid}")
    # killing it again, or any unknown pid, reports False
    assert sandbox.commands.kill(handle.pid) is False
    assert sandbox.commands.kill(999999) is False


def test_connect_follows_a_running_command_to_its_end(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("echo started; read line; echo got:$line; exit 5", background=True, stdin=True)
    for stdout, _, _ in handle:
        assert stdout == "started\n"
        break
    handle.disconnect()

    again = sandbox.commands.connect(handle.pid)
    assert again.pid == handle.pid
    again.send_stdin("hello\n")
    with pytest.raises(CommandExitException) as info:
        again.wait()
    assert info.value.exit_code == 5
    assert "got:hello\n" in info.value.stdout


def test_a_second_client_can_connect_and_kill(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True)
    other = Sandbox.connect(sandbox.sandbox_id)
    assert handle.pid in [p.pid for p in other.commands.list()]
    follower = other.commands.connect(handle.pid)
    assert other.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        follower.wait()


def test_connect_to_unknown_pid_raises_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999999)
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(999999, "x")


@pytest.mark.timeout(90)
def test_killing_the_sandbox_ends_a_streaming_command() -> None:
    sbx = Sandbox.create(timeout=120)
    tag = uuid.uuid4().hex[:8]
    errors: list[BaseException] = []

    def kill_when_running() -> None:
        try:
            other = Sandbox.connect(sbx.sandbox_id)
            seen = wait_until(
                lambda: any(f"sleep 30 # {tag}" in " ".join(p.args) for p in other.commands.list()),
                timeout=20,
            )
            assert seen, "the command never showed up in the process list"
            assert Sandbox.kill(sbx.sandbox_id) is True
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    try:
        killer.start()
        # timeout=0: no client-side deadline, so a stream that never ends is a hang the
        # test's own timeout catches, not a TimeoutException that would hide it.
        with pytest.raises(TimeoutException):
            sbx.commands.run(f"sleep 30 # {tag}", timeout=0)
        killer.join(timeout=30)
        assert not errors, errors
        assert sbx.is_running() is False
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()
