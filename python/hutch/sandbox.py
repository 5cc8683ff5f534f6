# Generated from python/hutch/sandbox_async.py by scripts/gen-sync-sdk.py: do not edit.
# Change the asyncio module and run `python3 scripts/gen-sync-sdk.py` (python/README.md, "Developing the SDK").
"""`Sandbox`: one isolated, stateful sandbox, driven with blocking calls."""

from __future__ import annotations

import builtins
import warnings
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

import httpx

from . import api
from ._config import ENVD_PORT, ConnectionConfig, SandboxTarget, tls_context
from ._connect import Rpc
from ._errors import sandbox_http_error, transport_error
from ._hybrid import hybridmethod
from .api import SandboxInfo, SandboxMetrics, SandboxQuery
from .code import Notebook
from .commands import Commands
from .exceptions import FilesystemError, ProcessError, SandboxException, TerminalError
from .filesystem import Filesystem
from .filesystem_models import signed_url
from .models import Context, Execution, ExecutionError, OutputMessage, Result
from .pty import Pty

if TYPE_CHECKING:
    from types import TracebackType

    from .sandbox_async import AsyncSandbox

DEFAULT_TEMPLATE = "code-interpreter-v1"
"""The template of a sandbox created without one: Python, JavaScript/TypeScript, R, Java and bash kernels."""

T = TypeVar("T")


def _client(config: ConnectionConfig) -> httpx.Client:
    return httpx.Client(
        timeout=config.request_timeout,
        limits=httpx.Limits(max_keepalive_connections=20),
        verify=tls_context(),
    )


class SandboxPaginator(list[SandboxInfo]):
    """The sandboxes `Sandbox.list` found: a list of the first page, and a way to fetch the rest.

    Iterate it like a list, or page through everything as with E2B's SDK:
    `while paginator.has_next: items = paginator.next_items()`.
    """

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

    def next_items(self, request_timeout: Optional[float] = None) -> list[SandboxInfo]:
        """The next page: the first call returns the page already fetched, later calls fetch more."""
        if self._pending is not None:
            items, self._pending = self._pending, None
            return items
        if self.next_token is None:
            return []
        with _client(self._config) as client:
            call = api.list_page(self._query, self._limit, self.next_token)
            page = api.run(client, self._config, call, request_timeout)
        self.next_token = page.next_token
        return page.items


def _once(call: api.Call[T], api_key: Optional[str], request_timeout: Optional[float], options: dict[str, Any]) -> T:
    """Runs one control-plane call with a client of its own: what the class-level methods do."""
    config = ConnectionConfig.resolve(api_key, request_timeout=request_timeout, **options)
    with _client(config) as client:
        return api.run(client, config, call, request_timeout)


# The class-level forms of the hybrid methods below (`Sandbox.kill(sandbox_id)`, ...).


def _kill_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> bool:
    return _once(api.kill(sandbox_id), api_key, request_timeout, options)


