"""The code interpreter with the blocking API (`Notebook`): running code, its outputs, callbacks,
errors, rich results and charts, languages, contexts, environment variables and timeouts.

Every test runs against a live `hutch serve`, in a `code-interpreter-v1` sandbox of its own.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from hutch import Sandbox
from hutch.charts import ChartType, LineChart
from hutch.code import Notebook
from hutch.exceptions import (
    AuthenticationError,
    CodeExecutionError,
    InvalidArgumentException,
    NotFoundError,
    TimeoutException,
)
from hutch.models import Context, Execution, ExecutionError, OutputMessage, Result

HOME = "/home/user"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.timeout(300)


# --- running code -------------------------------------------------------------------------------


def test_state_persists_between_runs(sandbox: Sandbox) -> None:
    sandbox.notebook.run_code("x = 1")
    execution = sandbox.notebook.run_code("x += 1; x")
    assert execution.text == "2"
    assert execution.error is None and not execution.is_error


def test_exec_cell_is_run_code(sandbox: Sandbox) -> None:
    sandbox.notebook.exec_cell("y = 20")
    seen: list[str] = []
    execution = sandbox.notebook.exec_cell("print('cell'); y + 1", on_stdout=lambda m: seen.append(m.line))
    assert execution.text == "21"
    assert seen == ["cell\n"]
    assert sandbox.notebook.run_code("y").text == "20"


def test_stdout_and_stderr_are_in_logs_and_joined(sandbox: Sandbox) -> None:
    execution = sandbox.notebook.run_code(
        "import sys\nprint('one')\nprint('two')\nprint('bad', file=sys.stderr)\nsys.stderr.flush()"
    )
    assert "".join(execution.logs.stdout) == "one\ntwo\n"
    assert execution.stdout == "one\ntwo\n"
    assert execution.logs.stderr == ["bad\n"]
    assert execution.stderr == "bad\n"
    assert execution.text is None


def test_execution_count_increments(sandbox: Sandbox) -> None:
    first = sandbox.notebook.run_code("1")
    second = sandbox.notebook.run_code("2")
    assert first.execution_count is not None
    assert second.execution_count == first.execution_count + 1


def test_created_at_is_before_finished_at(sandbox: Sandbox) -> None:
    before = time.time()
    execution = sandbox.notebook.run_code("import time; time.sleep(0.5)")
    after = time.time()
    assert execution.finished_at is not None
    assert before <= execution.created_at.timestamp() <= execution.finished_at.timestamp() <= after
    assert (execution.finished_at - execution.created_at).total_seconds() >= 0.5


# --- errors -------------------------------------------------------------------------------------


def test_an_error_in_the_code_is_reported_not_raised(sandbox: Sandbox) -> None:
    errors: list[ExecutionError] = []
    execution = sandbox.notebook.run_code("print('before')\nundefined_name", on_error=errors.append)
    assert execution.is_error
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'undefined_name' is not defined"
    assert "undefined_name" in execution.error.traceback
    assert execution.stdout == "before\n"
    assert errors == [execution.error]
    # The context still works afterwards.
    assert sandbox.notebook.run_code("1 + 1").text == "2"


def test_an_unknown_context_is_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError) as err:
        sandbox.notebook.run_code("1", context="no-such-context")
    assert isinstance(err.value, CodeExecutionError)
    with pytest.raises(NotFoundError):
        sandbox.notebook.restart_code_context("no-such-context")
    with pytest.raises(CodeExecutionError):
        sandbox.notebook.remove_code_context("no-such-context")


def test_context_and_language_together_are_refused(sandbox: Sandbox) -> None:
    context = sandbox.notebook.create_code_context()
    with pytest.raises(InvalidArgumentException) as err:
        sandbox.notebook.run_code("1", language="python", context=context)
    assert isinstance(err.value, CodeExecutionError)


def test_an_unknown_language_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(CodeExecutionError):
        sandbox.notebook.run_code("1", language="cobol")


# --- callbacks ----------------------------------------------------------------------------------

ORDERED_CODE = """
import sys, time
from IPython.display import display, Markdown
print('one'); sys.stdout.flush(); time.sleep(0.3)
print('two', file=sys.stderr); sys.stderr.flush(); time.sleep(0.3)
display(Markdown('**shown**')); time.sleep(0.3)
print('three'); sys.stdout.flush(); time.sleep(0.3)
1 / 0
"""


def test_callbacks_fire_in_the_order_output_happened(sandbox: Sandbox) -> None:
    events: list[tuple[str, Any]] = []
    execution = sandbox.notebook.run_code(
        ORDERED_CODE,
        on_stdout=lambda m: events.append(("stdout", m.line)),
        on_stderr=lambda m: events.append(("stderr", m.line)),
        on_result=lambda r: events.append(("result", r.mime_type)),
        on_error=lambda e: events.append(("error", e.name)),
    )
    assert events == [
        ("stdout", "one\n"),
        ("stderr", "two\n"),
        ("result", "text/markdown"),
        ("stdout", "three\n"),
        ("error", "ZeroDivisionError"),
    ]
    assert execution.error is not None and execution.error.name == "ZeroDivisionError"


def test_output_messages_carry_line_error_flag_and_timestamp(sandbox: Sandbox) -> None:
    messages: list[OutputMessage] = []
    sandbox.notebook.run_code(
        "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr)",
        on_stdout=messages.append,
        on_stderr=messages.append,
    )
    assert [(m.line, m.error) for m in messages] == [("out\n", False), ("err\n", True)]
    # The seed's examples read them as dicts.
    assert [m.get("line", "").strip() for m in messages] == ["out", "err"]
    assert messages[1]["error"] is True
    now_ns = time.time_ns()
    for m in messages:
        assert now_ns - 120 * 10**9 < m.timestamp <= now_ns + 60 * 10**9


def test_async_def_callbacks_are_awaited_in_blocking_code(sandbox: Sandbox) -> None:
    lines: list[str] = []
    results: list[Result] = []

    async def on_stdout(message: OutputMessage) -> None:
        lines.append(message.line)

    async def on_result(result: Result) -> None:
        results.append(result)

    execution = sandbox.notebook.run_code("print('hi')\n42", on_stdout=on_stdout, on_result=on_result)
    assert lines == ["hi\n"]
    assert [r.text for r in results] == ["42"]
    assert execution.text == "42"


def test_on_results_is_the_seeds_name_of_on_result_and_both_are_called(sandbox: Sandbox) -> None:
    by_seed_name: list[Result] = []
    by_e2b_name: list[Result] = []
    sandbox.notebook.run_code("'value'", on_results=by_seed_name.append)
    assert [r.text for r in by_seed_name] == ["value"]
    sandbox.notebook.run_code("7", on_results=by_seed_name.append, on_result=by_e2b_name.append)
    assert [r.text for r in by_seed_name] == ["value", "7"]
    assert [r.text for r in by_e2b_name] == ["7"]


def test_a_callback_that_raises_stops_run_code_with_its_error(sandbox: Sandbox) -> None:
    def explode(message: OutputMessage) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        sandbox.notebook.run_code("print('x')", on_stdout=explode)
    assert sandbox.notebook.run_code("3").text == "3"


# --- rich results -------------------------------------------------------------------------------


def test_display_data_comes_before_the_main_result(sandbox: Sandbox) -> None:
    execution = sandbox.notebook.run_code("from IPython.display import display\ndisplay('shown')\n5")
    assert [(r.text, r.is_main_result) for r in execution.results] == [("shown", False), ("5", True)]
    assert execution.text == "5"


def test_a_dataframe_gives_html_and_data(sandbox: Sandbox) -> None:
    execution = sandbox.notebook.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    result = execution.results[0]
    assert result.is_main_result
    assert result.html is not None and "<table" in result.html
    assert result.data == {"a": [1, 2], "b": ["x", "y"]}
    assert result.mime_type == "text/html"
    assert result._repr_html_() == result.html
    assert "html" in result.formats() and "data" in result.formats()


PLOT = """
import matplotlib.pyplot as plt
import numpy as np
x = np.linspace(0, 2 * np.pi, 50)
plt.figure()
plt.plot(x, np.sin(x), label='sine')
plt.title('Streamed Sine Wave')
plt.xlabel('angle (rad)')
plt.show()
"""


def test_a_matplotlib_plot_gives_a_png_and_a_line_chart(sandbox: Sandbox) -> None:
    streamed: list[Result] = []
    execution = sandbox.notebook.run_code(PLOT, on_results=streamed.append)
    assert len(execution.results) == 1
    result = execution.results[0]
    assert not result.is_main_result
    assert result.png is not None and base64.b64decode(result.png).startswith(PNG_MAGIC)
    assert result.mime_type == "image/png"
    assert result.raw["image/png"] == result.png
    chart = result.chart
    assert isinstance(chart, LineChart)
    assert chart.type == ChartType.LINE
    assert chart.title == "Streamed Sine Wave"
    assert chart.x_label == "angle (rad)" and chart.x_unit == "rad"
    assert [e.label for e in chart.elements] == ["sine"]
    assert len(chart.elements[0].points) == 50
    # The seed's streaming example: the callback reads the result as a dict and saves the PNG.
    seen = streamed[0]
    assert seen.get("mime_type") == "image/png"
    assert base64.b64decode(seen["png"]).startswith(PNG_MAGIC)
    assert seen.get("timestamp", "unknown") != "unknown"


def test_objects_with_custom_reprs_display_their_formats(sandbox: Sandbox) -> None:
    code = """
