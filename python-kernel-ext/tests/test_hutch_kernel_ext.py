"""The extension inside a real ipykernel, driven over the Jupyter protocol.

Run with a Python environment that has the template's packages
(crates/hutch-template/assets/code-interpreter/python-requirements.txt) and
pytest, from the repository root:

    python -m pytest -q python-kernel-ext/tests
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from jupyter_client.manager import start_new_kernel

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient

EXT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One IOPub message kept by `run`: (msg_type, content).
Output = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockingKernelClient]:
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ, PYTHONPATH=EXT_DIR, HOME=str(home))
    env.pop("MPLBACKEND", None)  # ipykernel then picks its inline backend
    km, kc = start_new_kernel(
        kernel_name="python3",
        extra_arguments=["--ext", "hutch_kernel_ext"],
        env=env,
        cwd=str(home),
    )
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc: BlockingKernelClient, code: str) -> list[Output]:
    """The cell's outputs: [(msg_type, content)]; fails on an error."""
    outputs: list[Output] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] in ("stream", "execute_result", "display_data", "error"):
            outputs.append((msg["msg_type"], msg["content"]))

    reply = kc.execute_interactive(code, timeout=60, output_hook=keep)
    errors = [c for t, c in outputs if t == "error"]
    assert reply["content"]["status"] == "ok", errors
    return outputs


def bundles(outputs: list[Output]) -> list[dict[str, Any]]:
    return [c["data"] for t, c in outputs if t in ("execute_result", "display_data")]


def test_loading_imports_none_of_the_libraries_it_formats(kernel: BlockingKernelClient) -> None:
    out = run(kernel, "import sys\nsorted(m for m in ('pandas', 'matplotlib', 'PIL') if m in sys.modules)")
    assert bundles(out)[0]["text/plain"] == "[]"


def test_plain_results_get_no_extra_formats(kernel: BlockingKernelClient) -> None:
    assert bundles(run(kernel, "1 + 1")) == [{"text/plain": "2"}]


def test_dataframe_result_carries_e2b_data_next_to_text_and_html(kernel: BlockingKernelClient) -> None:
    out = run(
        kernel,
        "import pandas as pd\n"
        "pd.DataFrame({'a': [1, 2, 3], 'b': [1.5, float('nan'), None],"
        " 't': pd.to_datetime(['2024-01-01', None, '2024-01-03']), 3: ['x', 'y', None]})",
    )
    [data] = bundles(out)
    assert "text/plain" in data and "text/html" in data
    assert data["e2b/data"] == {
        "a": [1, 2, 3],
        "b": [1.5, None, None],
        "t": ["2024-01-01T00:00:00", None, "2024-01-03T00:00:00"],
        "3": ["x", "y", None],
    }


def test_plt_show_displays_png_and_chart(kernel: BlockingKernelClient) -> None:
    out = run(
        kernel,
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [4, 5, 6], label='up')\n"
        "plt.title('Rise')\n"
        "plt.xlabel('Time (s)')\n"
        "plt.show()",
    )
    [data] = bundles(out)
    assert data["text/plain"].startswith("<Figure")
    assert data["image/png"]
    chart = data["e2b/chart"]
    assert chart["type"] == "line" and chart["title"] == "Rise"
    assert chart["x_unit"] == "s"
    assert chart["elements"][0]["points"] == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
    assert set(data) == {"text/plain", "image/png", "e2b/chart"}


def test_figure_as_result_carries_chart(kernel: BlockingKernelClient) -> None:
    out = run(
        kernel,
        "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [1, 2])\nplt.close(fig)\nfig",
    )
    [data] = bundles(out)
    assert data["e2b/chart"]["type"] == "bar"
    assert data["image/png"]


def test_blank_figure_has_no_chart(kernel: BlockingKernelClient) -> None:
    out = run(kernel, "fig = plt.figure()\nplt.close(fig)\nfig")
    [data] = bundles(out)
    assert "e2b/chart" not in data


def test_list_and_dict_results_carry_json(kernel: BlockingKernelClient) -> None:
    [data] = bundles(run(kernel, "import numpy as np\n{'a': np.int64(1), 'b': [1.5, 2]}"))
    assert data["application/json"] == {"a": 1, "b": [1.5, 2]}
    assert data["text/plain"] == "{'a': np.int64(1), 'b': [1.5, 2]}"


PIL_IMAGE = (
    "import numpy\n"
    "from PIL import Image\n"
    "image = Image.fromarray((numpy.random.rand(16, 16, 3) * 255).astype('uint8')).convert('RGBA')\n"
)


def test_pil_show_displays_the_image(kernel: BlockingKernelClient) -> None:
    out = run(kernel, PIL_IMAGE + "image.show()\nprint('Image shown.')")
    [data] = bundles(out)
    assert data["image/png"] and data["text/plain"].startswith("<PIL.Image.Image")
    assert ("stream", {"name": "stdout", "text": "Image shown.\n"}) in out


def test_pil_save_to_a_path_displays_and_to_a_buffer_does_not(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    path = tmp_path / "test.png"
    out = run(kernel, PIL_IMAGE + f"image.save({str(path)!r})")
    assert len(bundles(out)) == 1 and path.exists()
    out = run(kernel, "import io\nimage.save(io.BytesIO(), 'PNG')")
    assert bundles(out) == []


def test_reloading_does_not_display_twice(kernel: BlockingKernelClient) -> None:
    out = run(kernel, "%reload_ext hutch_kernel_ext\n" + PIL_IMAGE + "image.show()")
    assert len(bundles(out)) == 1


def test_json_safe_values() -> None:
    sys.path.insert(0, EXT_DIR)
    import datetime

    import hutch_kernel_ext as ext

    assert ext.json_safe(float("inf")) is None
    assert ext.json_safe(datetime.date(2024, 5, 6)) == "2024-05-06"
    assert ext.json_safe({1: (1, float("nan"))}) == {"1": [1, None]}
    assert ext.json_safe(complex(1, 2)) == "(1+2j)"
