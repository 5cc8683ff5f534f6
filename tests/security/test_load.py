"""The load suite in CI: code-interpreter sandboxes executing code at once for a while, with
zero failed calls and `/health` answering throughout (benches/load.py; its full run, 100
sandboxes for 60 s with the latencies, is documented in docs/performance.md).

`HUTCH_LOAD_SANDBOXES` (default 10) and `HUTCH_LOAD_SECONDS` (default 15) size it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOAD = Path(__file__).resolve().parents[2] / "benches" / "load.py"


def test_sandboxes_executing_code_at_once_fail_no_call(tmp_path: Path) -> None:
    sandboxes = os.environ.get("HUTCH_LOAD_SANDBOXES", "10")
    seconds = os.environ.get("HUTCH_LOAD_SECONDS", "15")
    out = subprocess.run(
        [sys.executable, str(LOAD), "--sandboxes", sandboxes, "--seconds", seconds, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    print(out.stdout)
    assert out.returncode == 0, f"failed calls under load:\n{out.stdout}\n{out.stderr[-5000:]}"
    assert (tmp_path / "results.json").exists()
