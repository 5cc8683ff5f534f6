"""The code interpreter (port 49999), blocking: `Notebook` runs code and manages code contexts.

`sandbox.run_code(...)` and `sandbox.notebook.exec_cell(...)` both end up in `Notebook.run_code`.
The request building, error mapping and timeout rules here are shared with `AsyncNotebook`
(`hutch.code_async`); the stream parsing lives in `hutch.models`.

Wire (`shared/docs/e2b-wire.md` §4): `POST /execute` with `{"code", "context_id", "language",
"env_vars"}` answers NDJSON; `/contexts` creates, lists, restarts and removes contexts.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Union

import httpx

from ._callbacks import call_sync
from ._config import CODE_INTERPRETER_PORT, SandboxTarget
from ._errors import message_of, sandbox_http_error, transport_error
from .exceptions import (
    CodeExecutionError,
    E2BException,
    InvalidArgumentException,
    NotFoundError,
    SandboxException,
    TimeoutException,
    in_domain,
)
from .models import (
    Context,
    Execution,
    ExecutionError,
    ExecutionParser,
    OutputMessage,
    Result,
    normalize_language,
    utc_now,
)

__all__ = ["DEFAULT_EXECUTION_TIMEOUT", "Notebook"]

DEFAULT_EXECUTION_TIMEOUT = 300.0
"""Seconds code may run unless `run_code` is told otherwise (E2B's default too)."""

OnOutput = Callable[[OutputMessage], Any]
OnResult = Callable[[Result], Any]
OnError = Callable[[ExecutionError], Any]


# --- shared by Notebook and AsyncNotebook -------------------------------------------------------


def execution_timed_out() -> SandboxException:
    """The error of code that ran past its `timeout`."""
    return in_domain(TimeoutException, CodeExecutionError)(
        "Execution timed out: the code ran longer than 'timeout' allows (pass a larger 'timeout', or 0 "
        "for no limit). The execution was interrupted; the context and its state are kept."
    )


def request_timed_out() -> SandboxException:
    """The error of a request to the interpreter that got no answer in time."""
    return in_domain(TimeoutException, CodeExecutionError)(
        "Request to the code interpreter timed out: pass a larger 'request_timeout' to allow more time"
    )


def sandbox_killed(detail: str = "") -> SandboxException:
    """The error of an execution whose stream ended before `end_of_execution`."""
    text = (
        "The sandbox was killed while the code was running (it reached its timeout, or was killed). "
        "Give it more time with 'timeout' when creating it, or with 'set_timeout' on a running sandbox."
    )
    if detail:
        text = f"{text} ({detail})"
    return in_domain(TimeoutException, CodeExecutionError)(text)


# The statuses `sandbox_http_error` gives a kind of their own (the rest are a plain CodeExecutionError).
_MAPPED_STATUSES = frozenset({400, 401, 403, 404, 409, 429, 507})


def interpreter_error(status: int, message: str, sandbox_id: Optional[str]) -> E2BException:
    """The exception for an error answer of the interpreter: 404 is `NotFoundError` (an unknown
    context), 400 `InvalidArgumentException`, 502 `TimeoutException` (the sandbox is gone), ...;
    each is also a `CodeExecutionError`."""
    if status == 502:
        return in_domain(TimeoutException, CodeExecutionError)(
            f"{message}: the sandbox is not running; it probably reached its timeout. Give it more time "
            "with 'timeout' when creating it, or with 'set_timeout' on a running sandbox.",
            status_code=status,
        )
    if status in _MAPPED_STATUSES:
        return sandbox_http_error(status, message, sandbox_id, CodeExecutionError)
    return CodeExecutionError(f"{status}: {message}", status_code=status)


PROBE_TIMEOUT = 10.0
"""Seconds the check whether the sandbox still runs may take, after a connection was lost."""


def is_lost_connection(err: httpx.HTTPError) -> bool:
    """Whether `err` is a connection that broke (rather than one never made, or a timeout)."""
    return isinstance(err, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))


def connection_error(
    err: httpx.HTTPError, sandbox_id: Optional[str], executing: bool, running: Optional[bool] = None
) -> E2BException:
    """The exception for a request to the interpreter that failed without an answer.

    `running` says, for a lost connection, whether the sandbox still answered afterwards (None:
    unknown). As in E2B's SDK, a lost connection to a sandbox that is gone is a `TimeoutException`.
    """
    if isinstance(err, httpx.ReadTimeout) and executing:
        return execution_timed_out()
    if isinstance(err, httpx.TimeoutException):
        return request_timed_out()
    if is_lost_connection(err):
        if running is False:
            return sandbox_killed(f"the connection was lost: {err}")
        during = " during the execution" if executing else ""
        return CodeExecutionError(f"The connection to the code interpreter was lost{during}: {err}")
    return transport_error(err, sandbox_id)


