"""The stateful code interpreter through the official async SDK (`AsyncCodeSandbox.run_code`).

Mirrors test_code_interpreter.py; callbacks here may be coroutines, and the sandbox is
killed from a concurrent task.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from e2b import InvalidArgumentException, NotFoundException, TimeoutException
from e2b_code_interpreter import ExecutionError, OutputMessage, Result
from e2b_code_interpreter.charts import ChartType, LineChart, ScatterChart, SuperChart

from ci_helpers import (
    HOME,
    Arrivals,
    AsyncCodeSandbox,
    png_size,
    stderr_of,
    stdout_of,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


async def test_last_expression_is_the_main_result(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code("x = 1; x")
    assert execution.text == "1"
    assert execution.error is None
    assert len(execution.results) == 1 and execution.results[0].is_main_result


async def test_variables_persist_between_runs(async_ci_sandbox: AsyncCodeSandbox) -> None:
    await async_ci_sandbox.run_code("async_test_stateful = 1")
    execution = await async_ci_sandbox.run_code("async_test_stateful += 1; async_test_stateful")
    assert execution.text == "2"


async def test_shell_escape_runs_in_home(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code("!pwd")
    assert stdout_of(execution).strip() == HOME


async def test_sync_and_async_callbacks_fire_in_order(async_ci_sandbox: AsyncCodeSandbox) -> None:
    events: list[tuple[str, Any]] = []

    async def on_stdout(m: OutputMessage) -> None:
        await asyncio.sleep(0)
        events.append(("stdout", m))

    async def on_error(e: ExecutionError) -> None:
        events.append(("error", e))

    execution = await async_ci_sandbox.run_code(
        "import sys\n"
        "from IPython.display import display\n"
        "print('out 1', flush=True)\n"
        "print('err 1', file=sys.stderr, flush=True)\n"
        "display({'text/plain': 'shown'}, raw=True)\n"
        "print('out 2', flush=True)\n"
        "raise RuntimeError('stop here')\n",
        on_stdout=on_stdout,
        on_stderr=lambda m: events.append(("stderr", m)),
        on_result=lambda r: events.append(("result", r)),
        on_error=on_error,
    )
    assert [kind for kind, _ in events] == ["stdout", "stderr", "result", "stdout", "error"]
    out1, err1, shown, out2, error = (item for _, item in events)
    assert out1.line == "out 1\n" and not out1.error
    assert err1.line == "err 1\n" and err1.error
    assert isinstance(shown, Result) and shown.text == "shown" and not shown.is_main_result
    assert out2.line == "out 2\n"
    assert isinstance(error, ExecutionError) and (error.name, error.value) == ("RuntimeError", "stop here")
    assert execution.logs.stdout == ["out 1\n", "out 2\n"]
    assert execution.logs.stderr == ["err 1\n"]


async def test_exception_is_reported_with_name_value_and_traceback(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code("def f():\n    raise KeyError('missing')\nf()")
    assert execution.error is not None
    assert execution.error.name == "KeyError"
    assert execution.error.value == "'missing'"
    assert "KeyError" in execution.error.traceback
    assert execution.results == []

    execution = await async_ci_sandbox.run_code("xyz")
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("NameError", "name 'xyz' is not defined")


async def test_execution_count_increments_per_run(async_ci_sandbox: AsyncCodeSandbox) -> None:
    await async_ci_sandbox.run_code("echo 'E2B is awesome!'")
    assert (await async_ci_sandbox.run_code("!pwd")).execution_count == 2
    assert (await async_ci_sandbox.run_code("3")).execution_count == 3


async def test_display_data_comes_before_and_apart_from_the_main_result(async_ci_sandbox: AsyncCodeSandbox) -> None:
    streamed: list[Result] = []

    async def on_result(r: Result) -> None:
        streamed.append(r)

    execution = await async_ci_sandbox.run_code(
        "import matplotlib.pyplot as plt\nimport numpy as np\n"
        "x = np.linspace(0, 20, 100)\nplt.plot(x, np.sin(x))\nplt.show()\nx.size",
        on_result=on_result,
    )
    assert len(streamed) == 2 and streamed == execution.results
    shown, main = execution.results
    assert not shown.is_main_result and shown.png and shown.text and not shown.extra
    assert main.is_main_result and main.text == "100"


async def test_dataframe_result_has_html_and_data(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code('import pandas as pd\npd.DataFrame({"a": [1, 2, 3]})')
    result = execution.results[0]
    assert result.data is not None and result.data["a"] == [1, 2, 3]
    assert result.html and "<table" in result.html


async def test_pil_image_show_displays_a_png(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code(
        "import numpy\nfrom PIL import Image\n"
        "image = Image.fromarray((numpy.random.rand(16, 16, 3) * 255).astype('uint8')).convert('RGBA')\n"
        "image.show()\nprint('Image shown.')"
    )
    assert stdout_of(execution) == "Image shown.\n"
    assert png_size(execution.results[0].png) == (16, 16)


async def test_custom_repr_object_shows_its_formats(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code(
        "class Rich:\n"
        "    def _repr_html_(self): return '<i>rich</i>'\n"
        "    def _repr_markdown_(self): return '_rich_'\n"
        "    def _repr_json_(self): return {'rich': True}\n"
        "Rich()"
    )
    result = execution.results[0]
    assert (result.html, result.markdown, result.json) == ("<i>rich</i>", "_rich_", {"rich": True})
    assert result.is_main_result

    execution = await async_ci_sandbox.run_code(
        "from IPython.display import display\ndisplay({'text/latex': r'\\text{CustomReprObject}'}, raw=True)"
    )
    assert execution.results[0].formats() == ["latex"]


async def test_figure_with_several_axes_is_a_superchart(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code(
        "import matplotlib.pyplot as plt\nimport numpy as np\n"
        "fig, axs = plt.subplots(1, 2, figsize=(10, 8))\n"
        "fig.suptitle('Multiple Charts Example', fontsize=16)\n"
        "x1 = np.linspace(0, 10, 100)\n"
        "axs[0].plot(x1, np.sin(x1), 'r')\naxs[0].set_title('Sine Wave')\n"
        "axs[1].scatter(np.random.rand(5), np.random.rand(5), c='blue', label='Dataset 1')\n"
        "axs[1].set_xlabel('X')\naxs[1].set_ylabel('Y')\naxs[1].set_title('Scatter Plot')\n"
        "plt.show()"
    )
    chart = execution.results[0].chart
    assert isinstance(chart, SuperChart)
    assert chart.type == ChartType.SUPERCHART
    assert chart.title == "Multiple Charts Example"
    line, scatter = chart.elements
    assert isinstance(line, LineChart) and line.title == "Sine Wave" and len(line.elements[0].points) == 100
    assert isinstance(scatter, ScatterChart) and scatter.title == "Scatter Plot"
    assert (scatter.x_label, scatter.y_label) == ("X", "Y")
    assert len(scatter.elements[0].points) == 5


async def test_contexts_are_created_listed_isolated_restarted_and_removed(async_ci_sandbox: AsyncCodeSandbox) -> None:
    languages = [c.language for c in await async_ci_sandbox.list_code_contexts()]
    assert "python" in languages and "javascript" in languages

    context = await async_ci_sandbox.create_code_context(cwd="/tmp")
    assert (context.language, context.cwd) == ("python", "/tmp")
    last = (await async_ci_sandbox.list_code_contexts())[-1]
    assert (last.id, last.language, last.cwd) == (context.id, "python", "/tmp")

    await async_ci_sandbox.run_code("x = 1")
    isolated = await async_ci_sandbox.run_code("x", context=context)
    assert isolated.error is not None and isolated.error.value == "name 'x' is not defined"
    assert (await async_ci_sandbox.run_code("import os; os.getcwd()", context=context)).text == "/tmp"

    await async_ci_sandbox.run_code("y = 2", context=context)
    await async_ci_sandbox.restart_code_context(context)
    restarted = await async_ci_sandbox.run_code("y", context=context)
    assert restarted.error is not None and restarted.error.name == "NameError"

    await async_ci_sandbox.remove_code_context(context.id)
    assert context.id not in [c.id for c in await async_ci_sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException):
        await async_ci_sandbox.run_code("1", context=context)
    assert (await async_ci_sandbox.run_code("x")).text == "1"


async def test_context_and_language_together_are_refused(async_ci_sandbox: AsyncCodeSandbox) -> None:
    context = await async_ci_sandbox.create_code_context(language="python")
    with pytest.raises(InvalidArgumentException):
        await async_ci_sandbox.run_code("1", language="js", context=context)  # type: ignore[call-overload]


async def test_client_timeout_interrupts_the_kernel_and_keeps_its_state(async_ci_sandbox: AsyncCodeSandbox) -> None:
    await async_ci_sandbox.run_code("before = 42")
    with pytest.raises(TimeoutException):
        await async_ci_sandbox.run_code("import time; time.sleep(30)", timeout=2)
    execution = await async_ci_sandbox.run_code("before", timeout=15)
    assert execution.error is None
    assert execution.text == "42"


async def test_cancelled_run_code_task_interrupts_the_kernel(async_ci_sandbox: AsyncCodeSandbox) -> None:
    started = asyncio.Event()

    async def on_stdout(_: OutputMessage) -> None:
        started.set()

    task = asyncio.create_task(
        async_ci_sandbox.run_code("import time\nprint('sleeping', flush=True)\ntime.sleep(30)", on_stdout=on_stdout)
    )
    await asyncio.wait_for(started.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await async_ci_sandbox.run_code("1 + 1", timeout=15)).text == "2"


async def test_reconnected_sandbox_keeps_kernel_state(async_ci_sandbox: AsyncCodeSandbox) -> None:
    await async_ci_sandbox.run_code("x = 1")
    again = await AsyncCodeSandbox.connect(async_ci_sandbox.sandbox_id)
    assert isinstance(again, AsyncCodeSandbox)  # typed as e2b's AsyncSandbox, made as the class it is called on
    assert (await again.run_code("x += 1; x")).text == "2"


async def test_killing_the_sandbox_mid_run_raises_timeout_exception(async_ci_sandbox: AsyncCodeSandbox) -> None:
    async def kill_later() -> None:
        await asyncio.sleep(2)
        await async_ci_sandbox.kill()

    killer = asyncio.create_task(kill_later())
    try:
        with pytest.raises(TimeoutException, match="sandbox was killed"):
            await async_ci_sandbox.run_code("import time; time.sleep(300)", timeout=120)
    finally:
        killer.cancel()


async def test_output_streams_while_the_code_runs(async_ci_sandbox: AsyncCodeSandbox) -> None:
    arrivals = Arrivals()

    async def on_stdout(m: OutputMessage) -> None:
        arrivals(m)

    execution = await async_ci_sandbox.run_code(
        "import time\nfor i in range(60):\n    print(f'line {i}', flush=True)\n    time.sleep(1)",
        on_stdout=on_stdout,
        timeout=180,
    )
    assert execution.error is None
    assert arrivals.text() == "".join(f"line {i}\n" for i in range(60)) == stdout_of(execution)
    assert stderr_of(execution) == ""
    assert arrivals.distinct_seconds() >= 30, f"stdout arrived in only {arrivals.distinct_seconds()} distinct seconds"
