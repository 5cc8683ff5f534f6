"""The sandbox's life with the async API, including the seed's `async with Sandbox()` form."""

from __future__ import annotations

import uuid

import pytest
from helpers import hutch_cli

from hutch import (
    AsyncSandbox,
    AuthenticationError,
    NotFoundError,
    OutputMessage,
    RateLimitException,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
    TimeoutException,
)

BASE = "base"


async def test_async_with_async_sandbox_is_stateful_and_ends_the_sandbox() -> None:
    async with AsyncSandbox() as sandbox:
        await sandbox.run_code("x = 1")
        execution = await sandbox.run_code("x += 1; x")
        assert execution.text == "2"
        sandbox_id = sandbox.sandbox_id
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.get_info(sandbox_id)


async def test_async_with_the_blocking_sandbox_gives_an_async_one_as_in_the_seed() -> None:
    lines: list[str] = []

    async def on_stdout(log: OutputMessage) -> None:
        lines.append(log.get("line", ""))

    async with Sandbox() as sandbox:
        assert isinstance(sandbox, AsyncSandbox)
        execution = await sandbox.run_code("print('streamed')", on_stdout=on_stdout)
        sandbox_id = sandbox.sandbox_id
    assert execution.error is None
    assert "".join(lines) == "streamed\n"
    assert Sandbox.kill(sandbox_id) is False


async def test_awaiting_the_constructor_and_create_both_start_it() -> None:
    described = AsyncSandbox(template=BASE)
    started = await described
    try:
        assert await started.is_running()
    finally:
        await started.close()
    created = await AsyncSandbox.create(template=BASE)
    try:
        assert (await created.get_info()).template_id == BASE
    finally:
        assert await created.kill() is True
        await created.close()


async def test_connect_reaches_the_same_kernel(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.run_code("kept = 7")
    again = await AsyncSandbox.connect(async_sandbox.sandbox_id)
    assert (await again.run_code("kept * 6")).text == "42"
    also = await AsyncSandbox.reconnect(async_sandbox.sandbox_id)
    assert await also.is_running()


async def test_kill_set_timeout_and_list_on_the_class() -> None:
    marker = uuid.uuid4().hex
    sbx = await AsyncSandbox.create(template=BASE, metadata={"marker": marker})
    try:
        await AsyncSandbox.set_timeout(sbx.sandbox_id, 900)
        found = await AsyncSandbox.list(query=SandboxQuery(metadata={"marker": marker}))
        assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
        pages = []
        while found.has_next:
            pages.append([s.sandbox_id for s in await found.next_items()])
        assert pages == [[sbx.sandbox_id]]
        assert await AsyncSandbox.kill(sbx.sandbox_id) is True
        assert await AsyncSandbox.kill(sbx.sandbox_id) is False
        assert not await sbx.is_running()
    finally:
        await sbx.close()


async def test_errors_match_the_blocking_api() -> None:
    with pytest.raises(AuthenticationError):
        await AsyncSandbox.create(template=BASE, api_key="e2b_wrong")
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect("nosuchsandbox")


async def test_code_timeout_interrupts_and_keeps_state(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.run_code("before = 1")
    with pytest.raises(TimeoutException):
        await async_sandbox.run_code("import time\ntime.sleep(30)", timeout=2)
    assert (await async_sandbox.run_code("before")).text == "1"


async def test_methods_before_start_say_how_to_start() -> None:
    described = AsyncSandbox(template=BASE)
    with pytest.raises(Exception, match="has not been started"):
        _ = described.sandbox_id
    await described.close()


async def test_a_key_over_its_sandbox_limit_raises_rate_limit_exception() -> None:
    key = hutch_cli("keys", "create", "--name", "sdk-limit-async", "--max-sandboxes", "1").strip()
    try:
        async with AsyncSandbox(template=BASE, api_key=key):
            with pytest.raises(RateLimitException) as caught:
                await AsyncSandbox.create(template=BASE, api_key=key)
            assert caught.value.status_code == 429
    finally:
        hutch_cli("keys", "revoke", key)
