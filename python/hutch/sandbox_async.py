"""`AsyncSandbox`: the same sandbox as `Sandbox`, driven with `await`."""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

import httpx

from . import api
from ._config import ENVD_PORT, ConnectionConfig, SandboxTarget, tls_context
from ._connect import AsyncRpc
from ._errors import sandbox_http_error, transport_error
from ._hybrid import hybridmethod
from .api import SandboxInfo, SandboxMetrics, SandboxQuery
from .code_async import AsyncNotebook
from .commands_async import AsyncCommands
from .exceptions import FilesystemError, ProcessError, SandboxException, TerminalError
from .filesystem_async import AsyncFilesystem
from .filesystem_models import signed_url
from .models import Context, Execution, ExecutionError, OutputMessage, Result
from .pty_async import AsyncPty
from .sandbox import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from types import TracebackType


T = TypeVar("T")


def _client(config: ConnectionConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=config.request_timeout,
        limits=httpx.Limits(max_keepalive_connections=20),
        verify=tls_context(),
    )


class AsyncSandboxPaginator(list[SandboxInfo]):
    """The sandboxes `AsyncSandbox.list` found: a list of the first page, and a way to fetch the rest."""

    def __init__(
        self, config: ConnectionConfig, query: Optional[SandboxQuery], limit: Optional[int], first: api.Page
    ) -> None:
        super().__init__(first.items)
        self._config = config
        self._query = query
        self._limit = limit
        self._pending: Optional[list[SandboxInfo]] = list(first.items)
        self.next_token: Optional[str] = first.next_token
        """The token of the next page (None after the last one)."""

    @property
    def has_next(self) -> bool:
        """Whether `next_items()` has more to give."""
        return self._pending is not None or self.next_token is not None

    async def next_items(self, request_timeout: Optional[float] = None) -> list[SandboxInfo]:
        """The next page: the first call returns the page already fetched, later calls fetch more."""
        if self._pending is not None:
            items, self._pending = self._pending, None
            return items
        if self.next_token is None:
            return []
        async with _client(self._config) as client:
            call = api.list_page(self._query, self._limit, self.next_token)
            page = await api.arun(client, self._config, call, request_timeout)
        self.next_token = page.next_token
        return page.items


async def _once(
    call: api.Call[T], api_key: Optional[str], request_timeout: Optional[float], options: dict[str, Any]
) -> T:
    """Runs one control-plane call with a client of its own: what the class-level methods do."""
    config = ConnectionConfig.resolve(api_key, request_timeout=request_timeout, **options)
    async with _client(config) as client:
        return await api.arun(client, config, call, request_timeout)


# The class-level forms of the hybrid methods below (`Sandbox.kill(sandbox_id)`, ...).


async def _kill_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> bool:
    return await _once(api.kill(sandbox_id), api_key, request_timeout, options)


