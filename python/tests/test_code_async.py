"""The code interpreter with the async API (`AsyncNotebook`): running code, its outputs, callbacks
(plain and `async def`), errors, rich results and charts, languages, contexts, environment
variables and timeouts.

Every test runs against a live `hutch serve`, in a `code-interpreter-v1` sandbox of its own.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch import AsyncSandbox
from hutch.charts import ChartType, LineChart
from hutch.code_async import AsyncNotebook
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


async def test_state_persists_between_runs(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.run_code("x = 1")
    execution = await async_sandbox.notebook.run_code("x += 1; x")
    assert execution.text == "2"
    assert execution.error is None and not execution.is_error


async def test_exec_cell_is_run_code(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.exec_cell("y = 20")
    seen: list[str] = []
    execution = await async_sandbox.notebook.exec_cell("print('cell'); y + 1", on_stdout=lambda m: seen.append(m.line))
    assert execution.text == "21"
    assert seen == ["cell\n"]
    assert (await async_sandbox.notebook.run_code("y")).text == "20"


async def test_stdout_and_stderr_are_in_logs_and_joined(async_sandbox: AsyncSandbox) -> None:
    execution = await async_sandbox.notebook.run_code(
        "import sys\nprint('one')\nprint('two')\nprint('bad', file=sys.stderr)\nsys.stderr.flush()"
    )
    assert "".join(execution.logs.stdout) == "one\ntwo\n"
    assert execution.stdout == "one\ntwo\n"
    assert execution.logs.stderr == ["bad\n"]
    assert execution.stderr == "bad\n"
    assert execution.text is None


async def test_execution_count_increments(async_sandbox: AsyncSandbox) -> None:
    first = await async_sandbox.notebook.run_code("1")
    second = await async_sandbox.notebook.run_code("2")
    assert first.execution_count is not None
    assert second.execution_count == first.execution_count + 1


async def test_created_at_is_before_finished_at(async_sandbox: AsyncSandbox) -> None:
    before = time.time()
    execution = await async_sandbox.notebook.run_code("import time; time.sleep(0.5)")
    after = time.time()
    assert execution.finished_at is not None
    assert before <= execution.created_at.timestamp() <= execution.finished_at.timestamp() <= after
    assert (execution.finished_at - execution.created_at).total_seconds() >= 0.5


# --- errors -------------------------------------------------------------------------------------


async def test_an_error_in_the_code_is_reported_not_raised(async_sandbox: AsyncSandbox) -> None:
    errors: list[ExecutionError] = []
    execution = await async_sandbox.notebook.run_code("print('before')\nundefined_name", on_error=errors.append)
    assert execution.is_error
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'undefined_name' is not defined"
    assert "undefined_name" in execution.error.traceback
    assert execution.stdout == "before\n"
    assert errors == [execution.error]
    # The context still works afterwards.
    assert (await async_sandbox.notebook.run_code("1 + 1")).text == "2"


async def test_an_unknown_context_is_not_found(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(NotFoundError) as err:
        await async_sandbox.notebook.run_code("1", context="no-such-context")
    assert isinstance(err.value, CodeExecutionError)
    with pytest.raises(NotFoundError):
        await async_sandbox.notebook.restart_code_context("no-such-context")
    with pytest.raises(CodeExecutionError):
        await async_sandbox.notebook.remove_code_context("no-such-context")


async def test_context_and_language_together_are_refused(async_sandbox: AsyncSandbox) -> None:
    context = await async_sandbox.notebook.create_code_context()
    with pytest.raises(InvalidArgumentException) as err:
        await async_sandbox.notebook.run_code("1", language="python", context=context)
    assert isinstance(err.value, CodeExecutionError)


async def test_an_unknown_language_is_refused(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(CodeExecutionError):
        await async_sandbox.notebook.run_code("1", language="cobol")


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


async def test_callbacks_fire_in_the_order_output_happened(async_sandbox: AsyncSandbox) -> None:
    events: list[tuple[str, Any]] = []
    execution = await async_sandbox.notebook.run_code(
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


async def test_output_messages_carry_line_error_flag_and_timestamp(async_sandbox: AsyncSandbox) -> None:
    messages: list[OutputMessage] = []
    await async_sandbox.notebook.run_code(
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


async def test_async_def_callbacks_are_awaited(async_sandbox: AsyncSandbox) -> None:
    lines: list[str] = []
    results: list[Result] = []

    async def on_stdout(message: OutputMessage) -> None:
        await asyncio.sleep(0.05)
        lines.append(message.line)

    async def on_result(result: Result) -> None:
        results.append(result)

    execution = await async_sandbox.notebook.run_code(
        "import sys, time\nfor i in range(5):\n    print(i); sys.stdout.flush(); time.sleep(0.05)\n42",
        on_stdout=on_stdout,
        on_result=on_result,
    )
    assert "".join(lines) == "0\n1\n2\n3\n4\n"
    assert [r.text for r in results] == ["42"]
    assert execution.text == "42"


async def test_the_seeds_streaming_example_works_as_written(async_sandbox: AsyncSandbox, tmp_path: Path) -> None:
    printed: list[str] = []
    saved: list[Path] = []

    async def handle_stdout(log: Any) -> None:
        printed.append(f"STDOUT: {log.get('line', '').strip()}")

    async def handle_stderr(log: Any) -> None:
        printed.append(f"STDERR: {log.get('line', '').strip()}")

    async def handle_result(result_data: Any) -> None:
        if result_data.get("mime_type") == "image/png" and result_data.get("png"):
            png_data = base64.b64decode(result_data["png"])
            filename = tmp_path / f"streamed_chart_{result_data.get('timestamp', 'unknown')}.png"
            filename.write_bytes(png_data)
            saved.append(filename)

    code = PLOT.replace("plt.show()", "print('Generating plot...')\nplt.show()\nprint('Plot generated.')")
    code += "\nimport sys\nprint('Calculation finished.', file=sys.stderr)\n"
    execution = await async_sandbox.notebook.run_code(
        code, on_stdout=handle_stdout, on_stderr=handle_stderr, on_results=handle_result
    )
    assert execution.error is None
    assert printed == ["STDOUT: Generating plot...", "STDOUT: Plot generated.", "STDERR: Calculation finished."]
    assert len(saved) == 1
    assert saved[0].read_bytes().startswith(PNG_MAGIC)


async def test_on_results_is_the_seeds_name_of_on_result_and_both_are_called(async_sandbox: AsyncSandbox) -> None:
    by_seed_name: list[Result] = []
    by_e2b_name: list[Result] = []
    await async_sandbox.notebook.run_code("'value'", on_results=by_seed_name.append)
    assert [r.text for r in by_seed_name] == ["value"]
    await async_sandbox.notebook.run_code("7", on_results=by_seed_name.append, on_result=by_e2b_name.append)
    assert [r.text for r in by_seed_name] == ["value", "7"]
    assert [r.text for r in by_e2b_name] == ["7"]


async def test_a_callback_that_raises_stops_run_code_with_its_error(async_sandbox: AsyncSandbox) -> None:
    def explode(message: OutputMessage) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        await async_sandbox.notebook.run_code("print('x')", on_stdout=explode)
    assert (await async_sandbox.notebook.run_code("3")).text == "3"


# --- rich results -------------------------------------------------------------------------------


async def test_display_data_comes_before_the_main_result(async_sandbox: AsyncSandbox) -> None:
    execution = await async_sandbox.notebook.run_code("from IPython.display import display\ndisplay('shown')\n5")
    assert [(r.text, r.is_main_result) for r in execution.results] == [("shown", False), ("5", True)]
    assert execution.text == "5"


async def test_a_dataframe_gives_html_and_data(async_sandbox: AsyncSandbox) -> None:
    execution = await async_sandbox.notebook.run_code(
        "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"
    )
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


async def test_a_matplotlib_plot_gives_a_png_and_a_line_chart(async_sandbox: AsyncSandbox) -> None:
    streamed: list[Result] = []
    execution = await async_sandbox.notebook.run_code(PLOT, on_results=streamed.append)
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


async def test_objects_with_custom_reprs_display_their_formats(async_sandbox: AsyncSandbox) -> None:
    code = """
