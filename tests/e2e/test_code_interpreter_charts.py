"""Matplotlib figures come back as a PNG plus chart data (`e2b/chart`), as in E2B.

The chart data is what the `e2b-charts` package extracts; the SDK turns it into typed
charts (`LineChart`, `BarChart`, ...). The expectations follow e2b-dev/code-interpreter's
python/tests/charts.
"""

from __future__ import annotations

import datetime
import json
from typing import cast

import pytest
from e2b_code_interpreter import Result
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    Chart,
    ChartType,
    LineChart,
    PieChart,
    ScatterChart,
    SuperChart,
)

from ci_helpers import CodeSandbox, png_size

pytestmark = pytest.mark.timeout(300)


def only_chart_result(sbx: CodeSandbox, code: str) -> Result:
    """Runs `code` and returns its one result that carries a chart, checking its PNG too."""
    execution = sbx.run_code(code)
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}"
    with_chart = [r for r in execution.results if r.chart is not None]
    assert len(with_chart) == 1, (
        f"expected one chart, got results with formats {[list(r.formats()) for r in execution.results]}"
    )
    result = with_chart[0]
    width, height = png_size(result.png)
    assert width > 100 and height > 100
    return result


LINE = """
import numpy as np
import matplotlib.pyplot as plt
import datetime

dates = [datetime.date(2023, 9, 1) + datetime.timedelta(seconds=i) for i in range(100)]
x = np.linspace(0, 2 * np.pi, 100)

plt.figure(figsize=(10, 6))
plt.plot(dates, np.sin(x), label='sin(x)')
plt.plot(dates, np.cos(x), label='cos(x)')
plt.xlabel("Time (s)")
plt.ylabel("Amplitude (Hz)")
plt.title('Plot of sin(x) and cos(x)')
plt.show()
"""


