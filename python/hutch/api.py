"""The control plane: creating, finding, listing and ending sandboxes.

Each call is described once (method, path, body, how to read the answer) and run by a
blocking or an async httpx client, so `Sandbox` and `AsyncSandbox` share everything but I/O.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Generic, Optional, TypeVar

import httpx

from ._config import ConnectionConfig
from ._dictlike import DictLike
from ._errors import api_error, message_of, transport_error
from .exceptions import AuthenticationError, E2BException

T = TypeVar("T")
Json = dict[str, Any]


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 timestamp as an aware datetime (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python < 3.11 reads at most six fractional digits.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        tail = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tail}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class SandboxInfo(DictLike):
    """What the server knows about a sandbox."""

    _fields = (
        "sandbox_id",
        "template_id",
        "name",
        "metadata",
        "started_at",
        "end_at",
        "state",
        "cpu_count",
        "memory_mb",
        "disk_size_mb",
        "envd_version",
        "allow_internet_access",
        "sandbox_domain",
    )

    sandbox_id: str
    """The sandbox's id."""
    template_id: str
    """The template it was created from."""
    name: Optional[str] = None
    """The template's name (alias), when it has one."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The metadata given at creation."""
    started_at: Optional[datetime] = None
    """When it started."""
    end_at: Optional[datetime] = None
    """When it will be ended (or paused) unless its timeout is changed."""
    state: str = "running"
    """`running` or `paused`."""
    cpu_count: int = 0
    """CPUs it may use."""
    memory_mb: int = 0
    """Memory it may use, in MiB."""
    disk_size_mb: int = 0
    """Its disk size, in MiB."""
    envd_version: str = ""
    """Version of the protocol its agent speaks."""
    allow_internet_access: Optional[bool] = None
    """Whether it may reach the internet (None when the server did not say)."""
    sandbox_domain: Optional[str] = None
    """The domain its ports are served on, when the server has one."""

    @classmethod
    def from_json(cls, body: Json) -> SandboxInfo:
        """Reads the server's `SandboxDetail` / `ListedSandbox` JSON."""
        return cls(
            sandbox_id=str(body.get("sandboxID", "")),
            template_id=str(body.get("templateID", "")),
            name=body.get("alias"),
            metadata=dict(body.get("metadata") or {}),
            started_at=parse_time(body.get("startedAt")),
            end_at=parse_time(body.get("endAt")),
            state=str(body.get("state", "running")),
            cpu_count=int(body.get("cpuCount") or 0),
            memory_mb=int(body.get("memoryMB") or 0),
            disk_size_mb=int(body.get("diskSizeMB") or 0),
            envd_version=str(body.get("envdVersion", "")),
            allow_internet_access=body.get("allowInternetAccess"),
            sandbox_domain=body.get("domain"),
        )


@dataclass
class SandboxMetrics(DictLike):
    """One sample of a sandbox's resource use."""

    _fields = (
        "timestamp",
        "cpu_count",
        "cpu_used_pct",
        "mem_used",
        "mem_total",
        "mem_cache",
        "disk_used",
        "disk_total",
    )

    timestamp: Optional[datetime]
    """When the sample was taken."""
    cpu_count: int
    """CPUs the sandbox may use."""
    cpu_used_pct: float
    """CPU use, in percent of `cpu_count` CPUs."""
    mem_used: int
    """Memory used, in bytes."""
    mem_total: int
    """Memory limit, in bytes."""
    mem_cache: int
    """Page cache, in bytes."""
    disk_used: int
    """Disk used, in bytes."""
    disk_total: int
    """Disk size, in bytes."""

    @classmethod
    def from_json(cls, body: Json) -> SandboxMetrics:
        """Reads the server's `SandboxMetric` JSON."""
        return cls(
            timestamp=parse_time(body.get("timestamp")),
            cpu_count=int(body.get("cpuCount") or 0),
            cpu_used_pct=float(body.get("cpuUsedPct") or 0.0),
            mem_used=int(body.get("memUsed") or 0),
            mem_total=int(body.get("memTotal") or 0),
            mem_cache=int(body.get("memCache") or 0),
            disk_used=int(body.get("diskUsed") or 0),
            disk_total=int(body.get("diskTotal") or 0),
        )