def health_answer_running(status: int) -> Optional[bool]:
    """Whether a sandbox whose interpreter answered `GET /health` with `status` is running (None:
    cannot tell)."""
    if status == 502:
        return False
    return True if status < 300 else None


def result_handlers(on_result: Optional[OnResult], on_results: Optional[OnResult]) -> list[Optional[OnResult]]:
    """The handlers of results: `on_result` and the seed's `on_results` (once when they are the same)."""
    return [on_result] if on_results is None or on_results is on_result else [on_result, on_results]


def context_id_of(context: Union[Context, str, None]) -> Optional[str]:
    """The id of a context given as a `Context` or as its id."""
    if context is None:
        return None
    return context.id if isinstance(context, Context) else str(context)


def normalize_cwd(cwd: str) -> str:
    """`cwd` without a trailing slash (`/` stays `/`)."""
    return cwd.rstrip("/") or "/"


def check_run_arguments(language: Optional[str], context: Union[Context, str, None], cwd: Optional[str]) -> None:
    """Refuses the combinations `run_code` cannot honour: a context with a language, or with
    another cwd than its own."""
    if context is not None and language:
        raise in_domain(InvalidArgumentException, CodeExecutionError)(
            "You can provide context or language, but not both at the same time."
        )
    if context is not None and cwd is not None:
        own = context.cwd if isinstance(context, Context) else None
        if own is None or normalize_cwd(own) != normalize_cwd(cwd):
            raise in_domain(InvalidArgumentException, CodeExecutionError)(
                "You can provide context or cwd, but not both: a context runs in its own directory."
            )


def execute_body(
    code: str, language: Optional[str], context_id: Optional[str], envs: Optional[dict[str, str]]
) -> dict[str, Any]:
    """The JSON body of `POST /execute` (E2B's: every key present, null when unset)."""
    return {
        "code": code,
        "context_id": context_id,
        "language": None if context_id else language,
        "env_vars": dict(envs) if envs is not None else None,
    }


def context_body(cwd: Optional[str], language: Optional[str]) -> dict[str, str]:
    """The JSON body of `POST /contexts`: only what was given."""
    body: dict[str, str] = {}
    if language:
        body["language"] = language
    if cwd:
        body["cwd"] = cwd
    return body


def execution_timeouts(timeout: Optional[float], connect: Optional[float]) -> tuple[httpx.Timeout, Optional[float]]:
    """The httpx timeouts of an `/execute` request, and the execution's limit in seconds (None for
    none): `timeout` bounds the execution (None → 300 s, 0 → no limit), `connect` only the
    connection."""
    limit = DEFAULT_EXECUTION_TIMEOUT if timeout is None else (None if timeout == 0 else float(timeout))
    if limit is None:
        return httpx.Timeout(None, connect=connect), None
    return httpx.Timeout(limit, connect=connect), limit


class Deadline:
    """When an execution must have ended (monotonic clock); None means never."""

    def __init__(self, seconds: Optional[float]) -> None:
        """A deadline `seconds` from now."""
        self._at = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return self._at is not None and time.monotonic() >= self._at


def find_context(contexts: list[Context], language: str, cwd: str) -> Optional[Context]:
    """The first of `contexts` of `language` (normalized) running in `cwd`."""
    for context in contexts:
        if normalize_language(context.language) == language and normalize_cwd(context.cwd) == cwd:
            return context
    return None


def contexts_from_json(data: Any) -> list[Context]:
    """The contexts of a `GET /contexts` answer."""
    if not isinstance(data, list):
        raise CodeExecutionError(f"The code interpreter listed its contexts unreadably: {data!r}")
    return [Context.from_json(item) for item in data]


def read_json(response: httpx.Response) -> Any:
    """The JSON body of an interpreter answer."""
    try:
        return response.json()
    except ValueError as err:
        raise CodeExecutionError(f"The code interpreter answered with something other than JSON: {err}") from err


# --- Notebook -----------------------------------------------------------------------------------