class Fancy:
    def _repr_html_(self):
        return '<h1>fancy</h1>'
    def _repr_markdown_(self):
        return '# fancy'
Fancy()
"""
    result = sandbox.notebook.run_code(code).results[0]
    assert result.html == "<h1>fancy</h1>"
    assert result.markdown == "# fancy"
    assert result.mime_type == "text/html"
    assert result._repr_markdown_() == "# fancy"


def test_markdown_latex_and_json_results(sandbox: Sandbox) -> None:
    code = """
from IPython.display import display, Markdown, Latex, JSON
display(Markdown('*m*'))
display(Latex(r'$x^2$'))
display(JSON({'k': [1, 2]}))
"""
    markdown, latex, data = sandbox.notebook.run_code(code).results
    assert (markdown.markdown, markdown.mime_type) == ("*m*", "text/markdown")
    assert (latex.latex, latex.mime_type) == ("$x^2$", "text/latex")
    assert (data.json, data.mime_type) == ({"k": [1, 2]}, "application/json")


# --- languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "code", "text", "stdout"),
    [
        ("python", "print('hi')\n40 + 2", "42", "hi\n"),
        ("js", "console.log('hi');\n40 + 2", "42", "hi\n"),
        ("javascript", "console.log('hi');\n40 + 2", "42", "hi\n"),
        ("ts", "const n: number = 40;\nconsole.log('hi');\nn + 2", "42", "hi\n"),
        ("bash", "echo hi", None, "hi\n"),
        ("r", 'cat("hi\\n")\n40 + 2', "[1] 42", "hi\n"),
        ("java", 'System.out.println("hi");\n40 + 2', "42", "hi\n"),
    ],
)
def test_each_language_runs(sandbox: Sandbox, language: str, code: str, text: str | None, stdout: str) -> None:
    execution = sandbox.notebook.run_code(code, language=language)
    assert execution.error is None, execution.error
    assert execution.stdout == stdout
    if text is not None:
        # IRkernel shows a value as display data, not as the cell's result (as in E2B).
        shown = execution.results[0].text if language == "r" else execution.text
        assert shown == text


def test_each_language_has_its_own_state(sandbox: Sandbox) -> None:
    sandbox.notebook.run_code("value = 'py'")
    sandbox.notebook.run_code("var value = 'js'", language="js")
    assert sandbox.notebook.run_code("value").text == "py"
    assert sandbox.notebook.run_code("value", language="javascript").text == "js"


# --- contexts -----------------------------------------------------------------------------------


def test_contexts_are_created_listed_restarted_and_removed(sandbox: Sandbox) -> None:
    context = sandbox.notebook.create_code_context(cwd="/tmp")
    assert isinstance(context, Context)
    assert (context.language, context.cwd) == ("python", "/tmp")
    assert context in sandbox.notebook.list_code_contexts()

    assert sandbox.notebook.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    sandbox.notebook.run_code("kept = 1", context=context)
    # A context's state is its own.
    assert sandbox.notebook.run_code("'kept' in globals()").text == "False"
    assert sandbox.notebook.run_code("kept", context=context).text == "1"

    sandbox.notebook.restart_code_context(context)
    lost = sandbox.notebook.run_code("kept", context=context)
    assert lost.error is not None and lost.error.name == "NameError"

    sandbox.notebook.remove_code_context(context.id)
    assert context.id not in [c.id for c in sandbox.notebook.list_code_contexts()]
    with pytest.raises(NotFoundError):
        sandbox.notebook.run_code("1", context=context)


def test_a_context_of_another_language(sandbox: Sandbox) -> None:
    context = sandbox.notebook.create_code_context(language="bash")
    assert context.language == "bash" and context.cwd == HOME
    assert sandbox.notebook.run_code("pwd", context=context).stdout == f"{HOME}\n"


def test_run_code_cwd_runs_there_and_keeps_its_state(sandbox: Sandbox) -> None:
    assert sandbox.notebook.run_code("import os; os.getcwd()").text == HOME
    assert sandbox.notebook.run_code("import os; os.getcwd()", cwd="/tmp").text == "/tmp"
    sandbox.notebook.run_code("in_tmp = True", cwd="/tmp/")
    assert sandbox.notebook.run_code("in_tmp", cwd="/tmp").text == "True"
    assert sandbox.notebook.run_code("'in_tmp' in globals()").text == "False"
    assert sandbox.notebook.run_code("pwd", language="bash", cwd="/tmp").stdout == "/tmp\n"
    tmp_contexts = [c for c in sandbox.notebook.list_code_contexts() if c.cwd == "/tmp"]
    assert sorted(c.language for c in tmp_contexts) == ["bash", "python"]


def test_run_code_cwd_reuses_a_context_already_there(sandbox: Sandbox) -> None:
    context = sandbox.notebook.create_code_context(cwd="/var")
    sandbox.notebook.run_code("marker = 'mine'", context=context)
    assert sandbox.notebook.run_code("marker", cwd="/var").text == "mine"
    assert sandbox.notebook.run_code("marker", context=context, cwd="/var").text == "mine"
    with pytest.raises(InvalidArgumentException):
        sandbox.notebook.run_code("marker", context=context, cwd="/tmp")


def test_run_code_cwd_makes_a_new_context_when_its_own_was_removed(sandbox: Sandbox) -> None:
    sandbox.notebook.run_code("a = 1", cwd="/srv")
    (made,) = [c for c in sandbox.notebook.list_code_contexts() if c.cwd == "/srv"]
    # Removed behind the notebook's back (another client): the next run makes a new one.
    other = Notebook(httpx.Client(), sandbox.notebook._target)
    other.remove_code_context(made)
    execution = sandbox.notebook.run_code("import os; os.getcwd()", cwd="/srv")
    assert execution.text == "/srv"


# --- environment variables ----------------------------------------------------------------------


def test_envs_apply_to_one_run_only(sandbox: Sandbox) -> None:
    name = f"HUTCH_TEST_{uuid.uuid4().hex[:8].upper()}"
    code = f"import os; os.environ.get('{name}', 'unset')"
    assert sandbox.notebook.run_code(code, envs={name: "per-run"}).text == "per-run"
    assert sandbox.notebook.run_code(code).text == "unset"
    shell = sandbox.notebook.run_code(f"echo ${name}", language="bash", envs={name: "bash-too"})
    assert shell.stdout == "bash-too\n"


# --- timeouts and the sandbox going away --------------------------------------------------------


def test_a_timeout_raises_and_the_next_run_works(sandbox: Sandbox) -> None:
    sandbox.notebook.run_code("survivor = 'still here'")
    started = time.monotonic()
    with pytest.raises(TimeoutException) as err:
        sandbox.notebook.run_code("import time\nfor _ in range(60): time.sleep(1)", timeout=3)
    assert isinstance(err.value, CodeExecutionError)
    assert time.monotonic() - started < 15
    # The kernel was interrupted: the next run is not stuck behind the old one, and state is kept.
    started = time.monotonic()
    assert sandbox.notebook.run_code("survivor", timeout=30).text == "still here"
    assert time.monotonic() - started < 20


def test_a_timeout_also_stops_code_that_keeps_printing(sandbox: Sandbox) -> None:
    seen: list[str] = []
    with pytest.raises(TimeoutException):
        sandbox.notebook.run_code(
            "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.2)",
            timeout=2,
            on_stdout=lambda m: seen.append(m.line),
        )
    assert 3 <= len(seen) < 40
    assert sandbox.notebook.run_code("'ok'").text == "ok"


def test_a_sandbox_killed_mid_run_raises_timeout(sandbox: Sandbox) -> None:
    sandbox.notebook.run_code("1")
    killer = threading.Timer(2.0, sandbox.kill)
    killer.start()
    try:
        with pytest.raises(TimeoutException):
            sandbox.notebook.run_code("import time; time.sleep(60)", timeout=90)
    finally:
        killer.cancel()
        killer.join()


def test_requests_to_a_killed_sandbox_fail(sandbox: Sandbox) -> None:
    sandbox.kill()
    with pytest.raises(TimeoutException):
        sandbox.notebook.run_code("1")
    with pytest.raises(TimeoutException):
        sandbox.notebook.list_code_contexts()


def test_execution_is_an_execution(sandbox: Sandbox) -> None:
    execution = sandbox.notebook.run_code("print('x')\n1")
    assert isinstance(execution, Execution)
    assert execution["stdout"] == "x\n" and execution.get("text") == "1"
    assert "Execution(Results: [Result(1)]" in repr(execution)


def test_a_wrong_access_token_is_refused(sandbox: Sandbox) -> None:
    target = dataclasses.replace(sandbox.notebook._target, envd_access_token="wrong-token")
    with pytest.raises(AuthenticationError) as err:
        Notebook(httpx.Client(), target).run_code("1")
    assert isinstance(err.value, CodeExecutionError)