def test_line_chart_has_labels_units_scales_ticks_and_points(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(ci_sandbox, LINE).chart
    assert isinstance(chart, LineChart)
    assert chart.type == ChartType.LINE
    assert chart.title == "Plot of sin(x) and cos(x)"
    assert (chart.x_label, chart.y_label) == ("Time (s)", "Amplitude (Hz)")
    assert (chart.x_unit, chart.y_unit) == ("s", "Hz")
    assert (chart.x_scale, chart.y_scale) == ("datetime", "linear")

    assert chart.x_ticks and all(isinstance(x, str) for x in chart.x_ticks)
    datetime.datetime.fromisoformat(cast(str, chart.x_ticks[0]))  # a str: checked above
    assert chart.y_ticks and all(isinstance(y, float) for y in chart.y_ticks)
    assert all(isinstance(label, str) for label in chart.y_tick_labels)

    sin, cos = chart.elements
    assert (sin.label, cos.label) == ("sin(x)", "cos(x)")
    assert len(sin.points) == len(cos.points) == 100
    assert all(isinstance(x, str) and isinstance(y, float) for x, y in sin.points)
    datetime.datetime.fromisoformat(cast(str, sin.points[0][0]))  # a str: checked above


def test_log_scale_is_reported(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import numpy as np
import matplotlib.pyplot as plt

x = np.linspace(0, 100, 100)
plt.figure(figsize=(10, 6))
plt.plot(x, np.exp(x), label='y = e^x')
plt.yscale('log')
plt.xlabel('X-axis')
plt.ylabel('Y-axis (log scale)')
plt.title('Chart with Log Scale on Y-axis')
plt.legend()
plt.show()
""",
    ).chart
    assert isinstance(chart, LineChart)
    assert (chart.x_scale, chart.y_scale) == ("linear", "log")
    assert (chart.x_unit, chart.y_unit) == (None, "log scale")
    assert [line.label for line in chart.elements] == ["y = e^x"]
    assert len(chart.elements[0].points) == 100


SCATTER = """
import matplotlib.pyplot as plt
import numpy as np

plt.xlabel("A")
plt.ylabel("B")
plt.scatter(np.random.rand(5), np.random.rand(5), c='blue', label='Dataset 1')
plt.scatter(np.random.rand(10), np.random.rand(10), c='red', label='Dataset 2')
plt.show()
"""


def test_scatter_chart_has_one_element_per_dataset(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(ci_sandbox, SCATTER).chart
    assert isinstance(chart, ScatterChart)
    assert chart.type == ChartType.SCATTER
    # The SDK types Chart.title as str; a chart without a title has None.
    assert cast("str | None", chart.title) is None
    assert (chart.x_label, chart.y_label) == ("A", "B")
    assert (chart.x_scale, chart.y_scale) == ("linear", "linear")
    assert all(isinstance(x, float) for x in chart.x_ticks)
    assert all(isinstance(y, float) for y in chart.y_ticks)
    first, second = chart.elements
    assert (first.label, len(first.points)) == ("Dataset 1", 5)
    assert (second.label, len(second.points)) == ("Dataset 2", 10)
    assert all(isinstance(p, tuple) and len(p) == 2 for p in first.points)


def test_chart_survives_the_sdks_json_serialisation(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(SCATTER)
    serialized = json.loads(execution.to_json())
    assert serialized["results"][0]["chart"]["type"] == "scatter"


def test_bar_chart_has_labels_values_and_groups(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import matplotlib.pyplot as plt

authors = ['Author A', 'Author B', 'Author C', 'Author D']
sales = [100, 200, 300, 400]
plt.figure(figsize=(10, 6))
plt.bar(authors, sales, label='Books Sold', color='blue')
plt.xlabel('Authors')
plt.ylabel('Number of Books Sold')
plt.title('Book Sales by Authors')
plt.tight_layout()
plt.show()
""",
    ).chart
    assert isinstance(chart, BarChart)
    assert chart.type == ChartType.BAR
    assert chart.title == "Book Sales by Authors"
    assert (chart.x_label, chart.y_label) == ("Authors", "Number of Books Sold")
    assert (chart.x_unit, chart.y_unit) == (None, None)
    # The SDK types BarData.value as str; it holds what e2b-charts sent, numbers here.
    assert [cast(object, bar.value) for bar in chart.elements] == [100, 200, 300, 400]
    assert [bar.label for bar in chart.elements] == ["Author A", "Author B", "Author C", "Author D"]
    assert [bar.group for bar in chart.elements] == ["Books Sold"] * 4


def test_pie_chart_has_angles_and_radii(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 8))
ax.pie([90, 10], labels=["No", "No, in blue"], autopct='%1.1f%%', startangle=90)
ax.axis('equal')
plt.title('Will I wake up early tomorrow?')
plt.show()
""",
    ).chart
    assert isinstance(chart, PieChart)
    assert chart.type == ChartType.PIE
    assert chart.title == "Will I wake up early tomorrow?"
    assert [(p.label, p.angle, p.radius) for p in chart.elements] == [("No", 324, 1), ("No, in blue", 36, 1)]


def test_box_and_whisker_chart_has_quartiles_and_outliers(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import matplotlib.pyplot as plt

data = {
    'Class A': [85, 90, 78, 92, 88],
    'Class B': [95, 89, 76, 91, 84, 87],
    'Class C': [75, 82, 88, 79, 86],
}
fig, ax = plt.subplots(figsize=(10, 6))
ax.set_title('Exam Scores Distribution')
ax.set_xlabel('Class')
ax.set_ylabel('Score')
try:
    ax.boxplot(list(data.values()), tick_labels=list(data.keys()), patch_artist=True)
except TypeError:  # matplotlib before 3.9 calls it `labels`
    ax.boxplot(list(data.values()), labels=list(data.keys()), patch_artist=True)
plt.tight_layout()
plt.show()
""",
    ).chart
    assert isinstance(chart, BoxAndWhiskerChart)
    assert chart.type == ChartType.BOX_AND_WHISKER
    assert chart.title == "Exam Scores Distribution"
    assert (chart.x_label, chart.y_label) == ("Class", "Score")
    boxes = chart.elements
    assert [b.label for b in boxes] == ["Class A", "Class B", "Class C"]
    assert [b.outliers for b in boxes] == [[], [76], []]
    assert [b.min for b in boxes] == [78, 84, 75]
    assert [b.first_quartile for b in boxes] == [85, 84.75, 79]
    assert [b.median for b in boxes] == [88, 88, 82]
    assert [b.third_quartile for b in boxes] == [90, 90.5, 86]
    assert [b.max for b in boxes] == [92, 95, 88]


