"""What the code interpreter's stream becomes: the Execution, Result, chart and callback models, and
the request rules shared by the blocking and async notebooks. Pure: no server needed."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from hutch._code import (
    check_run_arguments,
    connection_error,
    context_body,
    execute_body,
    execution_timeouts,
    find_context,
    interpreter_error,
)
from hutch.charts import (
    BarChart,
    BoxAndWhiskerChart,
    Chart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
    chart_from_json,
)
from hutch.exceptions import (
    CodeExecutionError,
    InvalidArgumentException,
    NotFoundError,
    SandboxException,
    TimeoutException,
)
from hutch.models import (
    Context,
    Execution,
    ExecutionError,
    ExecutionParser,
    Logs,
    OutputMessage,
    Result,
    epoch_ns,
    normalize_language,
)

STAMP = "2024-05-01T12:00:00.123456+00:00"
STAMP_NS = 1714564800123456000

LINE_CHART = {
    "type": "line",
    "title": "Squares",
    "elements": [{"label": "squares", "points": [[1.0, 1.0], [2.0, 4.0], [3.0, 9.0]]}],
    "x_label": "x (s)",
    "y_label": "y [m]",
    "x_unit": "s",
    "y_unit": "m",
    "x_ticks": [1.0, 2.0, 3.0],
    "x_tick_labels": ["1", "2", "3"],
    "x_scale": "linear",
    "y_ticks": [0.0, 5.0, 10.0],
    "y_tick_labels": ["0", "5", "10"],
    "y_scale": "log",
}

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def lines(*messages: dict[str, Any]) -> list[str]:
    return [json.dumps(m) for m in messages]


def run_stream(*messages: dict[str, Any], **handlers: Any) -> tuple[ExecutionParser, list[tuple[Any, Any]]]:
    parser = ExecutionParser(**handlers)
    calls = []
    for line in lines(*messages):
        calls.extend(parser.feed(line))
    return parser, calls


# --- the stream ---------------------------------------------------------------------------------


def test_a_stream_folds_into_an_execution() -> None:
    parser, _ = run_stream(
        {"type": "number_of_executions", "execution_count": 3},
        {"type": "stdout", "text": "hello\n", "timestamp": STAMP},
        {"type": "stderr", "text": "careful\n", "timestamp": STAMP},
        {"type": "stdout", "text": "world\n", "timestamp": STAMP},
        {"type": "result", "png": PNG, "text": "<Figure>", "extra": {}, "is_main_result": False},
        {"type": "keepalive"},
        {"type": "result", "text": "2", "extra": {}, "is_main_result": True},
        {"type": "end_of_execution"},
    )
    execution = parser.execution
    assert parser.finished
    assert execution.execution_count == 3
    assert execution.text == "2"
    assert execution.logs.stdout == ["hello\n", "world\n"]
    assert execution.logs.stderr == ["careful\n"]
    assert execution.stdout == "hello\nworld\n"
    assert execution.stderr == "careful\n"
    assert [r.is_main_result for r in execution.results] == [False, True]
    assert execution.error is None and not execution.is_error
    assert execution.finished_at is not None and execution.created_at <= execution.finished_at


def test_an_error_line_sets_error_and_is_error() -> None:
    parser, _ = run_stream(
        {"type": "error", "name": "NameError", "value": "name 'y' is not defined", "traceback": "Traceback..."},
        {"type": "end_of_execution"},
    )
    error = parser.execution.error
    assert parser.execution.is_error
    assert isinstance(error, ExecutionError)
    assert (error.name, error.value, error.traceback) == ("NameError", "name 'y' is not defined", "Traceback...")
    assert error["name"] == "NameError" and error.get("value") == "name 'y' is not defined"
    assert json.loads(error.to_json()) == {
        "name": "NameError",
        "value": "name 'y' is not defined",
        "traceback": "Traceback...",
    }
    assert parser.execution.text is None


def test_a_stream_without_end_of_execution_is_not_finished() -> None:
    parser, _ = run_stream({"type": "number_of_executions", "execution_count": 1}, {"type": "keepalive"})
    assert not parser.finished
    assert parser.execution.finished_at is None


def test_callbacks_come_back_in_stream_order_with_their_values() -> None:
    seen: list[str] = []

    def on_stdout(m: OutputMessage) -> None:
        seen.append("out")

    def on_stderr(m: OutputMessage) -> None:
        seen.append("err")

    def on_result(r: Result) -> None:
        seen.append("result")

    def on_error(e: ExecutionError) -> None:
        seen.append("error")

    _, calls = run_stream(
        {"type": "stdout", "text": "a", "timestamp": STAMP},
        {"type": "result", "text": "x", "is_main_result": False},
        {"type": "stderr", "text": "b", "timestamp": STAMP},
        {"type": "error", "name": "E", "value": "v", "traceback": ""},
        {"type": "end_of_execution"},
        on_stdout=on_stdout,
        on_stderr=on_stderr,
        on_result=[on_result],
        on_error=on_error,
    )
    assert [handler for handler, _ in calls] == [on_stdout, on_result, on_stderr, on_error]
    out, result, err, error = (value for _, value in calls)
    assert isinstance(out, OutputMessage) and out.line == "a" and out.error is False
    assert isinstance(err, OutputMessage) and err.line == "b" and err.error is True
    assert isinstance(result, Result) and result.text == "x"
    assert isinstance(error, ExecutionError) and error.name == "E"


def test_every_result_handler_is_called() -> None:
    def first(r: Result) -> None: ...

    def second(r: Result) -> None: ...

    _, calls = run_stream({"type": "result", "text": "1", "is_main_result": True}, on_result=[first, None, second])
    assert [handler for handler, _ in calls] == [first, second]
    assert calls[0][1] is calls[1][1]


def test_output_messages_read_as_dicts_like_the_seed_examples() -> None:
    message = OutputMessage("line\n", STAMP, True)
    assert message.get("line", "").strip() == "line"
    assert message["error"] is True
    assert message["timestamp"] == STAMP_NS
    assert message.get("missing", "default") == "default"
    assert dict(message.to_dict()) == {"line": "line\n", "timestamp": STAMP_NS, "error": True}
    assert str(message) == "line\n"


def test_blank_and_unknown_lines_are_ignored_and_bytes_are_read() -> None:
    parser = ExecutionParser()
    assert parser.feed("") == []
    assert parser.feed("   ") == []
    assert parser.feed('{"type": "something_new", "x": 1}') == []
    parser.feed(b'{"type": "stdout", "text": "\xc3\xa9"}')
    assert parser.execution.stdout == "é"


def test_an_unreadable_line_is_a_code_execution_error() -> None:
    parser = ExecutionParser()
    with pytest.raises(CodeExecutionError):
        parser.feed("not json")
    with pytest.raises(CodeExecutionError):
        parser.feed("[1, 2]")


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (STAMP, STAMP_NS),
        ("2024-05-01T12:00:00.123456Z", STAMP_NS),
        ("2024-05-01T12:00:00.123456789Z", STAMP_NS),
        ("2024-05-01T12:00:00.1234Z", 1714564800123400000),
        ("2024-05-01T14:00:00.123456+02:00", STAMP_NS),
        ("2024-05-01T12:00:00", 1714564800000000000),
        (STAMP_NS, STAMP_NS),
    ],
)
def test_timestamps_become_epoch_nanoseconds(value: Any, expected: int) -> None:
    assert epoch_ns(value) == expected


def test_a_missing_or_unreadable_timestamp_is_now() -> None:
    now = datetime.now(timezone.utc).timestamp() * 1e9
    for value in (None, "yesterday-ish", True):
        assert abs(epoch_ns(value) - now) < 60e9


# --- results ------------------------------------------------------------------------------------


def test_a_figure_result_is_a_png_with_a_typed_chart() -> None:
    result = Result.from_json(
        {
            "type": "result",
            "text": "<Figure size 640x480 with 1 Axes>",
            "png": PNG,
            "chart": LINE_CHART,
            "extra": {},
            "is_main_result": False,
        }
    )
    assert result.mime_type == "image/png"
    assert result.get("mime_type") == "image/png"
    assert result["png"] == PNG
    assert base64.b64decode(result["png"]).startswith(b"\x89PNG")
    assert isinstance(result.chart, LineChart)
    assert result.formats() == ["text", "png", "chart"]
    assert result.raw == {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": PNG, "e2b/chart": LINE_CHART}
    assert result["image/png"] == PNG
    assert isinstance(result.get("timestamp", "unknown"), int)
    assert result._repr_png_() == PNG
    assert repr(result) == "Result(<Figure size 640x480 with 1 Axes>)"


def test_a_dataframe_result_is_html_with_data() -> None:
    result = Result.from_json(
        {
            "type": "result",
            "text": "   a\n0  1",
            "html": "<table></table>",
            "data": {"a": [1]},
            "extra": {},
            "is_main_result": True,
        }
    )
    assert result.mime_type == "text/html"
    assert result.data == {"a": [1]}
    assert result._repr_html_() == "<table></table>"
    assert result.formats() == ["text", "html", "data"]


@pytest.mark.parametrize(
    ("fields", "mime"),
    [
        ({"text": "2"}, "text/plain"),
        ({}, "text/plain"),
        ({"text": "x", "markdown": "# x"}, "text/markdown"),
        ({"text": "x", "latex": "$x$"}, "text/latex"),
        ({"text": "x", "svg": "<svg/>", "html": "<b/>"}, "image/svg+xml"),
        ({"text": "x", "jpeg": "/9j/", "png": PNG}, "image/png"),
        ({"text": "x", "pdf": "JVBE"}, "application/pdf"),
        ({"text": "x", "json": {"a": 1}}, "application/json"),
        ({"text": "x", "javascript": "alert(1)"}, "application/javascript"),
        ({"text": "x", "extra": {"application/vnd.custom+json": {"k": 1}}}, "application/vnd.custom+json"),
        ({"text": "x", "html": "<b/>", "extra": {"application/vnd.plotly.v1+json": {}}}, "text/html"),
    ],
)
def test_mime_type_is_the_richest_format_present(fields: dict[str, Any], mime: str) -> None:
    assert Result.from_json({"type": "result", **fields}).mime_type == mime


def test_extra_formats_are_listed_and_readable_by_mime_type() -> None:
    result = Result.from_json({"type": "result", "text": "x", "extra": {"application/x-thing": "v"}})
    assert result.formats() == ["text", "application/x-thing"]
    assert result["application/x-thing"] == "v"
    assert "application/x-thing" in result and "text" in result
    assert result.get("application/y") is None
    with pytest.raises(KeyError):
        result["nope"]


def test_a_result_built_by_hand_has_a_raw_bundle_and_chart() -> None:
    result = Result(text="t", markdown="**m**", chart=LINE_CHART, is_main_result=True)
    assert result.raw == {"text/plain": "t", "text/markdown": "**m**", "e2b/chart": LINE_CHART}
    assert isinstance(result.chart, LineChart)
    assert result._repr_markdown_() == "**m**"
    assert Result(chart=result.chart).chart is result.chart


def test_an_unreadable_chart_leaves_the_result_without_a_chart() -> None:
    result = Result.from_json({"type": "result", "png": PNG, "chart": {"type": "line", "elements": "nonsense"}})
    assert result.png == PNG
    assert isinstance(result.chart, LineChart) and result.chart.elements == []


def test_execution_to_json_has_e2bs_shape() -> None:
    parser, _ = run_stream(
        {"type": "stdout", "text": "hi\n", "timestamp": STAMP},
        {"type": "result", "text": "<Figure>", "png": PNG, "chart": LINE_CHART, "extra": {}},
        {"type": "result", "text": "3", "is_main_result": True, "extra": {}},
        {"type": "error", "name": "E", "value": "v", "traceback": "tb"},
        {"type": "end_of_execution"},
    )
    data = json.loads(parser.execution.to_json())
    assert data["results"] == [{"text": "<Figure>", "png": PNG, "chart": LINE_CHART}, {"text": "3"}]
    assert json.loads(data["logs"]) == {"stdout": ["hi\n"], "stderr": []}
    assert json.loads(data["error"]) == {"name": "E", "value": "v", "traceback": "tb"}


def test_execution_to_json_matches_the_official_sdk() -> None:
    official = pytest.importorskip("e2b_code_interpreter.models")
    stream = lines(
        {"type": "number_of_executions", "execution_count": 1},
        {"type": "stdout", "text": "hi\n", "timestamp": STAMP},
        {"type": "stderr", "text": "warn\n", "timestamp": STAMP},
        {"type": "result", "text": "<Figure>", "png": PNG, "chart": LINE_CHART, "extra": {}, "is_main_result": False},
        {"type": "result", "text": "3", "html": "<b>3</b>", "extra": {}, "is_main_result": True},
        {"type": "error", "name": "E", "value": "v", "traceback": "tb"},
    )
    theirs = official.Execution()
    ours = ExecutionParser()
    for line in stream:
        official.parse_output(theirs, line)
        ours.feed(line)
    assert json.loads(ours.execution.to_json()) == json.loads(theirs.to_json())
    assert ours.execution.text == theirs.text


def test_execution_reads_as_a_dict_and_defaults_sensibly() -> None:
    execution = Execution()
    assert execution.results == [] and execution.logs == Logs()
    assert execution["text"] is None and execution.get("stdout") == ""
    assert execution.execution_count is None and execution.finished_at is None
    assert execution.created_at.tzinfo is not None


def test_logs_to_json() -> None:
    assert json.loads(Logs(["a"], ["b"]).to_json()) == {"stdout": ["a"], "stderr": ["b"]}
    assert Logs(["a"])["stdout"] == ["a"]


# --- charts -------------------------------------------------------------------------------------


def test_a_line_chart_has_its_axes_and_points() -> None:
    chart = chart_from_json(LINE_CHART)
    assert isinstance(chart, LineChart)
    assert chart.type == ChartType.LINE
    assert chart.type.value == "line"
    assert chart.title == "Squares"
    assert (chart.x_label, chart.y_label, chart.x_unit, chart.y_unit) == ("x (s)", "y [m]", "s", "m")
    assert chart.x_scale == ScaleType.LINEAR and chart.y_scale == ScaleType.LOG
    assert chart.x_ticks == [1.0, 2.0, 3.0] and chart.y_tick_labels == ["0", "5", "10"]
    assert [e.label for e in chart.elements] == ["squares"]
    assert chart.elements[0].points == [(1.0, 1.0), (2.0, 4.0), (3.0, 9.0)]
    assert chart.to_dict() == LINE_CHART


def test_bar_pie_box_scatter_and_super_charts() -> None:
    bar = chart_from_json(
        {
            "type": "bar",
            "title": None,
            "elements": [{"label": "a", "group": "g", "value": 3.0}, {"label": "b", "group": "g", "value": 5.0}],
            "x_label": None,
            "y_label": None,
            "x_unit": None,
            "y_unit": None,
        }
    )
    assert isinstance(bar, BarChart) and bar.title is None
    assert [(e.label, e.group, e.value) for e in bar.elements] == [("a", "g", 3.0), ("b", "g", 5.0)]

    pie = chart_from_json({"type": "pie", "title": "P", "elements": [{"label": "p", "angle": 90.0, "radius": 1.0}]})
    assert isinstance(pie, PieChart)
    assert [(e.label, e.angle, e.radius) for e in pie.elements] == [("p", 90.0, 1.0)]

    box = chart_from_json(
        {
            "type": "box_and_whisker",
            "title": None,
            "elements": [
                {
                    "label": "A",
                    "min": 1.0,
                    "first_quartile": 2.0,
                    "median": 3.0,
                    "third_quartile": 4.0,
                    "max": 5.0,
                    "outliers": [20.0],
                }
            ],
        }
    )
    assert isinstance(box, BoxAndWhiskerChart)
    only = box.elements[0]
    assert (only.label, only.min, only.first_quartile, only.median, only.third_quartile, only.max) == (
        "A",
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    )
    assert only.outliers == [20.0]

    scatter = {**LINE_CHART, "type": "scatter", "x_scale": "weird"}
    both = chart_from_json({"type": "superchart", "title": "Both", "elements": [LINE_CHART, scatter]})
    assert isinstance(both, SuperChart) and both.type == ChartType.SUPERCHART
    assert [type(c) for c in both.elements] == [LineChart, ScatterChart]
    assert both.elements[1].x_scale == ScaleType.UNKNOWN  # type: ignore[attr-defined]


def test_an_unknown_chart_type_is_a_plain_chart() -> None:
    chart = chart_from_json({"type": "radar", "title": "R", "elements": [1, 2]})
    assert type(chart) is Chart
    assert chart is not None and chart.type == ChartType.UNKNOWN and chart.elements == [1, 2]
    assert chart_from_json(None) is None and chart_from_json({}) is None
    assert LineChart().type == ChartType.LINE


# --- contexts -----------------------------------------------------------------------------------


def test_contexts_from_json_and_e2bs_constructor() -> None:
    context = Context.from_json({"id": "abc", "language": "python", "cwd": "/home/user"})
    assert context == Context(context_id="abc", language="python", cwd="/home/user")
    assert (context.id, context["language"], context.get("cwd")) == ("abc", "python", "/home/user")
    with pytest.raises(CodeExecutionError):
        Context.from_json({"language": "python"})


def test_find_context_matches_language_and_directory() -> None:
    contexts = [
        Context("1", "python", "/home/user"),
        Context("2", "javascript", "/tmp"),
        Context("3", "python", "/tmp/"),
    ]
    assert find_context(contexts, "python", "/tmp") is contexts[2]
    assert find_context(contexts, normalize_language("js"), "/tmp") is contexts[1]
    assert find_context(contexts, "r", "/tmp") is None


# --- request rules ------------------------------------------------------------------------------


def test_execute_body_is_e2bs() -> None:
    assert execute_body("x", None, None, None) == {"code": "x", "context_id": None, "language": None, "env_vars": None}
    assert execute_body("x", "js", None, {"A": "1"}) == {
        "code": "x",
        "context_id": None,
        "language": "js",
        "env_vars": {"A": "1"},
    }
    assert execute_body("x", None, "ctx", None)["context_id"] == "ctx"
    assert context_body(None, None) == {}
    assert context_body("/tmp", "r") == {"cwd": "/tmp", "language": "r"}


def test_execution_timeouts_default_to_300_seconds_and_0_means_none() -> None:
    http, limit = execution_timeouts(None, 30.0)
    assert limit == 300.0 and http.read == 300.0 and http.connect == 30.0
    http, limit = execution_timeouts(0, 30.0)
    assert limit is None and http.read is None and http.connect == 30.0
    assert execution_timeouts(2.5, None)[1] == 2.5


def test_conflicting_run_arguments_are_refused() -> None:
    context = Context("c", "python", "/tmp")
    with pytest.raises(InvalidArgumentException) as err:
        check_run_arguments("python", context, None)
    assert isinstance(err.value, CodeExecutionError)
    with pytest.raises(InvalidArgumentException):
        check_run_arguments(None, context, "/home/user")
    with pytest.raises(InvalidArgumentException):
        check_run_arguments(None, "c", "/tmp")
    check_run_arguments(None, context, "/tmp/")
    check_run_arguments("python", None, "/tmp")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, NotFoundError), (400, InvalidArgumentException), (502, TimeoutException), (500, SandboxException)],
)
def test_interpreter_errors_map_to_code_execution_errors(status: int, kind: type) -> None:
    err = interpreter_error(status, "nope", "sbx")
    assert isinstance(err, kind) and isinstance(err, CodeExecutionError)
    assert err.status_code == status
    assert "nope" in str(err)


def test_lost_connections_map_by_whether_the_sandbox_still_runs() -> None:
    lost = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    gone = connection_error(lost, "sbx", True, running=False)
    assert isinstance(gone, TimeoutException) and isinstance(gone, CodeExecutionError)
    assert "killed" in str(gone)
    alive = connection_error(lost, "sbx", True, running=True)
    assert isinstance(alive, CodeExecutionError) and not isinstance(alive, TimeoutException)
    unknown = connection_error(httpx.ReadError("reset"), "sbx", False, running=None)
    assert isinstance(unknown, CodeExecutionError) and not isinstance(unknown, TimeoutException)


def test_timeouts_while_executing_and_while_connecting_say_which_limit_to_raise() -> None:
    execution = connection_error(httpx.ReadTimeout("slow"), "sbx", True)
    assert isinstance(execution, TimeoutException) and "'timeout'" in str(execution)
    connect = connection_error(httpx.ConnectTimeout("slow"), "sbx", True)
    assert isinstance(connect, TimeoutException) and "'request_timeout'" in str(connect)
    read = connection_error(httpx.ReadTimeout("slow"), "sbx", False)
    assert isinstance(read, TimeoutException) and "'request_timeout'" in str(read)