def _set_timeout_by_id(
    self: type,
    sandbox_id: str,
    timeout: int,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> None:
    return _once(api.set_timeout(sandbox_id, timeout), api_key, request_timeout, options)


def _get_info_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> SandboxInfo:
    return _once(api.get_info(sandbox_id), api_key, request_timeout, options)


def _get_metrics_by_id(
    self: type,
    sandbox_id: str,
    start: Optional[datetime] = None,
    end: Optional[datetime] = None,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> builtins.list[SandboxMetrics]:
    return _once(api.metrics(sandbox_id, start, end), api_key, request_timeout, options)


def _pause_by_id(
    self: type,
    sandbox_id: str,
    api_key: Optional[str] = None,
    request_timeout: Optional[float] = None,
    **options: Any,
) -> bool:
    return _once(api.pause(sandbox_id), api_key, request_timeout, options)


class Sandbox:
    """A sandbox running code in isolation: a Jupyter-like code interpreter whose state persists
    between calls, plus its filesystem, processes and terminals.

    `Sandbox()` creates one (from the `code-interpreter-v1` template unless told
    otherwise) and `Sandbox(sandbox_id=...)` connects to a running one. Use it as a
    context manager to end the sandbox when the block ends:

        with Sandbox() as sandbox:
            sandbox.run_code("x = 1")
            print(sandbox.run_code("x += 1; x").text)  # 2

    `async with Sandbox() as sandbox:` works too: the block then gets an `AsyncSandbox` on the
    same sandbox, whose methods are awaited.
    """

    default_template = DEFAULT_TEMPLATE
    """The template `Sandbox()` uses when none is given."""

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
        """Creates a sandbox, or connects to the running sandbox `sandbox_id`.

        :param template: template name or id (default `code-interpreter-v1`).
        :param api_key: API key (default `HUTCH_API_KEY`, then `E2B_API_KEY`).
        :param cwd: working directory of `run_code`, new code contexts, commands and terminals
            (default the user's home).
        :param envs: environment variables of everything that runs in the sandbox.
        :param timeout: seconds the sandbox lives (default 300); extend it with `set_timeout`.
            With `sandbox_id`, the sandbox's end time is moved out to at least this far.
        :param metadata: key-value pairs stored with the sandbox (`Sandbox.list` filters on them).
        :param sandbox_id: connect to this running (or paused) sandbox instead of creating one.
        :param request_timeout: seconds one HTTP request may take (default 30; 0 for no limit).
        :param api_url: the server (default `HUTCH_API_URL`, `E2B_API_URL`, then `http://127.0.0.1:49982`).
        :param sandbox_url: where sandbox traffic goes (default `HUTCH_SANDBOX_URL`, `E2B_SANDBOX_URL`,
            then the server's own address).
        :param domain: domain of per-sandbox hosts (`{port}-{sandbox_id}.{domain}`), for E2B-style servers.
        :param secure: kept for E2B compatibility; a hutch server secures every sandbox whatever it says.
        :param allow_internet_access: let the sandbox reach the internet (default True).
        :param auto_pause: pause instead of ending when the timeout is reached.
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
        self._http: Optional[httpx.Client] = None
        self._closed = False
        self._start()

    def _start(self) -> Sandbox:
        if self._created is not None:
            return self
        if self._plan is None:
            raise SandboxException("this Sandbox was closed")
        http = _client(self._config)
        try:
            created = api.run(http, self._config, self._plan)
        except BaseException:
            http.close()
            raise
        self._setup(http, created)
        return self

    @classmethod
    def _attached(cls, config: ConnectionConfig, created: api.Created, cwd: Optional[str]) -> Sandbox:
        sandbox = cls.__new__(cls)
        sandbox._config = config
        sandbox._cwd = cwd
        sandbox._plan = None
        sandbox._closed = False
        sandbox._setup(_client(config), created)
        return sandbox

    def _setup(self, http: httpx.Client, created: api.Created) -> None:
        self._http = http
        self._created = created
        self._target = SandboxTarget(
            sandbox_id=created.sandbox_id,
            config=self._config,
            envd_access_token=created.envd_access_token,
            traffic_access_token=created.traffic_access_token,
            domain=created.domain,
        )
        self._files = Filesystem(Rpc(http, self._target, FilesystemError), http, self._target)
        self._commands = Commands(Rpc(http, self._target, ProcessError), self._target, lambda: self._cwd)
        self._pty = Pty(Rpc(http, self._target, TerminalError), self._target, lambda: self._cwd)
        self._notebook = Notebook(http, self._target)

    def _live(self) -> api.Created:
        if self._created is None:
            raise SandboxException(
                "this Sandbox has not been started: use `Sandbox.create(...)`, "
                "`Sandbox(...)` or `with Sandbox(...) as sandbox`"
            )
        return self._created

    def _client(self) -> httpx.Client:
        self._live()
        assert self._http is not None
        return self._http

    # --- creating and finding sandboxes -------------------------------------------------------

    @classmethod
    def create(
        cls,
        template: Optional[str] = None,
        api_key: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[dict[str, str]] = None,
        timeout: Optional[int] = None,
        metadata: Optional[dict[str, str]] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> Sandbox:
        """Creates a sandbox; the same as `Sandbox(...)` (keyword options as there)."""
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
        return sandbox._start()

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        timeout: Optional[int] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> Sandbox:
        """Connects to the running sandbox `sandbox_id` (resuming it if it is paused).

        Raises `SandboxNotFoundException` (a `NotFoundError`) if there is no such sandbox.
        """
        sandbox = cls(
            sandbox_id=sandbox_id, api_key=api_key, timeout=timeout, request_timeout=request_timeout, **options
        )
        return sandbox._start()

    @classmethod
    def reconnect(cls, sandbox_id: str, api_key: Optional[str] = None, **options: Any) -> Sandbox:
        """Connects to the running sandbox `sandbox_id`; another name of `Sandbox.connect`."""
        return cls.connect(sandbox_id, api_key=api_key, **options)

    @classmethod
    def list(
        cls,
        api_key: Optional[str] = None,
        query: Optional[SandboxQuery] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        request_timeout: Optional[float] = None,
        **options: Any,
    ) -> SandboxPaginator:
        """The sandboxes of this server, newest first: running and paused ones unless `query` says otherwise.

        The result is a list of the first page (`limit` sandboxes, or the server's page size);
        `has_next` / `next_items()` page through the rest.
        """
        config = ConnectionConfig.resolve(api_key, request_timeout=request_timeout, **options)
        with _client(config) as client:
            page = api.run(client, config, api.list_page(query, limit, next_token), request_timeout)
        return SandboxPaginator(config, query, limit, page)

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
    def files(self) -> Filesystem:
        """The sandbox's filesystem: read, write, list, watch."""
        self._live()
        return self._files

    @property
    def filesystem(self) -> Filesystem:
        """The sandbox's filesystem (the seed API's name of `files`)."""
        return self.files

    @property
    def commands(self) -> Commands:
        """Processes in the sandbox: run commands, list, kill, send input."""
        self._live()
        return self._commands

    @property
    def process(self) -> Commands:
        """Processes in the sandbox (the seed API's name of `commands`)."""
        return self.commands

    @property
    def pty(self) -> Pty:
        """Interactive terminals (PTYs) in the sandbox."""
        self._live()
        return self._pty

    @property
    def terminal(self) -> Pty:
        """Interactive terminals in the sandbox (the seed API's name of `pty`)."""
        return self.pty

    @property
    def notebook(self) -> Notebook:
        """The code interpreter: `notebook.exec_cell(code)` runs code like `run_code`."""
        self._live()
        return self._notebook

    def get_host(self, port: int) -> str:
        """The host name that reaches `port` inside the sandbox (for a server your code starts there)."""
        self._live()
        return self._target.host(port)

    def download_url(
        self, path: str, user: Optional[str] = None, use_signature_expiration: Optional[int] = None
    ) -> str:
        """A URL that downloads `path` from the sandbox without the SDK (signed when the sandbox is secure).

        :param use_signature_expiration: seconds the signature stays valid (default: no expiry).
        """
        self._live()
        return signed_url(self._target, path, "read", user, use_signature_expiration)

    def upload_url(
        self, path: Optional[str] = None, user: Optional[str] = None, use_signature_expiration: Optional[int] = None
    ) -> str:
        """A URL that uploads a file to `path` in the sandbox with a multipart POST, without the SDK."""
        self._live()
        return signed_url(self._target, path or "", "write", user, use_signature_expiration)

    # --- code ----------------------------------------------------------------------------------

    def run_code(
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
        """Runs `code` in the sandbox's code interpreter and returns what it printed and produced.

        State persists between calls, per language (or per `context`). Output streams to the
        callbacks as it happens; each may be a plain function or an `async def`. An exception
        raised by the code is reported in `Execution.error`, not raised.

        :param language: `python` (default), `javascript`/`js`, `typescript`/`ts`, `r`, `java` or `bash`.
        :param context: a context from `create_code_context` (instead of `language`).
        :param on_stdout: called with each piece of stdout (`OutputMessage`: line, timestamp, error).
        :param on_stderr: called with each piece of stderr.
        :param on_result: called with each rich result (`Result`: text, png, html, chart, ...).
        :param on_results: the seed API's name of `on_result` (both may be given).
        :param on_error: called with the code's error, if it raises.
        :param envs: environment variables for this run only.
        :param cwd: run in this directory (a context in it is made or reused); default the sandbox's `cwd`.
        :param timeout: seconds the code may run (default 300); on expiry the kernel is interrupted and
            `TimeoutException` is raised; its state is kept.
        :param request_timeout: seconds to wait for the interpreter to accept the request.
        """
        if cwd is None and context is None:
            cwd = self._cwd
        return self.notebook.run_code(
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

    def create_code_context(
        self, cwd: Optional[str] = None, language: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> Context:
        """A new code context: its own kernel and state, in `cwd` (default the sandbox's `cwd`, else home)."""
        return self.notebook.create_code_context(
            cwd=cwd if cwd is not None else self._cwd, language=language, request_timeout=request_timeout
        )

    def list_code_contexts(self, request_timeout: Optional[float] = None) -> builtins.list[Context]:
        """The sandbox's code contexts, the default ones included."""
        return self.notebook.list_code_contexts(request_timeout=request_timeout)

    def restart_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Restarts the kernel of `context`: its state is lost, its id and cwd stay."""
        self.notebook.restart_code_context(context, request_timeout=request_timeout)

    def remove_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Removes `context` and ends its kernel."""
        self.notebook.remove_code_context(context, request_timeout=request_timeout)

    def _api(self, call: api.Call[T], request_timeout: Optional[float] = None) -> T:
        return api.run(self._client(), self._config, call, request_timeout)

    # --- lifetime ------------------------------------------------------------------------------

    def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """Whether the sandbox is running and its agent answers."""
        client = self._client()
        try:
            response = client.get(
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

    def _kill(self, request_timeout: Optional[float] = None) -> bool:
        """Ends the sandbox now; True if it was running, False if it was already gone."""
        killed = self._api(api.kill(self.sandbox_id), request_timeout)
        self._closed = True
        return killed

    kill = hybridmethod(_kill_by_id, _kill)
    """`sandbox.kill()` ends this sandbox; `Sandbox.kill(sandbox_id, api_key=None)` ends any.
    Both return True if the sandbox was running and False if there was no such sandbox."""

    def _set_timeout(self, timeout: int, request_timeout: Optional[float] = None) -> None:
        """The sandbox ends `timeout` seconds from now (shorter or longer than before)."""
        self._api(api.set_timeout(self.sandbox_id, timeout), request_timeout)

    set_timeout = hybridmethod(_set_timeout_by_id, _set_timeout)
    """`sandbox.set_timeout(seconds)` / `Sandbox.set_timeout(sandbox_id, seconds)`: the
    sandbox ends that many seconds from now."""

    def _get_info(self, request_timeout: Optional[float] = None) -> SandboxInfo:
        """What the server knows about this sandbox."""
        return self._api(api.get_info(self.sandbox_id), request_timeout)

    get_info = hybridmethod(_get_info_by_id, _get_info)
    """`sandbox.get_info()` / `Sandbox.get_info(sandbox_id)`: a `SandboxInfo`."""

    def _get_metrics(
        self, start: Optional[datetime] = None, end: Optional[datetime] = None, request_timeout: Optional[float] = None
    ) -> builtins.list[SandboxMetrics]:
        """Samples of this sandbox's CPU, memory and disk use between `start` and `end`."""
        return self._api(api.metrics(self.sandbox_id, start, end), request_timeout)

    get_metrics = hybridmethod(_get_metrics_by_id, _get_metrics)
    """`sandbox.get_metrics()` / `Sandbox.get_metrics(sandbox_id)`: samples of resource use."""

    def _pause(self, request_timeout: Optional[float] = None) -> bool:
        """Pauses the sandbox (its processes are frozen); `Sandbox.connect` resumes it. False if already
        paused."""
        return self._api(api.pause(self.sandbox_id), request_timeout)

    pause = hybridmethod(_pause_by_id, _pause)
    """`sandbox.pause()` / `Sandbox.pause(sandbox_id)`: freezes the sandbox until it is
    connected to again."""

    def close(self) -> None:
        """Ends the sandbox and releases this object's connections (what leaving a `with` block does).

        Closing twice, or closing a sandbox that already ended, is fine.
        """
        if self._created is None:
            self._plan = None
            return
        try:
            if not self._closed:
                self._kill()
        finally:
            self._closed = True
            if self._http is not None:
                self._http.close()

    def __enter__(self) -> Sandbox:
        return self._start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    async def __aenter__(self) -> AsyncSandbox:
        from .sandbox_async import AsyncSandbox

        self._async = AsyncSandbox._attached(self._config, self._live(), self._cwd)
        return self._async

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            await self._async.close()
        finally:
            self._closed = True
            if self._http is not None:
                self._http.close()

    def __repr__(self) -> str:
        if self._created is None:
            return "Sandbox(<not started>)"
        return f"Sandbox(sandbox_id={self.sandbox_id!r}, template_id={self.template_id!r})"


class CodeInterpreter(Sandbox):
    """The former name of `Sandbox`, kept so older code still runs; it warns when used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Creates a `Sandbox` (see there), with a DeprecationWarning."""
        warnings.warn(
            "CodeInterpreter is deprecated: use Sandbox, which has the same API",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
