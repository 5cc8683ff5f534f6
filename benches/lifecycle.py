"""Sandbox lifecycle benchmark: create+kill churn and create → first command, each
against a baseline measured in the same run.

Run against a live `hutch serve` (E2B_API_URL / E2B_API_KEY set), as root:

    python benches/lifecycle.py [N] [--clients C] [--burst B] [--skip-sdk]

Rows: create+kill sequentially (N times); create+kill from C clients at once (N each),
as sandboxes per second; B creates sent at once, then B kills (how many failed, and with
which status); create → first command with the SDK.

Baselines:
- churn: `unshare --user --map-root-user --pid --mount --net --uts --ipc --fork true`,
  i.e. creating and tearing down the same set of namespaces with nothing in them;
- first command: a `fork+exec` of `true` (what `commands.run("true")` costs at least).
Reports medians, p90 and ratios; never asserts anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from e2b import Sandbox
from stats import pct

API = os.environ["E2B_API_URL"]
HEADERS = {"X-API-KEY": os.environ["E2B_API_KEY"]}


def report(name: str, xs: list[float], base: list[float]) -> None:
    m, b = statistics.median(xs), statistics.median(base)
    print(
        f"{name:<34} median {m * 1000:8.2f} ms  p90 {pct(xs, 0.9) * 1000:8.2f} ms  "
        f"baseline median {b * 1000:7.2f} ms  ratio {m / b:6.1f}x  ({1 / m:6.1f}/s)"
    )


def churn_once(c: httpx.Client) -> float:
    """One create+kill of a `base` sandbox; seconds it took."""
    t = time.perf_counter()
    r = c.post("/sandboxes", json={"templateID": "base"})
    r.raise_for_status()
    c.delete(f"/sandboxes/{r.json()['sandboxID']}").raise_for_status()
    return time.perf_counter() - t


def concurrent_churn(clients: int, n: int) -> tuple[float, list[float]]:
    """`clients` threads each doing `n` create+kill: (wall seconds, each one's seconds)."""

    def worker(_: int) -> list[float]:
        with httpx.Client(base_url=API, headers=HEADERS, timeout=120) as c:
            return [churn_once(c) for _ in range(n)]

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        per = list(pool.map(worker, range(clients)))
    return time.perf_counter() - t, [x for xs in per for x in xs]


def burst(b: int) -> tuple[float, Counter[str]]:
    """`b` creates at once, then a kill of each one created: (wall seconds of the creates,
    count of outcomes by status)."""

    def create(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=API, headers=HEADERS, timeout=300) as c:
            r = c.post("/sandboxes", json={"templateID": "base"})
            return r.status_code, r.json().get("sandboxID", "") if r.status_code < 300 else r.text[:200]

    t = time.perf_counter()
    with ThreadPoolExecutor(b) as pool:
        results = list(pool.map(create, range(b)))
    wall = time.perf_counter() - t
    outcomes: Counter[str] = Counter()
    with httpx.Client(base_url=API, headers=HEADERS, timeout=120) as c:
        for status, body in results:
            if status < 300:
                c.delete(f"/sandboxes/{body}").raise_for_status()
                outcomes[str(status)] += 1
            else:
                outcomes[f"{status} {body}"] += 1
    return wall, outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=30, help="repetitions per row (and per client)")
    ap.add_argument("--clients", type=int, default=8, help="clients of the concurrent create+kill row")
    ap.add_argument("--burst", type=int, default=50, help="creates sent at once (0: skip)")
    ap.add_argument("--skip-sdk", action="store_true", help="skip create -> first command")
    args = ap.parse_args()
    n: int = args.n

    base_ns = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(
            ["unshare", "--user", "--map-root-user", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "true"],
            check=True,
        )
        base_ns.append(time.perf_counter() - t)

    with httpx.Client(base_url=API, headers=HEADERS, timeout=60) as c:
        churn = [churn_once(c) for _ in range(n)]
    report("create+kill (REST)", churn, base_ns)

    if args.clients > 0:
        wall, each = concurrent_churn(args.clients, n)
        print(
            f"create+kill, {args.clients} clients x {n}: {len(each) / wall:6.1f}/s  "
            f"each median {statistics.median(each) * 1000:8.2f} ms  p90 {pct(each, 0.9) * 1000:8.2f} ms"
        )

    if args.burst > 0:
        wall, outcomes = burst(args.burst)
        print(f"{args.burst} creates at once: {wall:6.2f} s; outcomes: {dict(outcomes)}")

    if args.skip_sdk:
        return
    base_exec = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        base_exec.append(time.perf_counter() - t)

    first = []
    for _ in range(n):
        t = time.perf_counter()
        s = Sandbox.create()
        s.commands.run("true")
        first.append(time.perf_counter() - t)
        s.kill()

    report("create -> first commands.run (SDK)", first, base_exec)


if __name__ == "__main__":
    main()
