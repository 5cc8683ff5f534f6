"""Where the SDK sends its requests, and with which credentials.

hutch serves the control plane and every sandbox's traffic on one address; the sandbox
and port are named by the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers. An E2B-style
deployment addressed only by a domain puts each sandbox port on its own host
(`https://{port}-{sandbox_id}.{domain}`); both are supported.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_API_URL = "http://127.0.0.1:49982"
"""Where `hutch serve` listens by default."""

ENVD_PORT = 49983
"""The in-sandbox agent (files, processes, terminals)."""

CODE_INTERPRETER_PORT = 49999
"""The in-sandbox code interpreter (`/execute`, `/contexts`)."""

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a single HTTP request may take unless the caller says otherwise."""

DEFAULT_SANDBOX_TIMEOUT = 300
"""Seconds a new sandbox lives unless the caller says otherwise (the server's default too)."""

DEFAULT_USER = "user"
"""The unprivileged user commands and file operations run as unless told otherwise."""


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every client the SDK makes, built once: loading the CA bundle costs
    tens of milliseconds, which would otherwise be paid by every new sandbox object."""
    return ssl.create_default_context()


def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class ConnectionConfig:
    """The server's address and the API key.

    Build it with `ConnectionConfig.resolve()`, which reads `HUTCH_API_URL` / `HUTCH_API_KEY` /
    `HUTCH_SANDBOX_URL`, then E2B's `E2B_API_URL` / `E2B_API_KEY` / `E2B_SANDBOX_URL` /
    `E2B_DOMAIN`, then falls back to `hutch serve`'s defaults.
    """

    api_url: str
    """Base URL of the control plane."""
    api_key: Optional[str]
    """The API key sent as `X-API-KEY`."""
    sandbox_url: Optional[str]
    """Base URL that reaches every sandbox (routed by headers); None means per-sandbox hosts."""
    domain: Optional[str]
    """Domain of per-sandbox hosts, used when `sandbox_url` is None."""
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    """Seconds a single HTTP request may take."""

    @classmethod
    def resolve(
        cls,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        sandbox_url: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> ConnectionConfig:
        """The configuration from explicit arguments, then the environment, then the defaults."""
        key = api_key or _env("HUTCH_API_KEY", "E2B_API_KEY")
        dom = domain or _env("HUTCH_DOMAIN", "E2B_DOMAIN")
        url = api_url or _env("HUTCH_API_URL", "E2B_API_URL")
        sbx = sandbox_url or _env("HUTCH_SANDBOX_URL", "E2B_SANDBOX_URL")
        if url is None:
            url = f"https://api.{dom}" if dom else DEFAULT_API_URL
        if sbx is None and not (dom and not (api_url or _env("HUTCH_API_URL", "E2B_API_URL"))):
            # hutch answers for its sandboxes on the control plane's own address.
            sbx = url
        timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else float(request_timeout)
        return cls(
            api_url=url.rstrip("/"),
            api_key=key,
            sandbox_url=sbx.rstrip("/") if sbx else None,
            domain=dom,
            request_timeout=timeout,
        )

    def api_headers(self) -> dict[str, str]:
        """Headers of every control-plane request."""
        headers = {"User-Agent": "hutch-python-sdk/0.1.0"}
        if self.api_key:
            headers["X-API-KEY"] = self.api_key
        return headers

    def timeout(self, request_timeout: Optional[float]) -> Optional[float]:
        """The timeout of one request: the caller's if given (0 means none), else the default."""
        if request_timeout is None:
            return self.request_timeout
        return None if request_timeout == 0 else float(request_timeout)


@dataclass(frozen=True)
class SandboxTarget:
    """How to reach one sandbox's ports, and the tokens its agent and interpreter expect."""

    sandbox_id: str
    """The sandbox's id."""
    config: ConnectionConfig
    """The server the sandbox lives on."""
    envd_access_token: Optional[str] = None
    """Sent as `X-Access-Token` to the agent when the sandbox is secured."""
    traffic_access_token: Optional[str] = None
    """Sent as `E2B-Traffic-Access-Token` to the sandbox's ports when the server gave one."""
    domain: Optional[str] = None
    """The sandbox's own domain, when the server named one."""
    extra_headers: dict[str, str] = field(default_factory=dict)
    """Headers added to every request to the sandbox."""

    def host(self, port: int) -> str:
        """The host name of `port` inside the sandbox (E2B's `get_host`)."""
        domain = self.domain or self.config.domain
        if domain:
            return f"{port}-{self.sandbox_id}.{domain}"
        base = self.config.sandbox_url or self.config.api_url
        netloc = base.split("://", 1)[-1].split("/", 1)[0]
        return f"{port}-{self.sandbox_id}.{netloc}"

    def base_url(self, port: int) -> str:
        """The URL that requests for `port` go to."""
        if self.config.sandbox_url:
            return self.config.sandbox_url
        return f"https://{self.host(port)}"

    def headers(self, port: int, user: Optional[str] = None) -> dict[str, str]:
        """Routing, token and user headers of a request to `port`."""
        headers = {"User-Agent": "hutch-python-sdk/0.1.0", **self.extra_headers}
        if self.config.sandbox_url:
            headers["E2b-Sandbox-Id"] = self.sandbox_id
            headers["E2b-Sandbox-Port"] = str(port)
        if self.traffic_access_token:
            headers["E2B-Traffic-Access-Token"] = self.traffic_access_token
        if port in (ENVD_PORT, CODE_INTERPRETER_PORT) and self.envd_access_token:
            headers["X-Access-Token"] = self.envd_access_token
        if user is not None:
            token = base64.b64encode(f"{user}:".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers
