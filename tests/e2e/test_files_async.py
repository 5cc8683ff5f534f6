"""The sandbox filesystem through the official async SDK (`AsyncSandbox.files`).

Mirrors test_files.py; watching here is the streaming `WatchDir` RPC with callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import pytest
from e2b import (
    AsyncSandbox,
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import AsyncWriteEntry, WriteEntry

pytestmark = pytest.mark.asyncio

HOME = "/home/user"
BINARY = bytes(range(256)) * 4096  # 1 MiB with every byte value


async def test_write_text_then_read_as_text_bytes_and_stream(async_sandbox: AsyncSandbox) -> None:
    content = "Hello, wörld! ✓\n"
    info = await async_sandbox.files.write("hello.txt", content)
    assert info.path == f"{HOME}/hello.txt"
    assert info.type == FileType.FILE
    assert await async_sandbox.files.read("hello.txt") == content
    assert bytes(await async_sandbox.files.read("hello.txt", format="bytes")) == content.encode()
    chunks = []
    async with await async_sandbox.files.read("hello.txt", format="stream") as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert b"".join(chunks) == content.encode()


async def test_binary_file_like_and_async_iterable_uploads(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.files.write("blob.bin", BINARY)
    await async_sandbox.files.write("bytesio.bin", io.BytesIO(BINARY))
    await async_sandbox.files.write("stringio.txt", io.StringIO("from StringIO"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(BINARY), 65536):
            yield BINARY[i : i + 65536]
            await asyncio.sleep(0)

    await async_sandbox.files.write("async-chunks.bin", chunks())
    for name in ("blob.bin", "bytesio.bin", "async-chunks.bin"):
        assert bytes(await async_sandbox.files.read(name, format="bytes")) == BINARY, name
    assert await async_sandbox.files.read("stringio.txt") == "from StringIO"


async def test_write_files_and_gzip(async_sandbox: AsyncSandbox) -> None:
    assert await async_sandbox.files.write_files([]) == []
    files = [WriteEntry(path=f"multi/{i}/f.txt", data=f"content {i}") for i in range(5)]
    infos = await async_sandbox.files.write_files(files)
    assert [i.path for i in infos] == [f"{HOME}/multi/{i}/f.txt" for i in range(5)]
    assert [await async_sandbox.files.read(f"multi/{i}/f.txt") for i in range(5)] == [f"content {i}" for i in range(5)]

    infos = await async_sandbox.files.write_files([AsyncWriteEntry(path="gz/a.txt", data="gz " * 10_000)], gzip=True)
    assert [i.path for i in infos] == [f"{HOME}/gz/a.txt"]
    assert await async_sandbox.files.read("gz/a.txt", gzip=True) == "gz " * 10_000
    assert await async_sandbox.files.read("gz/a.txt") == "gz " * 10_000
    chunks = []
    async for chunk in await async_sandbox.files.read("gz/a.txt", format="stream", gzip=True):
        chunks.append(chunk)
    assert b"".join(chunks) == ("gz " * 10_000).encode()


async def test_read_missing_file_fails(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.read("missing.txt")
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.read("missing.txt", format="stream")


async def test_metadata_round_trip(async_sandbox: AsyncSandbox) -> None:
    info = await async_sandbox.files.write("m.txt", "x", metadata={"author": "mish"})
    assert info.metadata == {"author": "mish"}
    assert (await async_sandbox.files.get_info("m.txt")).metadata == {"author": "mish"}
    assert (await async_sandbox.files.rename("m.txt", "m2.txt")).metadata == {"author": "mish"}
    assert (await async_sandbox.files.write("m2.txt", "y")).metadata is None


async def test_list_info_exists_make_dir_rename_remove(async_sandbox: AsyncSandbox) -> None:
    files = async_sandbox.files
    assert await files.make_dir("tree/sub1/deep") is True
    assert await files.make_dir("tree/sub1/deep") is False
    await files.make_dir("tree/sub2")
    await files.write("tree/file.txt", "Hello, World!")

    one = await files.list("tree")
    assert [(e.name, e.type) for e in one] == [
        ("file.txt", FileType.FILE),
        ("sub1", FileType.DIR),
        ("sub2", FileType.DIR),
    ]
    assert [e.path for e in await files.list("tree", depth=2)] == [
        f"{HOME}/tree/file.txt",
        f"{HOME}/tree/sub1",
        f"{HOME}/tree/sub1/deep",
        f"{HOME}/tree/sub2",
    ]
    with pytest.raises(InvalidArgumentException):
        await files.list("tree/file.txt")

    info = await files.get_info("tree/file.txt")
    assert (info.name, info.type, info.size, info.mode, info.permissions) == (
        "file.txt",
        FileType.FILE,
        13,
        0o644,
        "-rw-r--r--",
    )
    assert (info.owner, info.group) == ("user", "user")
    d = await files.get_info("tree")
    assert (d.type, d.mode, d.permissions) == (FileType.DIR, 0o755, "drwxr-xr-x")
    await async_sandbox.commands.run("ln -s file.txt tree/link")
    link = await files.get_info("tree/link")
    assert link.type in (FileType.SYMLINK, FileType.FILE)
    assert link.symlink_target == f"{HOME}/tree/file.txt"
    with pytest.raises(FileNotFoundException):
        await files.get_info("tree/missing")

    assert await files.exists("tree/file.txt") is True
    assert await files.exists("tree/sub1") is True
    assert await files.exists("tree/missing") is False

    moved = await files.rename("tree/file.txt", "tree/sub2/moved.txt")
    assert moved.path == f"{HOME}/tree/sub2/moved.txt"
    assert await files.read("tree/sub2/moved.txt") == "Hello, World!"
    with pytest.raises(FileNotFoundException):
        await files.rename("tree/file.txt", "tree/again.txt")

    await files.remove("tree")
    assert await files.exists("tree") is False
    await files.remove("tree")


class Collector:
    """Gathers watch events and lets a test wait, bounded, for one it expects."""

    def __init__(self) -> None:
        self.events: list[FilesystemEvent] = []
        self.changed = asyncio.Event()
        self.exited = asyncio.Event()
        self.exit_error: Exception | None = None

    def on_event(self, e: FilesystemEvent) -> None:
        self.events.append(e)
        self.changed.set()

    async def on_exit(self, err: Exception | None) -> None:
        self.exit_error = err
        self.exited.set()

    def has(self, kind: FilesystemEventType, name: str) -> bool:
        return any(e.type == kind and e.name == name for e in self.events)

    async def wait_for(self, kind: FilesystemEventType, name: str, timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.has(kind, name):
            remaining = deadline - loop.time()
            assert remaining > 0, f"no {kind} event for {name!r}; got {self.events}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


async def test_watch_dir_streams_events_to_callbacks(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("watched")
    c = Collector()
    handle = await async_sandbox.files.watch_dir("watched", on_event=c.on_event, on_exit=c.on_exit)
    try:
        await async_sandbox.files.write("watched/new.txt", "hello")
        await c.wait_for(FilesystemEventType.WRITE, "new.txt")
        assert c.has(FilesystemEventType.CREATE, "new.txt")
        await async_sandbox.files.rename("watched/new.txt", "watched/renamed.txt")
        await c.wait_for(FilesystemEventType.RENAME, "new.txt")
        await async_sandbox.files.remove("watched/renamed.txt")
        await c.wait_for(FilesystemEventType.REMOVE, "renamed.txt")
    finally:
        await handle.stop()
    await asyncio.wait_for(c.exited.wait(), 10)
    assert c.exit_error is None


async def test_watch_dir_with_entry_info(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("watched")
    c = Collector()
    handle = await async_sandbox.files.watch_dir("watched", on_event=c.on_event, include_entry=True)
    try:
        await async_sandbox.files.write("watched/file.txt", "content")
        await c.wait_for(FilesystemEventType.WRITE, "file.txt")
        write = next(e for e in c.events if e.type == FilesystemEventType.WRITE)
        assert write.entry is not None
        assert write.entry.path == f"{HOME}/watched/file.txt"
        assert write.entry.type == FileType.FILE
    finally:
        await handle.stop()


async def test_watch_dir_recursive_sees_nested_and_new_directories(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.files.make_dir("rec/nested")
    c = Collector()
    handle = await async_sandbox.files.watch_dir("rec", on_event=c.on_event, recursive=True)
    try:
        await async_sandbox.files.write("rec/nested/file.txt", "nested")
        await c.wait_for(FilesystemEventType.WRITE, "nested/file.txt")
        await async_sandbox.files.make_dir("rec/later")
        await c.wait_for(FilesystemEventType.CREATE, "later")
        await async_sandbox.files.write("rec/later/deep.txt", "deep")
        await c.wait_for(FilesystemEventType.WRITE, "later/deep.txt")
    finally:
        await handle.stop()


async def test_watch_dir_refuses_missing_paths_and_files(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir("no-such-dir", on_event=lambda e: None)
    await async_sandbox.files.write("a-file.txt", "x")
    with pytest.raises(SandboxException):
        await async_sandbox.files.watch_dir("a-file.txt", on_event=lambda e: None)


@pytest.mark.timeout(60)
async def test_watch_ends_with_an_error_when_the_sandbox_is_killed() -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        await sbx.files.make_dir("watched")
        c = Collector()
        # timeout=0: no client-side limit, so only the sandbox going away can end the stream
        await sbx.files.watch_dir("watched", on_event=c.on_event, on_exit=c.on_exit, timeout=0)
        await sbx.files.write("watched/x.txt", "x")
        await c.wait_for(FilesystemEventType.WRITE, "x.txt")
        assert await AsyncSandbox.kill(sbx.sandbox_id) is True
        await asyncio.wait_for(c.exited.wait(), 30)
        assert c.exit_error is not None
    finally:
        with contextlib.suppress(Exception):
            await sbx.kill()