class Notebook:
    """The sandbox's code interpreter: stateful code execution, as in a Jupyter notebook.

    Reach it as `sandbox.notebook`; `sandbox.run_code(...)` and the `*_code_context` methods of
    the sandbox are the same calls. Each language has a default context (a kernel and its state);
    `create_code_context` makes more.
    """

    def __init__(self, client: httpx.Client, target: SandboxTarget) -> None:
        """A notebook sending its requests with `client` to the sandbox `target`."""
        self._client = client
        self._target = target
        self._cwd_contexts: dict[tuple[str, str], Context] = {}
        self._lock = threading.Lock()

    def _url(self, path: str) -> str:
        return f"{self._target.base_url(CODE_INTERPRETER_PORT)}{path}"

    def _headers(self) -> dict[str, str]:
        return self._target.headers(CODE_INTERPRETER_PORT)

    # --- running code ---------------------------------------------------------------------------

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Union[Context, str, None] = None,
        on_stdout: Optional[OnOutput] = None,
        on_stderr: Optional[OnOutput] = None,
        on_result: Optional[OnResult] = None,
        on_results: Optional[OnResult] = None,
        on_error: Optional[OnError] = None,
        envs: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> Execution:
        """Runs `code` and returns what it printed, displayed and raised.

        State persists between runs in the same context: by default the language's default
        context. An error raised by the code is `Execution.error`, not an exception. Output is
        streamed to the callbacks as it happens, in order; each may be a plain function or an
        `async def`.

        :param code: the code to run.
        :param language: `python` (default), `javascript`/`js`, `typescript`/`ts`, `r`, `java` or
            `bash`; runs in that language's default context.
        :param context: the context to run in (a `Context` or its id), instead of `language`.
        :param on_stdout: called with an `OutputMessage` for each piece of stdout.
        :param on_stderr: called with an `OutputMessage` for each piece of stderr.
        :param on_result: called with each `Result` (plots, tables, the last expression's value).
        :param on_results: the seed API's name of `on_result`; when both are given, both are called.
        :param on_error: called with the `ExecutionError` when the code raises.
        :param envs: environment variables set for this run only.
        :param cwd: run in this directory. The interpreter has no per-run directory, so the code
            runs in a context of the language in `cwd`: one found among the sandbox's contexts
            (which may be the default context, when that already runs there), else a new one,
            which later runs with the same `cwd` reuse (its state persists between them).
            Cannot be combined with a `context` in another directory.
        :param timeout: seconds the code may run (default 300; 0 for no limit). When it runs
            longer the SDK drops the stream, the interpreter interrupts the code and
            `TimeoutException` is raised; the context keeps its state. The limit is checked as
            output and the interpreter's keepalives arrive, so it may fire a few seconds late.
        :param request_timeout: seconds to wait for the connection (and, with `cwd`, for finding
            or creating its context).
        :raises TimeoutException: the code ran out of time, or the sandbox ended meanwhile.
        :raises NotFoundError: `context` does not exist, or no kernel runs `language` (also a
            `CodeExecutionError`, as is every error of the interpreter).
        :raises InvalidArgumentException: `context` with `language`, or with another `cwd`.
        """
        check_run_arguments(language, context, cwd)
        handlers = result_handlers(on_result, on_results)
        if context is None and cwd is not None:
            key = (normalize_language(language), normalize_cwd(cwd))
            found = self._context_in(key, request_timeout)
            try:
                return self._execute(
                    code, None, found.id, envs, timeout, request_timeout, on_stdout, on_stderr, handlers, on_error
                )
            except NotFoundError:
                # Someone removed the context since: make a new one, once.
                with self._lock:
                    if self._cwd_contexts.get(key) is found:
                        del self._cwd_contexts[key]
            found = self._context_in(key, request_timeout)
            return self._execute(
                code, None, found.id, envs, timeout, request_timeout, on_stdout, on_stderr, handlers, on_error
            )
        return self._execute(
            code,
            language,
            context_id_of(context),
            envs,
            timeout,
            request_timeout,
            on_stdout,
            on_stderr,
            handlers,
            on_error,
        )

    def exec_cell(
        self,
        code: str,
        language: Optional[str] = None,
        context: Union[Context, str, None] = None,
        on_stdout: Optional[OnOutput] = None,
        on_stderr: Optional[OnOutput] = None,
        on_result: Optional[OnResult] = None,
        on_results: Optional[OnResult] = None,
        on_error: Optional[OnError] = None,
        envs: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> Execution:
        """Runs `code` as a notebook cell: the same as `run_code` (see there for the arguments)."""
        return self.run_code(
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

    def _execute(
        self,
        code: str,
        language: Optional[str],
        context_id: Optional[str],
        envs: Optional[dict[str, str]],
        timeout: Optional[float],
        request_timeout: Optional[float],
        on_stdout: Optional[OnOutput],
        on_stderr: Optional[OnOutput],
        on_result: list[Optional[OnResult]],
        on_error: Optional[OnError],
    ) -> Execution:
        http_timeout, limit = execution_timeouts(timeout, self._target.config.timeout(request_timeout))
        deadline = Deadline(limit)
        parser = ExecutionParser(Execution(created_at=utc_now()), on_stdout, on_stderr, on_result, on_error)
        sandbox_id = self._target.sandbox_id
        try:
            with self._client.stream(
                "POST",
                self._url("/execute"),
                json=execute_body(code, language, context_id, envs),
                headers=self._headers(),
                timeout=http_timeout,
            ) as response:
                if response.status_code >= 300:
                    raise interpreter_error(response.status_code, message_of(response), sandbox_id)
                for line in response.iter_lines():
                    for handler, value in parser.feed(line):
                        call_sync(handler, value)
                    if not parser.finished and deadline.passed():
                        raise execution_timed_out()
        except httpx.HTTPError as err:
            running = self._running() if is_lost_connection(err) else None
            raise connection_error(err, sandbox_id, True, running) from err
        if not parser.finished:
            raise sandbox_killed()
        return parser.execution

    def _context_in(self, key: tuple[str, str], request_timeout: Optional[float]) -> Context:
        with self._lock:
            found = self._cwd_contexts.get(key)
            if found is None:
                language, cwd = key
                found = find_context(self.list_code_contexts(request_timeout), language, cwd)
                if found is None:
                    found = self.create_code_context(cwd=cwd, language=language, request_timeout=request_timeout)
                self._cwd_contexts[key] = found
            return found

    # --- contexts -------------------------------------------------------------------------------

    def _running(self) -> Optional[bool]:
        # After a lost connection: does the sandbox still answer? (None: cannot tell.)
        try:
            response = self._client.get(self._url("/health"), headers=self._headers(), timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None
        return health_answer_running(response.status_code)

    def _request(self, method: str, path: str, request_timeout: Optional[float], body: Any = None) -> httpx.Response:
        retried = False
        while True:
            try:
                response = self._client.request(
                    method,
                    self._url(path),
                    json=body,
                    headers=self._headers(),
                    timeout=self._target.config.timeout(request_timeout),
                )
            except httpx.HTTPError as err:
                if not is_lost_connection(err):
                    raise connection_error(err, self._target.sandbox_id, False) from err
                running = self._running()
                if retried or not (running and method == "GET"):
                    raise connection_error(err, self._target.sandbox_id, False, running) from err
                # A kept-alive connection the server had closed: a read is safe to send again.
                retried = True
                continue
            if response.status_code >= 300:
                raise interpreter_error(response.status_code, message_of(response), self._target.sandbox_id)
            return response

    def create_code_context(
        self,
        cwd: Optional[str] = None,
        language: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Context:
        """Creates a context: a kernel of its own, whose state is separate from every other context's.

        :param cwd: its working directory (default the user's home, `/home/user`).
        :param language: its language (default `python`); see `run_code`.
        :param request_timeout: seconds to wait for the interpreter (starting a kernel takes a moment).
        :return: the new context; pass it to `run_code(context=...)`.
        """
        response = self._request("POST", "/contexts", request_timeout, context_body(cwd, language))
        return Context.from_json(read_json(response))

    def list_code_contexts(self, request_timeout: Optional[float] = None) -> list[Context]:
        """Every context of the sandbox, oldest first, the languages' default contexts included."""
        return contexts_from_json(read_json(self._request("GET", "/contexts", request_timeout)))

    def restart_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Restarts the kernel of `context` (a `Context` or its id): its state is lost; its id,
        language and directory stay.

        :raises NotFoundError: no context has that id (also a `CodeExecutionError`).
        """
        self._request("POST", f"/contexts/{context_id_of(context)}/restart", request_timeout)

    def remove_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Removes `context` (a `Context` or its id) and ends its kernel.

        :raises NotFoundError: no context has that id (also a `CodeExecutionError`).
        """
        context_id = context_id_of(context)
        self._request("DELETE", f"/contexts/{context_id}", request_timeout)
        with self._lock:
            for key in [k for k, c in self._cwd_contexts.items() if c.id == context_id]:
                del self._cwd_contexts[key]
