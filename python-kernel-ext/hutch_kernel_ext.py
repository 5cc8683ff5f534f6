"""hutch's IPython extension for the code-interpreter kernels.

Every Python kernel of the ``code-interpreter-v1`` template loads it at start
(``c.InteractiveShellApp.extensions`` in the environment's
``etc/ipython/ipython_kernel_config.py``). It makes results carry what E2B's
code interpreter returns, on top of IPython's usual ``text/plain``,
``text/html`` and ``image/png``:

* a pandas ``DataFrame`` also gets ``e2b/data``: its columns as lists
  (``DataFrame.to_dict(orient="list")``), made JSON-safe;
* a matplotlib ``Figure`` (shown with ``plt.show()``, left open at the end of a
  cell, or the value of the cell) also gets ``e2b/chart``, the chart as data,
  computed by the ``e2b-charts`` package;
* a ``list`` or ``dict`` result also gets ``application/json``;
* PIL's ``Image.show()`` displays the image (``image/png``) instead of looking
  for an external viewer, and ``Image.save()`` to a file path displays it too,
  as E2B does.

Nothing here imports pandas, matplotlib or PIL: the formatters look only at
modules the user's code has already imported, and the PIL changes are made
when PIL is first imported, so a kernel that never uses them pays nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.abc
import math
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from IPython.core.formatters import BaseFormatter, JSONFormatter
from traitlets import ObjectName, Unicode

DATA_MIME = "e2b/data"
CHART_MIME = "e2b/chart"
JSON_MIME = "application/json"


def load_ipython_extension(ipython: Any) -> None:
    """Registers the formatters on `ipython` and arranges the PIL changes."""
    display_formatter = ipython.display_formatter
    formatters = display_formatter.formatters
    formatters[DATA_MIME] = DataFrameFormatter(parent=display_formatter)
    formatters[CHART_MIME] = FigureChartFormatter(parent=display_formatter)
    formatters[JSON_MIME] = ListDictJSONFormatter(parent=display_formatter)
    _after_import("PIL.ImageShow", _register_pil_viewer)
    _after_import("PIL.Image", _display_on_save)


# --- pandas DataFrame -> e2b/data ---------------------------------------------


class DataFrameFormatter(BaseFormatter):  # type: ignore[misc]
    """``e2b/data``: a DataFrame's columns as ``{column: [values]}``."""

    format_type = Unicode(DATA_MIME)
    print_method = ObjectName("_repr_e2b_data_")
    _return_type = (dict,)

    def __call__(self, obj: Any) -> Any:
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(obj, pandas.DataFrame):
            try:
                return dataframe_to_data(obj)
            except Exception:  # a formatter bug must not turn into the user's error
                return None
        return super().__call__(obj)


def dataframe_to_data(frame: Any) -> dict[str, list[Any]]:
    """``frame.to_dict(orient="list")`` with values JSON can carry.

    Column names become strings (JSON object keys are strings); dates and
    times become ISO 8601 strings (as E2B does); NaN, infinities, NaT and
    missing values become ``null``; anything else without a JSON form becomes
    its ``str``.
    """
    data: dict[str, list[Any]] = {}
    for name, column in frame.items():
        data[name if isinstance(name, str) else str(name)] = [json_safe(value) for value in column.tolist()]
    return data


