"""Typed charts: the data behind a matplotlib figure, extracted in the sandbox.

When code in a sandbox shows a matplotlib figure, the interpreter sends the image (`Result.png`)
and, next to it, the figure's data as JSON (the `e2b/chart` MIME type). `Result.chart` is that JSON
turned into one of the classes below, chosen by its `type`:

| `type`            | class                | `elements`                   |
|-------------------|----------------------|------------------------------|
| `line`            | `LineChart`          | `PointData` (one per line)   |
| `scatter`         | `ScatterChart`       | `PointData` (one per series) |
| `bar`             | `BarChart`           | `BarData` (one per bar)      |
| `pie`             | `PieChart`           | `PieData` (one per wedge)    |
| `box_and_whisker` | `BoxAndWhiskerChart` | `BoxAndWhiskerData`          |
| `superchart`      | `SuperChart`         | `Chart` (one per subplot)    |
| anything else     | `Chart`              | the raw elements             |

The names and fields are those of `e2b_code_interpreter.charts`. Every chart keeps the JSON it was
built from (`to_dict()`), so nothing the sandbox sent is lost.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Optional, Union

__all__ = [
    "BarChart",
    "BarData",
    "BoxAndWhiskerChart",
    "BoxAndWhiskerData",
    "Chart",
    "Chart2D",
    "ChartType",
    "ChartTypes",
    "PieChart",
    "PieData",
    "PointChart",
    "PointData",
    "ScaleType",
    "ScatterChart",
    "SuperChart",
    "chart_from_json",
]


class ChartType(str, enum.Enum):
    """The kind of a chart (its JSON `type`)."""

    LINE = "line"
    """Lines (`plt.plot`)."""
    SCATTER = "scatter"
    """Points (`plt.scatter`)."""
    BAR = "bar"
    """Bars, vertical or horizontal (`plt.bar`, `plt.barh`)."""
    PIE = "pie"
    """A pie (`plt.pie`)."""
    BOX_AND_WHISKER = "box_and_whisker"
    """Box plots (`plt.boxplot`)."""
    SUPERCHART = "superchart"
    """A figure with several subplots; each element is a chart."""
    UNKNOWN = "unknown"
    """A figure whose kind could not be told."""


class ScaleType(str, enum.Enum):
    """The scale of a chart axis."""

    LINEAR = "linear"
    """Numbers, evenly spaced."""
    DATETIME = "datetime"
    """Dates and times (tick values are ISO 8601 strings)."""
    CATEGORICAL = "categorical"
    """Named categories."""
    LOG = "log"
    """Logarithmic."""
    SYMLOG = "symlog"
    """Symmetric logarithmic."""
    LOGIT = "logit"
    """Logit."""
    FUNCTION = "function"
    """A user-defined function."""
    FUNCTIONLOG = "functionlog"
    """A user-defined function on a logarithmic scale."""
    ASINH = "asinh"
    """Inverse hyperbolic sine."""
    UNKNOWN = "unknown"
    """A scale this SDK does not know."""


def _chart_type(value: Any) -> ChartType:
    try:
        return ChartType(value)
    except ValueError:
        return ChartType.UNKNOWN


def _scale(value: Any) -> ScaleType:
    if value is None:
        return ScaleType.LINEAR
    try:
        return ScaleType(value)
    except ValueError:
        return ScaleType.UNKNOWN


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class Chart:
    """A chart extracted from a figure: its type, title and elements.

    The base of every chart class; a chart of a type this SDK does not know is a plain `Chart`
    whose `elements` are the raw JSON values.
    """

    type: ChartType
    """The kind of chart."""
    title: Optional[str]
    """The title (the axes' title, or the figure's for a `SuperChart`); None when it has none."""
    elements: list[Any]
    """What the chart shows; the subclasses give the elements their types."""

    _kind = ChartType.UNKNOWN

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the chart from its JSON object (`data`, or keyword arguments)."""
        raw: dict[str, Any] = dict(data or {})
        raw.update(fields)
        self._raw = raw
        self.type = _chart_type(raw.get("type") or self._kind)
        self.title = _str(raw.get("title"))
        self.elements = self._elements(_list(raw.get("elements")))

    def _elements(self, raw: list[Any]) -> list[Any]:
        return raw

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the chart was built from."""
        return dict(self._raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, elements={len(self.elements)})"


class Chart2D(Chart):
    """A chart with an x and a y axis."""

    x_label: Optional[str]
    """The x axis label."""
    y_label: Optional[str]
    """The y axis label."""
    x_unit: Optional[str]
    """The unit of the x axis, read from its label (`"time (s)"` or `"time [s]"` give `"s"`)."""
    y_unit: Optional[str]
    """The unit of the y axis, read from its label."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the chart from its JSON object."""
        super().__init__(data, **fields)
        self.x_label = _str(self._raw.get("x_label"))
        self.y_label = _str(self._raw.get("y_label"))
        self.x_unit = _str(self._raw.get("x_unit"))
        self.y_unit = _str(self._raw.get("y_unit"))


class PointData:
    """One series of a line or scatter chart."""

    label: str
    """The series' label (its legend entry, or `"Line 0"` ... when it has none)."""
    points: list[tuple[Union[str, float], Union[str, float]]]
    """The (x, y) points; dates are ISO 8601 strings."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the series from its JSON object."""
        raw = {**_mapping(data), **fields}
        self.label = str(raw.get("label", ""))
        self.points = [(p[0], p[1]) for p in _list(raw.get("points")) if isinstance(p, (list, tuple)) and len(p) >= 2]

    def __repr__(self) -> str:
        return f"PointData(label={self.label!r}, points={len(self.points)})"


