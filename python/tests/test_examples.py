"""The programs in examples/ run against the live server and do what they say.

The seed's examples are the seed's code with only the import changed to `hutch`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hutch import Sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_basic_usage_prints_the_result_2(tmp_path: Path) -> None:
    out = run_example("basic_usage.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Result: 2" in out.stdout.splitlines()
    assert "Stdout: []" in out.stdout


def test_streaming_example_streams_and_saves_the_png(tmp_path: Path) -> None:
    out = run_example("streaming.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert "STDOUT: Generating plot..." in lines
    assert "STDOUT: Plot generated." in lines
    assert "STDERR: Calculation finished." in lines
    # The generating line streamed before the chart arrived, and the chart before the end.
    assert lines.index("STDOUT: Generating plot...") < lines.index("RESULT Received (Type: image/png)")
    assert lines.index("RESULT Received (Type: image/png)") < lines.index("STDOUT: Plot generated.")
    saved = list(tmp_path.glob("streamed_chart_*.png"))
    assert len(saved) == 1, out.stdout
    assert saved[0].read_bytes().startswith(PNG_MAGIC)


def build_template(name: str, context: Path) -> subprocess.CompletedProcess[str]:
    """`hutch template build` with the binary of the server under test (HUTCH_TEST_WORK)."""
    work = Path(os.environ["HUTCH_TEST_WORK"])
    binary = (work / "server.cmd").read_text().splitlines()[0]
    return subprocess.run(
        [binary, "template", "build", "--name", name, "--path", str(context)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_custom_template_example_runs_on_the_template_its_dockerfile_builds(tmp_path: Path) -> None:
    built = build_template("my-custom-template", EXAMPLES / "custom-template")
    assert built.returncode == 0, built.stderr + built.stdout
    assert "Template 'my-custom-template' is ready" in built.stdout
    assert "Requirement already satisfied: pandas" in built.stderr

    out = run_example("custom_template.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text, version = out.stdout.splitlines()
    assert text == "None"  # the seed prints execution.text, and print() output is not a result
    assert version.split(".")[0].isdigit(), out.stdout

    # The template's files are in every sandbox of it.
    with Sandbox(template="my-custom-template") as sandbox:
        ex = sandbox.run_code("import helpers\nint(helpers.load_sales().revenue.sum())")
        assert ex.text == "446"
        assert sandbox.commands.run("stat -c '%U %a' /home/user/helpers.py").stdout.strip() == "user 644"


def test_data_analysis_saves_a_chart_and_the_summary(tmp_path: Path) -> None:
    out = run_example("data_analysis.py", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert (tmp_path / "sales_by_region.png").read_bytes().startswith(PNG_MAGIC)
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0] == "region,revenue"
    assert sorted(line.split(",")[0] for line in summary[1:]) == ["east", "north", "south", "west"]
    assert "chart type: bar" in out.stdout


def test_llm_loop_runs_the_recorded_models_code_in_a_real_sandbox(tmp_path: Path) -> None:
    # No model is called: the recording stands in for it, the sandbox is real.
    out = run_example("llm_tool_calling.py", "--replay", str(EXAMPLES / "recorded" / "primes.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]" in out.stdout
    assert "result: 129" in out.stdout
    assert out.stdout.rstrip().endswith("their sum is 129.")
