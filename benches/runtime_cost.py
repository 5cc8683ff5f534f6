"""What a sandbox runtime costs, through the official SDK: run it once against a server on
the native runtime and once against one with `--runtime gvisor` (docs/performance.md,
"gVisor against native"), both with pools off so that every create starts cold.

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python benches/runtime_cost.py LABEL

Prints one Markdown table row per measurement (medians, with n and the maximum) and a JSON
line with the raw seconds. Reports; asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from functools import partial

from e2b import Sandbox
from e2b_code_interpreter.code_interpreter_sync import Sandbox as CodeSandbox
from stats import timed


def create_and_run() -> float:
    start = time.perf_counter()
    sbx = Sandbox.create("base", timeout=60)
    sbx.commands.run("true")
    took = time.perf_counter() - start
    sbx.kill()
    return took


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "server"
    raw: dict[str, list[float]] = {"create_and_run": [create_and_run() for _ in range(20)]}
    sbx = Sandbox.create("base", timeout=120)
    try:
        raw["commands_run"] = timed(lambda: sbx.commands.run("true"), 50)
    finally:
        sbx.kill()
    raw["ci_first_result"], raw["run_code"] = [], []
    for _ in range(5):
        start = time.perf_counter()
        ci = CodeSandbox.create(timeout=120)
        try:
            ci.run_code("1+1")
            raw["ci_first_result"].append(time.perf_counter() - start)
            raw["run_code"] += timed(partial(ci.run_code, "1+1"), 20)
        finally:
            ci.kill()
    names = {
        "create_and_run": '`base` create → `commands.run("true")`',
        "commands_run": '`commands.run("true")` in a running sandbox',
        "ci_first_result": "`code-interpreter-v1` create → first `run_code` (kernel booted cold)",
        "run_code": 'warm `run_code("1+1")`',
    }
    for key, xs in raw.items():
        median, top = statistics.median(xs) * 1000, max(xs) * 1000
        print(f"| {label} | {names[key]} | {median:.1f} ms (n={len(xs)}, max {top:.1f}) |")
    print(json.dumps({"label": label, "seconds": raw}))


if __name__ == "__main__":
    main()
