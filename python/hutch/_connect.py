"""A Connect-RPC client with the JSON codec, over httpx (what the sandbox agent speaks).

Unary calls are a JSON POST. Server streams are `application/connect+json`: every message
is one flag byte and a 4-byte big-endian length, then the JSON; flag 0x02 marks the last
frame, whose JSON carries the stream's error, if any.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional

import httpx

from ._config import ENVD_PORT, SandboxTarget
from ._errors import amessage_of, connect_error, message_of, sandbox_http_error, transport_error
from .exceptions import SandboxException

_END_STREAM = 0x02
_COMPRESSED = 0x01

Json = dict[str, Any]


def envelope(message: Json) -> bytes:
    """One Connect stream frame holding `message`."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


class FrameDecoder:
    """Splits a Connect stream body into frames as its bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[int, Json]]:
        """The complete frames that `chunk` finishes, as (flags, decoded JSON)."""
        self._buffer += chunk
        frames: list[tuple[int, Json]] = []
        while len(self._buffer) >= 5:
            flags, size = struct.unpack(">BI", bytes(self._buffer[:5]))
            if len(self._buffer) < 5 + size:
                break
            payload = bytes(self._buffer[5 : 5 + size])
            del self._buffer[: 5 + size]
            if flags & _COMPRESSED:
                raise SandboxException("the agent sent a compressed stream frame, which was not asked for")
            decoded = json.loads(payload) if payload else {}
            frames.append((flags, decoded if isinstance(decoded, dict) else {}))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buffer)


def _stream_headers(
    target: SandboxTarget, user: Optional[str], lifetime: Optional[float], keepalive: Optional[int]
) -> dict[str, str]:
    headers = target.headers(ENVD_PORT, user)
    headers["Content-Type"] = "application/connect+json"
    headers["Connect-Protocol-Version"] = "1"
    if lifetime:
        headers["Connect-Timeout-Ms"] = str(int(lifetime * 1000))
    if keepalive:
        headers["Keepalive-Ping-Interval"] = str(keepalive)
    return headers


def _unary_headers(target: SandboxTarget, user: Optional[str]) -> dict[str, str]:
    headers = target.headers(ENVD_PORT, user)
    headers["Content-Type"] = "application/json"
    headers["Connect-Protocol-Version"] = "1"
    return headers


def _unary_error(
    response: httpx.Response, text: str, target: SandboxTarget, domain: Optional[type[SandboxException]]
) -> Exception:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str) and response.status_code != 502:
        return connect_error(body["code"], str(body.get("message", "")), target.sandbox_id, domain)
    return sandbox_http_error(response.status_code, message_of(response), target.sandbox_id, domain)


def _end_error(frame: Json, target: SandboxTarget, domain: Optional[type[SandboxException]]) -> Optional[Exception]:
    error = frame.get("error")
    if isinstance(error, dict):
        return connect_error(
            str(error.get("code", "unknown")), str(error.get("message", "")), target.sandbox_id, domain
        )
    return None


def _stream_timeout(request_timeout: Optional[float]) -> httpx.Timeout:
    # Events of a long-running process may be minutes apart: only connecting is bounded.
    return httpx.Timeout(request_timeout, read=None)


class Rpc:
    """Blocking Connect calls to one sandbox's agent."""

    def __init__(
        self, client: httpx.Client, target: SandboxTarget, domain: Optional[type[SandboxException]] = None
    ) -> None:
        self._client = client
        self._target = target
        self._domain = domain

    def unary(
        self, method: str, body: Json, *, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> Json:
        """Calls `method` (e.g. `filesystem.Filesystem/Stat`) and returns its response message."""
        url = f"{self._target.base_url(ENVD_PORT)}/{method}"
        try:
            response = self._client.post(
                url,
                content=json.dumps(body).encode(),
                headers=_unary_headers(self._target, user),
                timeout=self._target.config.timeout(request_timeout),
            )
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err
        if response.status_code != 200:
            raise _unary_error(response, response.text, self._target, self._domain)
        decoded = response.json() if response.content else {}
        return decoded if isinstance(decoded, dict) else {}

    def stream(
        self,
        method: str,
        body: Json,
        *,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
        lifetime: Optional[float] = None,
        keepalive: Optional[int] = None,
    ) -> Iterator[Json]:
        """Calls a server-streaming `method` and yields its messages; closing the iterator ends the call.

        `lifetime` is sent as `Connect-Timeout-Ms` (the agent ends a started process then);
        `keepalive` asks for a keepalive message after that many seconds of silence.
        """
        url = f"{self._target.base_url(ENVD_PORT)}/{method}"
        request = self._client.build_request(
            "POST",
            url,
            content=envelope(body),
            headers=_stream_headers(self._target, user, lifetime, keepalive),
            timeout=_stream_timeout(self._target.config.timeout(request_timeout)),
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err
        try:
            if response.status_code != 200:
                response.read()
                raise _unary_error(response, response.text, self._target, self._domain)
            decoder = FrameDecoder()
            try:
                for chunk in response.iter_bytes():
                    for flags, frame in decoder.feed(chunk):
                        if flags & _END_STREAM:
                            error = _end_error(frame, self._target, self._domain)
                            if error is not None:
                                raise error
                            return
                        yield frame
            except httpx.HTTPError as err:
                raise transport_error(err, self._target.sandbox_id) from err
            raise transport_error(
                httpx.RemoteProtocolError("the stream ended without its end frame"), self._target.sandbox_id
            )
        finally:
            response.close()


class AsyncRpc:
    """Connect calls to one sandbox's agent, for asyncio."""

    def __init__(
        self, client: httpx.AsyncClient, target: SandboxTarget, domain: Optional[type[SandboxException]] = None
    ) -> None:
        self._client = client
        self._target = target
        self._domain = domain

    async def unary(
        self, method: str, body: Json, *, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> Json:
        """Calls `method` and returns its response message."""
        url = f"{self._target.base_url(ENVD_PORT)}/{method}"
        try:
            response = await self._client.post(
                url,
                content=json.dumps(body).encode(),
                headers=_unary_headers(self._target, user),
                timeout=self._target.config.timeout(request_timeout),
            )
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err
        if response.status_code != 200:
            raise _unary_error(response, response.text, self._target, self._domain)
        decoded = response.json() if response.content else {}
        return decoded if isinstance(decoded, dict) else {}

    async def stream(
        self,
        method: str,
        body: Json,
        *,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
        lifetime: Optional[float] = None,
        keepalive: Optional[int] = None,
    ) -> AsyncIterator[Json]:
        """Calls a server-streaming `method` and yields its messages; `aclose()` ends the call."""
        url = f"{self._target.base_url(ENVD_PORT)}/{method}"
        request = self._client.build_request(
            "POST",
            url,
            content=envelope(body),
            headers=_stream_headers(self._target, user, lifetime, keepalive),
            timeout=_stream_timeout(self._target.config.timeout(request_timeout)),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise transport_error(err, self._target.sandbox_id) from err
        try:
            if response.status_code != 200:
                await amessage_of(response)
                raise _unary_error(response, response.text, self._target, self._domain)
            decoder = FrameDecoder()
            try:
                async for chunk in response.aiter_bytes():
                    for flags, frame in decoder.feed(chunk):
                        if flags & _END_STREAM:
                            error = _end_error(frame, self._target, self._domain)
                            if error is not None:
                                raise error
                            return
                        yield frame
            except httpx.HTTPError as err:
                raise transport_error(err, self._target.sandbox_id) from err
            raise transport_error(
                httpx.RemoteProtocolError("the stream ended without its end frame"), self._target.sandbox_id
            )
        finally:
            await response.aclose()
