"""The stateful code interpreter through the official `e2b-code-interpreter` SDK (sync).

Each test gets a fresh `code-interpreter-v1` sandbox; its code interpreter (port 49999)
runs the code in Jupyter kernels. What is checked mirrors e2b-dev/code-interpreter's
python/tests: results, logs, errors and callbacks, execution counts, rich results,
contexts, interrupts, reconnects, a sandbox killed mid-run and streaming.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import pytest
from e2b import InvalidArgumentException, NotFoundException, TimeoutException
from e2b_code_interpreter import ExecutionError, OutputMessage, Result

from ci_helpers import (
    HOME,
    Arrivals,
    CodeSandbox,
    png_size,
    stderr_of,
    stdout_of,
)

pytestmark = pytest.mark.timeout(300)


# --- basics and state ------------------------------------------------------------------


def test_last_expression_is_the_main_result(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("x = 1; x")
    assert execution.text == "1"
    assert execution.error is None
    assert len(execution.results) == 1
    assert execution.results[0].is_main_result
    assert execution.logs.stdout == [] and execution.logs.stderr == []


def test_variables_persist_between_runs(ci_sandbox: CodeSandbox) -> None:
    first = ci_sandbox.run_code("x = 1")
    assert first.results == [] and first.error is None
    assert ci_sandbox.run_code("x += 1; x").text == "2"
    ci_sandbox.run_code("def double(n):\n    return 2 * n\nimport math")
    assert ci_sandbox.run_code("double(x) + math.floor(0.5)").text == "4"


def test_string_result_text_has_its_quotes_stripped(ci_sandbox: CodeSandbox) -> None:
    assert ci_sandbox.run_code("'hello'").text == "hello"
    assert ci_sandbox.run_code('"double"').text == "double"
    assert ci_sandbox.run_code("[1, 'a']").text == "[1, 'a']"


def test_print_goes_to_stdout_and_sys_stderr_to_stderr(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "import sys\nprint('Hello from e2b')\nprint('This is an error message', file=sys.stderr)"
    )
    assert stdout_of(execution) == "Hello from e2b\n"
    assert stderr_of(execution) == "This is an error message\n"
    assert execution.results == [] and execution.error is None


def test_shell_escape_runs_in_home(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("!pwd")
    assert stdout_of(execution).strip() == HOME
    assert ci_sandbox.run_code("from pathlib import Path; str(Path.cwd())").text == HOME


# --- callbacks ---------------------------------------------------------------------------


CALLBACK_ORDER_CODE = """
import sys
from IPython.display import display
print("out 1", flush=True)
print("err 1", file=sys.stderr, flush=True)
display({"text/plain": "shown"}, raw=True)
print("out 2", flush=True)
raise RuntimeError("stop here")
"""


def test_callbacks_fire_in_the_order_output_happened(ci_sandbox: CodeSandbox) -> None:
    events: list[tuple[str, Any]] = []
    execution = ci_sandbox.run_code(
        CALLBACK_ORDER_CODE,
        on_stdout=lambda m: events.append(("stdout", m)),
        on_stderr=lambda m: events.append(("stderr", m)),
        on_result=lambda r: events.append(("result", r)),
        on_error=lambda e: events.append(("error", e)),
    )
    assert [kind for kind, _ in events] == ["stdout", "stderr", "result", "stdout", "error"]
    out1, err1, shown, out2, error = (item for _, item in events)
    assert isinstance(out1, OutputMessage) and out1.line == "out 1\n" and not out1.error
    assert isinstance(err1, OutputMessage) and err1.line == "err 1\n" and err1.error
    assert isinstance(shown, Result) and shown.text == "shown" and not shown.is_main_result
    assert out2.line == "out 2\n"
    assert isinstance(error, ExecutionError) and error.name == "RuntimeError" and error.value == "stop here"
    # The callbacks saw exactly what the returned Execution holds.
    assert execution.logs.stdout == ["out 1\n", "out 2\n"]
    assert execution.logs.stderr == ["err 1\n"]
    assert execution.results == [shown]
    assert execution.error is error


def test_each_callback_gets_one_call_per_output(ci_sandbox: CodeSandbox) -> None:
    results: list[Result] = []
    execution = ci_sandbox.run_code("x = 1;x", on_result=results.append)
    assert len(results) == 1 and results[0].text == "1" == execution.results[0].text

    errors: list[ExecutionError] = []
    execution = ci_sandbox.run_code("xyz", on_error=errors.append)
    assert len(errors) == 1 and execution.error is not None and execution.error.name == "NameError"

    stdout: list[OutputMessage] = []
    execution = ci_sandbox.run_code("print('Hello from e2b')", on_stdout=stdout.append)
    assert [m.line for m in stdout] == ["Hello from e2b\n"] == execution.logs.stdout

    stderr: list[OutputMessage] = []
    execution = ci_sandbox.run_code("import sys;print(1, file=sys.stderr)", on_stderr=stderr.append)
    assert [m.line for m in stderr] == ["1\n"] == execution.logs.stderr


# --- errors ------------------------------------------------------------------------------


def test_exception_is_reported_with_name_value_and_traceback(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "def inner_function():\n    raise ValueError('boom: bad value')\n\ninner_function()"
    )
    assert execution.error is not None
    assert execution.error.name == "ValueError"
    assert execution.error.value == "boom: bad value"
    assert "ValueError" in execution.error.traceback
    assert "inner_function" in execution.error.traceback
    assert execution.results == []


def test_undefined_name_and_syntax_errors_are_execution_errors(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("xyz")
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'xyz' is not defined"

    execution = ci_sandbox.run_code("def broken(:\n    pass")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"


def test_output_before_an_error_is_kept_and_state_survives_it(ci_sandbox: CodeSandbox) -> None:
    ci_sandbox.run_code("kept = 5")
    execution = ci_sandbox.run_code("print('before'); kept = 6; 1 / 0; kept = 7")
    assert stdout_of(execution) == "before\n"
    assert execution.error is not None and execution.error.name == "ZeroDivisionError"
    assert ci_sandbox.run_code("kept").text == "6"


# --- execution count -----------------------------------------------------------------------


def test_execution_count_increments_per_run(ci_sandbox: CodeSandbox) -> None:
    counts = [
        ci_sandbox.run_code("echo 'E2B is awesome!'").execution_count,  # a SyntaxError still counts
        ci_sandbox.run_code("!pwd").execution_count,
        ci_sandbox.run_code("1 + 1").execution_count,
    ]
    assert counts == [1, 2, 3]
    # A new context is a new kernel with a count of its own.
    context = ci_sandbox.create_code_context()
    assert ci_sandbox.run_code("1", context=context).execution_count == 1
    assert ci_sandbox.run_code("2").execution_count == 4


# --- rich results ----------------------------------------------------------------------------


PLOT_THEN_VALUE = """
import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 20, 100)
plt.plot(x, np.sin(x))
plt.show()

