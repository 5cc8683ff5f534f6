"""The sandbox's life with the blocking API: create, connect, list, time out, end; and the errors."""

from __future__ import annotations

import functools
import operator
import time
import uuid
import warnings

import pytest
from helpers import hutch_cli

import hutch
from hutch import (
    APIError,
    AuthenticationError,
    AuthenticationException,
    CodeExecutionError,
    CodeInterpreter,
    E2BException,
    InvalidArgumentException,
    NotFoundError,
    NotFoundException,
    RateLimitException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    TimeoutException,
)

BASE = "base"


def test_with_block_runs_stateful_code_and_ends_the_sandbox() -> None:
    with Sandbox() as sandbox:
        sandbox.run_code("x = 1")
        execution = sandbox.run_code("x += 1; x")
        assert execution.text == "2"
        sandbox_id = sandbox.sandbox_id
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox_id)


def test_create_sets_template_metadata_envs_and_timeout() -> None:
    marker = uuid.uuid4().hex
    with Sandbox.create(template=BASE, metadata={"marker": marker}, envs={"GREETING": "hi"}, timeout=120) as sbx:
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == BASE
        assert info.metadata == {"marker": marker}
        assert info.state == "running"
        assert info.started_at is not None and info.end_at is not None
        assert 100 <= (info.end_at - info.started_at).total_seconds() <= 140
        assert sbx.commands.run("echo $GREETING").stdout == "hi\n"
        # SandboxInfo reads as a dict too.
        assert info["template_id"] == BASE and info.get("metadata") == {"marker": marker}


def test_connect_and_reconnect_reach_the_same_kernel_state(sandbox: Sandbox) -> None:
    sandbox.run_code("kept = 'state'")
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.sandbox_id == sandbox.sandbox_id
    assert again.run_code("kept").text == "state"
    also = Sandbox.reconnect(sandbox.sandbox_id)
    assert also.run_code("kept").text == "state"
    by_id = Sandbox(sandbox_id=sandbox.sandbox_id)
    assert by_id.is_running()


def test_kill_on_an_instance_and_on_the_class() -> None:
    first = Sandbox(template=BASE)
    second = Sandbox(template=BASE)
    assert first.kill() is True
    assert first.is_running() is False
    assert Sandbox.kill(second.sandbox_id) is True
    assert Sandbox.kill(second.sandbox_id) is False
    assert Sandbox.kill("nosuchsandbox") is False
    # Closing what is already gone is fine.
    first.close()
    second.close()


def test_set_timeout_on_an_instance_and_on_the_class() -> None:
    with Sandbox(template=BASE, timeout=60) as sbx:
        sbx.set_timeout(600)
        info = sbx.get_info()
        assert info.end_at is not None
        assert info.started_at is not None
        assert (info.end_at - info.started_at).total_seconds() > 500
        Sandbox.set_timeout(sbx.sandbox_id, 3)
        deadline = time.time() + 30
        while sbx.is_running() and time.time() < deadline:
            time.sleep(0.5)
        assert not sbx.is_running()
    with pytest.raises(NotFoundError):
        Sandbox.set_timeout("nosuchsandbox", 10)


def test_list_filters_by_metadata_and_pages() -> None:
    marker = uuid.uuid4().hex
    sandboxes = [Sandbox(template=BASE, metadata={"marker": marker, "n": str(i)}) for i in range(3)]
    try:
        query = SandboxQuery(metadata={"marker": marker})
        found = Sandbox.list(query=query)
        assert sorted(s.sandbox_id for s in found) == sorted(s.sandbox_id for s in sandboxes)
        # Newest first.
        assert [s.metadata["n"] for s in found] == ["2", "1", "0"]
        paged = Sandbox.list(query=query, limit=2)
        pages = []
        while paged.has_next:
            pages.append([s.sandbox_id for s in paged.next_items()])
        assert [len(p) for p in pages] == [2, 1]
        assert functools.reduce(operator.iadd, pages, []) == [s.sandbox_id for s in found]
        assert Sandbox.list(query=SandboxQuery(metadata={"marker": "none-" + marker})) == []
    finally:
        for s in sandboxes:
            s.close()


