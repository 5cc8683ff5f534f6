"""What running code returns: `Execution`, its `Result`s, `Logs` and `ExecutionError`; the streamed
`OutputMessage`; code `Context`s; and the parsing of the interpreter's NDJSON stream, shared by the
blocking `Notebook` and the async `AsyncNotebook`.

`POST /execute` answers with one JSON object per line (`docs/wire.md` §4):
`number_of_executions`, `stdout`, `stderr`, `result`, `error`, `keepalive` and, last,
`end_of_execution`. `ExecutionParser` folds those lines into an `Execution` and says which user
callback each one is for.
"""

from __future__ import annotations

import json as _json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TypeVar, Union

from ._dictlike import DictLike
from .charts import Chart, chart_from_json
from .exceptions import CodeExecutionError

__all__ = [
    "Context",
    "Execution",
    "ExecutionError",
    "ExecutionParser",
    "Logs",
    "MIMEType",
    "OutputHandler",
    "OutputHandlerWithAsync",
    "OutputMessage",
    "Result",
    "RunCodeLanguage",
    "serialize_results",
]

logger = logging.getLogger(__name__)

RunCodeLanguage = str
"""A language the code interpreter runs: `python` (the default), `javascript` (or `js`),
`typescript` (or `ts`), `r`, `java` or `bash`."""

T = TypeVar("T")

OutputHandler = Callable[[T], Any]
"""A callback of streamed output (`OutputHandler[OutputMessage]`, `OutputHandler[Result]`, ...); it may
be a plain function or an `async def` one."""

OutputHandlerWithAsync = Callable[[T], Any]
"""E2B's name of `OutputHandler` for the async API (the same thing: either kind of callback works)."""

_LANGUAGE_ALIASES = {"js": "javascript", "ts": "typescript"}


def normalize_language(language: Optional[str]) -> str:
    """`language` as the interpreter names it: lowercase, `js` → `javascript`, `ts` → `typescript`,
    nothing → `python`."""
    name = (language or "").strip().lower()
    return _LANGUAGE_ALIASES.get(name, name) or "python"


# --- time ---------------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def now_ns() -> int:
    """The current time as Unix epoch nanoseconds."""
    return time.time_ns()


def utc_now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(timezone.utc)


def epoch_ns(value: Any) -> int:
    """A timestamp the interpreter sent (ISO 8601 text, or epoch nanoseconds) as Unix epoch
    nanoseconds; the current time when there is none or it cannot be read."""
    if isinstance(value, bool):
        return now_ns()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        text = _FRACTION.sub(lambda m: m.group(1).ljust(7, "0"), text, count=1)  # 3.9 wants 3 or 6 digits
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return now_ns()
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return now_ns()


# --- streamed output ----------------------------------------------------------------------------


class OutputMessage(DictLike):
    """A piece of output the code wrote to stdout or stderr, as `on_stdout` / `on_stderr` receive it.

    It reads as attributes and as a dict: `message.line` or `message["line"]`, `message.get("error")`.
    """

    _fields = ("line", "timestamp", "error")

    line: str
    """The text written (usually ending in a newline; one write may hold several lines)."""
    timestamp: int
    """When it was written, as Unix epoch nanoseconds."""
    error: bool
    """True for stderr, False for stdout."""

    def __init__(self, line: str, timestamp: Any = None, error: bool = False) -> None:
        """A message of `line`, written at `timestamp` (epoch nanoseconds or ISO 8601; default now)."""
        self.line = line
        self.timestamp = epoch_ns(timestamp)
        self.error = error

    def __str__(self) -> str:
        return self.line

    def __repr__(self) -> str:
        return f"OutputMessage(line={self.line!r}, timestamp={self.timestamp}, error={self.error})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OutputMessage):
            return NotImplemented
        return (self.line, self.timestamp, self.error) == (other.line, other.timestamp, other.error)

    __hash__ = None  # type: ignore[assignment]


