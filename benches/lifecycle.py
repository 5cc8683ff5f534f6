"""Sandbox lifecycle benchmark: create+kill churn and create → first command, each
against a baseline measured in the same run.

Run against a live `hutch serve` (E2B_API_URL / E2B_API_KEY set), as root:

    python benches/lifecycle.py [N]

Baselines:
- churn: `unshare --user --map-root-user --pid --mount --net --uts --ipc --fork true`,
  i.e. creating and tearing down the same set of namespaces with nothing in them;
- first command: a `fork+exec` of `true` (what `commands.run("true")` costs at least).
Reports medians, p90 and ratios; never asserts anything.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import httpx
from e2b import Sandbox
from stats import pct

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
API = os.environ["E2B_API_URL"]
HEADERS = {"X-API-KEY": os.environ["E2B_API_KEY"]}


def report(name: str, xs: list[float], base: list[float]) -> None:
    m, b = statistics.median(xs), statistics.median(base)
    print(
        f"{name:<34} median {m * 1000:8.2f} ms  p90 {pct(xs, 0.9) * 1000:8.2f} ms  "
        f"baseline median {b * 1000:7.2f} ms  ratio {m / b:6.1f}x  ({1 / m:6.1f}/s)"
    )


def main() -> None:
    base_ns = []
    for _ in range(N):
        t = time.perf_counter()
        subprocess.run(
            ["unshare", "--user", "--map-root-user", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "true"],
            check=True,
        )
        base_ns.append(time.perf_counter() - t)

    churn = []
    with httpx.Client(base_url=API, headers=HEADERS, timeout=60) as c:
        for _ in range(N):
            t = time.perf_counter()
            r = c.post("/sandboxes", json={"templateID": "base"})
            r.raise_for_status()
            c.delete(f"/sandboxes/{r.json()['sandboxID']}").raise_for_status()
            churn.append(time.perf_counter() - t)

    base_exec = []
    for _ in range(N):
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        base_exec.append(time.perf_counter() - t)

    first = []
    for _ in range(N):
        t = time.perf_counter()
        s = Sandbox.create()
        s.commands.run("true")
        first.append(time.perf_counter() - t)
        s.kill()

    report("create+kill (REST)", churn, base_ns)
    report("create -> first commands.run (SDK)", first, base_exec)


if __name__ == "__main__":
    main()