def test_figure_with_several_axes_is_a_superchart(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import matplotlib.pyplot as plt
import numpy as np

fig, axs = plt.subplots(1, 2, figsize=(10, 8))
fig.suptitle('Multiple Charts Example', fontsize=16)
x1 = np.linspace(0, 10, 100)
axs[0].plot(x1, np.sin(x1), 'r')
axs[0].set_title('Sine Wave')
axs[0].grid(True)
axs[1].scatter(np.random.rand(5), np.random.rand(5), c='blue', label='Dataset 1')
axs[1].set_xlabel('X')
axs[1].set_ylabel('Y')
axs[1].set_title('Scatter Plot')
axs[1].grid(True)
plt.show()
""",
    ).chart
    assert isinstance(chart, SuperChart)
    assert chart.type == ChartType.SUPERCHART
    assert chart.title == "Multiple Charts Example"
    line, scatter = chart.elements
    assert isinstance(line, LineChart)
    assert line.title == "Sine Wave"
    assert (line.x_label, line.y_label) == (None, None)
    assert len(line.elements) == 1 and len(line.elements[0].points) == 100
    assert isinstance(scatter, ScatterChart)
    assert scatter.title == "Scatter Plot"
    assert (scatter.x_label, scatter.y_label) == ("X", "Y")
    assert len(scatter.elements) == 1 and len(scatter.elements[0].points) == 5


def test_figure_without_known_chart_elements_is_an_unknown_chart(ci_sandbox: CodeSandbox) -> None:
    chart = only_chart_result(
        ci_sandbox,
        """
import matplotlib.pyplot as plt

fig, ax = plt.subplots()
ax.add_artist(plt.Circle((0, 0), 1, color='blue', fill=False, linewidth=2))
ax.add_artist(plt.Circle((0, 0), 2, color='red', fill=False, linewidth=2))
ax.grid(True)
plt.title('Two Concentric Circles')
plt.show()
""",
    ).chart
    assert isinstance(chart, Chart)
    assert chart.type == ChartType.UNKNOWN
    assert chart.title == "Two Concentric Circles"
    assert chart.elements == []


def test_figure_left_open_at_the_end_of_a_cell_is_shown_with_its_chart(ci_sandbox: CodeSandbox) -> None:
    result = only_chart_result(
        ci_sandbox,
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2, 3], [4, 5, 6], label='rising')\n"
        "ax.set_title('left open')\n"
        "None",
    )
    assert not result.is_main_result
    assert isinstance(result.chart, LineChart)
    assert result.chart.title == "left open"
    assert result.chart.elements[0].points == [(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]


def test_figure_as_the_value_of_a_cell_is_the_main_result_with_a_chart(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.bar(['a', 'b'], [3, 5])\n"
        "ax.set_title('value of the cell')\n"
        "plt.close(fig)\n"
        "fig"
    )
    assert execution.error is None
    main = [r for r in execution.results if r.is_main_result]
    assert len(main) == 1
    assert main[0].png and png_size(main[0].png)[0] > 0
    assert isinstance(main[0].chart, BarChart)
    assert main[0].chart.title == "value of the cell"
    assert [cast(object, bar.value) for bar in main[0].chart.elements] == [3, 5]  # numbers, typed str