"the value"
"""


def test_display_data_comes_before_and_apart_from_the_main_result(ci_sandbox: CodeSandbox) -> None:
    streamed: list[Result] = []
    execution = ci_sandbox.run_code(PLOT_THEN_VALUE, on_result=streamed.append)
    assert streamed == execution.results
    assert len(execution.results) == 2

    shown, main = execution.results
    assert not shown.is_main_result
    assert shown.png and png_size(shown.png)[0] > 0
    assert shown.text and shown.text.startswith("<Figure")
    assert not shown.extra
    assert shown.chart is not None

    assert main.is_main_result
    assert main.text == "the value"
    assert execution.text == "the value"


def test_dataframe_result_has_html_and_data(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        'import pandas as pd\npd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]})'
    )
    assert execution.error is None
    result = execution.results[0]
    assert result.is_main_result
    assert result.data == {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]}
    assert result.html and "<table" in result.html and "dataframe" in result.html
    assert result.text and "a" in result.text and "z" in result.text
    assert "data" in result.formats() and "html" in result.formats()


def test_dataframe_dates_become_iso_strings_in_data(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        'import pandas as pd\npd.DataFrame({"day": pd.to_datetime(["2024-01-02", "2024-03-04"]), "n": [1, 2]})'
    )
    result = execution.results[0]
    assert result.data is not None
    assert [s[:10] for s in result.data["day"]] == ["2024-01-02", "2024-03-04"]
    assert result.data["n"] == [1, 2]


def test_list_and_dict_results_carry_json(ci_sandbox: CodeSandbox) -> None:
    result = ci_sandbox.run_code('{"a": 1, "b": [1, 2, 3], "c": None}').results[0]
    assert result.json == {"a": 1, "b": [1, 2, 3], "c": None}
    assert result.text == "{'a': 1, 'b': [1, 2, 3], 'c': None}"


def test_non_dataframe_results_carry_no_data_or_chart(ci_sandbox: CodeSandbox) -> None:
    result = ci_sandbox.run_code("import pandas, matplotlib\n41 + 1").results[0]
    assert result.formats() == ["text"]
    assert result.text == "42"


PIL_IMAGE = """
import numpy
from PIL import Image

