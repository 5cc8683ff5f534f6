"""Calling user callbacks that may be plain functions or `async def` ones."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable
from typing import Any, Callable, Optional, TypeVar, Union

T = TypeVar("T")

Callback = Callable[[T], Union[Any, Awaitable[Any]]]
"""A callback taking one argument; it may return an awaitable, which is then awaited."""

_local = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    # One private loop per thread runs the coroutines of async callbacks given to blocking
    # methods; it is never the caller's own running loop.
    loop: Optional[asyncio.AbstractEventLoop] = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def call_sync(callback: Optional[Callable[[T], Any]], value: T) -> None:
    """Calls `callback(value)` from blocking code; a returned awaitable is run to completion."""
    if callback is None:
        return
    outcome = callback(value)
    if inspect.isawaitable(outcome):
        awaitable = outcome

        async def wait() -> None:
            await awaitable

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _loop().run_until_complete(wait())
            return
        # Called from inside a running loop (a blocking method used in async code): run the
        # coroutine on a helper thread rather than block on the loop it would need.
        error: list[BaseException] = []

        def runner() -> None:
            try:
                asyncio.run(wait())
            except BaseException as err:
                error.append(err)

        thread = threading.Thread(target=runner, name="hutch-callback")
        thread.start()
        thread.join()
        if error:
            raise error[0]


async def call_async(callback: Optional[Callable[[T], Any]], value: T) -> None:
    """Calls `callback(value)` from async code, awaiting it if it returns an awaitable."""
    if callback is None:
        return
    outcome = callback(value)
    if inspect.isawaitable(outcome):
        await outcome
