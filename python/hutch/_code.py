"""What `Notebook` and `AsyncNotebook` share: request building, error mapping and timeout rules.

Wire (`docs/wire.md` §4): `POST /execute` with `{"code", "context_id", "language",
"env_vars"}` answers NDJSON; `/contexts` creates, lists, restarts and removes contexts. The
stream parsing lives in `hutch.models`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Union

import httpx

from ._errors import sandbox_http_error, transport_error
from .exceptions import (
    CodeExecutionError,
    E2BException,
    InvalidArgumentException,
    SandboxException,
    TimeoutException,
    in_domain,
)
from .models import Context, ExecutionError, OutputMessage, Result, normalize_language

DEFAULT_EXECUTION_TIMEOUT = 300.0
"""Seconds code may run unless `run_code` is told otherwise (E2B's default too)."""

OnOutput = Callable[[OutputMessage], Any]
OnResult = Callable[[Result], Any]
OnError = Callable[[ExecutionError], Any]


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