async def _set_timeout_by_id(
    self: type,
    sandbox_id: str,
    timeout: int,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> None:
    return await _once(api.set_timeout(sandbox_id, timeout), api_key, request_timeout, options)


async def _get_info_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> SandboxInfo:
    return await _once(api.get_info(sandbox_id), api_key, request_timeout, options)


async def _get_metrics_by_id(
    self: type,
    sandbox_id: str,
    start: Optional[datetime] = None,
    end: Optional[datetime] = None,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> builtins.list[SandboxMetrics]:
    return await _once(api.metrics(sandbox_id, start, end), api_key, request_timeout, options)


async def _pause_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> bool:
    return await _once(api.pause(sandbox_id), api_key, request_timeout, options)


class AsyncSandbox:
    """A sandbox for asyncio code: `await AsyncSandbox.create()`, or `async with AsyncSandbox() as sandbox:`.

    Everything `Sandbox` does, with awaitable methods; streams are async iterators and callbacks
    may be plain functions or `async def`.

        async with AsyncSandbox() as sandbox:
            await sandbox.run_code("x = 1")
            print((await sandbox.run_code("x += 1; x")).text)  # 2
    """

    default_template = DEFAULT_TEMPLATE
    """The template used when none is given."""

    def __init__(
        self,
        template: Optional[str] = None,
        api_key: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[dict[str, str]] = None,
        timeout: Optional[int] = None,
        metadata: Optional[dict[str, str]] = None,
        sandbox_id: Optional[str] = None,
        request_timeout: Optional[float] = None,
        *,
        api_url: Optional[str] = None,
        sandbox_url: Optional[str] = None,
        domain: Optional[str] = None,
        secure: bool = True,
        allow_internet_access: bool = True,
        auto_pause: bool = False,
    ) -> None:
        """Describes a sandbox to create (or, with `sandbox_id`, to connect to); nothing happens until
        it is awaited (`await AsyncSandbox(...)`) or entered (`async with AsyncSandbox(...)`).
        `await AsyncSandbox.create(...)` does both at once. The parameters are `Sandbox`'s.
        """
        self._config = ConnectionConfig.resolve(api_key, api_url, sandbox_url, domain, request_timeout)
        self._cwd = cwd
        self._plan: Optional[api.Call[api.Created]] = (
            api.connect(sandbox_id, timeout)
            if sandbox_id is not None
            else api.create(
                template or self.default_template, timeout, metadata, envs, secure, allow_internet_access, auto_pause
            )
        )
        self._created: Optional[api.Created] = None
        self._http: Optional[httpx.AsyncClient] = None
        self._closed = False

    async def _start(self) -> AsyncSandbox:
        if self._created is not None:
            return self
        if self._plan is None:
            raise SandboxException("this AsyncSandbox was closed")
        http = _client(self._config)
        try:
            created = await api.arun(http, self._config, self._plan)
        except BaseException:
            await http.aclose()
            raise
        self._setup(http, created)
        return self

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._start().__await__()

    @classmethod
    def _attached(cls, config: ConnectionConfig, created: api.Created, cwd: Optional[str]) -> AsyncSandbox:
        sandbox = cls.__new__(cls)
        sandbox._config = config
        sandbox._cwd = cwd
        sandbox._plan = None
        sandbox._closed = False
        sandbox._setup(_client(config), created)
        return sandbox

    def _setup(self, http: httpx.AsyncClient, created: api.Created) -> None:
        self._http = http
        self._created = created
        self._target = SandboxTarget(
            sandbox_id=created.sandbox_id,
            config=self._config,
            envd_access_token=created.envd_access_token,
            traffic_access_token=created.traffic_access_token,
            domain=created.domain,
        )
        self._files = AsyncFilesystem(AsyncRpc(http, self._target, FilesystemError), http, self._target)
        self._commands = AsyncCommands(AsyncRpc(http, self._target, ProcessError), self._target)
        self._pty = AsyncPty(AsyncRpc(http, self._target, TerminalError), self._target)
        self._notebook = AsyncNotebook(http, self._target)

    def _live(self) -> api.Created:
        if self._created is None:
            raise SandboxException(
                "this AsyncSandbox has not been started: use `await AsyncSandbox.create(...)`, "
                "`await AsyncSandbox(...)` or `async with AsyncSandbox(...) as sandbox`"
            )
        return self._created

    def _client(self) -> httpx.AsyncClient:
        self._live()
        assert self._http is not None
        return self._http

    # --- creating and finding sandboxes -------------------------------------------------------

    @classmethod
    async def create(
        cls,
        template: Optional[str] = None,
        api_key: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[dict[str, str]] = None,
        timeout: Optional[int] = None,
        metadata: Optional[dict[str, str]] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> AsyncSandbox:
        """Creates a sandbox (parameters as `Sandbox`)."""
        sandbox = cls(
            template=template,
            api_key=api_key,
            cwd=cwd,
            envs=envs,
            timeout=timeout,
            metadata=metadata,
            request_timeout=request_timeout,
            **options,
        )
        return await sandbox._start()

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        timeout: Optional[int] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> AsyncSandbox:
        """Connects to the running sandbox `sandbox_id` (resuming it if paused); `SandboxNotFoundException` if none."""
        sandbox = cls(
            sandbox_id=sandbox_id, api_key=api_key, timeout=timeout, request_timeout=request_timeout, **options
        )
        return await sandbox._start()

    @classmethod
    async def reconnect(cls, sandbox_id: str, api_key: Optional[str] = None, **options: Any) -> AsyncSandbox:
        """Another name of `AsyncSandbox.connect`."""
        return await cls.connect(sandbox_id, api_key=api_key, **options)

    @classmethod
    async def list(
        cls,
        api_key: Optional[str] = None,
        query: Optional[SandboxQuery] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> AsyncSandboxPaginator:
        """The sandboxes of this server, newest first (see `Sandbox.list`)."""
        config = ConnectionConfig.resolve(api_key, request_timeout=request_timeout, **options)
        async with _client(config) as client:
            page = await api.arun(client, config, api.list_page(query, limit, next_token), request_timeout)
        return AsyncSandboxPaginator(config, query, limit, page)

    # --- the sandbox ---------------------------------------------------------------------------

    @property
    def sandbox_id(self) -> str:
        """The sandbox's id."""
        return self._live().sandbox_id

    @property
    def template_id(self) -> str:
        """The template the sandbox was created from."""
        return self._live().template_id

    @property
    def envd_version(self) -> str:
        """The protocol version the sandbox's agent speaks."""
        return self._live().envd_version

    @property
    def connection_config(self) -> ConnectionConfig:
        """The server address and credentials this object uses."""
        return self._config

    @property
    def files(self) -> AsyncFilesystem:
        """The sandbox's filesystem."""
        self._live()
        return self._files

    @property
    def filesystem(self) -> AsyncFilesystem:
        """The sandbox's filesystem (the seed API's name of `files`)."""
        return self.files

    @property
    def commands(self) -> AsyncCommands:
        """Processes in the sandbox."""
        self._live()
        return self._commands

    @property
    def process(self) -> AsyncCommands:
        """Processes in the sandbox (the seed API's name of `commands`)."""
        return self.commands

    @property
    def pty(self) -> AsyncPty:
        """Interactive terminals in the sandbox."""
        self._live()
        return self._pty

    @property
    def terminal(self) -> AsyncPty:
        """Interactive terminals (the seed API's name of `pty`)."""
        return self.pty

    @property
    def notebook(self) -> AsyncNotebook:
        """The code interpreter: `await notebook.exec_cell(code)`."""
        self._live()
        return self._notebook

    def get_host(self, port: int) -> str:
        """The host name that reaches `port` inside the sandbox."""
        self._live()
        return self._target.host(port)

    def download_url(
        self, path: str, user: Optional[str] = None, use_signature_expiration: Optional[int] = None
    ) -> str:
        """A URL that downloads `path` without the SDK (see `Sandbox.download_url`)."""
        self._live()
        return signed_url(self._target, path, "read", user, use_signature_expiration)

    def upload_url(
        self, path: Optional[str] = None, user: Optional[str] = None, use_signature_expiration: Optional[int] = None
    ) -> str:
        """A URL that uploads to `path` without the SDK (see `Sandbox.upload_url`)."""
        self._live()
        return signed_url(self._target, path or "", "write", user, use_signature_expiration)

    # --- code ----------------------------------------------------------------------------------

    async def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[Context] = None,
        on_stdout: Optional[Callable[[OutputMessage], Any]] = None,
        on_stderr: Optional[Callable[[OutputMessage], Any]] = None,
        on_result: Optional[Callable[[Result], Any]] = None,
        on_results: Optional[Callable[[Result], Any]] = None,
        on_error: Optional[Callable[[ExecutionError], Any]] = None,
        envs: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> Execution:
        """Runs `code` in the code interpreter (see `Sandbox.run_code`)."""
        if cwd is None and context is None:
            cwd = self._cwd
        return await self.notebook.run_code(
            code,
            language=language,
            context=context,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_result=on_result,
            on_results=on_results,
            on_error=on_error,
            envs=envs,
            cwd=cwd,
            timeout=timeout,
            request_timeout=request_timeout,
        )

    async def create_code_context(
        self, cwd: Optional[str] = None, language: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> Context:
        """A new code context with its own kernel (see `Sandbox.create_code_context`)."""
        return await self.notebook.create_code_context(
            cwd=cwd if cwd is not None else self._cwd, language=language, request_timeout=request_timeout
        )

    async def list_code_contexts(self, request_timeout: Optional[float] = None) -> builtins.list[Context]:
        """The sandbox's code contexts."""
        return await self.notebook.list_code_contexts(request_timeout=request_timeout)

    async def restart_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Restarts the kernel of `context`."""
        await self.notebook.restart_code_context(context, request_timeout=request_timeout)

    async def remove_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Removes `context` and ends its kernel."""
        await self.notebook.remove_code_context(context, request_timeout=request_timeout)

    async def _api(self, call: api.Call[T], request_timeout: Optional[float] = None) -> T:
        return await api.arun(self._client(), self._config, call, request_timeout)

    # --- lifetime ------------------------------------------------------------------------------

    async def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """Whether the sandbox is running and its agent answers."""
        client = self._client()
        try:
            response = await client.get(
                f"{self._target.base_url(ENVD_PORT)}/health",
                headers=self._target.headers(ENVD_PORT),
                timeout=self._config.timeout(request_timeout),
            )
        except httpx.HTTPError as err:
            raise transport_error(err, self.sandbox_id) from err
        if response.status_code == 502:
            return False
        if response.status_code >= 300:
            raise sandbox_http_error(response.status_code, response.text, self.sandbox_id)
        return True

    async def _kill(self, request_timeout: Optional[float] = None) -> bool:
        """Ends the sandbox now; True if it was running, False if it was already gone."""
        killed = await self._api(api.kill(self.sandbox_id), request_timeout)
        self._closed = True
        return killed

    kill = hybridmethod(_kill_by_id, _kill)
    """`await sandbox.kill()` / `await AsyncSandbox.kill(sandbox_id)`: True if it was running."""

    async def _set_timeout(self, timeout: int, request_timeout: Optional[float] = None) -> None:
        """The sandbox ends `timeout` seconds from now."""
        await self._api(api.set_timeout(self.sandbox_id, timeout), request_timeout)

    set_timeout = hybridmethod(_set_timeout_by_id, _set_timeout)
    """`await sandbox.set_timeout(seconds)` / `await AsyncSandbox.set_timeout(sandbox_id, seconds)`."""

    async def _get_info(self, request_timeout: Optional[float] = None) -> SandboxInfo:
        """What the server knows about this sandbox."""
        return await self._api(api.get_info(self.sandbox_id), request_timeout)

    get_info = hybridmethod(_get_info_by_id, _get_info)
    """`await sandbox.get_info()` / `await AsyncSandbox.get_info(sandbox_id)`: a `SandboxInfo`."""

    async def _get_metrics(
        self, start: Optional[datetime] = None, end: Optional[datetime] = None, request_timeout: Optional[float] = None
    ) -> builtins.list[SandboxMetrics]:
        """Samples of this sandbox's CPU, memory and disk use."""
        return await self._api(api.metrics(self.sandbox_id, start, end), request_timeout)

    get_metrics = hybridmethod(_get_metrics_by_id, _get_metrics)
    """`await sandbox.get_metrics()` / `await AsyncSandbox.get_metrics(sandbox_id)`."""

    async def _pause(self, request_timeout: Optional[float] = None) -> bool:
        """Pauses the sandbox; `connect` resumes it. False if it already was paused."""
        return await self._api(api.pause(self.sandbox_id), request_timeout)

    pause = hybridmethod(_pause_by_id, _pause)
    """`await sandbox.pause()` / `await AsyncSandbox.pause(sandbox_id)`."""

    async def close(self) -> None:
        """Ends the sandbox and releases this object's connections (what leaving `async with` does)."""
        if self._created is None:
            self._plan = None
            return
        try:
            if not self._closed:
                await self._kill()
        finally:
            self._closed = True
            if self._http is not None:
                await self._http.aclose()

    async def __aenter__(self) -> AsyncSandbox:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        if self._created is None:
            return "AsyncSandbox(<not started>)"
        return f"AsyncSandbox(sandbox_id={self.sandbox_id!r}, template_id={self.template_id!r})"


class AsyncCodeInterpreter(AsyncSandbox):
    """The former name of `AsyncSandbox`, kept so older code still runs; it warns when used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Describes an `AsyncSandbox` (see there), with a DeprecationWarning."""
        warnings.warn(
            "AsyncCodeInterpreter is deprecated: use AsyncSandbox, which has the same API",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
