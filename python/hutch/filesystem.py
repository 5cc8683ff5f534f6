# Generated from python/hutch/filesystem_async.py by scripts/gen-sync-sdk.py: do not edit.
# Change the asyncio module and run `python3 scripts/gen-sync-sdk.py` (python/README.md, "Developing the SDK").
"""The sandbox's filesystem, for blocking code: `sandbox.files` (also `sandbox.filesystem`)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Callable, Literal, overload

import httpx

from ._config import ENVD_PORT, SandboxTarget
from ._connect import Rpc
from ._errors import transport_error
from ._watch import SYNC_WATCH_TIMEOUT, WatchHandle, start_watch
from .exceptions import (
    FileNotFoundException,
    FilesystemError,
    InvalidArgumentException,
    in_domain,
)
from .filesystem_models import (
    HEALTH_TIMEOUT,
    Counter,
    FileInfo,
    FilesystemEvent,
    WriteData,
    as_bytes,
    connect_code,
    download_headers,
    entry_parts,
    files_error,
    files_params,
    files_url,
    gzip_bytes,
    gzip_chunks,
    is_buffered,
    iter_sync_chunks,
    list_request,
    method,
    multipart_files,
    multipart_params,
    parse_entry_response,
    parse_list_response,
    parse_write_response,
    plan_upload,
    upload_headers,
    watch_request,
    written_info,
)

logger = logging.getLogger("hutch")


class FileStreamReader(Iterator[bytes]):
    """The content of a file as it downloads: an iterator of `bytes` chunks, for large files.

    It holds an HTTP connection until it is read to the end or closed, so read it fully, use it
    in a `with` block, or call `close()`::

        with sandbox.files.read("/data/big.bin", format="stream") as chunks:
            for chunk in chunks:
                ...
    """

    def __init__(self, response: httpx.Response, on_error: Callable[[httpx.HTTPError], Exception]) -> None:
        self._response = response
        self._on_error = on_error
        self._chunks = response.iter_bytes()
        self._closed = False

    def __iter__(self) -> FileStreamReader:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            return self._chunks.__next__()
        except StopIteration:
            self.close()
            raise
        except httpx.HTTPError as err:
            self.close()
            raise self._on_error(err) from err
        except BaseException:
            self.close()
            raise

    def read(self) -> bytes:
        """Everything not read yet, as one `bytes`."""
        content = bytearray()
        for chunk in self:
            content += chunk
        return bytes(content)

    def close(self) -> None:
        """Ends the download and releases its connection; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._response.close()

    def __enter__(self) -> FileStreamReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Filesystem:
    """Files and directories inside a sandbox: read, write, list, move, remove, watch.

    Every method takes `user=` (who the operation runs as: None is the sandbox's default user,
    `user`; `"root"` may touch anything) and `request_timeout=` (seconds one request may take;
    0 for no limit). Relative paths are relative to the user's home directory.
    """

    def __init__(self, rpc: Rpc, client: httpx.Client, target: SandboxTarget) -> None:
        self._rpc = rpc
        self._client = client
        self._target = target

    # --- content ---------------------------------------------------------------------------------

    def _files_request(
        self,
        verb: str,
        params: dict[str, str],
        headers: dict[str, str],
        timeout: float | None,
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = self._client.request(
                verb, files_url(self._target), params=params, headers=headers, timeout=timeout, **kwargs
            )
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err
        if response.status_code != 200:
            raise files_error(response, self._target)
        return response

    @overload
    def read(
        self,
        path: str,
        format: Literal["text"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["bytes"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> bytearray: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["stream"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> FileStreamReader: ...

    def read(
        self,
        path: str,
        format: Literal["text", "bytes", "stream"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str | bytearray | FileStreamReader:
        """Reads a file.

        :param format: `"text"` (a `str`, decoded as UTF-8), `"bytes"` (a `bytearray`) or
            `"stream"` (a `FileStreamReader`: an iterator of `bytes` chunks, for large files).
        :param gzip: have the content compressed in transit.
        :param stream_idle_timeout: for `"stream"`, seconds to wait for each chunk (default:
            `request_timeout`; 0 for no limit).
        :raises FileNotFoundException: there is no such file.
        :raises InvalidArgumentException: the path is a directory (also a `FilesystemError`).
        """
        if format not in ("text", "bytes", "stream"):
            raise in_domain(InvalidArgumentException, FilesystemError)(
                f"format must be 'text', 'bytes' or 'stream', not {format!r}"
            )
        timeout = self._target.config.timeout(request_timeout)
        if format == "stream" and stream_idle_timeout is not None:
            timeout_spec = httpx.Timeout(timeout, read=stream_idle_timeout or None)
        else:
            timeout_spec = httpx.Timeout(timeout)
        request = self._client.build_request(
            "GET",
            files_url(self._target),
            params=files_params(path, user),
            headers=download_headers(self._target, gzip),
            timeout=timeout_spec,
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err

        def failed(err: httpx.HTTPError) -> Exception:
            return self._download_failed(err, path)

        if response.status_code != 200:
            try:
                response.read()
            except httpx.HTTPError as err:
                raise failed(err) from err
            finally:
                response.close()
            raise files_error(response, self._target)
        if format == "stream":
            return FileStreamReader(response, failed)
        try:
            content = response.read()
        except httpx.HTTPError as err:
            raise failed(err) from err
        finally:
            response.close()
        if format == "bytes":
            return bytearray(content)
        return content.decode("utf-8", errors="replace")

    def _download_failed(self, err: httpx.HTTPError, path: str) -> Exception:
        # A download the agent broke off part-way (an unreadable file) looks like a lost
        # connection; the sandbox is gone only if its agent no longer answers.
        if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)):
            try:
                health = self._client.get(
                    self._target.base_url(ENVD_PORT) + "/health",
                    headers=self._target.headers(ENVD_PORT),
                    timeout=HEALTH_TIMEOUT,
                )
            except httpx.HTTPError:
                health = None
            if health is not None and health.is_success:
                return FilesystemError(f"Reading {path} failed part-way: the sandbox ended the download ({err})")
        return transport_error(err, self._target.sandbox_id)

    def write(
        self,
        path: str,
        data: WriteData,
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        use_octet_stream: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> FileInfo:
        """Writes a file, creating it (and its missing parent directories) or replacing it.

        :param data: a `str` (written as UTF-8), `bytes`, a file-like object (binary or text)
            or an iterable of `bytes` chunks; file-like objects and iterables are streamed,
            never held in memory whole.
        :param gzip: compress the content in transit.
        :param use_octet_stream: send the content as a raw body (True) or as a multipart form
            (False); by default streams go raw and text/bytes go as a form.
        :param metadata: key/value text stored with the file (replacing what it had); it comes
            back in `FileInfo.metadata`.
        :return: the written file (name, path, type, size, metadata).
        :raises FilesystemError: the user may not write there, or the path is a directory.
        """
        infos = self.write_files(
            [{"path": path, "data": data}],
            user=user,
            request_timeout=request_timeout,
            gzip=gzip,
            use_octet_stream=use_octet_stream,
            metadata=metadata,
        )
        return infos[0]

    def write_files(
        self,
        files: Sequence[Any],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        use_octet_stream: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> builtins.list[FileInfo]:
        """Writes several files: each entry is `{"path": ..., "data": ...}` (or a `(path, data)`
        pair), with data as `write` takes it. Text and bytes go in one request.

        :return: the written files, in the order given.
        """
        entries = [entry_parts(entry) for entry in files]
        if not entries:
            return []
        headers = upload_headers(self._target, metadata)
        timeout = self._target.config.timeout(request_timeout)
        plan = plan_upload([data for _, data in entries], gzip, use_octet_stream)
        results: dict[int, FileInfo] = {}
        if plan.multipart:
            buffered = [(entries[i][0], self._buffer(*entries[i])) for i in plan.multipart]
            paths = [path for path, _ in buffered]
            response = self._files_request(
                "POST", multipart_params(paths, user), headers, timeout, files=multipart_files(buffered)
            )
            answers = parse_write_response(response, self._target, len(buffered))
            for index, answer, (_, content) in zip(plan.multipart, answers, buffered):
                results[index] = written_info(answer, len(content))
        for index in plan.octet:
            path, data = entries[index]
            results[index] = self._write_raw(path, data, user, headers, timeout, gzip)
        return [results[i] for i in range(len(entries))]

    @staticmethod
    def _buffer(path: str, data: Any) -> bytes:
        if is_buffered(data):
            return as_bytes(data)
        content = bytearray()
        for chunk in iter_sync_chunks(data, path, Counter()):
            content += chunk
        return bytes(content)

    def _write_raw(
        self, path: str, data: Any, user: str | None, headers: dict[str, str], timeout: float | None, gzip: bool
    ) -> FileInfo:
        counter = Counter()
        body: bytes | Iterator[bytes]
        if is_buffered(data):
            raw = as_bytes(data)
            counter.total = len(raw)
            body = gzip_bytes(raw) if gzip else raw
        else:
            chunks = iter_sync_chunks(data, path, counter)
            body = gzip_chunks(chunks) if gzip else chunks
        raw_headers = {**headers, "Content-Type": "application/octet-stream"}
        if gzip:
            raw_headers["Content-Encoding"] = "gzip"
        response = self._files_request("POST", files_params(path, user), raw_headers, timeout, content=body)
        return written_info(parse_write_response(response, self._target, 1)[0], counter.total)

    # --- metadata ----------------------------------------------------------------------------------

    def list(
        self, path: str, depth: int | None = 1, user: str | None = None, request_timeout: float | None = None
    ) -> builtins.list[FileInfo]:
        """The entries of a directory, `depth` levels deep (1: its direct children), in name order.

        :raises FileNotFoundException: there is no such directory.
        :raises InvalidArgumentException: the path is not a directory (also a `FilesystemError`).
        """
        response = self._rpc.unary(
            method("ListDir"), list_request(path, depth), user=user, request_timeout=request_timeout
        )
        return parse_list_response(response)

    def exists(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        """Whether a file or directory exists at `path`."""
        try:
            self._rpc.unary(method("Stat"), {"path": path}, user=user, request_timeout=request_timeout)
        except FileNotFoundException:
            return False
        return True

    def get_info(self, path: str, user: str | None = None, request_timeout: float | None = None) -> FileInfo:
        """Everything about a file or directory: type, size, mode, owner, modification time...

        A symlink is described, not followed (its `symlink_target` says where it points).

        :raises FileNotFoundException: there is no such file or directory.
        """
        response = self._rpc.unary(method("Stat"), {"path": path}, user=user, request_timeout=request_timeout)
        return parse_entry_response(response)

    def remove(self, path: str, user: str | None = None, request_timeout: float | None = None) -> None:
        """Removes a file, or a directory with everything in it. A missing path is not an error."""
        self._rpc.unary(method("Remove"), {"path": path}, user=user, request_timeout=request_timeout)

    def rename(
        self, old_path: str, new_path: str, user: str | None = None, request_timeout: float | None = None
    ) -> FileInfo:
        """Renames or moves a file or directory (creating the new path's missing parents).

        :return: the entry at its new path.
        :raises FileNotFoundException: `old_path` does not exist.
        """
        response = self._rpc.unary(
            method("Move"),
            {"source": old_path, "destination": new_path},
            user=user,
            request_timeout=request_timeout,
        )
        return parse_entry_response(response)

    def make_dir(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        """Creates a directory and any missing parents.

        :return: True if it was created, False if the directory already existed.
        :raises InvalidArgumentException: a file (not a directory) is in the way.
        """
        try:
            self._rpc.unary(method("MakeDir"), {"path": path}, user=user, request_timeout=request_timeout)
        except InvalidArgumentException as err:
            if connect_code(err) == "already_exists":
                return False
            raise
        return True

    def watch_dir(
        self,
        path: str,
        on_event: Callable[[FilesystemEvent], Any] | None = None,
        on_exit: Callable[[Exception | None], Any] | None = None,
        user: str | None = None,
        request_timeout: float | None = None,
        timeout: float | None = SYNC_WATCH_TIMEOUT,
        recursive: bool = False,
        include_entry: bool = False,
        allow_network_mounts: bool = False,
    ) -> WatchHandle:
        """Watches a directory for changes (files created, written, removed, renamed, chmod-ed).

        With `on_event`, a background thread calls it (a function or an `async def`) with each
        `FilesystemEvent` as the changes happen; `on_exit` is called once when the watch ends,
        with the error that ended it (None after `stop()`). Without `on_event`, call
        `get_new_events()` on the returned handle (E2B's style). End the watch with `stop()`.

        :param request_timeout: seconds to wait for the sandbox to start the watch.
        :param timeout: seconds after which the watch ends by itself (None or 0: never);
            `on_exit` then gets a `TimeoutException`.
        :param recursive: also watch every subdirectory.
        :param include_entry: attach the changed entry's `FileInfo` to each event.
        :param allow_network_mounts: allow watching a network filesystem (events may be missed).
        :raises FileNotFoundException: there is no such directory.
        """
        request = watch_request(path, recursive, include_entry, allow_network_mounts)
        return start_watch(self._rpc, self._target, path, request, on_event, on_exit, user, request_timeout, timeout)


__all__ = ["FileStreamReader", "Filesystem", "WatchHandle"]
