"""The filesystem API's models, and the request building and response parsing that the blocking
`Filesystem` and the asyncio `AsyncFilesystem` share.

Metadata and listings travel over the agent's Connect service `filesystem.Filesystem`; file
content over its plain-HTTP `/files` endpoint (`GET ?path=&username=` to read; `POST` to write,
as `multipart/form-data` with one `file` part per file whose filename is the target path, or as
`application/octet-stream` with `?path=` for a streamed body).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import io
import re
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import IO, Any, TypedDict, Union

import httpx

from ._config import ENVD_PORT, SandboxTarget
from ._dictlike import DictLike
from ._errors import message_of, sandbox_http_error
from .exceptions import (
    E2BException,
    FileNotFoundException,
    FilesystemError,
    InvalidArgumentException,
    SandboxException,
    in_domain,
)

FILES_ROUTE = "/files"
"""The agent's plain-HTTP file endpoint."""

UPLOAD_CHUNK = 256 * 1024
"""Bytes read at a time from a file-like object being uploaded."""

WATCH_POLL_INTERVAL = 0.1
"""Seconds between two polls of a blocking `watch_dir` that delivers events to a callback."""

HEALTH_TIMEOUT = 5.0
"""Seconds to wait for the agent's `/health` when telling a broken download from a dead sandbox."""

_SERVICE = "filesystem.Filesystem"


def method(name: str) -> str:
    """The Connect path of the filesystem service's RPC `name` (e.g. `Stat`)."""
    return f"{_SERVICE}/{name}"


# --- models --------------------------------------------------------------------------------------


class FileType(Enum):
    """What kind of filesystem object an entry is (E2B's `FileType`)."""

    FILE = "file"
    """A regular file."""
    DIR = "dir"
    """A directory."""
    SYMLINK = "symlink"
    """A symbolic link."""


_CONNECT_FILE_TYPES = {
    "FILE_TYPE_FILE": FileType.FILE,
    "FILE_TYPE_DIRECTORY": FileType.DIR,
    "FILE_TYPE_SYMLINK": FileType.SYMLINK,
    1: FileType.FILE,
    2: FileType.DIR,
    3: FileType.SYMLINK,
}


@dataclass
class FileInfo(DictLike):
    """A file or directory in the sandbox.

    `list`, `get_info` and `rename` fill in every field (E2B's `EntryInfo`); `write` knows the
    name, path, type, size and metadata of what it wrote (E2B's `WriteInfo`) and leaves the
    rest `None`. Reads as attributes (`info.name`) and as a dict (`info["is_dir"]`).
    """

    name: str
    """The last component of the path."""
    type: FileType | None
    """File, directory or symlink (`None` for other kinds: sockets, devices...)."""
    path: str
    """The absolute path."""
    size: int | None = None
    """Size in bytes (for a symlink: the length of its target)."""
    mode: int | None = None
    """The permission bits, e.g. `0o644`."""
    permissions: str | None = None
    """The permissions as `ls -l` writes them, e.g. `-rw-r--r--`."""
    owner: str | None = None
    """The owning user's name."""
    group: str | None = None
    """The owning group's name."""
    modified_time: datetime | None = None
    """When the content last changed (timezone-aware, UTC)."""
    symlink_target: str | None = None
    """Where a symlink points (fully resolved); `None` when the entry is not a symlink."""
    metadata: dict[str, str] | None = None
    """The user metadata stored on the file (`write(..., metadata=)`), `None` when it has none."""

    _fields = (
        "name",
        "type",
        "path",
        "is_dir",
        "size",
        "mode",
        "permissions",
        "owner",
        "group",
        "modified_time",
        "symlink_target",
        "metadata",
    )

    @property
    def is_dir(self) -> bool:
        """Whether the entry is a directory."""
        return self.type is FileType.DIR


EntryInfo = FileInfo
"""E2B's name of `FileInfo` as `list`, `get_info` and `rename` return it."""

WriteInfo = FileInfo
"""E2B's name of `FileInfo` as `write` returns it."""


