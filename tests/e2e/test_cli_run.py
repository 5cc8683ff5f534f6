"""`hutch run`: the CLI runs code in a code-interpreter sandbox and streams what it prints.

The binary is the one the test server runs (first line of its command file); it finds the
server through E2B_API_URL and E2B_API_KEY, like the SDKs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from e2b import Sandbox

from ci_helpers import CodeSandbox
from conftest import WORK

HUTCH = (WORK / "server.cmd").read_text().splitlines()[0]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hutch_run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUTCH, "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def running_ids() -> list[str]:
    return [s.sandbox_id for s in Sandbox.list().next_items()]


def test_run_streams_output_prints_the_result_and_saves_images(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import matplotlib.pyplot as plt\n"
        "print('to stdout')\n"
        "print('to stderr', file=sys.stderr)\n"
        "plt.plot([1, 2, 3], [3, 1, 2])\n"
        "plt.show()\n"
        "x = 41\n"
        "x + 1\n"
    )
    before = set(running_ids())
    out = hutch_run("--out-dir", str(tmp_path), code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["to stdout", "42"]
    assert "to stderr" in out.stderr
    images = sorted(tmp_path.glob("*.png"))
    assert len(images) == 1, out.stderr
    assert images[0].read_bytes().startswith(PNG_MAGIC)
    assert str(images[0]) in out.stderr
    # The sandbox made for the run is gone afterwards.
    assert set(running_ids()) <= before


def test_run_reports_an_error_and_exits_non_zero(tmp_path: Path) -> None:
    out = hutch_run("print('before')\n1 / 0", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stdout.splitlines() == ["before"]
    assert "ZeroDivisionError" in out.stderr


def test_run_reads_code_from_stdin_and_from_a_file_in_other_languages(tmp_path: Path) -> None:
    out = hutch_run("-l", "javascript", "-", stdin="console.log('js says ' + (1 + 2))\n", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["js says 3"]

    script = tmp_path / "hello.sh"
    script.write_text('echo "bash in $PWD"\n')
    out = hutch_run("-l", "bash", "--file", str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["bash in /home/user"]


def test_run_in_a_given_sandbox_keeps_its_state_and_leaves_it_running(tmp_path: Path) -> None:
    sbx = CodeSandbox.create(timeout=300)
    try:
        first = hutch_run("--sandbox", sbx.sandbox_id, "counter = 10", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        second = hutch_run("--sandbox", sbx.sandbox_id, "counter += 5\nprint(counter)", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines() == ["15"]
        assert sbx.is_running()
        # The SDK sees the state the CLI left behind.
        assert sbx.run_code("counter").text == "15"
    finally:
        sbx.kill()


def test_keep_leaves_the_new_sandbox_running_and_names_it(tmp_path: Path) -> None:
    out = hutch_run("--keep", "kept = 'yes'", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ids = re.findall(r"sandbox (\S+) keeps running", out.stderr)
    assert len(ids) == 1, out.stderr
    sbx = CodeSandbox.connect(ids[0])
    try:
        assert sbx.run_code("kept").text == "yes"
    finally:
        sbx.kill()


def test_unknown_sandbox_is_a_clear_error(tmp_path: Path) -> None:
    out = hutch_run("--sandbox", "no-such-sandbox", "1", cwd=tmp_path)
    assert out.returncode != 0
    assert "no-such-sandbox" in out.stderr or "not found" in out.stderr.lower()
    assert "panicked" not in out.stderr
