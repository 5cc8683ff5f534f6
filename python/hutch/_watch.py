"""Watching a directory: `AsyncWatchHandle` for asyncio code, `WatchHandle` for blocking code.

Unlike the rest of the SDK, the two are not one asyncio source and a blocking module generated
from it (scripts/gen-sync-sdk.py): they work differently, as E2B's SDK does. The asyncio watch
reads the agent's `WatchDir` event stream in a task; the blocking one creates a watcher
(`CreateWatcher`) and polls it (`GetWatcherEvents`), from a thread when there is an `on_event`
callback. `astart_watch` / `start_watch` start them for `AsyncFilesystem.watch_dir` /
`Filesystem.watch_dir` (generated from it).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Callable, Optional

from ._callbacks import call_async, call_sync
from ._config import SandboxTarget
from ._connect import AsyncRpc, Json, Rpc
from .exceptions import FilesystemError, InvalidArgumentException, TimeoutException, in_domain
from .filesystem_models import (
    WATCH_POLL_INTERVAL,
    FilesystemEvent,
    is_start_frame,
    method,
    parse_watch_frame,
    parse_watcher_events,
)

logger = logging.getLogger("hutch")

WATCH_KEEPALIVE = 50
"""Seconds of silence after which the agent sends a keepalive on a watch stream."""

DEFAULT_WATCH_TIMEOUT = 60.0
"""Seconds an async watch lasts unless told otherwise (E2B's default)."""

ASYNC_WATCH_TIMEOUT: Optional[float] = DEFAULT_WATCH_TIMEOUT
"""The default `timeout` of `AsyncFilesystem.watch_dir`."""

SYNC_WATCH_TIMEOUT: Optional[float] = None
"""The default `timeout` of `Filesystem.watch_dir`: none (E2B's blocking watch has none)."""

OnEvent = Callable[[FilesystemEvent], Any]
OnExit = Callable[[Optional[Exception]], Any]


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception as err:
            logger.debug("closing a stream failed: %s", err)


class AsyncWatchHandle:
    """A running watch of a directory (what `AsyncFilesystem.watch_dir` returns).

    A task reads the agent's event stream: with an `on_event` callback it is called for every
    event; without one, the events are kept until `await get_new_events()` collects them.
    `await stop()` ends the watch; the handle is also an async context manager that stops it.
    """

    def __init__(
        self,
        events: AsyncIterator[dict[str, Any]],
        on_event: Callable[[FilesystemEvent], Any] | None = None,
        on_exit: Callable[[Exception | None], Any] | None = None,
    ) -> None:
        self._events = events
        self._on_event = on_event
        self._on_exit = on_exit
        self._pending: list[FilesystemEvent] = []
        self._error: Exception | None = None
        self._closed = False
        self._stop_requested = False
        self._stopped = False
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run())

    @property
    def is_running(self) -> bool:
        """Whether the watch still reports events (it was not stopped and did not fail)."""
        return not self._closed

    async def _wait_started(self, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise in_domain(TimeoutException, FilesystemError)(
                "The sandbox did not start the watch in time: pass a larger 'request_timeout'"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _run(self) -> None:
        started = False
        error: Exception | None = None
        try:
            async for frame in self._events:
                if not started:
                    if not is_start_frame(frame):
                        raise FilesystemError(f"The watch did not start: expected a start event, got {frame!r}")
                    started = True
                    if not self._started.done():
                        self._started.set_result(None)
                    continue
                event = parse_watch_frame(frame)
                if event is None:
                    continue
                if self._on_event is None:
                    self._pending.append(event)
                else:
                    await call_async(self._on_event, event)
                if self._stop_requested:
                    break
            if not started:
                raise FilesystemError("The watch stream ended before the watch started")
        except asyncio.CancelledError:
            self._closed = True
            if not self._started.done():
                self._started.cancel()
            elif started:
                await self._exit(None)
            raise
        except Exception as err:
            error = err
        finally:
            await _aclose(self._events)
        self._closed = True
        if not started:
            if not self._started.done():
                self._started.set_exception(error or FilesystemError("The watch did not start"))
            return
        self._error = error
        await self._exit(error)

    async def _exit(self, error: Exception | None) -> None:
        if self._on_exit is None:
            if error is not None and self._on_event is not None:
                logger.warning("watch ended: %s", error)
            return
        try:
            await call_async(self._on_exit, error)
        except Exception as err:
            logger.warning("on_exit of a watch raised: %s", err)

    async def get_new_events(self) -> builtins.list[FilesystemEvent]:
        """The events since the previous call (or since the watch started).

        Only for a watch without `on_event` (its events go to the callback). Once the watch
        has ended by itself, the events it reported are still returned; after them, the error
        that ended it is raised (e.g. a `TimeoutException` when its `timeout` passed). After
        `stop()`, it raises `FilesystemError`.
        """
        if self._on_event is not None:
            raise in_domain(InvalidArgumentException, FilesystemError)(
                "This watch delivers its events to on_event; get_new_events is for watches started without it"
            )
        if self._stopped:
            raise FilesystemError("The watcher is already stopped")
        await asyncio.sleep(0)
        if self._pending:
            events, self._pending = self._pending, []
            return events
        if self._error is not None:
            raise self._error
        if self._closed:
            raise FilesystemError("The watcher is already stopped")
        return []

    async def stop(self) -> None:
        """Stops watching. Safe to call more than once, and from inside `on_event`."""
        self._stopped = True
        if asyncio.current_task() is self._task:
            self._stop_requested = True
            return
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait([self._task])
        self._closed = True

    async def __aenter__(self) -> AsyncWatchHandle:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class WatchHandle:
    """A running watch of a directory (what `Filesystem.watch_dir` returns).

    Started with an `on_event` callback, a background thread polls the sandbox and calls it for
    every event. Without one, fetch the events yourself with `get_new_events()` (E2B's style).
    Either way, `stop()` ends the watch; the handle is also a context manager that stops it.
    """

    def __init__(
        self,
        rpc: Rpc,
        watcher_id: str,
        user: str | None,
        on_event: Callable[[FilesystemEvent], Any] | None = None,
        on_exit: Callable[[Exception | None], Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._rpc = rpc
        self._watcher_id = watcher_id
        self._user = user
        self._on_event = on_event
        self._on_exit = on_exit
        self._deadline = time.monotonic() + timeout if timeout else None
        self._timeout = timeout
        self._closed = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if on_event is not None:
            self._thread = threading.Thread(target=self._run, name=f"hutch-watch-{watcher_id}", daemon=True)
            self._thread.start()

    @property
    def watcher_id(self) -> str:
        """The agent's id of the watch."""
        return self._watcher_id

    @property
    def is_running(self) -> bool:
        """Whether the watch still reports events (it was not stopped and did not fail)."""
        return not self._closed

    def _poll(self, request_timeout: float | None) -> list[FilesystemEvent]:
        response = self._rpc.unary(
            method("GetWatcherEvents"),
            {"watcherId": self._watcher_id},
            user=self._user,
            request_timeout=request_timeout,
        )
        return parse_watcher_events(response)

    def _remove(self, request_timeout: float | None) -> None:
        self._rpc.unary(
            method("RemoveWatcher"),
            {"watcherId": self._watcher_id},
            user=self._user,
            request_timeout=request_timeout,
        )

    def _expired_error(self) -> Exception:
        return in_domain(TimeoutException, FilesystemError)(
            f"The watch reached its timeout ({self._timeout}s): pass a larger 'timeout' to watch_dir, or 0 for none"
        )

    def get_new_events(self, request_timeout: float | None = None) -> list[FilesystemEvent]:
        """The events since the previous call (or since the watch started).

        Only for a watch without `on_event` (its events go to the callback). When the watch's
        `timeout` has passed, returns the last events and stops the watch.
        """
        if self._on_event is not None:
            raise in_domain(InvalidArgumentException, FilesystemError)(
                "This watch delivers its events to on_event; get_new_events is for watches started without it"
            )
        if self._closed:
            raise FilesystemError("The watcher is already stopped")
        expired = self._deadline is not None and time.monotonic() >= self._deadline
        events = self._poll(request_timeout)
        if expired:
            self.stop(request_timeout)
        return events

    def stop(self, request_timeout: float | None = None) -> None:
        """Stops watching; the events already reported are still delivered to `on_event`.

        Safe to call more than once, and from inside `on_event`.
        """
        if self._thread is not None:
            self._stopping.set()
            if threading.current_thread() is not self._thread:
                self._thread.join()
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._remove(request_timeout)

    def _run(self) -> None:
        error: Exception | None = None
        try:
            while True:
                stopping = self._stopping.is_set()
                expired = self._deadline is not None and time.monotonic() >= self._deadline
                for event in self._poll(None):
                    call_sync(self._on_event, event)
                if stopping:
                    break
                if expired:
                    error = self._expired_error()
                    break
                self._stopping.wait(WATCH_POLL_INTERVAL)
        except Exception as err:
            error = err
        self._closed = True
        try:
            self._remove(None)
        except Exception as err:
            logger.debug("removing watcher %s failed: %s", self._watcher_id, err)
        self._exit(error)

    def _exit(self, error: Exception | None) -> None:
        if self._on_exit is None:
            if error is not None:
                logger.warning("watch %s ended: %s", self._watcher_id, error)
            return
        try:
            call_sync(self._on_exit, error)
        except Exception as err:
            logger.warning("on_exit of watch %s raised: %s", self._watcher_id, err)

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def astart_watch(
    rpc: AsyncRpc,
    target: SandboxTarget,
    path: str,
    request: Json,
    on_event: Optional[OnEvent],
    on_exit: Optional[OnExit],
    user: Optional[str],
    request_timeout: Optional[float],
    timeout: Optional[float],
) -> AsyncWatchHandle:
    """Starts watching `path` (the `WatchDir` request `request`) and waits until the agent has
    started the watch."""
    events = rpc.stream(
        method("WatchDir"),
        request,
        user=user,
        request_timeout=request_timeout,
        lifetime=timeout or None,
        keepalive=WATCH_KEEPALIVE,
    )
    handle = AsyncWatchHandle(events, on_event, on_exit)
    await handle._wait_started(target.config.timeout(request_timeout))
    return handle


def start_watch(
    rpc: Rpc,
    target: SandboxTarget,
    path: str,
    request: Json,
    on_event: Optional[OnEvent],
    on_exit: Optional[OnExit],
    user: Optional[str],
    request_timeout: Optional[float],
    timeout: Optional[float],
) -> WatchHandle:
    """Creates a watcher of `path` (from the `WatchDir` request `request`); with `on_event`, a
    thread starts polling it."""
    response = rpc.unary(method("CreateWatcher"), request, user=user, request_timeout=request_timeout)
    watcher_id = response.get("watcherId")
    if not isinstance(watcher_id, str) or not watcher_id:
        raise FilesystemError(f"The sandbox did not start watching {path}: {response!r}")
    return WatchHandle(rpc, watcher_id, user, on_event, on_exit, timeout)


__all__ = ["AsyncWatchHandle", "WatchHandle"]
