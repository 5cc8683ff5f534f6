"""hutch's Python SDK against the official `e2b-code-interpreter` SDK, on the same server.

    HUTCH_API_URL=... HUTCH_API_KEY=... E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... \\
        python benches/sdk.py [N]

For each operation the official SDK is the baseline, measured in the same run against the
same server: create + kill, a warm `run_code("1 + 1")`, `commands.run("true")`, and writing
then reading 1 MiB. Reports medians, p90 and ratios (below 1.0: hutch's SDK is faster);
never asserts anything.
"""

from __future__ import annotations

import statistics
import sys

from e2b_code_interpreter.code_interpreter_sync import Sandbox as E2BSandbox
from stats import pct, timed

from hutch import Sandbox

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
MIB = b"x" * (1 << 20)


def report(name: str, ours: list[float], theirs: list[float]) -> None:
    m, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"{name:<28} hutch median {m * 1000:8.2f} ms  p90 {pct(ours, 0.9) * 1000:8.2f} ms  "
        f"e2b median {b * 1000:8.2f} ms  p90 {pct(theirs, 0.9) * 1000:8.2f} ms  ratio {m / b:5.2f}"
    )


def main() -> None:
    churn = max(5, N // 3)
    report(
        "create + kill (base)",
        timed(lambda: Sandbox(template="base").kill(), churn),
        timed(lambda: E2BSandbox.create(template="base").kill(), churn),
    )
    ours = Sandbox(timeout=600)
    theirs = E2BSandbox.create(timeout=600)
    try:
        for sbx in (ours, theirs):
            sbx.run_code("1 + 1")
            sbx.commands.run("true")
        report(
            "run_code('1 + 1')",
            timed(lambda: ours.run_code("1 + 1"), N),
            timed(lambda: theirs.run_code("1 + 1"), N),
        )
        report(
            "commands.run('true')",
            timed(lambda: ours.commands.run("true"), N),
            timed(lambda: theirs.commands.run("true"), N),
        )

        def ours_io() -> None:
            ours.files.write("/tmp/bench.bin", MIB)
            ours.files.read("/tmp/bench.bin", format="bytes")

        def theirs_io() -> None:
            theirs.files.write("/tmp/bench.bin", MIB)
            theirs.files.read("/tmp/bench.bin", format="bytes")

        report("write + read 1 MiB", timed(ours_io, N), timed(theirs_io, N))
    finally:
        ours.kill()
        theirs.kill()


if __name__ == "__main__":
    main()
