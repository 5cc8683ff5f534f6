"""`sandbox.files` (blocking), against a live `hutch serve`: content, metadata, users, watches."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until

import hutch
from hutch._config import ConnectionConfig, SandboxTarget
from hutch.exceptions import (
    AuthenticationError,
    FileNotFoundException,
    FilesystemError,
    InvalidArgumentException,
    NotFoundError,
    TimeoutException,
)
from hutch.filesystem import FileStreamReader, WatchHandle
from hutch.filesystem_models import (
    EntryInfo,
    FileInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    WriteInfo,
    signed_url,
)

MB = 1024 * 1024


# --- write and read --------------------------------------------------------------------------


def test_text_written_reads_back_as_text_and_bytes(sandbox: hutch.Sandbox) -> None:
    content = "héllo, wörld ✓\nsecond line\n"
    info = sandbox.files.write("/home/user/greeting.txt", content)
    assert isinstance(info, FileInfo) and isinstance(info, WriteInfo) and isinstance(info, EntryInfo)
    assert (info.name, info.path, info.type, info.is_dir) == (
        "greeting.txt",
        "/home/user/greeting.txt",
        FileType.FILE,
        False,
    )
    assert info.size == len(content.encode())
    assert sandbox.files.read("/home/user/greeting.txt") == content
    raw = sandbox.files.read("/home/user/greeting.txt", format="bytes")
    assert isinstance(raw, bytearray) and raw == content.encode()


def test_relative_paths_are_in_the_users_home(sandbox: hutch.Sandbox) -> None:
    info = sandbox.files.write("notes/today.md", "# today")
    assert info.path == "/home/user/notes/today.md"
    assert sandbox.files.read("/home/user/notes/today.md") == "# today"
    assert sandbox.filesystem.read("notes/today.md") == "# today"


def test_write_accepts_bytes_file_objects_and_iterables(sandbox: hutch.Sandbox, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"\x00\x01 from disk \xff")

    def chunks() -> Iterator[Any]:
        yield b"gen-"
        yield bytearray(b"erat")
        yield b"ed"

    cases: list[tuple[str, Any, bytes]] = [
        ("bytes.bin", b"\x00\xffraw bytes", b"\x00\xffraw bytes"),
        ("bytesio.bin", io.BytesIO(b"from a BytesIO"), b"from a BytesIO"),
        ("stringio.txt", io.StringIO("from a StringIO ✓"), "from a StringIO ✓".encode()),
        ("generator.bin", chunks(), b"gen-erated"),
        ("list.bin", [b"a", b"b", b"c"], b"abc"),
        ("empty.bin", b"", b""),
    ]
    for name, data, expected in cases:
        info = sandbox.files.write(f"/tmp/kinds/{name}", data)
        assert info.size == len(expected), name
        assert bytes(sandbox.files.read(f"/tmp/kinds/{name}", format="bytes")) == expected, name
    with local.open("rb") as handle:
        info = sandbox.files.write("/tmp/kinds/disk.bin", handle)
    assert info.size == local.stat().st_size
    assert bytes(sandbox.files.read("/tmp/kinds/disk.bin", format="bytes")) == local.read_bytes()


def test_write_refuses_chunks_that_are_not_bytes(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write("/tmp/bad.bin", [b"ok", 42])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write("/tmp/bad.bin", 42)  # type: ignore[arg-type]


def test_write_replaces_a_file_and_creates_parent_directories(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/deep/er/still/file.txt", "first version, longer")
    sandbox.files.write("/tmp/deep/er/still/file.txt", "second")
    assert sandbox.files.read("/tmp/deep/er/still/file.txt") == "second"
    assert sandbox.files.get_info("/tmp/deep/er").is_dir


def test_write_files_writes_every_entry_in_order(sandbox: hutch.Sandbox) -> None:
    infos = sandbox.files.write_files(
        [
            {"path": "/tmp/many/a.txt", "data": "A"},
            {"path": "/tmp/many/b.bin", "data": io.BytesIO(b"BB")},
            {"path": "/tmp/many/c.txt", "data": b"CCC"},
            ("/tmp/many/d.txt", iter([b"DD", b"DD"])),
        ]
    )
    assert [(i.path, i.size) for i in infos] == [
        ("/tmp/many/a.txt", 1),
        ("/tmp/many/b.bin", 2),
        ("/tmp/many/c.txt", 3),
        ("/tmp/many/d.txt", 4),
    ]
    assert [sandbox.files.read(i.path) for i in infos] == ["A", "BB", "CCC", "DDDD"]
    assert sandbox.files.write_files([]) == []


def test_each_upload_form_writes_the_same_content(sandbox: hutch.Sandbox) -> None:
    data = os.urandom(300_000)
    all_options: list[dict[str, Any]] = [{"use_octet_stream": True}, {"use_octet_stream": False}, {"gzip": True}]
    for options in all_options:
        path = f"/tmp/forms/{'-'.join(f'{k}={v}' for k, v in options.items())}.bin"
        info = sandbox.files.write(path, data, **options)
        assert info.size == len(data)
        assert bytes(sandbox.files.read(path, format="bytes", gzip=True)) == data
        streamed = sandbox.files.write(path, iter([data[:1000], data[1000:]]), **options)
        assert streamed.size == len(data)
        assert bytes(sandbox.files.read(path, format="bytes")) == data
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write("/tmp/forms/x", "x", gzip=True, use_octet_stream=False)


def test_metadata_is_stored_with_the_file(sandbox: hutch.Sandbox) -> None:
    info = sandbox.files.write("/home/user/tagged.txt", "x", metadata={"Owner": "alice", "stage": "raw"})
    assert info.metadata == {"owner": "alice", "stage": "raw"}
    assert sandbox.files.get_info("/home/user/tagged.txt").metadata == {"owner": "alice", "stage": "raw"}
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write("/home/user/tagged.txt", "x", metadata={"bad key": "v"})


def test_several_megabytes_stream_both_ways(sandbox: hutch.Sandbox) -> None:
    size = 6 * MB + 123
    block = os.urandom(MB)
    expected = hashlib.sha256()
    sent = 0

    def produce() -> Iterator[bytes]:
        nonlocal sent
        while sent < size:
            chunk = block[: min(len(block), size - sent)]
            sent += len(chunk)
            expected.update(chunk)
            yield chunk

    info = sandbox.files.write("/tmp/big.bin", produce())
    assert info.size == size
    assert sandbox.files.get_info("/tmp/big.bin").size == size
    stream = sandbox.files.read("/tmp/big.bin", format="stream")
    assert isinstance(stream, FileStreamReader)
    got = hashlib.sha256()
    count = total = 0
    with stream:
        for chunk in stream:
            got.update(chunk)
            count += 1
            total += len(chunk)
    assert (total, got.hexdigest()) == (size, expected.hexdigest())
    assert count > 1


def test_a_stream_closed_early_releases_its_connection(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/big2.bin", os.urandom(3 * MB))
    for _ in range(30):  # more than the connection pool holds, if closing leaked them
        with sandbox.files.read("/tmp/big2.bin", format="stream") as stream:
            assert len(next(stream)) > 0
    assert sandbox.files.read("/tmp/big2.bin", format="stream").read() == bytes(
        sandbox.files.read("/tmp/big2.bin", format="bytes")
    )


# --- errors ----------------------------------------------------------------------------------


def test_reading_a_missing_file_raises_file_not_found(sandbox: hutch.Sandbox) -> None:
    for form in ("text", "bytes", "stream"):
        with pytest.raises(FileNotFoundException) as caught:
            sandbox.files.read("/tmp/no/such/file.txt", format=form)
        assert isinstance(caught.value, NotFoundError) and isinstance(caught.value, FilesystemError)
        assert "does not exist" in str(caught.value)


def test_reading_a_directory_raises_invalid_argument(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(InvalidArgumentException) as caught:
        sandbox.files.read("/tmp")
    assert isinstance(caught.value, FilesystemError)
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/tmp", format="stream")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/tmp/x", format="json")  # type: ignore[call-overload]


def test_writing_onto_a_directory_raises_invalid_argument(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/a-dir")
    with pytest.raises(InvalidArgumentException) as caught:
        sandbox.files.write("/tmp/a-dir", "x")
    assert isinstance(caught.value, FilesystemError)


# --- users -----------------------------------------------------------------------------------


def test_root_reads_and_writes_in_its_own_home(sandbox: hutch.Sandbox) -> None:
    info = sandbox.files.write("secret.txt", "root only", user="root")
    assert info.path == "/root/secret.txt"
    assert sandbox.files.read("secret.txt", user="root") == "root only"
    root_info = sandbox.files.get_info("/root/secret.txt", user="root")
    assert (root_info.owner, root_info.group) == ("root", "root")
    assert "secret.txt" in [e.name for e in sandbox.files.list("/root", user="root")]
    assert sandbox.files.make_dir("newdir", user="root") is True
    assert sandbox.files.get_info("/root/newdir", user="root").owner == "root"
    # Requests act with their user's permissions: root's home is closed to the default user.
    with pytest.raises(FilesystemError, match="permission"):
        sandbox.files.get_info("/root/newdir")


def test_a_write_the_kernel_refuses_raises_filesystem_error(sandbox: hutch.Sandbox) -> None:
    # What even root cannot do (/proc is read-only) fails for every user.
    for user in (None, "root"):
        with pytest.raises(FilesystemError) as caught:
            sandbox.files.write("/proc/version", "nope", user=user)
        assert not isinstance(caught.value, (FileNotFoundException, InvalidArgumentException))
        assert "permission denied" in str(caught.value).lower()
    with pytest.raises(FilesystemError):
        sandbox.files.remove("/proc/version")
    with pytest.raises(FilesystemError):
        sandbox.files.make_dir("/proc/newdir/sub")


def test_files_belong_to_the_user_who_wrote_them(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/by-user.txt", "u")
    sandbox.files.write("/tmp/by-root.txt", "r", user="root")
    assert sandbox.files.get_info("/tmp/by-user.txt").owner == "user"
    assert sandbox.files.get_info("/tmp/by-root.txt").owner == "root"
    assert sandbox.files.write("relative.txt", "r", user="root").path == "/root/relative.txt"


def test_an_unknown_user_is_refused(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(AuthenticationError) as caught:
        sandbox.files.write("/tmp/x.txt", "x", user="no-such-user")
    assert isinstance(caught.value, FilesystemError)
    with pytest.raises(FilesystemError):
        sandbox.files.list("/tmp", user="no-such-user")


# --- metadata operations -----------------------------------------------------------------------


def test_list_shows_entries_with_their_types(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/tree/b.txt", "bb")
    sandbox.files.write("/tmp/tree/a/inner.txt", "i")
    sandbox.files.make_dir("/tmp/tree/c")
    entries = sandbox.files.list("/tmp/tree")
    assert [(e.name, e.is_dir, e.type) for e in entries] == [
        ("a", True, FileType.DIR),
        ("b.txt", False, FileType.FILE),
        ("c", True, FileType.DIR),
    ]
    by_name = {e.name: e for e in entries}
    assert by_name["b.txt"].size == 2 and by_name["b.txt"].path == "/tmp/tree/b.txt"
    deep = sandbox.files.list("/tmp/tree", depth=2)
    assert "/tmp/tree/a/inner.txt" in [e.path for e in deep]
    assert "/tmp/tree/a/inner.txt" not in [e.path for e in entries]


def test_list_errors(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.list("/tmp/missing-dir")
    sandbox.files.write("/tmp/plain.txt", "x")
    with pytest.raises(InvalidArgumentException) as caught:
        sandbox.files.list("/tmp/plain.txt")
    assert isinstance(caught.value, FilesystemError)
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list("/tmp", depth=0)


def test_get_info_describes_an_entry(sandbox: hutch.Sandbox) -> None:
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    sandbox.files.write("/home/user/info.txt", "12345")
    info = sandbox.files.get_info("/home/user/info.txt")
    assert (info.name, info.path, info.type, info.size) == ("info.txt", "/home/user/info.txt", FileType.FILE, 5)
    assert (info.owner, info.group) == ("user", "user")
    assert info.mode is not None and info.mode & 0o777 == 0o644
    assert info.permissions == "-rw-r--r--"
    assert info.modified_time is not None and info.modified_time > before
    assert info.symlink_target is None
    assert info["is_dir"] is False and info.get("size") == 5 and dict(info)["name"] == "info.txt"
    home = sandbox.files.get_info("/home/user")
    assert home.is_dir and home.type is FileType.DIR and home.permissions is not None
    assert home.permissions.startswith("d")
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("/home/user/nothing-here")


def test_exists(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/here.txt", "x")
    assert sandbox.files.exists("/tmp/here.txt") is True
    assert sandbox.files.exists("/tmp") is True
    assert sandbox.files.exists("/tmp/not-here.txt") is False
    assert sandbox.files.exists("/tmp/here.txt/below") is False


def test_make_dir_says_whether_it_created_the_directory(sandbox: hutch.Sandbox) -> None:
    assert sandbox.files.make_dir("/tmp/made/with/parents") is True
    assert sandbox.files.get_info("/tmp/made/with/parents").is_dir
    assert sandbox.files.make_dir("/tmp/made/with/parents") is False
    sandbox.files.write("/tmp/made/file", "x")
    with pytest.raises(InvalidArgumentException) as caught:
        sandbox.files.make_dir("/tmp/made/file")
    assert isinstance(caught.value, FilesystemError)


def test_remove_deletes_files_and_whole_directories(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/gone/one.txt", "1")
    sandbox.files.write("/tmp/gone/sub/two.txt", "2")
    sandbox.files.remove("/tmp/gone/one.txt")
    assert not sandbox.files.exists("/tmp/gone/one.txt")
    sandbox.files.remove("/tmp/gone")
    assert not sandbox.files.exists("/tmp/gone")
    sandbox.files.remove("/tmp/gone")  # already gone: not an error


def test_rename_moves_and_describes_the_new_entry(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/tmp/old.txt", "moving")
    info = sandbox.files.rename("/tmp/old.txt", "/tmp/new/place/new.txt")
    assert (info.name, info.path, info.type, info.size) == ("new.txt", "/tmp/new/place/new.txt", FileType.FILE, 6)
    assert not sandbox.files.exists("/tmp/old.txt")
    assert sandbox.files.read("/tmp/new/place/new.txt") == "moving"
    moved_dir = sandbox.files.rename("/tmp/new", "/tmp/renamed")
    assert moved_dir.is_dir and sandbox.files.read("/tmp/renamed/place/new.txt") == "moving"


def test_rename_errors(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename("/tmp/never-there.txt", "/tmp/elsewhere.txt")
    assert not sandbox.files.exists("/tmp/elsewhere.txt")
    sandbox.files.write("/tmp/src/file.txt", "x")
    sandbox.files.write("/tmp/full/other.txt", "y")
    with pytest.raises(FilesystemError):
        sandbox.files.rename("/tmp/src", "/tmp/full")  # onto a non-empty directory
    with pytest.raises(FilesystemError):
        sandbox.files.rename("/tmp/src/file.txt", "/proc/stolen.txt")  # where nobody may write
    assert sandbox.files.read("/tmp/src/file.txt") == "x"


# --- watching --------------------------------------------------------------------------------


def test_watch_dir_calls_on_event_for_create_write_and_remove(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/watched")
    events: list[FilesystemEvent] = []
    exits: list[Exception | None] = []
    handle = sandbox.files.watch_dir("/tmp/watched", on_event=events.append, on_exit=exits.append)
    running_at_start = handle.is_running
    assert isinstance(handle, WatchHandle) and running_at_start
    try:
        sandbox.files.write("/tmp/watched/new.txt", "hello")
        assert wait_until(lambda: FilesystemEventType.WRITE in {e.type for e in events})
        sandbox.files.remove("/tmp/watched/new.txt")
        assert wait_until(lambda: FilesystemEventType.REMOVE in {e.type for e in events})
    finally:
        handle.stop()
    kinds = {e.type for e in events}
    assert {FilesystemEventType.CREATE, FilesystemEventType.WRITE, FilesystemEventType.REMOVE} <= kinds
    assert {e.name for e in events} == {"new.txt"}
    assert events[0]["type"] is FilesystemEventType.CREATE and events[0].get("name") == "new.txt"
    assert exits == [None] and not handle.is_running
    count = len(events)
    sandbox.files.write("/tmp/watched/after.txt", "x")
    time.sleep(0.5)
    assert len(events) == count  # stopped: nothing more arrives
    handle.stop()  # again: harmless


def test_watch_dir_without_a_callback_hands_out_new_events(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/polled")
    handle = sandbox.files.watch_dir("/tmp/polled")
    seen: list[FilesystemEvent] = []
    sandbox.files.write("/tmp/polled/a.txt", "a")
    sandbox.files.rename("/tmp/polled/a.txt", "/tmp/polled/b.txt")

    def renamed() -> bool:
        seen.extend(handle.get_new_events())
        return FilesystemEventType.RENAME in {e.type for e in seen} and "b.txt" in {e.name for e in seen}

    assert wait_until(renamed)
    assert {e.type for e in seen} >= {FilesystemEventType.CREATE, FilesystemEventType.WRITE}
    handle.stop()
    with pytest.raises(FilesystemError):
        handle.get_new_events()


def test_watch_dir_recursive_with_entries_and_an_async_callback(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/rec/sub")
    events: list[FilesystemEvent] = []
    called_from: set[str] = set()

    async def on_event(event: FilesystemEvent) -> None:
        called_from.add(threading.current_thread().name)
        events.append(event)

    with sandbox.files.watch_dir("/tmp/rec", on_event=on_event, recursive=True, include_entry=True):
        sandbox.files.write("/tmp/rec/sub/deep.txt", "deep")
        assert wait_until(lambda: any(e.name == "sub/deep.txt" and e.type is FilesystemEventType.WRITE for e in events))
    with_entry = [e for e in events if e.entry is not None]
    assert with_entry and with_entry[0].entry is not None and with_entry[0].entry.path == "/tmp/rec/sub/deep.txt"
    assert threading.current_thread().name not in called_from


def test_watch_dir_on_a_missing_directory_raises_file_not_found(sandbox: hutch.Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir("/tmp/not-a-dir", on_event=lambda e: None)


def test_a_watch_ends_at_its_timeout(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/brief")
    exits: list[Exception | None] = []
    handle = sandbox.files.watch_dir("/tmp/brief", on_event=lambda e: None, on_exit=exits.append, timeout=1)
    assert wait_until(lambda: bool(exits), timeout=10)
    assert isinstance(exits[0], TimeoutException) and isinstance(exits[0], FilesystemError)
    assert not handle.is_running
    handle.stop()


def test_stop_from_inside_on_event(sandbox: hutch.Sandbox) -> None:
    sandbox.files.make_dir("/tmp/selfstop")
    events: list[FilesystemEvent] = []
    exits: list[Exception | None] = []
    handle: WatchHandle | None = None

    def on_event(event: FilesystemEvent) -> None:
        events.append(event)
        assert handle is not None
        handle.stop()

    handle = sandbox.files.watch_dir("/tmp/selfstop", on_event=on_event, on_exit=exits.append)
    sandbox.files.write("/tmp/selfstop/x.txt", "x")
    assert wait_until(lambda: exits == [None])
    assert events and not handle.is_running


# --- signed URLs -----------------------------------------------------------------------------


def test_signed_urls_read_and_write_without_the_sdk(sandbox: hutch.Sandbox) -> None:
    sandbox.files.write("/home/user/shared.txt", "shared content")
    url = sandbox.download_url("/home/user/shared.txt")
    assert "signature=v1_" in url
    assert httpx.get(url).text == "shared content"  # no headers: the signature is the credential
    tampered = url.replace("shared.txt", "other.txt")
    assert httpx.get(tampered).status_code == 401

    upload = sandbox.upload_url("/home/user/uploaded.txt", user="user", use_signature_expiration=120)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(upload).query)
    assert query["username"] == ["user"] and int(query["signature_expiration"][0]) > time.time()
    posted = httpx.post(upload, files={"file": ("uploaded.txt", b"via a signed url")})
    assert posted.status_code == 200, posted.text
    assert sandbox.files.read("/home/user/uploaded.txt") == "via a signed url"

    expired = sandbox.download_url("/home/user/shared.txt", use_signature_expiration=-10)
    assert httpx.get(expired).status_code == 401


def test_signed_url_follows_e2bs_v1_signature() -> None:
    config = ConnectionConfig.resolve(api_key="e2b_testkey", api_url="http://127.0.0.1:49982")
    target = SandboxTarget("sbx", config, envd_access_token="token")
    url = signed_url(target, "/home/user/a b.txt", "write", "root", None)
    raw = "/home/user/a b.txt:write:root:token"
    digest = base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query) == {
        "path": ["/home/user/a b.txt"],
        "username": ["root"],
        "signature": [f"v1_{digest}"],
    }
    with pytest.raises(InvalidArgumentException):
        signed_url(target, "/x", "delete")
    unsecured = SandboxTarget("sbx", config)
    assert "signature" not in signed_url(unsecured, "/x", "read")
    with pytest.raises(InvalidArgumentException):
        signed_url(unsecured, "/x", "read", expiration=60)


def test_a_file_that_cannot_be_read_raises_filesystem_error_and_the_sandbox_stays_usable(
    sandbox: hutch.Sandbox,
) -> None:
    # The agent's own memory: as root opening works and the first read fails; the default
    # user may not even open it (requests act with their user's permissions).
    for _ in range(5):
        with pytest.raises(hutch.FilesystemError, match="Input/output error"):
            sandbox.files.read("/proc/self/mem", format="bytes", user="root")
        with pytest.raises(hutch.FilesystemError, match="Permission denied"):
            sandbox.files.read("/proc/self/mem", format="bytes")
        assert sandbox.is_running()
        sandbox.files.write("/tmp/still-fine.txt", "fine")
        assert sandbox.files.read("/tmp/still-fine.txt") == "fine"