class FilesystemEventType(Enum):
    """What happened to a watched entry (E2B's `FilesystemEventType`)."""

    CHMOD = "chmod"
    """Its metadata changed: permissions, owner, times, extended attributes."""
    CREATE = "create"
    """It was created, or moved into the watched directory."""
    REMOVE = "remove"
    """It was deleted."""
    RENAME = "rename"
    """It was renamed or moved away (a watched new name gets a `CREATE`)."""
    WRITE = "write"
    """Its content was written to."""


_CONNECT_EVENT_TYPES = {
    "EVENT_TYPE_CREATE": FilesystemEventType.CREATE,
    "EVENT_TYPE_WRITE": FilesystemEventType.WRITE,
    "EVENT_TYPE_REMOVE": FilesystemEventType.REMOVE,
    "EVENT_TYPE_RENAME": FilesystemEventType.RENAME,
    "EVENT_TYPE_CHMOD": FilesystemEventType.CHMOD,
    1: FilesystemEventType.CREATE,
    2: FilesystemEventType.WRITE,
    3: FilesystemEventType.REMOVE,
    4: FilesystemEventType.RENAME,
    5: FilesystemEventType.CHMOD,
}


@dataclass
class FilesystemEvent(DictLike):
    """One change in a watched directory."""

    name: str
    """The path of the changed entry, relative to the watched directory."""
    type: FilesystemEventType
    """What happened."""
    entry: FileInfo | None = None
    """The entry as it is after the change: only when the watch was started with
    `include_entry=True`, and never for removals and renames (the entry is gone)."""

    _fields = ("name", "type", "entry")


WriteData = Union[str, bytes, IO[Any], Iterable[bytes]]
"""What `Filesystem.write` accepts: text (written as UTF-8), bytes, a file-like object (binary
or text), or an iterable of `bytes` chunks. File-like objects and iterables are streamed."""

AsyncWriteData = Union[str, bytes, IO[Any], Iterable[bytes], AsyncIterable[bytes]]
"""What `AsyncFilesystem.write` accepts: `WriteData`, or an async iterable of `bytes` chunks."""


class WriteEntry(TypedDict):
    """One file for `write_files`: where to write it and what (E2B's `WriteEntry`)."""

    path: str
    data: Any


# --- parsing -------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})?$",
)


def parse_timestamp(value: Any) -> datetime | None:
    """A proto3 JSON Timestamp (RFC 3339, nanosecond precision) as an aware datetime."""
    if isinstance(value, dict):
        seconds = int(value.get("seconds", 0) or 0)
        nanos = int(value.get("nanos", 0) or 0)
        return datetime.fromtimestamp(seconds, timezone.utc) + timedelta(microseconds=nanos // 1000)
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz)
    return stamp.astimezone(timezone.utc)


def _int(value: Any) -> int | None:
    # proto3 JSON writes int64 as a string; an omitted field is its default, 0.
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _metadata(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict) or not value:
        return None
    return {str(k): str(v) for k, v in value.items()}


def parse_entry(entry: Mapping[str, Any]) -> FileInfo:
    """A Connect `EntryInfo` message (JSON) as a `FileInfo`."""
    file_type = FileType.SYMLINK if entry.get("isSymlink") else _CONNECT_FILE_TYPES.get(entry.get("type", 0))
    target = entry.get("symlinkTarget")
    return FileInfo(
        name=str(entry.get("name", "")),
        type=file_type,
        path=str(entry.get("path", "")),
        size=_int(entry.get("size")),
        mode=_int(entry.get("mode")),
        permissions=str(entry.get("permissions", "")),
        owner=str(entry.get("owner", "")),
        group=str(entry.get("group", "")),
        modified_time=parse_timestamp(entry.get("modifiedTime")),
        symlink_target=str(target) if target is not None else None,
        metadata=_metadata(entry.get("metadata")),
    )


def parse_entry_response(response: Mapping[str, Any]) -> FileInfo:
    """The entry of a `Stat` / `Move` / `MakeDir` response."""
    entry = response.get("entry")
    return parse_entry(entry if isinstance(entry, dict) else {})