imarray = numpy.random.rand(16, 16, 3) * 255
image = Image.fromarray(imarray.astype('uint8')).convert('RGBA')
"""


def test_pil_image_show_displays_a_png(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(PIL_IMAGE + "image.show()\nprint('Image shown.')")
    assert execution.error is None
    assert stdout_of(execution) == "Image shown.\n"
    assert len(execution.results) == 1
    assert png_size(execution.results[0].png) == (16, 16)


def test_pil_image_as_last_expression_is_a_png(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(PIL_IMAGE + "image")
    result = execution.results[0]
    assert result.is_main_result
    assert png_size(result.png) == (16, 16)


def test_pil_image_saved_to_a_file_is_displayed_and_written(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(PIL_IMAGE + "image.save('test.png')\nprint('Image saved.')")
    assert execution.error is None
    assert png_size(execution.results[0].png) == (16, 16)
    saved = bytes(ci_sandbox.files.read(f"{HOME}/test.png", format="bytes"))
    assert saved.startswith(b"\x89PNG")


# A 1x1 transparent PNG.
TINY_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="

CUSTOM_REPRS = f"""
import base64

class Html:
    def _repr_html_(self): return "<b>bold</b>"

class Markdown:
    def _repr_markdown_(self): return "**bold**"

class Svg:
    def _repr_svg_(self):
        return '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'

class Png:
    def _repr_png_(self): return base64.b64decode("{TINY_PNG_B64}")

class Latex:
    def _repr_latex_(self): return r"$\\alpha + \\beta$"

class Json:
    def _repr_json_(self): return {{"answer": 42, "items": [1, 2]}}

class Everything(Html, Markdown, Svg, Png, Latex, Json):
    def __repr__(self): return "Everything()"