def test_metrics_report_the_sandboxs_limits(sandbox: Sandbox) -> None:
    sandbox.run_code("sum(range(10**6))")
    deadline = time.time() + 20
    metrics = sandbox.get_metrics()
    while not metrics and time.time() < deadline:
        time.sleep(1)
        metrics = sandbox.get_metrics()
    assert metrics, "no metrics after 20 s"
    assert metrics[-1].cpu_count >= 1
    assert metrics[-1].mem_total > 0


def test_wrong_api_key_is_an_authentication_error() -> None:
    with pytest.raises(AuthenticationError) as caught:
        Sandbox(template=BASE, api_key="e2b_wrong")
    assert isinstance(caught.value, AuthenticationException)
    assert isinstance(caught.value, APIError)
    assert isinstance(caught.value, E2BException)
    assert caught.value.status_code == 401
    with pytest.raises(AuthenticationError):
        Sandbox.list(api_key="e2b_wrong")


def test_unknown_sandbox_and_template_are_not_found() -> None:
    with pytest.raises(NotFoundError) as caught:
        Sandbox.connect("nosuchsandbox")
    assert isinstance(caught.value, NotFoundException)
    assert isinstance(caught.value, SandboxNotFoundException)
    with pytest.raises(SandboxException):
        Sandbox(template="no-such-template-" + uuid.uuid4().hex[:8])


def test_code_timeout_raises_timeout_exception_and_the_kernel_stays_usable(sandbox: Sandbox) -> None:
    sandbox.run_code("before = 41")
    with pytest.raises(TimeoutException):
        sandbox.run_code("import time\ntime.sleep(30)", timeout=2)
    assert sandbox.run_code("before + 1").text == "42"


def test_code_in_a_killed_sandbox_raises() -> None:
    sbx = Sandbox()
    sbx.kill()
    with pytest.raises(SandboxException):
        sbx.run_code("1")
    sbx.close()


def test_bad_code_request_is_a_code_execution_error(sandbox: Sandbox) -> None:
    context = sandbox.create_code_context()
    with pytest.raises(CodeExecutionError) as caught:
        sandbox.notebook.run_code("1", context=context, language="python")
    assert isinstance(caught.value, InvalidArgumentException)


def test_cwd_of_the_sandbox_applies_to_run_code_and_new_contexts() -> None:
    with Sandbox(cwd="/tmp") as sbx:
        assert sbx.run_code("import os; os.getcwd()").text == "/tmp"
        context = sbx.create_code_context()
        assert context.cwd == "/tmp"
        assert sbx.run_code("import os; os.getcwd()", cwd="/home/user").text == "/home/user"


def test_code_interpreter_is_a_deprecated_sandbox() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with CodeInterpreter() as sbx:
            assert isinstance(sbx, Sandbox)
            assert sbx.notebook.exec_cell("6 * 7").text == "42"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_seed_exception_names_are_exported() -> None:
    for name in [
        "E2BException",
        "SandboxException",
        "TimeoutException",
        "APIError",
        "AuthenticationError",
        "RateLimitException",
        "NotFoundError",
        "FilesystemError",
        "ProcessError",
        "TerminalError",
        "CodeExecutionError",
        "AuthenticationException",
        "NotFoundException",
        "CommandExitException",
    ]:
        assert issubclass(getattr(hutch, name), hutch.E2BException), name
    assert issubclass(hutch.RateLimitException, hutch.APIError)
    assert issubclass(hutch.FilesystemError, hutch.SandboxException)


def test_a_key_over_its_sandbox_limit_raises_rate_limit_exception() -> None:
    key = hutch_cli("keys", "create", "--name", "sdk-limit", "--max-sandboxes", "1").strip()
    try:
        with Sandbox(template=BASE, api_key=key):
            with pytest.raises(RateLimitException) as caught:
                Sandbox(template=BASE, api_key=key)
            assert isinstance(caught.value, APIError)
            assert caught.value.status_code == 429
        # The first one has ended: there is room again.
        with Sandbox(template=BASE, api_key=key) as again:
            assert again.is_running()
    finally:
        hutch_cli("keys", "revoke", key)