class PointChart(Chart2D):
    """A chart of points on two axes: the base of `LineChart` and `ScatterChart`."""

    x_ticks: list[Union[str, float]]
    """Where the x axis has ticks."""
    x_tick_labels: list[str]
    """The labels of those ticks."""
    x_scale: ScaleType
    """The x axis scale."""
    y_ticks: list[Union[str, float]]
    """Where the y axis has ticks."""
    y_tick_labels: list[str]
    """The labels of those ticks."""
    y_scale: ScaleType
    """The y axis scale."""
    elements: list[PointData]
    """One series per line (or set of points)."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the chart from its JSON object."""
        super().__init__(data, **fields)
        self.x_ticks = _list(self._raw.get("x_ticks"))
        self.x_tick_labels = [str(t) for t in _list(self._raw.get("x_tick_labels"))]
        self.x_scale = _scale(self._raw.get("x_scale"))
        self.y_ticks = _list(self._raw.get("y_ticks"))
        self.y_tick_labels = [str(t) for t in _list(self._raw.get("y_tick_labels"))]
        self.y_scale = _scale(self._raw.get("y_scale"))

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [PointData(e) for e in raw if isinstance(e, Mapping)]


class LineChart(PointChart):
    """A line chart: each element is one line."""

    _kind = ChartType.LINE


class ScatterChart(PointChart):
    """A scatter chart: each element is one set of points."""

    _kind = ChartType.SCATTER


class BarData:
    """One bar of a bar chart."""

    label: str
    """The bar's label (its category)."""
    group: str
    """The group (legend entry) the bar belongs to."""
    value: Any
    """The bar's height (its length, for horizontal bars); a number."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the bar from its JSON object."""
        raw = {**_mapping(data), **fields}
        self.label = str(raw.get("label", ""))
        self.group = str(raw.get("group", ""))
        self.value = raw.get("value")

    def __repr__(self) -> str:
        return f"BarData(label={self.label!r}, group={self.group!r}, value={self.value!r})"


class BarChart(Chart2D):
    """A bar chart: each element is one bar."""

    _kind = ChartType.BAR

    elements: list[BarData]
    """The bars, group by group."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [BarData(e) for e in raw if isinstance(e, Mapping)]


class PieData:
    """One wedge of a pie chart."""

    label: str
    """The wedge's label."""
    angle: float
    """The wedge's angle, in degrees."""
    radius: float
    """The wedge's radius."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the wedge from its JSON object."""
        raw = {**_mapping(data), **fields}
        self.label = str(raw.get("label", ""))
        self.angle = _float(raw.get("angle")) or 0.0
        self.radius = _float(raw.get("radius")) or 0.0

    def __repr__(self) -> str:
        return f"PieData(label={self.label!r}, angle={self.angle!r}, radius={self.radius!r})"


class PieChart(Chart):
    """A pie chart: each element is one wedge."""

    _kind = ChartType.PIE

    elements: list[PieData]
    """The wedges."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [PieData(e) for e in raw if isinstance(e, Mapping)]


class BoxAndWhiskerData:
    """One box of a box-and-whisker chart."""

    label: str
    """The box's label."""
    min: Optional[float]
    """The lower whisker."""
    first_quartile: Optional[float]
    """The bottom of the box."""
    median: Optional[float]
    """The line inside the box."""
    third_quartile: Optional[float]
    """The top of the box."""
    max: Optional[float]
    """The upper whisker."""
    outliers: list[float]
    """The points beyond the whiskers."""

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Builds the box from its JSON object."""
        raw = {**_mapping(data), **fields}
        self.label = str(raw.get("label", ""))
        self.min = _float(raw.get("min"))
        self.first_quartile = _float(raw.get("first_quartile"))
        self.median = _float(raw.get("median"))
        self.third_quartile = _float(raw.get("third_quartile"))
        self.max = _float(raw.get("max"))
        self.outliers = [v for v in (_float(o) for o in _list(raw.get("outliers"))) if v is not None]

    def __repr__(self) -> str:
        return (
            f"BoxAndWhiskerData(label={self.label!r}, min={self.min!r}, first_quartile={self.first_quartile!r}, "
            f"median={self.median!r}, third_quartile={self.third_quartile!r}, max={self.max!r}, "
            f"outliers={self.outliers!r})"
        )


class BoxAndWhiskerChart(Chart2D):
    """A box-and-whisker chart: each element is one box."""

    _kind = ChartType.BOX_AND_WHISKER

    elements: list[BoxAndWhiskerData]
    """The boxes."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [BoxAndWhiskerData(e) for e in raw if isinstance(e, Mapping)]


class SuperChart(Chart):
    """A figure of several subplots: each element is the chart of one subplot."""

    _kind = ChartType.SUPERCHART

    elements: list[Chart]
    """The subplots' charts, in the figure's order."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        charts = [chart_from_json(e) for e in raw if isinstance(e, Mapping)]
        return [c for c in charts if c is not None]


ChartTypes = Union[Chart, LineChart, ScatterChart, BarChart, PieChart, BoxAndWhiskerChart, SuperChart]
"""Any chart `Result.chart` may hold."""

_CLASSES = {
    ChartType.LINE: LineChart,
    ChartType.SCATTER: ScatterChart,
    ChartType.BAR: BarChart,
    ChartType.PIE: PieChart,
    ChartType.BOX_AND_WHISKER: BoxAndWhiskerChart,
    ChartType.SUPERCHART: SuperChart,
}


def chart_from_json(data: Optional[Mapping[str, Any]]) -> Optional[Chart]:
    """The chart described by `data` (the `e2b/chart` JSON), as the class its `type` names; None for
    no data."""
    if not data:
        return None
    cls = _CLASSES.get(_chart_type(data.get("type")), Chart)
    return cls(data)
