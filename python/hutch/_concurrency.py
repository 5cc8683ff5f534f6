"""What the asyncio code of the SDK and the blocking code generated from it do differently.

The blocking modules (`commands.py`, `pty.py`, ...) are generated from the asyncio ones
(`commands_async.py`, ...) by `scripts/gen-sync-sdk.py`, which takes out `async` and `await` and
renames each `AsyncX` of this module to its blocking twin `SyncX`. So an asyncio module uses
`AsyncWorker` (a task), and the module generated from it uses `SyncWorker` (a thread) with the
same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Callable, ClassVar, Optional

AsyncQueue = asyncio.Queue
"""An unbounded queue between a worker and its readers (`put_nowait`, `await get()`)."""

SyncQueue = queue.Queue
"""An unbounded queue between a worker thread and its readers (`put_nowait`, `get()`)."""


class AsyncWorker:
    """Runs `body` in the background: a task of the running event loop."""

    failures: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    """What a body catches and reports as its own failure: a task's cancellation passes through."""

    def __init__(self, body: Callable[[], Awaitable[None]], name: str) -> None:
        """Starts `body()` as a task named `name`."""
        self._task = asyncio.get_running_loop().create_task(self._run(body), name=name)

    @staticmethod
    async def _run(body: Callable[[], Awaitable[None]]) -> None:
        await body()

    async def wait(self) -> None:
        """Waits until the body has returned, or the worker was stopped."""
        await asyncio.wait([self._task])

    async def stop(self) -> None:
        """Cancels the body and waits for it to end."""
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])


class SyncWorker:
    """Runs `body` in the background: a daemon thread."""

    failures: ClassVar[tuple[type[BaseException], ...]] = (BaseException,)
    """What a body catches and reports as its own failure: everything, as nothing else would see it."""

    def __init__(self, body: Callable[[], None], name: str) -> None:
        """Starts `body()` on a daemon thread named `name`."""
        self._done = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(body,), name=name, daemon=True)
        self._thread.start()

    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        finally:
            self._done.set()

    def wait(self) -> None:
        """Waits until the body has returned, or the worker was stopped (by another thread)."""
        while not (self._done.wait(0.5) or self._stopped):
            pass

    def stop(self) -> None:
        """Ends the waits in progress. A thread cannot be cancelled: the body must notice by
        itself that it should end (a handle's reader checks its `disconnected` flag at each
        message)."""
        self._stopped = True


class AsyncLock:
    """A lock of an asyncio object that may be used from several event loops in turn: an
    `asyncio.Lock` belongs to one loop, so each loop gets its own."""

    def __init__(self) -> None:
        """A lock not held."""
        self._lock: Optional[asyncio.Lock] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Holds the lock for the `async with` block."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
        async with self._lock:
            yield


class SyncLock:
    """A lock of a blocking object that several threads may use."""

    def __init__(self) -> None:
        """A lock not held."""
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Holds the lock for the `with` block."""
        with self._lock:
            yield