"""


def test_custom_repr_methods_fill_the_matching_result_fields(ci_sandbox: CodeSandbox) -> None:
    assert ci_sandbox.run_code(CUSTOM_REPRS).error is None

    assert ci_sandbox.run_code("Html()").results[0].html == "<b>bold</b>"
    assert ci_sandbox.run_code("Markdown()").results[0].markdown == "**bold**"
    svg = ci_sandbox.run_code("Svg()").results[0].svg
    assert svg is not None and svg.startswith("<svg") and "<rect" in svg
    png = ci_sandbox.run_code("Png()").results[0].png
    assert png is not None and base64.b64decode(png) == base64.b64decode(TINY_PNG_B64)
    assert ci_sandbox.run_code("Latex()").results[0].latex == r"$\alpha + \beta$"
    assert ci_sandbox.run_code("Json()").results[0].json == {"answer": 42, "items": [1, 2]}

    everything = ci_sandbox.run_code("Everything()").results[0]
    assert everything.is_main_result
    assert set(everything.formats()) == {"text", "html", "markdown", "svg", "png", "latex", "json"}
    assert everything.text == "Everything()"


def test_raw_display_of_one_mime_type_gives_only_that_format(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "from IPython.display import display\ndisplay({'text/latex': r'\\text{CustomReprObject}'}, raw=True)"
    )
    assert len(execution.results) == 1
    assert execution.results[0].formats() == ["latex"]
    assert execution.results[0].latex == r"\text{CustomReprObject}"
    assert not execution.results[0].is_main_result


def test_unknown_mime_types_land_in_extra(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "from IPython.display import display\n"
        "display({'text/plain': 'custom', 'application/x-hutch-test': 'payload'}, raw=True)"
    )
    result = execution.results[0]
    assert result.text == "custom"
    assert result.extra == {"application/x-hutch-test": "payload"}


# --- contexts ------------------------------------------------------------------------------


def test_default_python_and_javascript_contexts_are_listed(ci_sandbox: CodeSandbox) -> None:
    languages = [c.language for c in ci_sandbox.list_code_contexts()]
    assert "python" in languages
    assert "javascript" in languages


def test_created_context_defaults_to_python_in_home_and_is_listed_last(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context()
    assert context.language == "python"
    assert context.cwd == HOME
    last = ci_sandbox.list_code_contexts()[-1]
    assert (last.id, last.language, last.cwd) == (context.id, context.language, context.cwd)


def test_context_with_cwd_runs_code_there(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context(language="python", cwd="/tmp")
    assert (context.language, context.cwd) == ("python", "/tmp")
    last = ci_sandbox.list_code_contexts()[-1]
    assert (last.id, last.cwd) == (context.id, "/tmp")
    assert ci_sandbox.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    assert stdout_of(ci_sandbox.run_code("!pwd", context=context)).strip() == "/tmp"
    # The default context is not moved.
    assert ci_sandbox.run_code("import os; os.getcwd()").text == HOME


def test_context_in_root_home_is_listed_with_its_cwd(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context(language="python", cwd="/root")
    last = ci_sandbox.list_code_contexts()[-1]
    assert (last.id, last.language, last.cwd) == (context.id, "python", "/root")


def test_contexts_have_separate_state(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context()
    ci_sandbox.run_code("x = 1")
    execution = ci_sandbox.run_code("x", context=context)
    assert execution.error is not None
    assert execution.error.value == "name 'x' is not defined"

    ci_sandbox.run_code("x = 'in context'", context=context)
    assert ci_sandbox.run_code("x", context=context).text == "in context"
    assert ci_sandbox.run_code("x").text == "1"


def test_javascript_context_keeps_its_own_state(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context(language="js")
    assert context.language == "javascript"
    ci_sandbox.run_code("let counter = 40;", context=context)
    assert ci_sandbox.run_code("counter + 2", context=context).text == "42"
    assert ci_sandbox.run_code("counter").error is not None  # not in Python's default context


def test_restarted_context_loses_its_state_but_keeps_its_id(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context(cwd="/tmp")
    ci_sandbox.run_code("x = 1", context=context)
    ci_sandbox.restart_code_context(context.id)

    execution = ci_sandbox.run_code("x", context=context)
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert execution.error.value == "name 'x' is not defined"
    assert ci_sandbox.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    assert context.id in [c.id for c in ci_sandbox.list_code_contexts()]
    # Restarting by Context object works too.
    ci_sandbox.restart_code_context(context)
    assert ci_sandbox.run_code("1 + 1", context=context).text == "2"


def test_removed_context_is_gone(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context()
    ci_sandbox.run_code("x = 1", context=context)
    ci_sandbox.remove_code_context(context.id)

    assert context.id not in [c.id for c in ci_sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException):
        ci_sandbox.run_code("x", context=context)
    # The default context is untouched.
    assert ci_sandbox.run_code("1 + 1").text == "2"


def test_context_and_language_together_are_refused(ci_sandbox: CodeSandbox) -> None:
    context = ci_sandbox.create_code_context(language="python")
    with pytest.raises(InvalidArgumentException):
        ci_sandbox.run_code("console.log('Hello, World!')", language="js", context=context)  # type: ignore[call-overload]


# --- interrupts, reconnects, kills ------------------------------------------------------------


def test_client_timeout_interrupts_the_kernel_and_keeps_its_state(ci_sandbox: CodeSandbox) -> None:
    ci_sandbox.run_code("before = 42")
    with pytest.raises(TimeoutException):
        ci_sandbox.run_code("import time; time.sleep(30); after = 1", timeout=2)

    # The abandoned execution was interrupted, so this does not queue behind a 30 s sleep
    # (bounded well below it), and it was interrupted, not restarted: state is kept.
    execution = ci_sandbox.run_code("before", timeout=15)
    assert execution.error is None
    assert execution.text == "42"
    assert ci_sandbox.run_code("'after' in globals()", timeout=15).text == "False"


def test_silent_code_longer_than_the_keepalive_interval_completes(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("import time; time.sleep(12); print('done'); 'ok'", timeout=60)
    assert execution.error is None
    assert stdout_of(execution) == "done\n"
    assert execution.text == "ok"


def test_reconnected_sandbox_keeps_kernel_state(ci_sandbox: CodeSandbox) -> None:
    ci_sandbox.run_code("x = 1")
    again = CodeSandbox.connect(ci_sandbox.sandbox_id)
    assert isinstance(again, CodeSandbox)  # typed as e2b's Sandbox, made as the class it is called on
    assert again.run_code("x += 1; x").text == "2"
    assert ci_sandbox.run_code("x").text == "2"


def test_kernel_state_survives_pause_and_resume(ci_sandbox: CodeSandbox) -> None:
    ci_sandbox.run_code("survivor = 'still here'")
    ci_sandbox.pause()
    resumed = CodeSandbox.connect(ci_sandbox.sandbox_id)
    assert isinstance(resumed, CodeSandbox)
    assert resumed.run_code("survivor").text == "still here"


def test_killing_the_sandbox_mid_run_raises_timeout_exception(ci_sandbox: CodeSandbox) -> None:
    timer = threading.Timer(2.0, ci_sandbox.kill)
    timer.start()
    try:
        # The execution timeout is far beyond the kill: only the kill ends this request.
        with pytest.raises(TimeoutException, match="sandbox was killed"):
            ci_sandbox.run_code("import time; time.sleep(300)", timeout=120)
    finally:
        timer.cancel()


# --- streaming --------------------------------------------------------------------------------


def test_output_streams_while_the_code_runs(ci_sandbox: CodeSandbox) -> None:
    arrivals = Arrivals()
    execution = ci_sandbox.run_code(
        "import time\nfor i in range(60):\n    print(f'line {i}', flush=True)\n    time.sleep(1)",
        on_stdout=arrivals,
        timeout=180,
    )
    assert execution.error is None
    assert arrivals.text() == "".join(f"line {i}\n" for i in range(60))
    assert stdout_of(execution) == arrivals.text()
    # Printed once a second for a minute: lines that were streamed arrive spread over many
    # seconds, not in one burst at the end.
    assert arrivals.distinct_seconds() >= 30, f"stdout arrived in only {arrivals.distinct_seconds()} distinct seconds"
