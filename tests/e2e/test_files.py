"""The sandbox filesystem through the official sync SDK (`Sandbox.files`).

Relative paths resolve against the user's home, /home/user. The async mirror is
test_files_async.py.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2b import (
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    WatchHandle,
)
from e2b.sandbox.filesystem.filesystem import SyncWriteEntry, WriteEntry, WriteInfo

from sdk_helpers import envd_get

HOME = "/home/user"
BINARY = bytes(range(256)) * 4096  # 1 MiB with every byte value


# ---- write and read -------------------------------------------------------------------


def test_write_text_then_read_as_text_bytes_and_stream(sandbox: Sandbox) -> None:
    content = "Hello, wörld! ✓\nsecond line\n"
    info = sandbox.files.write("hello.txt", content)
    assert isinstance(info, WriteInfo)
    assert info.name == "hello.txt"
    assert info.path == f"{HOME}/hello.txt"
    assert info.type == FileType.FILE

    assert sandbox.files.read("hello.txt") == content
    assert sandbox.files.read(f"{HOME}/hello.txt") == content
    data = sandbox.files.read("hello.txt", format="bytes")
    assert isinstance(data, bytearray)
    assert bytes(data) == content.encode()
    with sandbox.files.read("hello.txt", format="stream") as stream:
        assert b"".join(stream) == content.encode()
    # what the SDK wrote is what a program in the sandbox sees
    assert sandbox.commands.run("cat hello.txt").stdout == content


def test_binary_content_round_trips_exactly(sandbox: Sandbox) -> None:
    sandbox.files.write("blob.bin", BINARY)
    assert bytes(sandbox.files.read("blob.bin", format="bytes")) == BINARY
    assert b"".join(sandbox.files.read("blob.bin", format="stream")) == BINARY
    assert sandbox.commands.run("sha256sum blob.bin").stdout.split()[0] == hashlib.sha256(BINARY).hexdigest()

    # a file made inside the sandbox reads back the same
    sandbox.commands.run("head -c 3000000 /dev/urandom > made-inside.bin")
    inside = bytes(sandbox.files.read("made-inside.bin", format="bytes"))
    assert len(inside) == 3_000_000
    assert sandbox.commands.run("sha256sum made-inside.bin").stdout.split()[0] == hashlib.sha256(inside).hexdigest()


def test_partial_stream_read_can_be_closed(sandbox: Sandbox) -> None:
    sandbox.files.write("big.txt", "Streamed read content. " * 50_000)
    stream = sandbox.files.read("big.txt", format="stream")
    first = next(iter(stream))
    assert len(first) > 0
    stream.close()
    # the agent is still fine afterwards
    assert sandbox.files.read("big.txt").startswith("Streamed read content. ")


def test_read_empty_file_and_overwrite(sandbox: Sandbox) -> None:
    sandbox.commands.run("touch empty.txt")
    assert sandbox.files.read("empty.txt") == ""
    assert sandbox.files.read("empty.txt", format="bytes") == bytearray()

    sandbox.files.write("over.txt", "a much longer initial content")
    sandbox.files.write("over.txt", "short")
    assert sandbox.files.read("over.txt") == "short"
    sandbox.files.write("over.txt", b"")
    assert sandbox.files.read("over.txt") == ""


def test_write_creates_missing_parent_directories(sandbox: Sandbox) -> None:
    info = sandbox.files.write("deep/er/still/file.txt", "nested")
    assert info.path == f"{HOME}/deep/er/still/file.txt"
    assert sandbox.files.read("deep/er/still/file.txt") == "nested"
    assert sandbox.files.get_info("deep/er").type == FileType.DIR
    assert sandbox.files.get_info("deep/er").owner == "user"


def test_write_file_like_objects(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.files.write("bytesio.bin", io.BytesIO(b"from BytesIO"))
    sandbox.files.write("stringio.txt", io.StringIO("from StringIO"))
    local = tmp_path / "local.bin"
    local.write_bytes(BINARY)
    with open(local, "rb") as f:
        sandbox.files.write("from-disk.bin", f)
    # the same objects through multipart instead of the streamed octet-stream default
    sandbox.files.write("bytesio-multipart.bin", io.BytesIO(b"multipart BytesIO"), use_octet_stream=False)

    assert sandbox.files.read("bytesio.bin") == "from BytesIO"
    assert sandbox.files.read("stringio.txt") == "from StringIO"
    assert bytes(sandbox.files.read("from-disk.bin", format="bytes")) == BINARY
    assert sandbox.files.read("bytesio-multipart.bin") == "multipart BytesIO"


def test_write_an_iterable_of_chunks(sandbox: Sandbox) -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(BINARY), 65536):
            yield BINARY[i : i + 65536]

    info = sandbox.files.write("chunked.bin", chunks())
    assert info.path == f"{HOME}/chunked.bin"
    assert bytes(sandbox.files.read("chunked.bin", format="bytes")) == BINARY

    infos = sandbox.files.write_files([SyncWriteEntry(path="gen/a.bin", data=iter([b"ab", b"cd"]))])
    assert [i.path for i in infos] == [f"{HOME}/gen/a.bin"]
    assert sandbox.files.read("gen/a.bin") == "abcd"


def test_write_files_uploads_many_files_at_once(sandbox: Sandbox) -> None:
    assert sandbox.files.write_files([]) == []
    one = sandbox.files.write_files([WriteEntry(path="one.txt", data="only one")])
    assert [i.path for i in one] == [f"{HOME}/one.txt"]

    files = [WriteEntry(path=f"multi/dir{i % 3}/file_{i}.txt", data=f"content {i}") for i in range(10)]
    files.append(WriteEntry(path="/tmp/absolute.bin", data=b"\x00\x01\x02"))
    files.append(WriteEntry(path="multi/io.bin", data=io.BytesIO(b"io in multipart")))
    infos = sandbox.files.write_files(files)
    assert len(infos) == len(files)
    for entry, info in zip(files, infos, strict=True):
        expected = entry["path"] if entry["path"].startswith("/") else f"{HOME}/{entry['path']}"
        assert info.path == expected
        assert info.type == FileType.FILE
    for i in range(10):
        assert sandbox.files.read(f"multi/dir{i % 3}/file_{i}.txt") == f"content {i}"
    assert bytes(sandbox.files.read("/tmp/absolute.bin", format="bytes")) == b"\x00\x01\x02"
    assert sandbox.files.read("multi/io.bin") == "io in multipart"


def test_octet_stream_upload_of_text_and_bytes(sandbox: Sandbox) -> None:
    info = sandbox.files.write("octet.txt", "octet text", use_octet_stream=True)
    assert info.path == f"{HOME}/octet.txt"
    sandbox.files.write("octet.bin", BINARY, use_octet_stream=True)
    assert sandbox.files.read("octet.txt") == "octet text"
    assert bytes(sandbox.files.read("octet.bin", format="bytes")) == BINARY


def test_gzip_upload_and_download(sandbox: Sandbox) -> None:
    text = "gzip me please. " * 20_000
    info = sandbox.files.write("gz.txt", text, gzip=True)
    assert info.path == f"{HOME}/gz.txt"
    # stored uncompressed: a program in the sandbox reads the plain text
    assert sandbox.commands.run("wc -c < gz.txt").stdout.strip() == str(len(text))
    assert sandbox.files.read("gz.txt") == text
    assert sandbox.files.read("gz.txt", gzip=True) == text
    assert bytes(sandbox.files.read("gz.txt", format="bytes", gzip=True)) == text.encode()
    assert b"".join(sandbox.files.read("gz.txt", format="stream", gzip=True)) == text.encode()

    sandbox.files.write("gz.bin", io.BytesIO(BINARY), gzip=True)
    assert bytes(sandbox.files.read("gz.bin", format="bytes", gzip=True)) == BINARY

    infos = sandbox.files.write_files(
        [WriteEntry(path=f"gzmulti/{i}.txt", data=f"file {i}") for i in range(3)], gzip=True
    )
    assert len(infos) == 3
    assert [sandbox.files.read(f"gzmulti/{i}.txt") for i in range(3)] == ["file 0", "file 1", "file 2"]


def test_download_is_gzipped_only_when_asked_and_supports_ranges(sandbox: Sandbox) -> None:
    text = "compressible " * 10_000
    sandbox.files.write("raw.txt", text)
    params = {"path": "raw.txt", "username": "user"}

    plain = envd_get(sandbox, "/files", params, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "gzip" not in plain.headers.get("content-encoding", "")
    assert plain.text == text

    gz = envd_get(sandbox, "/files", params, headers={"Accept-Encoding": "gzip"})
    assert gz.status_code == 200
    assert gz.headers.get("content-encoding") == "gzip"
    assert gz.text == text  # httpx decoded it: it was real gzip

    part = envd_get(sandbox, "/files", params, headers={"Accept-Encoding": "identity", "Range": "bytes=13-25"})
    assert part.status_code == 206
    assert part.content == text.encode()[13:26]


def test_read_missing_file_or_a_directory_fails(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("does-not-exist.txt")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("does-not-exist.txt", format="stream")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/no/such/dir/file.txt", format="bytes")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/tmp")

    # a directory cannot be overwritten by a file
    sandbox.files.make_dir("a-dir")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write("a-dir", "not a dir")
    assert sandbox.files.get_info("a-dir").type == FileType.DIR

    r = envd_get(sandbox, "/files", {"path": "/nope.txt"})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404
    assert "/nope.txt" in body["message"]


def test_write_and_read_as_root(sandbox: Sandbox) -> None:
    info = sandbox.files.write("secret.txt", "for root only", user="root")
    assert info.path == "/root/secret.txt"
    assert sandbox.files.read("/root/secret.txt", user="root") == "for root only"
    assert sandbox.files.get_info("/root/secret.txt", user="root").owner == "root"
    assert sandbox.files.get_info("/root/secret.txt", user="root").group == "root"
    # the default user's files are the user's
    sandbox.files.write("mine.txt", "x")
    assert sandbox.files.get_info("mine.txt").owner == "user"
    assert sandbox.commands.run("stat -c %U:%G mine.txt").stdout.strip() == "user:user"


# ---- metadata -------------------------------------------------------------------------


def test_metadata_is_stored_returned_and_replaced(sandbox: Sandbox) -> None:
    meta = {"author": "mish", "purpose": "upload"}
    info = sandbox.files.write("meta.txt", "with metadata", metadata=meta)
    assert info.metadata == meta
    assert sandbox.files.get_info("meta.txt").metadata == meta
    listed = {e.name: e for e in sandbox.files.list(".")}
    assert listed["meta.txt"].metadata == meta
    # stored as user.e2b.* extended attributes
    xattr = sandbox.commands.run(
        'python3 -c "import os; '
        "print(sorted((k, os.getxattr('meta.txt', k).decode()) for k in os.listxattr('meta.txt')))\""
    ).stdout.strip()
    assert xattr == "[('user.e2b.author', 'mish'), ('user.e2b.purpose', 'upload')]"

    renamed = sandbox.files.rename("meta.txt", "meta-renamed.txt")
    assert renamed.metadata == meta

    # keys are lowercased; an overwrite replaces the previous set
    info = sandbox.files.write("meta-renamed.txt", "again", metadata={"Stage": "Two"})
    assert info.metadata == {"stage": "Two"}
    assert sandbox.files.get_info("meta-renamed.txt").metadata == {"stage": "Two"}
    info = sandbox.files.write("meta-renamed.txt", "no metadata now")
    assert info.metadata is None
    assert sandbox.files.get_info("meta-renamed.txt").metadata is None

    # set out of band, it shows up too
    sandbox.commands.run("python3 -c \"import os; os.setxattr('meta-renamed.txt', 'user.e2b.origin', b'shell')\"")
    assert sandbox.files.get_info("meta-renamed.txt").metadata == {"origin": "shell"}


def test_metadata_with_octet_stream_and_many_files(sandbox: Sandbox) -> None:
    info = sandbox.files.write("meta-octet.txt", "x", metadata={"k": "v"}, use_octet_stream=True)
    assert info.metadata == {"k": "v"}
    assert sandbox.files.get_info("meta-octet.txt").metadata == {"k": "v"}

    infos = sandbox.files.write_files(
        [WriteEntry(path="mm/1.txt", data="1"), WriteEntry(path="mm/2.txt", data="2")],
        metadata={"source": "test-suite"},
    )
    assert [i.metadata for i in infos] == [{"source": "test-suite"}] * 2
    for i in infos:
        assert sandbox.files.get_info(i.path).metadata == {"source": "test-suite"}


# ---- list, info, exists, make_dir, rename, remove ---------------------------------------


def test_list_respects_depth_in_walk_order(sandbox: Sandbox) -> None:
    base = "tree"
    for d in ("subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"):
        sandbox.files.make_dir(f"{base}/{d}")
    sandbox.files.write(f"{base}/file1.txt", "Hello, world!")
    sandbox.files.write(f"{base}/subdir1/subdir1_1/deep.txt", "deep")

    def listing(depth: int | None) -> list[tuple[str, FileType | None]]:
        return [(e.path[len(HOME) + len(base) + 2 :], e.type) for e in sandbox.files.list(base, depth=depth)]

    top = [("file1.txt", FileType.FILE), ("subdir1", FileType.DIR), ("subdir2", FileType.DIR)]
    assert listing(None) == top
    assert listing(1) == top
    two = [
        ("file1.txt", FileType.FILE),
        ("subdir1", FileType.DIR),
        ("subdir1/subdir1_1", FileType.DIR),
        ("subdir1/subdir1_2", FileType.DIR),
        ("subdir2", FileType.DIR),
        ("subdir2/subdir2_1", FileType.DIR),
        ("subdir2/subdir2_2", FileType.DIR),
    ]
    assert listing(2) == two
    three = [*two[:3], ("subdir1/subdir1_1/deep.txt", FileType.FILE), *two[3:]]
    assert listing(3) == three
    assert listing(10) == three
    names = [e.name for e in sandbox.files.list(base, depth=2)]
    assert names == ["file1.txt", "subdir1", "subdir1_1", "subdir1_2", "subdir2", "subdir2_1", "subdir2_2"]

    with pytest.raises(FileNotFoundException):
        sandbox.files.list("no-such-dir")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(f"{base}/file1.txt")


def test_list_entries_carry_full_details(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("details/subdir")
    sandbox.files.write("details/test.txt", "Hello, World!")
    entries = {e.name: e for e in sandbox.files.list("details")}
    assert set(entries) == {"subdir", "test.txt"}

    f = entries["test.txt"]
    assert f.path == f"{HOME}/details/test.txt"
    assert f.type == FileType.FILE
    assert f.size == len("Hello, World!")
    assert f.mode == 0o644
    assert f.permissions == "-rw-r--r--"
    assert (f.owner, f.group) == ("user", "user")
    assert f.symlink_target is None
    assert abs(f.modified_time - datetime.now(UTC)) < timedelta(minutes=5)

    d = entries["subdir"]
    assert d.path == f"{HOME}/details/subdir"
    assert d.type == FileType.DIR
    assert d.mode == 0o755
    assert d.permissions == "drwxr-xr-x"
    assert (d.owner, d.group) == ("user", "user")


def test_get_info_of_file_directory_and_symlink(sandbox: Sandbox) -> None:
    sandbox.files.write("info/test.txt", "test")
    sandbox.commands.run("chmod 600 info/test.txt && touch -d '2021-02-03 04:05:06 UTC' info/test.txt")
    f = sandbox.files.get_info("info/test.txt")
    assert f.name == "test.txt"
    assert f.type == FileType.FILE
    assert f.path == f"{HOME}/info/test.txt"
    assert f.size == 4
    assert f.mode == 0o600
    assert f.permissions == "-rw-------"
    assert (f.owner, f.group) == ("user", "user")
    assert f.modified_time == datetime(2021, 2, 3, 4, 5, 6, tzinfo=UTC)

    d = sandbox.files.get_info("info")
    assert d.name == "info"
    assert d.type == FileType.DIR
    assert d.path == f"{HOME}/info"
    assert d.mode == 0o755
    assert d.permissions == "drwxr-xr-x"
    assert d.modified_time.tzinfo is not None

    root = sandbox.files.get_info("/")
    assert root.type == FileType.DIR

    sandbox.commands.run("ln -s test.txt link.txt && ln -s /tmp dirlink", cwd=f"{HOME}/info")
    link = sandbox.files.get_info("info/link.txt")
    assert link.name == "link.txt"
    assert link.path == f"{HOME}/info/link.txt"
    # newer agents mark the link itself (SYMLINK); older ones report the target's type
    assert link.type in (FileType.SYMLINK, FileType.FILE)
    assert link.symlink_target == f"{HOME}/info/test.txt"
    dirlink = sandbox.files.get_info("info/dirlink")
    assert dirlink.type in (FileType.SYMLINK, FileType.DIR)
    assert dirlink.symlink_target == "/tmp"
    # a listing shows the links without following them
    listed = {e.name: e for e in sandbox.files.list("info")}
    assert listed["link.txt"].symlink_target == f"{HOME}/info/test.txt"
    assert listed["dirlink"].symlink_target == "/tmp"

    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("info/missing.txt")


def test_exists_for_files_directories_and_missing_paths(sandbox: Sandbox) -> None:
    sandbox.files.write("exists.txt", "test")
    assert sandbox.files.exists("exists.txt") is True
    assert sandbox.files.exists(f"{HOME}/exists.txt") is True
    assert sandbox.files.exists("/tmp") is True
    assert sandbox.files.exists("missing.txt") is False
    assert sandbox.files.exists("/no/such/dir/missing.txt") is False


def test_make_dir_twice_and_nested(sandbox: Sandbox) -> None:
    assert sandbox.files.make_dir("newdir") is True
    assert sandbox.files.make_dir("newdir") is False
    assert sandbox.files.exists("newdir")
    assert sandbox.files.make_dir("a/b/c/d") is True
    info = sandbox.files.get_info("a/b/c/d")
    assert info.type == FileType.DIR
    assert info.owner == "user"
    assert sandbox.files.get_info("a").owner == "user"
    sandbox.files.write("plain.txt", "x")
    with pytest.raises(SandboxException):
        sandbox.files.make_dir("plain.txt")


def test_rename_moves_files_and_directories(sandbox: Sandbox) -> None:
    sandbox.files.write("old.txt", "This file will be renamed.")
    info = sandbox.files.rename("old.txt", "new.txt")
    assert info.path == f"{HOME}/new.txt"
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert not sandbox.files.exists("old.txt")
    assert sandbox.files.read("new.txt") == "This file will be renamed."

    sandbox.files.write("olddir/inner.txt", "inner")
    moved = sandbox.files.rename("olddir", "/tmp/moved-dir")
    assert moved.path == "/tmp/moved-dir"
    assert moved.type == FileType.DIR
    assert sandbox.files.read("/tmp/moved-dir/inner.txt") == "inner"

    with pytest.raises(FileNotFoundException):
        sandbox.files.rename("non-existing.txt", "whatever.txt")


def test_remove_files_and_directory_trees(sandbox: Sandbox) -> None:
    sandbox.files.write("rm.txt", "bye")
    sandbox.files.remove("rm.txt")
    assert not sandbox.files.exists("rm.txt")

    sandbox.files.write("rmdir/a/b/c.txt", "deep")
    sandbox.files.remove("rmdir")
    assert not sandbox.files.exists("rmdir")

    # removing what is not there is not an error
    sandbox.files.remove("never-existed.txt")


# ---- watch (the sync SDK polls a server-side watcher) -------------------------------------


def poll_events(
    handle: WatchHandle, done: Callable[[list[FilesystemEvent]], bool], timeout: float = 10
) -> list[FilesystemEvent]:
    events: list[FilesystemEvent] = []
    deadline = time.time() + timeout
    while True:
        events += handle.get_new_events()
        if done(events) or time.time() > deadline:
            return events
        time.sleep(0.1)


def has(events: list[FilesystemEvent], kind: FilesystemEventType, name: str) -> bool:
    return any(e.type == kind and e.name == name for e in events)


def test_watch_dir_reports_create_write_rename_and_remove(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("watched")
    sandbox.files.write("watched/existing.txt", "before")
    handle = sandbox.files.watch_dir("watched")
    try:
        sandbox.files.write("watched/new.txt", "hello")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "new.txt"))
        assert has(events, FilesystemEventType.CREATE, "new.txt"), events
        assert has(events, FilesystemEventType.WRITE, "new.txt"), events
        assert all(e.entry is None for e in events)

        sandbox.files.write("watched/existing.txt", "after")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "existing.txt"))
        assert has(events, FilesystemEventType.WRITE, "existing.txt"), events
        assert not has(events, FilesystemEventType.WRITE, "new.txt"), "events were delivered twice"

        sandbox.files.rename("watched/new.txt", "watched/renamed.txt")
        events = poll_events(
            handle,
            lambda ev: (
                has(ev, FilesystemEventType.RENAME, "new.txt") and has(ev, FilesystemEventType.CREATE, "renamed.txt")
            ),
        )
        assert has(events, FilesystemEventType.RENAME, "new.txt"), events
        assert has(events, FilesystemEventType.CREATE, "renamed.txt"), events

        sandbox.commands.run("chmod 600 watched/renamed.txt")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.CHMOD, "renamed.txt"))
        assert has(events, FilesystemEventType.CHMOD, "renamed.txt"), events

        sandbox.files.remove("watched/renamed.txt")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.REMOVE, "renamed.txt"))
        assert has(events, FilesystemEventType.REMOVE, "renamed.txt"), events
    finally:
        handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_watch_dir_with_entry_info(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("watched")
    handle = sandbox.files.watch_dir("watched", include_entry=True)
    try:
        sandbox.files.write("watched/file.txt", "content")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "file.txt"))
        write = next(e for e in events if e.type == FilesystemEventType.WRITE and e.name == "file.txt")
        assert write.entry is not None
        assert write.entry.name == "file.txt"
        assert write.entry.path == f"{HOME}/watched/file.txt"
        assert write.entry.type == FileType.FILE
    finally:
        handle.stop()


def test_watch_dir_is_shallow_unless_recursive(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("shallow/nested")
    handle = sandbox.files.watch_dir("shallow")
    try:
        sandbox.files.write("shallow/nested/inner.txt", "inner")
        sandbox.files.write("shallow/marker.txt", "marker")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "marker.txt"))
        assert has(events, FilesystemEventType.WRITE, "marker.txt"), events
        assert not any(e.name.startswith("nested/") for e in events), events
    finally:
        handle.stop()


def test_watch_dir_recursive_sees_nested_and_new_directories(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("rec/nested")
    handle = sandbox.files.watch_dir("rec", recursive=True)
    try:
        sandbox.files.write("rec/nested/file.txt", "nested")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "nested/file.txt"))
        assert has(events, FilesystemEventType.CREATE, "nested/file.txt"), events
        assert has(events, FilesystemEventType.WRITE, "nested/file.txt"), events

        # a directory made after the watch started is watched too
        sandbox.files.make_dir("rec/later")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.CREATE, "later"))
        assert has(events, FilesystemEventType.CREATE, "later"), events
        sandbox.files.write("rec/later/deep.txt", "deep")
        events = poll_events(handle, lambda ev: has(ev, FilesystemEventType.WRITE, "later/deep.txt"))
        assert has(events, FilesystemEventType.WRITE, "later/deep.txt"), events
    finally:
        handle.stop()


def test_watch_dir_refuses_missing_paths_and_files(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir("no-such-dir")
    sandbox.files.write("a-file.txt", "x")
    with pytest.raises(SandboxException):
        sandbox.files.watch_dir("a-file.txt")
