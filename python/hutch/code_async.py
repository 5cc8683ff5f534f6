"""The code interpreter (port 49999), asyncio API: `AsyncNotebook` runs code and manages code contexts.

`await sandbox.run_code(...)` and `await sandbox.notebook.exec_cell(...)` both end up in
`AsyncNotebook.run_code`. The request building, error mapping and timeout rules live in
`hutch._code` and the stream parsing in `hutch.models`, shared by the asyncio and the blocking API.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import httpx

from ._callbacks import call_async
from ._code import (
    DEFAULT_EXECUTION_TIMEOUT,
    PROBE_TIMEOUT,
    Deadline,
    OnError,
    OnOutput,
    OnResult,
    check_run_arguments,
    connection_error,
    context_body,
    context_id_of,
    contexts_from_json,
    execute_body,
    execution_timed_out,
    execution_timeouts,
    find_context,
    health_answer_running,
    interpreter_error,
    is_lost_connection,
    normalize_cwd,
    read_json,
    result_handlers,
    sandbox_killed,
)
from ._concurrency import AsyncLock
from ._config import CODE_INTERPRETER_PORT, SandboxTarget
from ._errors import amessage_of, message_of
from .exceptions import NotFoundError
from .models import Context, Execution, ExecutionParser, normalize_language, utc_now

__all__ = ["DEFAULT_EXECUTION_TIMEOUT", "AsyncNotebook"]


class AsyncNotebook:
    """The sandbox's code interpreter, in asyncio code: stateful code execution, as in a Jupyter
    notebook.

    Reach it as `sandbox.notebook` of an `AsyncSandbox`; `await sandbox.run_code(...)` and the
    `*_code_context` methods of the sandbox are the same calls. Each language has a default context
    (a kernel and its state); `create_code_context` makes more. Callbacks may be plain functions or
    `async def` ones (each run to completion, in order).
    """

    def __init__(self, client: httpx.AsyncClient, target: SandboxTarget) -> None:
        """A notebook sending its requests with `client` to the sandbox `target`."""
        self._client = client
        self._target = target
        self._cwd_contexts: dict[tuple[str, str], Context] = {}
        self._lock = AsyncLock()

    def _url(self, path: str) -> str:
        return f"{self._target.base_url(CODE_INTERPRETER_PORT)}{path}"

    def _headers(self) -> dict[str, str]:
        return self._target.headers(CODE_INTERPRETER_PORT)

    # --- running code ---------------------------------------------------------------------------

    async def run_code(
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
        `async def` (run to completion before the next output is handled).

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
            found = await self._context_in(key, request_timeout)
            try:
                return await self._execute(
                    code, None, found.id, envs, timeout, request_timeout, on_stdout, on_stderr, handlers, on_error
                )
            except NotFoundError:
                # Someone removed the context since: make a new one, once.
                async with self._lock.hold():
                    if self._cwd_contexts.get(key) is found:
                        del self._cwd_contexts[key]
            found = await self._context_in(key, request_timeout)
            return await self._execute(
                code, None, found.id, envs, timeout, request_timeout, on_stdout, on_stderr, handlers, on_error
            )
        return await self._execute(
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

    async def exec_cell(
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
        return await self.run_code(
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

    async def _execute(
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
            async with self._client.stream(
                "POST",
                self._url("/execute"),
                json=execute_body(code, language, context_id, envs),
                headers=self._headers(),
                timeout=http_timeout,
            ) as response:
                if response.status_code >= 300:
                    raise interpreter_error(response.status_code, await amessage_of(response), sandbox_id)
                async for line in response.aiter_lines():
                    for handler, value in parser.feed(line):
                        await call_async(handler, value)
                    if not parser.finished and deadline.passed():
                        raise execution_timed_out()
        except httpx.HTTPError as err:
            running = await self._running() if is_lost_connection(err) else None
            raise connection_error(err, sandbox_id, True, running) from err
        if not parser.finished:
            raise sandbox_killed()
        return parser.execution

    async def _context_in(self, key: tuple[str, str], request_timeout: Optional[float]) -> Context:
        async with self._lock.hold():
            found = self._cwd_contexts.get(key)
            if found is None:
                language, cwd = key
                found = find_context(await self.list_code_contexts(request_timeout), language, cwd)
                if found is None:
                    found = await self.create_code_context(cwd=cwd, language=language, request_timeout=request_timeout)
                self._cwd_contexts[key] = found
            return found

    # --- contexts -------------------------------------------------------------------------------

    async def _running(self) -> Optional[bool]:
        # After a lost connection: does the sandbox still answer? (None: cannot tell.)
        try:
            response = await self._client.get(self._url("/health"), headers=self._headers(), timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None
        return health_answer_running(response.status_code)

    async def _request(
        self, method: str, path: str, request_timeout: Optional[float], body: Any = None
    ) -> httpx.Response:
        retried = False
        while True:
            try:
                response = await self._client.request(
                    method,
                    self._url(path),
                    json=body,
                    headers=self._headers(),
                    timeout=self._target.config.timeout(request_timeout),
                )
            except httpx.HTTPError as err:
                if not is_lost_connection(err):
                    raise connection_error(err, self._target.sandbox_id, False) from err
                running = await self._running()
                if retried or not (running and method == "GET"):
                    raise connection_error(err, self._target.sandbox_id, False, running) from err
                # A kept-alive connection the server had closed: a read is safe to send again.
                retried = True
                continue
            if response.status_code >= 300:
                raise interpreter_error(response.status_code, message_of(response), self._target.sandbox_id)
            return response

    async def create_code_context(
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
        response = await self._request("POST", "/contexts", request_timeout, context_body(cwd, language))
        return Context.from_json(read_json(response))

    async def list_code_contexts(self, request_timeout: Optional[float] = None) -> list[Context]:
        """Every context of the sandbox, oldest first, the languages' default contexts included."""
        return contexts_from_json(read_json(await self._request("GET", "/contexts", request_timeout)))

    async def restart_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Restarts the kernel of `context` (a `Context` or its id): its state is lost; its id,
        language and directory stay.

        :raises NotFoundError: no context has that id (also a `CodeExecutionError`).
        """
        await self._request("POST", f"/contexts/{context_id_of(context)}/restart", request_timeout)

    async def remove_code_context(self, context: Union[Context, str], request_timeout: Optional[float] = None) -> None:
        """Removes `context` (a `Context` or its id) and ends its kernel.

        :raises NotFoundError: no context has that id (also a `CodeExecutionError`).
        """
        context_id = context_id_of(context)
        await self._request("DELETE", f"/contexts/{context_id}", request_timeout)
        async with self._lock.hold():
            for key in [k for k, c in self._cwd_contexts.items() if c.id == context_id]:
                del self._cwd_contexts[key]
