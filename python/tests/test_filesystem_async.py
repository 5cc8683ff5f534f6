"""`async_sandbox.files` (asyncio), against a live `hutch serve`: content, metadata, users, watches."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import wait_until_async

import hutch
from hutch.exceptions import (
    AuthenticationError,
    FileNotFoundException,
    FilesystemError,
    InvalidArgumentException,
    NotFoundError,
    TimeoutException,
)
from hutch.filesystem_async import AsyncFileStreamReader, AsyncWatchHandle
from hutch.filesystem_models import FileInfo, FilesystemEvent, FilesystemEventType, FileType

MB = 1024 * 1024


class AsyncReader:
    """A file-like object whose `read` is a coroutine (like aiofiles' files)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        await asyncio.sleep(0)
        return self._data.read(size)


# --- write and read --------------------------------------------------------------------------


async def test_text_written_reads_back_as_text_and_bytes(async_sandbox: hutch.AsyncSandbox) -> None:
    content = "héllo, wörld ✓\n"
    info = await async_sandbox.files.write("/home/user/greeting.txt", content)
    assert isinstance(info, FileInfo)
    assert (info.name, info.path, info.type, info.is_dir) == (
        "greeting.txt",
        "/home/user/greeting.txt",
        FileType.FILE,
        False,
    )
    assert info.size == len(content.encode())
    assert await async_sandbox.files.read("/home/user/greeting.txt") == content
    raw = await async_sandbox.files.read("greeting.txt", format="bytes")
    assert isinstance(raw, bytearray) and raw == content.encode()
    assert await async_sandbox.filesystem.read("greeting.txt") == content


async def test_write_accepts_bytes_file_objects_and_async_and_sync_iterables(async_sandbox: hutch.AsyncSandbox) -> None:
    async def achunks() -> AsyncIterator[bytes]:
        for part in (b"async-", b"gener", b"ated"):
            await asyncio.sleep(0)
            yield part

    def chunks() -> Iterator[bytes]:
        yield b"sync-"
        yield b"generated"

    cases: list[tuple[str, Any, bytes]] = [
        ("bytes.bin", b"\x00\xffraw", b"\x00\xffraw"),
        ("bytesio.bin", io.BytesIO(b"from a BytesIO"), b"from a BytesIO"),
        ("stringio.txt", io.StringIO("text ✓"), "text ✓".encode()),
        ("agen.bin", achunks(), b"async-generated"),
        ("gen.bin", chunks(), b"sync-generated"),
        ("list.bin", [b"a", b"b"], b"ab"),
        ("areader.bin", AsyncReader(b"read with await" * 1000), b"read with await" * 1000),
    ]
    for name, data, expected in cases:
        info = await async_sandbox.files.write(f"/tmp/kinds/{name}", data)
        assert info.size == len(expected), name
        assert bytes(await async_sandbox.files.read(f"/tmp/kinds/{name}", format="bytes")) == expected, name
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.write("/tmp/bad.bin", 42)  # type: ignore[arg-type]


async def test_write_files_writes_every_entry_in_order(async_sandbox: hutch.AsyncSandbox) -> None:
    async def one() -> AsyncIterator[bytes]:
        yield b"DDDD"

    infos = await async_sandbox.files.write_files(
        [
            {"path": "/tmp/many/a.txt", "data": "A"},
            {"path": "/tmp/many/b.bin", "data": io.BytesIO(b"BB")},
            {"path": "/tmp/many/c.txt", "data": b"CCC"},
            {"path": "/tmp/many/d.txt", "data": one()},
        ]
    )
    assert [(i.path, i.size) for i in infos] == [
        ("/tmp/many/a.txt", 1),
        ("/tmp/many/b.bin", 2),
        ("/tmp/many/c.txt", 3),
        ("/tmp/many/d.txt", 4),
    ]
    assert [await async_sandbox.files.read(i.path) for i in infos] == ["A", "BB", "CCC", "DDDD"]


async def test_each_upload_form_writes_the_same_content(async_sandbox: hutch.AsyncSandbox) -> None:
    data = os.urandom(300_000)

    async def halves() -> AsyncIterator[bytes]:
        yield data[:1000]
        yield data[1000:]

    all_options: list[dict[str, Any]] = [{"use_octet_stream": True}, {"use_octet_stream": False}, {"gzip": True}]
    for options in all_options:
        path = f"/tmp/forms/{'-'.join(f'{k}={v}' for k, v in options.items())}.bin"
        assert (await async_sandbox.files.write(path, data, **options)).size == len(data)
        assert bytes(await async_sandbox.files.read(path, format="bytes", gzip=True)) == data
        assert (await async_sandbox.files.write(path, halves(), **options)).size == len(data)
        assert bytes(await async_sandbox.files.read(path, format="bytes")) == data


async def test_several_megabytes_stream_both_ways(async_sandbox: hutch.AsyncSandbox) -> None:
    size = 6 * MB + 321
    block = os.urandom(MB)
    expected = hashlib.sha256()

    async def produce() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            chunk = block[: min(len(block), size - sent)]
            sent += len(chunk)
            expected.update(chunk)
            yield chunk

    info = await async_sandbox.files.write("/tmp/big.bin", produce())
    assert info.size == size
    stream = await async_sandbox.files.read("/tmp/big.bin", format="stream")
    assert isinstance(stream, AsyncFileStreamReader)
    got = hashlib.sha256()
    count = total = 0
    async with stream:
        async for chunk in stream:
            got.update(chunk)
            count += 1
            total += len(chunk)
    assert (total, got.hexdigest()) == (size, expected.hexdigest())
    assert count > 1
    for _ in range(30):  # closing early must release each connection
        async with await async_sandbox.files.read("/tmp/big.bin", format="stream") as early:
            assert len(await early.__anext__()) > 0


async def test_metadata_is_stored_with_the_file(async_sandbox: hutch.AsyncSandbox) -> None:
    info = await async_sandbox.files.write("/home/user/tagged.txt", "x", metadata={"Owner": "bob"})
    assert info.metadata == {"owner": "bob"}
    assert (await async_sandbox.files.get_info("/home/user/tagged.txt")).metadata == {"owner": "bob"}


# --- errors ----------------------------------------------------------------------------------


async def test_reading_a_missing_file_raises_file_not_found(async_sandbox: hutch.AsyncSandbox) -> None:
    for form in ("text", "bytes", "stream"):
        with pytest.raises(FileNotFoundException) as caught:
            await async_sandbox.files.read("/tmp/no/such/file.txt", format=form)
        assert isinstance(caught.value, NotFoundError) and isinstance(caught.value, FilesystemError)


async def test_reading_or_writing_a_directory_raises_invalid_argument(async_sandbox: hutch.AsyncSandbox) -> None:
    with pytest.raises(InvalidArgumentException) as caught:
        await async_sandbox.files.read("/tmp")
    assert isinstance(caught.value, FilesystemError)
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.read("/tmp", format="stream")
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.write("/tmp", "x")


# --- users -----------------------------------------------------------------------------------


async def test_root_and_the_default_user_each_write_as_themselves(async_sandbox: hutch.AsyncSandbox) -> None:
    files = async_sandbox.files
    info = await files.write("secret.txt", "root only", user="root")
    assert info.path == "/root/secret.txt"
    assert await files.read("secret.txt", user="root") == "root only"
    assert (await files.get_info("/root/secret.txt", user="root")).owner == "root"
    assert (await files.write("mine.txt", "u")).path == "/home/user/mine.txt"
    assert (await files.get_info("/home/user/mine.txt")).owner == "user"
    assert await files.make_dir("newdir", user="root") is True
    assert (await files.get_info("/root/newdir", user="root")).owner == "root"
    # Requests act with their user's permissions: root's home is closed to the default user.
    with pytest.raises(FilesystemError, match="permission"):
        await files.get_info("/root/newdir")


async def test_a_write_the_kernel_refuses_raises_filesystem_error(async_sandbox: hutch.AsyncSandbox) -> None:
    # What even root cannot do (/proc is read-only) fails for every user.
    for user in (None, "root"):
        with pytest.raises(FilesystemError) as caught:
            await async_sandbox.files.write("/proc/version", "nope", user=user)
        assert not isinstance(caught.value, (FileNotFoundException, InvalidArgumentException))
        assert "permission denied" in str(caught.value).lower()
    with pytest.raises(FilesystemError):
        await async_sandbox.files.remove("/proc/version")


async def test_an_unknown_user_is_refused(async_sandbox: hutch.AsyncSandbox) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await async_sandbox.files.read("/tmp/x.txt", user="no-such-user")
    assert isinstance(caught.value, FilesystemError)
    with pytest.raises(FilesystemError):
        await async_sandbox.files.exists("/tmp", user="no-such-user")


# --- metadata operations -----------------------------------------------------------------------


async def test_list_get_info_and_exists(async_sandbox: hutch.AsyncSandbox) -> None:
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    await async_sandbox.files.write("/tmp/tree/b.txt", "bb")
    await async_sandbox.files.write("/tmp/tree/a/inner.txt", "i")
    entries = await async_sandbox.files.list("/tmp/tree")
    assert [(e.name, e.is_dir) for e in entries] == [("a", True), ("b.txt", False)]
    deep = await async_sandbox.files.list("/tmp/tree", depth=2)
    assert "/tmp/tree/a/inner.txt" in [e.path for e in deep]
    info = await async_sandbox.files.get_info("/tmp/tree/b.txt")
    assert (info.size, info.owner, info.permissions) == (2, "user", "-rw-r--r--")
    assert info.modified_time is not None and info.modified_time > before
    assert await async_sandbox.files.exists("/tmp/tree/b.txt") is True
    assert await async_sandbox.files.exists("/tmp/tree/zzz") is False
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.list("/tmp/missing-dir")
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.list("/tmp/tree/b.txt")
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.list("/tmp/tree", depth=0)
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.get_info("/tmp/tree/zzz")


async def test_make_dir_remove_and_rename(async_sandbox: hutch.AsyncSandbox) -> None:
    files = async_sandbox.files
    assert await files.make_dir("/tmp/made/deep") is True
    assert await files.make_dir("/tmp/made/deep") is False
    await files.write("/tmp/made/file", "x")
    with pytest.raises(InvalidArgumentException):
        await files.make_dir("/tmp/made/file")
    moved = await files.rename("/tmp/made/file", "/tmp/elsewhere/moved.txt")
    assert (moved.name, moved.path, moved.size) == ("moved.txt", "/tmp/elsewhere/moved.txt", 1)
    assert not await files.exists("/tmp/made/file")
    with pytest.raises(FileNotFoundException):
        await files.rename("/tmp/made/file", "/tmp/x")
    await files.write("/tmp/full/other.txt", "y")
    with pytest.raises(FilesystemError):
        await files.rename("/tmp/made", "/tmp/full")  # onto a non-empty directory
    await files.remove("/tmp/made")
    assert not await files.exists("/tmp/made/deep")
    await files.remove("/tmp/made")  # already gone: not an error


# --- watching --------------------------------------------------------------------------------


async def test_watch_dir_calls_on_event_for_create_write_and_remove(async_sandbox: hutch.AsyncSandbox) -> None:
    files = async_sandbox.files
    await files.make_dir("/tmp/watched")
    events: list[FilesystemEvent] = []
    exits: list[Exception | None] = []

    async def on_event(event: FilesystemEvent) -> None:
        events.append(event)

    handle = await files.watch_dir("/tmp/watched", on_event, on_exit=exits.append)
    running_at_start = handle.is_running
    assert isinstance(handle, AsyncWatchHandle) and running_at_start
    try:
        await files.write("/tmp/watched/new.txt", "hello")
        assert await wait_until_async(lambda: FilesystemEventType.WRITE in {e.type for e in events})
        await files.remove("/tmp/watched/new.txt")
        assert await wait_until_async(lambda: FilesystemEventType.REMOVE in {e.type for e in events})
    finally:
        await handle.stop()
    kinds = {e.type for e in events}
    assert {FilesystemEventType.CREATE, FilesystemEventType.WRITE, FilesystemEventType.REMOVE} <= kinds
    assert {e.name for e in events} == {"new.txt"}
    assert exits == [None] and not handle.is_running
    count = len(events)
    await files.write("/tmp/watched/after.txt", "x")
    await asyncio.sleep(0.5)
    assert len(events) == count
    await handle.stop()


async def test_watch_dir_without_a_callback_collects_events(async_sandbox: hutch.AsyncSandbox) -> None:
    files = async_sandbox.files
    await files.make_dir("/tmp/polled/sub")
    async with await files.watch_dir("/tmp/polled", recursive=True, include_entry=True) as handle:
        await files.write("/tmp/polled/sub/a.txt", "a")
        seen: list[FilesystemEvent] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(e.type is FilesystemEventType.WRITE for e in seen):
            seen.extend(await handle.get_new_events())
            await asyncio.sleep(0.05)
    assert any(e.name == "sub/a.txt" and e.type is FilesystemEventType.WRITE for e in seen)
    entries = [e.entry for e in seen if e.entry is not None]
    assert entries and entries[0].path == "/tmp/polled/sub/a.txt"
    with pytest.raises(FilesystemError):
        await handle.get_new_events()


async def test_watch_dir_with_a_plain_function_callback(async_sandbox: hutch.AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("/tmp/plain")
    names: list[str] = []
    handle = await async_sandbox.files.watch_dir("/tmp/plain", on_event=lambda e: names.append(e.name))
    await async_sandbox.files.write("/tmp/plain/p.txt", "p")
    assert await wait_until_async(lambda: "p.txt" in names)
    await handle.stop()


async def test_watch_dir_on_a_missing_directory_raises_file_not_found(async_sandbox: hutch.AsyncSandbox) -> None:
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir("/tmp/not-a-dir", on_event=lambda e: None)


async def test_a_watch_ends_at_its_timeout(async_sandbox: hutch.AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("/tmp/brief")
    exits: list[Exception | None] = []
    handle = await async_sandbox.files.watch_dir("/tmp/brief", lambda e: None, on_exit=exits.append, timeout=1)
    assert await wait_until_async(lambda: bool(exits), timeout=10)
    assert isinstance(exits[0], TimeoutException) and isinstance(exits[0], FilesystemError)
    assert not handle.is_running
    await handle.stop()


async def test_stop_from_inside_on_event(async_sandbox: hutch.AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("/tmp/selfstop")
    exits: list[Exception | None] = []
    holder: list[AsyncWatchHandle] = []

    async def on_event(event: FilesystemEvent) -> None:
        await holder[0].stop()

    holder.append(await async_sandbox.files.watch_dir("/tmp/selfstop", on_event, on_exit=exits.append))
    await async_sandbox.files.write("/tmp/selfstop/x.txt", "x")
    assert await wait_until_async(lambda: exits == [None])
    assert not holder[0].is_running