@dataclass
class SandboxQuery:
    """Filters for `Sandbox.list`."""

    metadata: Optional[dict[str, str]] = None
    """Only sandboxes whose metadata has all these pairs."""
    state: Optional[list[str]] = None
    """Only sandboxes in these states (`running`, `paused`); default: both."""
    started_after: Optional[datetime] = None
    """Only sandboxes started at or after this time."""
    template: Optional[str] = None
    """Only sandboxes of this template."""


@dataclass
class Created:
    """The server's answer to a create or connect."""

    sandbox_id: str
    template_id: str
    envd_version: str
    envd_access_token: Optional[str]
    traffic_access_token: Optional[str]
    domain: Optional[str]

    @classmethod
    def from_json(cls, body: Json) -> Created:
        """Reads the server's `Sandbox` JSON."""
        return cls(
            sandbox_id=str(body["sandboxID"]),
            template_id=str(body.get("templateID", "")),
            envd_version=str(body.get("envdVersion", "")),
            envd_access_token=body.get("envdAccessToken"),
            traffic_access_token=body.get("trafficAccessToken"),
            domain=body.get("domain"),
        )


@dataclass
class Call(Generic[T]):
    """One control-plane request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: Optional[Json] = None
    params: Optional[dict[str, str]] = None
    sandbox_id: Optional[str] = None
    """Set when a 404 means this sandbox is gone."""
    accept: dict[int, Callable[[httpx.Response], T]] = field(default_factory=dict)
    """Answers outside 2xx that are not errors, and what they mean (a 404 on kill is False)."""


def _check(call: Call[T], response: httpx.Response) -> T:
    if response.status_code in call.accept:
        return call.accept[response.status_code](response)
    if response.status_code >= 300:
        raise api_error(response.status_code, message_of(response), call.sandbox_id)
    return call.read(response)


def _request_args(config: ConnectionConfig, call: Call[Any], request_timeout: Optional[float]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "headers": config.api_headers(),
        "timeout": config.timeout(request_timeout),
    }
    if call.body is not None:
        args["json"] = call.body
    if call.params:
        args["params"] = call.params
    return args


def run(client: httpx.Client, config: ConnectionConfig, call: Call[T], request_timeout: Optional[float] = None) -> T:
    """Sends `call` with a blocking client."""
    if not config.api_key:
        raise_missing_key()
    try:
        response = client.request(
            call.method, config.api_url + call.path, **_request_args(config, call, request_timeout)
        )
    except httpx.HTTPError as err:
        raise transport_error(err) from err
    return _check(call, response)


async def arun(
    client: httpx.AsyncClient, config: ConnectionConfig, call: Call[T], request_timeout: Optional[float] = None
) -> T:
    """Sends `call` with an async client."""
    if not config.api_key:
        raise_missing_key()
    try:
        response = await client.request(
            call.method, config.api_url + call.path, **_request_args(config, call, request_timeout)
        )
    except httpx.HTTPError as err:
        raise transport_error(err) from err
    return _check(call, response)


def raise_missing_key() -> None:
    """Refuses to call the server without an API key, saying where one goes."""
    raise AuthenticationError(
        "No API key: pass api_key=..., or set HUTCH_API_KEY (or E2B_API_KEY). "
        "`hutch serve` prints one when it starts; `hutch keys create` makes another."
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise E2BException(f"the server sent an unreadable answer: {response.text[:200]!r}") from err


def create(
    template: str,
    timeout: Optional[int],
    metadata: Optional[dict[str, str]],
    envs: Optional[dict[str, str]],
    secure: bool,
    allow_internet_access: bool,
    auto_pause: bool = False,
) -> Call[Created]:
    """`POST /sandboxes`: a new sandbox."""
    body: Json = {
        "templateID": template,
        "metadata": dict(metadata or {}),
        "envVars": dict(envs or {}),
        "secure": secure,
        "allow_internet_access": allow_internet_access,
        "autoPause": auto_pause,
    }
    if timeout is not None:
        body["timeout"] = int(timeout)
    return Call("POST", "/sandboxes", lambda r: Created.from_json(_json(r)), body=body)


def connect(sandbox_id: str, timeout: Optional[int]) -> Call[Created]:
    """`POST /sandboxes/{id}/connect`: a running sandbox (resumed if paused)."""
    body: Json = {} if timeout is None else {"timeout": int(timeout)}
    return Call(
        "POST",
        f"/sandboxes/{_quote(sandbox_id)}/connect",
        lambda r: Created.from_json(_json(r)),
        body=body,
        sandbox_id=sandbox_id,
    )


def get_info(sandbox_id: str) -> Call[SandboxInfo]:
    """`GET /sandboxes/{id}`."""
    return Call(
        "GET", f"/sandboxes/{_quote(sandbox_id)}", lambda r: SandboxInfo.from_json(_json(r)), sandbox_id=sandbox_id
    )


def kill(sandbox_id: str) -> Call[bool]:
    """`DELETE /sandboxes/{id}`: True if it was killed, False if there was no such sandbox."""
    return Call("DELETE", f"/sandboxes/{_quote(sandbox_id)}", lambda r: True, accept={404: lambda r: False})


def set_timeout(sandbox_id: str, timeout: int) -> Call[None]:
    """`POST /sandboxes/{id}/timeout`: the sandbox ends `timeout` seconds from now."""
    return Call(
        "POST",
        f"/sandboxes/{_quote(sandbox_id)}/timeout",
        lambda r: None,
        body={"timeout": int(timeout)},
        sandbox_id=sandbox_id,
    )


def pause(sandbox_id: str) -> Call[bool]:
    """`POST /sandboxes/{id}/pause`: True once paused, False if it already was."""
    return Call(
        "POST",
        f"/sandboxes/{_quote(sandbox_id)}/pause",
        lambda r: True,
        body={},
        sandbox_id=sandbox_id,
        accept={409: lambda r: False},
    )


def metrics(sandbox_id: str, start: Optional[datetime], end: Optional[datetime]) -> Call[list[SandboxMetrics]]:
    """`GET /sandboxes/{id}/metrics`."""
    params: dict[str, str] = {}
    if start is not None:
        params["start"] = str(int(start.timestamp()))
    if end is not None:
        params["end"] = str(int(end.timestamp()))
    return Call(
        "GET",
        f"/sandboxes/{_quote(sandbox_id)}/metrics",
        lambda r: [SandboxMetrics.from_json(m) for m in _json(r) or []],
        params=params,
        sandbox_id=sandbox_id,
    )


@dataclass
class Page:
    """One page of `GET /v2/sandboxes`."""

    items: list[SandboxInfo]
    next_token: Optional[str]


def list_page(query: Optional[SandboxQuery], limit: Optional[int], next_token: Optional[str]) -> Call[Page]:
    """`GET /v2/sandboxes`: one page of sandboxes, newest first."""
    params: dict[str, str] = {}
    if query is not None:
        if query.metadata:
            pairs = "&".join(
                f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in query.metadata.items()
            )
            params["metadata"] = pairs
        if query.state:
            params["state"] = ",".join(query.state)
        if query.started_after is not None:
            started = query.started_after
            if started.tzinfo is None:
                started = started.astimezone()
            params["startedAfter"] = started.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        if query.template:
            params["template"] = query.template
    if limit is not None:
        params["limit"] = str(int(limit))
    if next_token:
        params["nextToken"] = next_token

    def read(response: httpx.Response) -> Page:
        token = response.headers.get("X-Next-Token") or None
        return Page([SandboxInfo.from_json(s) for s in _json(response) or []], token)

    return Call("GET", "/v2/sandboxes", read, params=params)


def _quote(sandbox_id: str) -> str:
    return urllib.parse.quote(sandbox_id, safe="")
