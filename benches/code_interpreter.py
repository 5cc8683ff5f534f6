"""Code-interpreter benchmark: `run_code` round trips and first-cell latency per language,
each against a baseline measured in the same run.

Run against a live `hutch serve` (E2B_API_URL / E2B_API_KEY set):

    python benches/code_interpreter.py [N]

Baselines:
- warm round trip: `commands.run("true")` in the same sandbox: the same SDK, HTTP path and
  router, with a process instead of a kernel;
- first cell of a language in a new sandbox: the warm round trip of the same language, so the
  ratio is what starting the kernel costs.
Reports medians, p90 and ratios; never asserts anything.
"""

from __future__ import annotations

import statistics
import sys
import time

from e2b_code_interpreter.code_interpreter_sync import Sandbox
from stats import pct, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
CELLS = {
    "python": "1 + 1",
    "javascript": "1 + 1",
    "bash": "echo 2",
    "r": "1 + 1",
    "java": "1 + 1",
}


def report(name: str, xs: list[float], base: list[float]) -> None:
    m, b = statistics.median(xs), statistics.median(base)
    print(
        f"{name:<34} median {m * 1000:8.2f} ms  p90 {pct(xs, 0.9) * 1000:8.2f} ms  "
        f"baseline median {b * 1000:7.2f} ms  ratio {m / b:6.1f}x"
    )


def main() -> None:
    with Sandbox.create(timeout=600) as sbx:
        sbx.commands.run("true")
        for language, cell in CELLS.items():
            sbx.run_code(cell, language=language)  # start the kernel
        base = timed(lambda: sbx.commands.run("true"), N)
        for language, cell in CELLS.items():

            def once(language: str = language, cell: str = cell) -> object:
                return sbx.run_code(cell, language=language)

            report(f"warm run_code ({language})", timed(once, N), base)

    # Each language's first cell in a fresh sandbox starts its kernel (python and javascript
    # kernels start with the sandbox; the others on first use).
    for language, cell in CELLS.items():
        first: list[float] = []
        warm: list[float] = []
        for _ in range(max(3, N // 10)):
            with Sandbox.create(timeout=300) as sbx:
                t = time.perf_counter()
                sbx.run_code(cell, language=language)
                first.append(time.perf_counter() - t)

                def again(sbx: Sandbox = sbx, language: str = language, cell: str = cell) -> object:
                    return sbx.run_code(cell, language=language)

                warm.extend(timed(again, 3))
        report(f"first cell after create ({language})", first, warm)


if __name__ == "__main__":
    main()