def json_safe(value: Any) -> Any:
    """`value` as plain JSON data (see `dataframe_to_data`)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime.date, datetime.time)):
        # pandas.NaT is a datetime subclass that is not equal to itself.
        return value.isoformat() if value == value else None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars left in object columns
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return json_safe(item())
        except Exception:
            pass
    try:
        if value != value:  # pandas.NA, decimal NaN and friends
            return None
    except Exception:  # pandas.NA refuses to be a bool
        return None
    return str(value)


# --- matplotlib Figure -> e2b/chart -------------------------------------------


class FigureChartFormatter(BaseFormatter):  # type: ignore[misc]
    """``e2b/chart``: a matplotlib figure as chart data, by ``e2b-charts``."""

    format_type = Unicode(CHART_MIME)
    print_method = ObjectName("_repr_e2b_chart_")
    _return_type = (dict,)

    def __call__(self, obj: Any) -> Any:
        figure_module = sys.modules.get("matplotlib.figure")
        if figure_module is not None and isinstance(obj, figure_module.Figure):
            return figure_to_chart(obj)
        return super().__call__(obj)


def figure_to_chart(figure: Any) -> dict[str, Any] | None:
    """The chart data of `figure`, or None for a blank figure or one that
    ``e2b-charts`` cannot read."""
    try:
        from e2b_charts import chart_figure_to_chart

        chart = chart_figure_to_chart(figure)
        if chart is None:
            return None
        # JSON mode: enums as their values, NaN as null.
        data: dict[str, Any] = chart.model_dump(mode="json")
        return data
    except Exception:
        return None


# --- list / dict -> application/json ------------------------------------------


class ListDictJSONFormatter(JSONFormatter):  # type: ignore[misc]
    """``application/json`` for list and dict results too (numpy values
    included), besides objects with ``_repr_json_``."""

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, (list, dict)):
            try:
                import orjson

                options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
                return orjson.loads(orjson.dumps(obj, option=options)), {"expanded": True}
            except Exception:
                pass  # not JSON-able: IPython's own rules decide
        return super().__call__(obj)


# --- PIL ------------------------------------------------------------------------


def _display(image: Any) -> None:
    from IPython.display import display

    display(image)


def _register_pil_viewer(image_show: Any) -> None:
    """Puts a viewer in front of PIL's list that displays the image in the
    kernel's output instead of opening a program (there is no screen)."""

    if any(getattr(v, "_hutch_displays", False) for v in image_show._viewers):
        return  # the extension was loaded again

    class KernelOutputViewer(image_show.Viewer):  # type: ignore[misc]
        _hutch_displays = True

        def show(self, image: Any, **options: Any) -> int:
            _display(image)
            return 1

    image_show.register(KernelOutputViewer(), order=-1)


def _display_on_save(image_module: Any) -> None:
    """``Image.save(path)`` also displays the image, as in E2B's sandboxes.
    Saving to a file object (which IPython itself does to make the PNG of an
    image) does not."""
    original = image_module.Image.save
    if getattr(original, "_hutch_displays", False):  # the extension was loaded again
        return

    @functools.wraps(original)
    def save(self: Any, fp: Any, format: Any = None, **params: Any) -> Any:
        result = original(self, fp, format, **params)
        if isinstance(fp, (str, os.PathLike)):
            with contextlib.suppress(Exception):
                _display(self)
        return result

    save._hutch_displays = True  # type: ignore[attr-defined]
    image_module.Image.save = save


# --- running code when a module is first imported -------------------------------


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Runs a hook right after a named module has been executed, whoever
    imports it, without importing it ahead of time."""

    def __init__(self) -> None:
        self.hooks: dict[str, Callable[[Any], None]] = {}
        self._local = threading.local()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        hook = self.hooks.get(name)
        if hook is None or getattr(self._local, "busy", False):
            return None
        self._local.busy = True  # the lookup below must not come back here
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
        finally:
            self._local.busy = False
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec
        self.hooks.pop(name, None)

        # Loaders from the path finder are made per module, so wrapping this
        # instance's method changes nothing for any other module.
        def exec_then_hook(module: Any) -> None:
            exec_module(module)
            _run_hook(hook, module)

        loader.exec_module = exec_then_hook  # type: ignore[union-attr]
        return spec


_finder = _AfterImportFinder()


def _run_hook(hook: Callable[[Any], None], module: Any) -> None:
    with contextlib.suppress(Exception):  # never break the user's import
        hook(module)


def _after_import(name: str, hook: Callable[[Any], None]) -> None:
    module = sys.modules.get(name)
    if module is not None:
        _run_hook(hook, module)
        return
    _finder.hooks[name] = hook
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