class ExecutionError(DictLike):
    """An error the code raised (an exception in Python, an error in other languages).

    This is not raised by the SDK: it is `Execution.error`, and what `on_error` receives.
    """

    _fields = ("name", "value", "traceback")

    name: str
    """The error's name (in Python, the exception class: `NameError`)."""
    value: str
    """The error's message (`name 'x' is not defined`)."""
    traceback: str
    """The traceback, as the kernel formatted it (it may hold ANSI colour codes)."""

    def __init__(self, name: str, value: str, traceback: str, **_: Any) -> None:
        """An error named `name`, with message `value` and its `traceback`."""
        self.name = name
        self.value = value
        self.traceback = traceback

    def to_json(self) -> str:
        """The error as a JSON object text: `{"name", "value", "traceback"}`."""
        return _json.dumps({"name": self.name, "value": self.value, "traceback": self.traceback})

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"

    def __repr__(self) -> str:
        return f"ExecutionError(name={self.name!r}, value={self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExecutionError):
            return NotImplemented
        return (self.name, self.value, self.traceback) == (other.name, other.value, other.traceback)

    __hash__ = None  # type: ignore[assignment]


# --- results ------------------------------------------------------------------------------------


class MIMEType(str):
    """A MIME type, such as `image/png`."""


# Result field → the MIME type it carries, in the order the interpreter maps them.
_FIELD_MIME: tuple[tuple[str, str], ...] = (
    ("text", "text/plain"),
    ("html", "text/html"),
    ("markdown", "text/markdown"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpeg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("latex", "text/latex"),
    ("json", "application/json"),
    ("javascript", "application/javascript"),
    ("data", "e2b/data"),
    ("chart", "e2b/chart"),
)
_MIME_FIELD = {mime: field for field, mime in _FIELD_MIME}
_FIELD_TO_MIME = dict(_FIELD_MIME)

# Which format is a result's main one: the richest present (extra MIME types come after these
# and before plain text, which nearly every result also has).
_RICHEST_FIRST = ("png", "jpeg", "svg", "pdf", "html", "markdown", "latex", "javascript", "json", "chart", "data")


def _present(value: Any) -> bool:
    return value is not None and value != ""


class Result(DictLike):
    """One thing the code displayed: the value of its last expression (`is_main_result`), or a
    display call such as a matplotlib figure, `display(df)` or `IPython.display.HTML(...)`.

    A result holds every representation the kernel made of the object: `text`, `html`, `png`, ...
    `mime_type` names the richest of them, `formats()` lists them all, and `raw` is the whole MIME
    bundle. It reads as a dict too (`result["png"]`, `result.get("mime_type")`, and by MIME type:
    `result["image/png"]`), and displays itself in Jupyter through the `_repr_*_` methods.
    """

    _fields = (
        "text",
        "html",
        "markdown",
        "svg",
        "png",
        "jpeg",
        "pdf",
        "latex",
        "json",
        "javascript",
        "data",
        "chart",
        "is_main_result",
        "extra",
        "mime_type",
        "raw",
        "timestamp",
    )

    text: Optional[str]
    """Plain text (`text/plain`); the surrounding quotes of a string's repr are removed."""
    html: Optional[str]
    """HTML (`text/html`), e.g. a pandas DataFrame's table."""
    markdown: Optional[str]
    """Markdown (`text/markdown`)."""
    svg: Optional[str]
    """An SVG image (`image/svg+xml`)."""
    png: Optional[str]
    """A PNG image, base64-encoded (`image/png`)."""
    jpeg: Optional[str]
    """A JPEG image, base64-encoded (`image/jpeg`)."""
    pdf: Optional[str]
    """A PDF document, base64-encoded (`application/pdf`)."""
    latex: Optional[str]
    """LaTeX (`text/latex`)."""
    json: Optional[Any]
    """JSON data (`application/json`)."""
    javascript: Optional[str]
    """JavaScript (`application/javascript`)."""
    data: Optional[dict[str, Any]]
    """A table's data (`e2b/data`): a pandas DataFrame as `to_dict(orient="list")`."""
    chart: Optional[Chart]
    """A matplotlib figure's data as a typed chart (`e2b/chart`), e.g. a `LineChart`."""
    is_main_result: bool
    """True for the value of the code's last expression; False for a display call."""
    extra: Optional[dict[str, Any]]
    """Representations of MIME types without a field of their own, by MIME type."""
    raw: dict[str, Any]
    """The whole MIME bundle as received, keyed by MIME type (`{"text/plain": ..., "image/png": ...}`)."""
    timestamp: int
    """When the SDK received the result, as Unix epoch nanoseconds."""

    def __init__(
        self,
        text: Optional[str] = None,
        html: Optional[str] = None,
        markdown: Optional[str] = None,
        svg: Optional[str] = None,
        png: Optional[str] = None,
        jpeg: Optional[str] = None,
        pdf: Optional[str] = None,
        latex: Optional[str] = None,
        json: Optional[Any] = None,
        javascript: Optional[str] = None,
        data: Optional[dict[str, Any]] = None,
        chart: Union[Chart, Mapping[str, Any], None] = None,
        is_main_result: bool = False,
        extra: Optional[dict[str, Any]] = None,
        *,
        raw: Optional[dict[str, Any]] = None,
        timestamp: Any = None,
        **_: Any,
    ) -> None:
        """A result with the given representations (the keyword names of E2B's `Result`).

        `chart` may be a chart object or its JSON; `raw` defaults to the MIME bundle of the given
        representations; `timestamp` (epoch nanoseconds or ISO 8601) defaults to now.
        """
        self.text = text
        self.html = html
        self.markdown = markdown
        self.svg = svg
        self.png = png
        self.jpeg = jpeg
        self.pdf = pdf
        self.latex = latex
        self.json = json
        self.javascript = javascript
        self.data = data
        self.chart = None
        if isinstance(chart, Chart):
            self.chart = chart
        elif chart:
            try:
                self.chart = chart_from_json(chart)
            except Exception as err:
                logger.warning("could not read the chart of a result: %s", err)
        self.is_main_result = is_main_result
        self.extra = extra
        self.timestamp = epoch_ns(timestamp)
        if raw is None:
            raw = {}
            for field, mime in _FIELD_MIME:
                value = getattr(self, field)
                if field == "chart":
                    value = chart.to_dict() if isinstance(chart, Chart) else chart
                if value is not None:
                    raw[mime] = value
            raw.update(extra or {})
        self.raw = raw

    @classmethod
    def from_json(cls, message: Mapping[str, Any], timestamp: Any = None) -> Result:
        """The result of one `{"type": "result", ...}` line of the interpreter's stream."""
        fields = {k: v for k, v in message.items() if k != "type"}
        raw: dict[str, Any] = {}
        for field, mime in _FIELD_MIME:
            if fields.get(field) is not None:
                raw[mime] = fields[field]
        extra = fields.get("extra")
        if isinstance(extra, Mapping):
            raw.update(extra)
        return cls(
            text=fields.get("text"),
            html=fields.get("html"),
            markdown=fields.get("markdown"),
            svg=fields.get("svg"),
            png=fields.get("png"),
            jpeg=fields.get("jpeg"),
            pdf=fields.get("pdf"),
            latex=fields.get("latex"),
            json=fields.get("json"),
            javascript=fields.get("javascript"),
            data=fields.get("data"),
            chart=fields.get("chart"),
            is_main_result=bool(fields.get("is_main_result", False)),
            extra=dict(extra) if isinstance(extra, Mapping) else None,
            raw=raw,
            timestamp=timestamp,
        )

    @property
    def mime_type(self) -> MIMEType:
        """The MIME type of the richest representation present, in this order: `image/png`,
        `image/jpeg`, `image/svg+xml`, `application/pdf`, `text/html`, `text/markdown`,
        `text/latex`, `application/javascript`, `application/json`, `e2b/chart`, `e2b/data`, then
        any `extra` MIME type, then `text/plain` (also when the result holds nothing).

        So a matplotlib figure is `image/png` and a DataFrame `text/html`.
        """
        for field in _RICHEST_FIRST:
            if _present(getattr(self, field)):
                return MIMEType(_FIELD_TO_MIME[field])
        for mime, value in (self.extra or {}).items():
            if _present(value):
                return MIMEType(mime)
        return MIMEType("text/plain")

    def formats(self) -> list[str]:
        """The representations present: field names (`text`, `html`, `png`, ..., `chart`), then the
        MIME types in `extra`."""
        found = [field for field, _ in _FIELD_MIME if _present(getattr(self, field))]
        found.extend((self.extra or {}).keys())
        return found

    def __getitem__(self, key: str) -> Any:
        if key in self._fields:
            return getattr(self, key)
        if key in _MIME_FIELD:
            return getattr(self, _MIME_FIELD[key])
        if key in self.raw:
            return self.raw[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field `key` (or of MIME type `key`), or `default` when it is absent or None."""
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return key in self._fields or key in _MIME_FIELD or key in self.raw

    def __str__(self) -> str:
        return self.__repr__()

    def __repr__(self) -> str:
        if self.text:
            return f"Result({self.text})"
        return "Result(Formats: " + ", ".join(self.formats()) + ")"

    def _repr_html_(self) -> Optional[str]:
        """The HTML representation, for Jupyter."""
        return self.html

    def _repr_markdown_(self) -> Optional[str]:
        """The Markdown representation, for Jupyter."""
        return self.markdown

    def _repr_svg_(self) -> Optional[str]:
        """The SVG representation, for Jupyter."""
        return self.svg

    def _repr_png_(self) -> Optional[str]:
        """The PNG representation (base64), for Jupyter."""
        return self.png

    def _repr_jpeg_(self) -> Optional[str]:
        """The JPEG representation (base64), for Jupyter."""
        return self.jpeg

    def _repr_pdf_(self) -> Optional[str]:
        """The PDF representation (base64), for Jupyter."""
        return self.pdf

    def _repr_latex_(self) -> Optional[str]:
        """The LaTeX representation, for Jupyter."""
        return self.latex

    def _repr_json_(self) -> Optional[Any]:
        """The JSON representation, for Jupyter."""
        return self.json

    def _repr_javascript_(self) -> Optional[str]:
        """The JavaScript representation, for Jupyter."""
        return self.javascript


def serialize_results(results: Iterable[Result]) -> list[dict[str, Any]]:
    """The results as JSON-ready dicts: each format present (the chart as its JSON), and `text`."""
    out = []
    for result in results:
        item: dict[str, Any] = {}
        for key in result.formats():
            if key == "chart":
                if result.chart is not None:
                    item[key] = result.chart.to_dict()
            else:
                item[key] = result[key]
        item["text"] = result.text
        out.append(item)
    return out


# --- executions ---------------------------------------------------------------------------------


class Logs(DictLike):
    """What the code printed: the pieces written to stdout and to stderr, in order."""

    _fields = ("stdout", "stderr")

    stdout: list[str]
    """The pieces written to stdout (prints, subprocesses, ...)."""
    stderr: list[str]
    """The pieces written to stderr (warnings, logging, ...)."""

    def __init__(self, stdout: Optional[list[str]] = None, stderr: Optional[list[str]] = None, **_: Any) -> None:
        """Logs holding `stdout` and `stderr`."""
        self.stdout = stdout or []
        self.stderr = stderr or []

    def to_json(self) -> str:
        """The logs as a JSON object text: `{"stdout": [...], "stderr": [...]}`."""
        return _json.dumps({"stdout": self.stdout, "stderr": self.stderr})

    def __repr__(self) -> str:
        return f"Logs(stdout: {self.stdout}, stderr: {self.stderr})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Logs):
            return NotImplemented
        return (self.stdout, self.stderr) == (other.stdout, other.stderr)

    __hash__ = None  # type: ignore[assignment]


class Execution(DictLike):
    """What running code produced: its results, what it printed, and the error it raised, if any.

    An error raised by the code is `error` (and `is_error` is True); it is not raised by the SDK.
    """

    _fields = (
        "text",
        "stdout",
        "stderr",
        "logs",
        "results",
        "error",
        "is_error",
        "execution_count",
        "created_at",
        "finished_at",
    )

    results: list[Result]
    """Everything displayed, in order: display calls (plots, ...) and the value of the last expression."""
    logs: Logs
    """What was printed to stdout and stderr."""
    error: Optional[ExecutionError]
    """The error the code raised; None when it ran through."""
    execution_count: Optional[int]
    """The cell's number in its context (1 for the first run, then 2, ...)."""
    created_at: datetime
    """When the SDK sent the code (UTC)."""
    finished_at: Optional[datetime]
    """When the execution ended (UTC); None while it runs."""

    def __init__(
        self,
        results: Optional[list[Result]] = None,
        logs: Optional[Logs] = None,
        error: Optional[ExecutionError] = None,
        execution_count: Optional[int] = None,
        created_at: Optional[datetime] = None,
        finished_at: Optional[datetime] = None,
        **_: Any,
    ) -> None:
        """An execution holding the given parts; `created_at` defaults to now."""
        self.results = results or []
        self.logs = logs or Logs()
        self.error = error
        self.execution_count = execution_count
        self.created_at = created_at or utc_now()
        self.finished_at = finished_at

    @property
    def text(self) -> Optional[str]:
        """The text of the main result (the value of the code's last expression); None without one."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    @property
    def stdout(self) -> str:
        """Everything printed to stdout, joined."""
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        """Everything printed to stderr, joined."""
        return "".join(self.logs.stderr)

    @property
    def is_error(self) -> bool:
        """Whether the code raised an error (see `error`)."""
        return self.error is not None

    def to_json(self) -> str:
        """The execution as JSON text, shaped as E2B's `Execution.to_json()`: `results` (a list),
        and `logs` and `error` each as a nested JSON text (or null)."""
        return _json.dumps(
            {
                "results": serialize_results(self.results),
                "logs": self.logs.to_json(),
                "error": self.error.to_json() if self.error else None,
            }
        )

    def __repr__(self) -> str:
        return f"Execution(Results: {self.results}, Logs: {self.logs}, Error: {self.error})"


# --- contexts -----------------------------------------------------------------------------------


class Context(DictLike):
    """A code context: a kernel of its own, with its own state, language and working directory."""

    _fields = ("id", "language", "cwd")

    id: str
    """The context's id."""
    language: str
    """Its language (`python`, `javascript`, ...)."""
    cwd: str
    """Its working directory."""

    def __init__(self, context_id: str, language: str, cwd: str, **_: Any) -> None:
        """The context `context_id` (E2B's argument names)."""
        self.id = context_id
        self.language = language
        self.cwd = cwd

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Context:
        """The context the interpreter described as `{"id", "language", "cwd"}`."""
        try:
            return cls(context_id=str(data["id"]), language=str(data["language"]), cwd=str(data["cwd"]))
        except (KeyError, TypeError) as err:
            raise CodeExecutionError(f"The code interpreter described a context unreadably: {data!r}") from err

    def __repr__(self) -> str:
        return f"Context(id={self.id!r}, language={self.language!r}, cwd={self.cwd!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return (self.id, self.language, self.cwd) == (other.id, other.language, other.cwd)

    def __hash__(self) -> int:
        return hash(self.id)


# --- the /execute stream ------------------------------------------------------------------------

Handler = Callable[[Any], Any]
"""A user callback: a plain function or an `async def` one."""

PendingCall = tuple[Handler, Any]
"""A callback and the value to call it with."""


class ExecutionParser:
    """Folds the lines of an `/execute` stream into an `Execution`.

    `feed(line)` updates the execution and returns the callbacks the line is for, with their
    argument, so the blocking and the async notebooks can call them each in their own way.
    """

    def __init__(
        self,
        execution: Optional[Execution] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        on_result: Sequence[Optional[Handler]] = (),
        on_error: Optional[Handler] = None,
    ) -> None:
        """A parser filling `execution` (a new one by default) and calling back the given handlers;
        `on_result` lists every handler of results (e.g. `on_result` and the seed's `on_results`)."""
        self.execution = execution if execution is not None else Execution()
        """The execution being filled."""
        self.finished = False
        """Whether `end_of_execution` was seen."""
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._on_result = [h for h in on_result if h is not None]
        self._on_error = on_error

    def feed(self, line: Union[str, bytes]) -> list[PendingCall]:
        """Reads one line of the stream; returns the callbacks to call, in order."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            return []
        try:
            message = _json.loads(line)
        except ValueError as err:
            raise CodeExecutionError(f"The code interpreter sent an unreadable line: {line[:200]!r}") from err
        if not isinstance(message, dict):
            raise CodeExecutionError(f"The code interpreter sent an unexpected line: {line[:200]!r}")
        return self.feed_message(message)

    def feed_message(self, message: Mapping[str, Any]) -> list[PendingCall]:
        """Reads one decoded message of the stream; returns the callbacks to call, in order."""
        execution = self.execution
        kind = message.get("type")
        if kind in ("stdout", "stderr"):
            text = str(message.get("text", ""))
            is_err = kind == "stderr"
            (execution.logs.stderr if is_err else execution.logs.stdout).append(text)
            handler = self._on_stderr if is_err else self._on_stdout
            if handler is None:
                return []
            return [(handler, OutputMessage(text, message.get("timestamp"), is_err))]
        if kind == "result":
            result = Result.from_json(message)
            execution.results.append(result)
            return [(handler, result) for handler in self._on_result]
        if kind == "error":
            error = ExecutionError(
                str(message.get("name", "")),
                str(message.get("value", "")),
                _traceback(message.get("traceback")),
            )
            execution.error = error
            return [] if self._on_error is None else [(self._on_error, error)]
        if kind == "number_of_executions":
            count = message.get("execution_count")
            if isinstance(count, int):
                execution.execution_count = count
            return []
        if kind == "end_of_execution":
            self.finished = True
            execution.finished_at = utc_now()
            return []
        # keepalive, and kinds this SDK does not know.
        return []


def _traceback(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)
