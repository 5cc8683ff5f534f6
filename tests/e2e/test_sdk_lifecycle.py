"""The control plane, driven by the official `e2b` SDK exactly as a user would."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import AuthenticationException, NotFoundException

from ci_helpers import code_sandbox
from sdk_helpers import wait_until


def test_create_with_metadata_and_envs_then_get_info() -> None:
    tag = uuid.uuid4().hex
    sbx = Sandbox.create(metadata={"suite": tag, "user": "a b&c"}, envs={"GREETING": "hello from hutch"})
    try:
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.metadata == {"suite": tag, "user": "a b&c"}
        assert info.state == SandboxState.RUNNING
        assert info.template_id == "base"
        # default timeout is 300 s
        assert 290 <= (info.end_at - info.started_at).total_seconds() <= 310
        out = sbx.commands.run("echo $GREETING")
        assert out.stdout.strip() == "hello from hutch"
        assert sbx.is_running()
    finally:
        assert sbx.kill() is True


def test_list_filters_by_metadata_and_pages() -> None:
    tag = uuid.uuid4().hex
    sandboxes = [Sandbox.create(metadata={"suite": tag, "n": str(i)}) for i in range(3)]
    other = Sandbox.create(metadata={"suite": "someone-else"})
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=1)
        seen = []
        pages = 0
        while paginator.has_next:
            items = paginator.next_items()
            assert len(items) <= 1
            seen += [s.sandbox_id for s in items]
            pages += 1
            assert pages < 10
        assert sorted(seen) == sorted(s.sandbox_id for s in sandboxes)
        # newest first
        assert seen == [s.sandbox_id for s in reversed(sandboxes)]
        assert other.sandbox_id not in seen

        running = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING])).next_items()
        assert len(running) == 3
        assert all(s.metadata["suite"] == tag for s in running)
    finally:
        for s in [*sandboxes, other]:
            s.kill()


def test_set_timeout_and_connect_only_extends(sandbox: Sandbox) -> None:
    sandbox.set_timeout(600)
    end = sandbox.get_info().end_at
    remaining = (end - datetime.now(UTC)).total_seconds()
    assert 590 <= remaining <= 605

    # connect with a shorter timeout does not shorten the sandbox's life
    again = Sandbox.connect(sandbox.sandbox_id, timeout=30)
    assert again.get_info().end_at >= end
    assert again.commands.run("echo still here").stdout.strip() == "still here"

    # set_timeout may shorten
    sandbox.set_timeout(60)
    remaining = (sandbox.get_info().end_at - datetime.now(UTC)).total_seconds()
    assert remaining <= 61


def test_pause_then_connect_resumes(sandbox: Sandbox) -> None:
    sandbox.commands.run("echo before-pause > /tmp/state")
    bg = sandbox.commands.run("while true; do date +%s%N >> /tmp/ticks; sleep 0.1; done", background=True)
    assert sandbox.pause() is True
    info = Sandbox.get_info(sandbox.sandbox_id)
    assert info.state == SandboxState.PAUSED
    assert sandbox.is_running() is False
    # a second pause is refused: the SDK returns False on 409
    assert Sandbox.pause(sandbox.sandbox_id) is False
    paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
    assert sandbox.sandbox_id in [s.sandbox_id for s in paused]

    resumed = Sandbox.connect(sandbox.sandbox_id)
    assert resumed.get_info().state == SandboxState.RUNNING
    assert resumed.is_running()
    assert resumed.commands.run("cat /tmp/state").stdout.strip() == "before-pause"
    # the background loop survived the freeze and keeps ticking
    n1 = int(resumed.commands.run("wc -l < /tmp/ticks").stdout)
    time.sleep(0.5)
    n2 = int(resumed.commands.run("wc -l < /tmp/ticks").stdout)
    assert n2 > n1
    resumed.commands.kill(bg.pid)


def test_paused_sandbox_uses_no_cpu(sandbox: Sandbox) -> None:
    sandbox.commands.run("python3 -c 'while True: pass'", background=True)
    time.sleep(1)
    sandbox.pause()
    import os

    sid = sandbox.sandbox_id
    v1 = f"/sys/fs/cgroup/cpuacct/hutch/{sid}/cpuacct.usage"
    v2 = f"/sys/fs/cgroup/hutch/{sid}/cpu.stat"

    def read_usage() -> int:
        if os.path.exists(v1):
            return int(Path(v1).read_text().strip())
        stat = dict(line.split() for line in Path(v2).read_text().splitlines())
        return int(stat["usage_usec"])

    before = read_usage()
    time.sleep(1)
    after = read_usage()
    assert after == before
    Sandbox.connect(sandbox.sandbox_id)


def test_metrics_report_cpu_memory_and_disk(sandbox: Sandbox) -> None:
    sandbox.commands.run("head -c 50000000 /dev/urandom > /home/user/blob")
    # samples are taken every few seconds: wait for one taken after the write
    assert wait_until(lambda: sandbox.get_metrics()[-1].disk_used >= 50_000_000, timeout=15)
    metrics = sandbox.get_metrics()
    assert len(metrics) >= 2
    last = metrics[-1]
    assert last.cpu_count == 2
    assert 0 <= last.cpu_used_pct <= 100
    assert 0 < last.mem_used < last.mem_total
    assert last.mem_total == 1024 * 1024 * 1024
    assert last.disk_total > last.disk_used


def test_kill_twice_returns_false() -> None:
    sbx = Sandbox.create()
    assert sbx.kill() is True
    assert sbx.kill() is False
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert sbx.is_running() is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


def test_short_timeout_sandbox_is_gone() -> None:
    sbx = Sandbox.create(timeout=3)
    assert sbx.is_running()
    time.sleep(6)
    assert sbx.is_running() is False
    ids = [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sbx.sandbox_id not in ids


def test_wrong_api_key_is_refused() -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_not_a_key").next_items()


def test_unknown_sandbox_and_template() -> None:
    with pytest.raises(NotFoundException):
        Sandbox.connect("doesnotexist00000000")
    with pytest.raises(Exception, match="no-such-template") as err:
        Sandbox.create(template="no-such-template")
    assert "no-such-template" in str(err.value)


def test_a_sandbox_killed_mid_stream_is_reported_killed_not_timed_out() -> None:
    """Issue 13: a sandbox killed while a command or `run_code` streams ends the stream as a
    dropped connection, so the official SDK probes the sandbox and says it was killed."""
    from e2b.exceptions import SandboxNotRunningException, TimeoutException

    sbx = Sandbox.create(timeout=120)
    killer = threading.Timer(2, lambda: Sandbox.kill(sbx.sandbox_id))
    killer.start()
    try:
        with pytest.raises(SandboxNotRunningException) as err:
            sbx.commands.run("sleep 60")
        assert "killed" in str(err.value), err.value
    finally:
        killer.cancel()
        Sandbox.kill(sbx.sandbox_id)

    with code_sandbox() as code:
        killer = threading.Timer(3, lambda: Sandbox.kill(code.sandbox_id))
        killer.start()
        try:
            # The code interpreter's client reports a cut stream as a TimeoutException whose
            # message says the sandbox was killed.
            with pytest.raises(TimeoutException) as cut:
                code.run_code("import time; time.sleep(60)")
            assert "killed" in str(cut.value), cut.value
        finally:
            killer.cancel()