def parse_list_response(response: Mapping[str, Any]) -> list[FileInfo]:
    """The entries of a `ListDir` response, without those of a kind the SDK does not name."""
    entries = response.get("entries")
    infos = [parse_entry(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    return [info for info in infos if info.type is not None]


def parse_event(event: Mapping[str, Any]) -> FilesystemEvent | None:
    """A Connect `FilesystemEvent` message as a `FilesystemEvent` (None for an unknown type)."""
    event_type = _CONNECT_EVENT_TYPES.get(event.get("type", 0))
    if event_type is None:
        return None
    entry = event.get("entry")
    return FilesystemEvent(
        name=str(event.get("name", "")),
        type=event_type,
        entry=parse_entry(entry) if isinstance(entry, dict) else None,
    )


def parse_watch_frame(frame: Mapping[str, Any]) -> FilesystemEvent | None:
    """The event of a `WatchDir` stream message; None for `start` and `keepalive` messages."""
    event = frame.get("filesystem")
    return parse_event(event) if isinstance(event, dict) else None


def parse_watcher_events(response: Mapping[str, Any]) -> list[FilesystemEvent]:
    """The events of a `GetWatcherEvents` response."""
    events = response.get("events")
    parsed = [parse_event(e) for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    return [event for event in parsed if event is not None]


def is_start_frame(frame: Mapping[str, Any]) -> bool:
    """Whether a `WatchDir` stream message is the `start` that confirms the watch."""
    return "start" in frame


# --- requests ------------------------------------------------------------------------------------


def list_request(path: str, depth: int | None) -> dict[str, Any]:
    """The `ListDir` request; `depth` counts levels below `path` (1: its direct children)."""
    if depth is not None and depth < 1:
        raise in_domain(InvalidArgumentException, FilesystemError)("depth should be at least 1")
    return {"path": path, "depth": depth or 0}


def watch_request(path: str, recursive: bool, include_entry: bool, allow_network_mounts: bool) -> dict[str, Any]:
    """The `WatchDir` / `CreateWatcher` request."""
    return {
        "path": path,
        "recursive": recursive,
        "includeEntry": include_entry,
        "allowNetworkMounts": allow_network_mounts,
    }


def connect_code(err: BaseException) -> str | None:
    """The Connect error code (`not_found`, `already_exists`...) an RPC error was made from."""
    code = getattr(err, "code", None)
    if isinstance(code, str):
        return code
    text = str(err)
    head, sep, _ = text.partition(":")
    return head if sep and re.fullmatch(r"[a-z_]+", head) else None


def files_url(target: SandboxTarget) -> str:
    """The URL of the agent's `/files` endpoint."""
    return target.base_url(ENVD_PORT) + FILES_ROUTE


def files_params(path: str | None, user: str | None) -> dict[str, str]:
    """The query of a `/files` request: the path and, when one is named, the user."""
    params: dict[str, str] = {}
    if path is not None:
        params["path"] = path
    if user:
        params["username"] = user
    return params


def download_headers(target: SandboxTarget, gzip: bool) -> dict[str, str]:
    """Headers of `GET /files`: compressed only when asked (the agent gzips on the fly)."""
    headers = target.headers(ENVD_PORT)
    headers["Accept-Encoding"] = "gzip" if gzip else "identity"
    return headers


_METADATA_KEY = re.compile(r"\A[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")
_METADATA_VALUE = re.compile(r"\A[\x20-\x7e]*\Z")


def upload_headers(target: SandboxTarget, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Headers of `POST /files`, with the file metadata as `X-Metadata-<key>` headers."""
    headers = target.headers(ENVD_PORT)
    for key, value in (metadata or {}).items():
        if not _METADATA_KEY.match(key):
            raise in_domain(InvalidArgumentException, FilesystemError)(
                f"Invalid metadata key {key!r}: use letters, digits and !#$%&'*+-.^_`|~ only"
            )
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise in_domain(InvalidArgumentException, FilesystemError)(
                f"Invalid metadata value for key {key!r}: values must be printable ASCII text"
            )
        headers[f"X-Metadata-{key}"] = value
    return headers


def files_error(response: httpx.Response, target: SandboxTarget) -> E2BException:
    """The exception for an error answer of `/files` (a 404 is a `FileNotFoundException`)."""
    message = message_of(response)
    if response.status_code == 404:
        return FileNotFoundException(f"404: {message}", status_code=404)
    return sandbox_http_error(response.status_code, message, target.sandbox_id, FilesystemError)


def parse_write_response(response: httpx.Response, target: SandboxTarget, expected: int) -> list[dict[str, Any]]:
    """The entries of a `POST /files` answer (one per written file)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, list) or len(body) != expected or not all(isinstance(e, dict) for e in body):
        raise in_domain(SandboxException, FilesystemError)(
            f"Sandbox {target.sandbox_id} answered a write with an unexpected body: {response.text[:200]!r}"
        )
    return body


def written_info(entry: Mapping[str, Any], size: int | None) -> FileInfo:
    """A `FileInfo` of a written file from its `POST /files` answer entry."""
    kind = entry.get("type")
    return FileInfo(
        name=str(entry.get("name", "")),
        type=FileType.DIR if kind == "dir" else FileType.FILE if kind in ("file", None) else None,
        path=str(entry.get("path", "")),
        size=size,
        metadata=_metadata(entry.get("metadata")),
    )


def entry_parts(entry: Any) -> tuple[str, Any]:
    """The path and data of one `write_files` entry: a `{"path", "data"}` dict, an object with
    `path` and `data` attributes, or a `(path, data)` pair."""
    if isinstance(entry, Mapping):
        return str(entry["path"]), entry["data"]
    if isinstance(entry, tuple) and len(entry) == 2:
        return str(entry[0]), entry[1]
    path, data = getattr(entry, "path", None), getattr(entry, "data", None)
    if isinstance(path, str):
        return path, data
    raise in_domain(InvalidArgumentException, FilesystemError)(
        f"write_files takes {{'path': ..., 'data': ...}} entries, not {type(entry).__name__}"
    )


# --- upload bodies -------------------------------------------------------------------------------


def is_buffered(data: Any) -> bool:
    """Whether write data is already in memory (text or bytes) rather than a stream."""
    return isinstance(data, (str, bytes, bytearray, memoryview))


def as_bytes(data: str | bytes | bytearray | memoryview) -> bytes:
    """In-memory write data as bytes (text is UTF-8)."""
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def is_file_like(data: Any) -> bool:
    """Whether data is read like a file: an `io` object, or anything with a blocking `read`."""
    if isinstance(data, io.IOBase):
        return True
    if is_buffered(data):
        return False
    read = getattr(data, "read", None)
    return callable(read) and not inspect.iscoroutinefunction(read)


def has_async_read(data: Any) -> bool:
    """Whether data is an async file-like object (its `read` is a coroutine function)."""
    return inspect.iscoroutinefunction(getattr(data, "read", None))


def chunk_bytes(chunk: Any) -> bytes:
    """One chunk of a streamed upload as bytes (text chunks are UTF-8)."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    raise in_domain(InvalidArgumentException, FilesystemError)(
        f"Streamed write data must yield bytes chunks, got {type(chunk).__name__}"
    )


def unsupported_data(data: Any, path: str) -> E2BException:
    """The error for write data of a type the SDK cannot send."""
    return in_domain(InvalidArgumentException, FilesystemError)(
        f"Unsupported data type for file {path}: {type(data).__name__} "
        "(write str, bytes, a file-like object or an iterable of bytes)"
    )


class Counter:
    """Counts the bytes of a streamed upload as they go out (the written file's size)."""

    def __init__(self) -> None:
        self.total = 0
        """Bytes counted so far."""


def iter_sync_chunks(data: Any, path: str, counter: Counter) -> Iterator[bytes]:
    """The chunks of blocking write data (a file-like object or an iterable), counted."""
    if is_file_like(data):
        while True:
            chunk = data.read(UPLOAD_CHUNK)
            if not chunk:
                return
            raw = chunk_bytes(chunk)
            counter.total += len(raw)
            yield raw
    if isinstance(data, Iterable):
        for chunk in data:
            raw = chunk_bytes(chunk)
            if raw:
                counter.total += len(raw)
                yield raw
        return
    raise unsupported_data(data, path)


async def iter_async_chunks(data: Any, path: str, counter: Counter) -> AsyncIterator[bytes]:
    """The chunks of write data for asyncio: an async file or iterable, or a blocking one."""
    if has_async_read(data):
        while True:
            chunk = await data.read(UPLOAD_CHUNK)
            if not chunk:
                return
            raw = chunk_bytes(chunk)
            counter.total += len(raw)
            yield raw
    if isinstance(data, AsyncIterable) and not is_file_like(data):
        async for chunk in data:
            raw = chunk_bytes(chunk)
            if raw:
                counter.total += len(raw)
                yield raw
        return
    for chunk in iter_sync_chunks(data, path, counter):
        yield chunk


def gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Gzip-compresses a stream of chunks."""
    compressor = zlib.compressobj(wbits=31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


async def agzip_chunks(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Gzip-compresses an async stream of chunks."""
    compressor = zlib.compressobj(wbits=31)
    async for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip-compresses in-memory data."""
    compressor = zlib.compressobj(wbits=31)
    return compressor.compress(data) + compressor.flush()


@dataclass
class UploadPlan:
    """How `write_files` sends its entries: which go together in one multipart body, and which
    each go alone as an octet-stream body (streamed, or compressed)."""

    multipart: list[int]
    """Indexes of the entries sent together as `multipart/form-data`."""
    octet: list[int]
    """Indexes of the entries sent one by one as `application/octet-stream`."""


def plan_upload(datas: Sequence[Any], gzip: bool, use_octet_stream: bool | None) -> UploadPlan:
    """Text and bytes go in one multipart body; streams (file-like objects, iterables) go each
    in an octet-stream body so they are never held in memory. `gzip` (which needs the
    octet-stream body) or `use_octet_stream=True` send everything as octet-stream;
    `use_octet_stream=False` sends everything as multipart (reading streams into memory)."""
    if gzip and use_octet_stream is False:
        raise in_domain(InvalidArgumentException, FilesystemError)(
            "`gzip` needs the octet-stream upload: it cannot be combined with `use_octet_stream=False`"
        )
    plan = UploadPlan(multipart=[], octet=[])
    for index, data in enumerate(datas):
        octet = gzip or use_octet_stream is True or (use_octet_stream is None and not is_buffered(data))
        (plan.octet if octet else plan.multipart).append(index)
    return plan


def multipart_params(paths: Sequence[str], user: str | None) -> dict[str, str]:
    """The query of a multipart upload: a single file also names its path in `?path=`."""
    return files_params(paths[0] if len(paths) == 1 else None, user)


def multipart_files(entries: Sequence[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The httpx `files=` of a multipart upload: part `file`, filename = the target path."""
    return [("file", (path, content, "application/octet-stream")) for path, content in entries]


# --- signed URLs ---------------------------------------------------------------------------------


def file_signature(path: str, operation: str, user: str | None, access_token: str, expiration: int | None) -> str:
    """E2B's v1 signature of a `/files` URL:
    `v1_` + unpadded base64 of sha256(`path:operation:user:token[:expiration]`)."""
    raw = f"{path}:{operation}:{user or ''}:{access_token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode("utf-8")).digest()
    return "v1_" + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def signed_url(
    target: SandboxTarget,
    path: str,
    operation: str,
    user: str | None = None,
    expiration: int | None = None,
) -> str:
    """A URL that reads (`operation="read"`, a GET) or writes (`"write"`, a multipart POST)
    `path` in the sandbox without the SDK or its headers.

    When the sandbox is secured (it has an access token), the URL carries a signature, valid
    for `expiration` seconds from now (or forever when None); the server routes such a URL to
    its sandbox by the signature alone. An unsecured sandbox's URL is unsigned, and
    `expiration` is refused for it.
    """
    if operation not in ("read", "write"):
        raise in_domain(InvalidArgumentException, FilesystemError)(
            f"operation must be 'read' or 'write', not {operation!r}"
        )
    query: dict[str, str] = {}
    if path:
        query["path"] = path
    if user:
        query["username"] = user
    token = target.envd_access_token
    if token:
        expires = int(time.time()) + int(expiration) if expiration is not None else None
        query["signature"] = file_signature(path, operation, user, token, expires)
        if expires is not None:
            query["signature_expiration"] = str(expires)
    elif expiration is not None:
        raise InvalidArgumentException("Signature expiration can be used only when the sandbox is created as secured.")
    url = files_url(target)
    if query:
        url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return url


__all__ = [
    "AsyncWriteData",
    "EntryInfo",
    "FileInfo",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "WriteData",
    "WriteEntry",
    "WriteInfo",
    "signed_url",
]