class Fancy:
    def _repr_html_(self):
        return '<h1>fancy</h1>'
    def _repr_markdown_(self):
        return '# fancy'
Fancy()
"""
    result = (await async_sandbox.notebook.run_code(code)).results[0]
    assert result.html == "<h1>fancy</h1>"
    assert result.markdown == "# fancy"
    assert result.mime_type == "text/html"
    assert result._repr_markdown_() == "# fancy"


async def test_markdown_latex_and_json_results(async_sandbox: AsyncSandbox) -> None:
    code = """
from IPython.display import display, Markdown, Latex, JSON
display(Markdown('*m*'))
display(Latex(r'$x^2$'))
display(JSON({'k': [1, 2]}))
"""
    markdown, latex, data = (await async_sandbox.notebook.run_code(code)).results
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
async def test_each_language_runs(
    async_sandbox: AsyncSandbox, language: str, code: str, text: str | None, stdout: str
) -> None:
    execution = await async_sandbox.notebook.run_code(code, language=language)
    assert execution.error is None, execution.error
    assert execution.stdout == stdout
    if text is not None:
        # IRkernel shows a value as display data, not as the cell's result (as in E2B).
        shown = execution.results[0].text if language == "r" else execution.text
        assert shown == text


async def test_each_language_has_its_own_state(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.run_code("value = 'py'")
    await async_sandbox.notebook.run_code("var value = 'js'", language="js")
    assert (await async_sandbox.notebook.run_code("value")).text == "py"
    assert (await async_sandbox.notebook.run_code("value", language="javascript")).text == "js"


# --- contexts -----------------------------------------------------------------------------------


async def test_contexts_are_created_listed_restarted_and_removed(async_sandbox: AsyncSandbox) -> None:
    context = await async_sandbox.notebook.create_code_context(cwd="/tmp")
    assert isinstance(context, Context)
    assert (context.language, context.cwd) == ("python", "/tmp")
    assert context in await async_sandbox.notebook.list_code_contexts()

    assert (await async_sandbox.notebook.run_code("import os; os.getcwd()", context=context)).text == "/tmp"
    await async_sandbox.notebook.run_code("kept = 1", context=context)
    # A context's state is its own.
    assert (await async_sandbox.notebook.run_code("'kept' in globals()")).text == "False"
    assert (await async_sandbox.notebook.run_code("kept", context=context)).text == "1"

    await async_sandbox.notebook.restart_code_context(context)
    lost = await async_sandbox.notebook.run_code("kept", context=context)
    assert lost.error is not None and lost.error.name == "NameError"

    await async_sandbox.notebook.remove_code_context(context.id)
    assert context.id not in [c.id for c in await async_sandbox.notebook.list_code_contexts()]
    with pytest.raises(NotFoundError):
        await async_sandbox.notebook.run_code("1", context=context)


async def test_a_context_of_another_language(async_sandbox: AsyncSandbox) -> None:
    context = await async_sandbox.notebook.create_code_context(language="bash")
    assert context.language == "bash" and context.cwd == HOME
    assert (await async_sandbox.notebook.run_code("pwd", context=context)).stdout == f"{HOME}\n"


async def test_run_code_cwd_runs_there_and_keeps_its_state(async_sandbox: AsyncSandbox) -> None:
    assert (await async_sandbox.notebook.run_code("import os; os.getcwd()")).text == HOME
    assert (await async_sandbox.notebook.run_code("import os; os.getcwd()", cwd="/tmp")).text == "/tmp"
    await async_sandbox.notebook.run_code("in_tmp = True", cwd="/tmp/")
    assert (await async_sandbox.notebook.run_code("in_tmp", cwd="/tmp")).text == "True"
    assert (await async_sandbox.notebook.run_code("'in_tmp' in globals()")).text == "False"
    assert (await async_sandbox.notebook.run_code("pwd", language="bash", cwd="/tmp")).stdout == "/tmp\n"
    tmp_contexts = [c for c in await async_sandbox.notebook.list_code_contexts() if c.cwd == "/tmp"]
    assert sorted(c.language for c in tmp_contexts) == ["bash", "python"]


async def test_run_code_cwd_reuses_a_context_already_there(async_sandbox: AsyncSandbox) -> None:
    context = await async_sandbox.notebook.create_code_context(cwd="/var")
    await async_sandbox.notebook.run_code("marker = 'mine'", context=context)
    assert (await async_sandbox.notebook.run_code("marker", cwd="/var")).text == "mine"
    assert (await async_sandbox.notebook.run_code("marker", context=context, cwd="/var")).text == "mine"
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.notebook.run_code("marker", context=context, cwd="/tmp")


async def test_run_code_cwd_makes_a_new_context_when_its_own_was_removed(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.run_code("a = 1", cwd="/srv")
    (made,) = [c for c in await async_sandbox.notebook.list_code_contexts() if c.cwd == "/srv"]
    # Removed behind the notebook's back (another client): the next run makes a new one.
    other = AsyncNotebook(httpx.AsyncClient(), async_sandbox.notebook._target)
    await other.remove_code_context(made)
    execution = await async_sandbox.notebook.run_code("import os; os.getcwd()", cwd="/srv")
    assert execution.text == "/srv"


# --- environment variables ----------------------------------------------------------------------


async def test_envs_apply_to_one_run_only(async_sandbox: AsyncSandbox) -> None:
    name = f"HUTCH_TEST_{uuid.uuid4().hex[:8].upper()}"
    code = f"import os; os.environ.get('{name}', 'unset')"
    assert (await async_sandbox.notebook.run_code(code, envs={name: "per-run"})).text == "per-run"
    assert (await async_sandbox.notebook.run_code(code)).text == "unset"
    shell = await async_sandbox.notebook.run_code(f"echo ${name}", language="bash", envs={name: "bash-too"})
    assert shell.stdout == "bash-too\n"


# --- timeouts and the sandbox going away --------------------------------------------------------


async def test_a_timeout_raises_and_the_next_run_works(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.run_code("survivor = 'still here'")
    started = time.monotonic()
    with pytest.raises(TimeoutException) as err:
        await async_sandbox.notebook.run_code("import time\nfor _ in range(60): time.sleep(1)", timeout=3)
    assert isinstance(err.value, CodeExecutionError)
    assert time.monotonic() - started < 15
    # The kernel was interrupted: the next run is not stuck behind the old one, and state is kept.
    started = time.monotonic()
    assert (await async_sandbox.notebook.run_code("survivor", timeout=30)).text == "still here"
    assert time.monotonic() - started < 20


async def test_a_timeout_also_stops_code_that_keeps_printing(async_sandbox: AsyncSandbox) -> None:
    seen: list[str] = []
    with pytest.raises(TimeoutException):
        await async_sandbox.notebook.run_code(
            "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.2)",
            timeout=2,
            on_stdout=lambda m: seen.append(m.line),
        )
    assert 3 <= len(seen) < 40
    assert (await async_sandbox.notebook.run_code("'ok'")).text == "ok"


async def test_a_sandbox_killed_mid_run_raises_timeout(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.notebook.run_code("1")

    async def kill_soon() -> None:
        await asyncio.sleep(2)
        await async_sandbox.kill()

    killer = asyncio.ensure_future(kill_soon())
    try:
        with pytest.raises(TimeoutException):
            await async_sandbox.notebook.run_code("import time; time.sleep(60)", timeout=90)
    finally:
        await killer


async def test_requests_to_a_killed_sandbox_fail(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.kill()
    with pytest.raises(TimeoutException):
        await async_sandbox.notebook.run_code("1")
    with pytest.raises(TimeoutException):
        await async_sandbox.notebook.list_code_contexts()


async def test_execution_is_an_execution(async_sandbox: AsyncSandbox) -> None:
    execution = await async_sandbox.notebook.run_code("print('x')\n1")
    assert isinstance(execution, Execution)
    assert execution["stdout"] == "x\n" and execution.get("text") == "1"
    assert "Execution(Results: [Result(1)]" in repr(execution)


async def test_a_wrong_access_token_is_refused(async_sandbox: AsyncSandbox) -> None:
    target = dataclasses.replace(async_sandbox.notebook._target, envd_access_token="wrong-token")
    with pytest.raises(AuthenticationError) as err:
        await AsyncNotebook(httpx.AsyncClient(), target).run_code("1")
    assert isinstance(err.value, CodeExecutionError)
