"""Turning error responses and transport failures into the SDK's exceptions."""

from __future__ import annotations

import json
from typing import Optional

import httpx

from .exceptions import (
    APIError,
    AuthenticationError,
    E2BException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundError,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    TimeoutException,
    in_domain,
)

SANDBOX_GONE = (
    "The sandbox was killed or reached its timeout. You can give it more time with 'timeout' "
    "when creating it, or with 'set_timeout' on a running sandbox."
)

REQUEST_TIMED_OUT = "Request timed out: pass a larger 'request_timeout' to allow more time"

# Connect error codes (https://connectrpc.com/docs/protocol#error-codes) → what went wrong.
_CONNECT_KINDS = {
    "not_found": NotFoundError,
    "invalid_argument": InvalidArgumentException,
    "failed_precondition": InvalidArgumentException,
    "out_of_range": InvalidArgumentException,
    "already_exists": InvalidArgumentException,
    "unauthenticated": AuthenticationError,
    "resource_exhausted": NotEnoughSpaceException,
    "deadline_exceeded": TimeoutException,
    "canceled": TimeoutException,
}

# HTTP status of a sandbox port's plain-HTTP answer → what went wrong.
_HTTP_KINDS = {
    400: InvalidArgumentException,
    401: AuthenticationError,
    404: NotFoundError,
    409: InvalidArgumentException,
    429: RateLimitException,
    507: NotEnoughSpaceException,
}


def message_of(response: httpx.Response) -> str:
    """The error text of a response: its JSON `message`, else its body, else its status."""
    try:
        text = response.text
    except httpx.ResponseNotRead:
        text = response.read().decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return text.strip() or response.reason_phrase or f"HTTP {response.status_code}"


async def amessage_of(response: httpx.Response) -> str:
    """`message_of` for a streamed async response whose body may not be read yet."""
    await response.aread()
    return message_of(response)


def sandbox_gone(sandbox_id: Optional[str], detail: str = "") -> SandboxNotFoundException:
    """The error for a sandbox that no longer answers."""
    who = f"Sandbox {sandbox_id}" if sandbox_id else "The sandbox"
    text = f"{who} is not running: {SANDBOX_GONE}"
    if detail:
        text = f"{detail}: {text}"
    return SandboxNotFoundException(text, status_code=502)


def api_error(status: int, message: str, sandbox_id: Optional[str] = None) -> E2BException:
    """The exception for a control-plane error answer."""
    if status == 401:
        return AuthenticationError(f"Authentication failed: {message}", status_code=status)
    if status == 404:
        if sandbox_id is not None:
            return SandboxNotFoundException(f"Sandbox {sandbox_id} not found: {message}", status_code=status)
        return NotFoundError(message, status_code=status)
    if status == 429:
        return RateLimitException(f"Rate limit exceeded: {message}", status_code=status)
    if status == 400:
        return InvalidArgumentException(message, status_code=status)
    return APIError(f"{status}: {message}", status_code=status)


def sandbox_http_error(
    status: int,
    message: str,
    sandbox_id: Optional[str],
    domain: Optional[type[SandboxException]] = None,
) -> E2BException:
    """The exception for an error answer from a sandbox port (agent or code interpreter)."""
    if status == 502:
        return sandbox_gone(sandbox_id, message)
    kind = _HTTP_KINDS.get(status, SandboxException)
    return in_domain(kind, domain)(f"{status}: {message}", status_code=status)


def connect_error(
    code: str,
    message: str,
    sandbox_id: Optional[str],
    domain: Optional[type[SandboxException]] = None,
) -> E2BException:
    """The exception for a Connect-RPC error (`{"code": "not_found", "message": ...}`)."""
    if code == "unavailable" and "not found" in message:
        return sandbox_gone(sandbox_id, message)
    kind = _CONNECT_KINDS.get(code, SandboxException)
    return in_domain(kind, domain)(f"{code}: {message}")


def transport_error(err: httpx.HTTPError, sandbox_id: Optional[str] = None) -> E2BException:
    """The exception for a request that got no answer."""
    if isinstance(err, httpx.TimeoutException):
        return TimeoutException(REQUEST_TIMED_OUT)
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)) and sandbox_id is not None:
        return sandbox_gone(sandbox_id, f"the connection was lost ({err})")
    where = f" to sandbox {sandbox_id}" if sandbox_id else ""
    return SandboxException(f"Request{where} failed: {err}")
