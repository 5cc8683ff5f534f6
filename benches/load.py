"""The load suite: many code-interpreter sandboxes executing code at once, every call checked.

    python benches/load.py [--sandboxes 100] [--seconds 60] [--out DIR]

Against a live `hutch serve` (E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set), through the
official `e2b-code-interpreter` SDK: creates the sandboxes (8 at a time), then one client thread
per sandbox calls `run_code` back to back for the given time (after a baseline in the same run:
one client alone on one of the sandboxes for up to 10 s). Each call increments a counter
that lives in the sandbox's kernel and checks the answer, so a call that returns the wrong value
(a lost or mixed-up kernel state) counts as failed as much as an error does. Meanwhile another
thread asks `/health` every 0.2 s. At the end every sandbox is killed.

Writes results.md and results.json to --out (default benches/results/load-<UTC time>/) and
prints the table: calls, failed calls by kind, run_code latency p50/p95/p99/max, `/health`
latency. The exit status is 1 when any call failed (zero failed calls is the requirement; the
latencies are reported, never asserted). tests/security/test_load.py runs a small instance in
CI; the full run (100 sandboxes, 60 s) is documented in docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import stats
from e2b_code_interpreter.code_interpreter_sync import Sandbox

HERE = Path(__file__).resolve().parent


def pct(xs: list[float], q: float) -> float:
    """The `q` percentile (0..100) of `xs`; NaN when there are none."""
    return stats.pct(xs, q / 100) if xs else float("nan")


def kind(e: BaseException) -> str:
    return type(e).__name__


class Load:
    def __init__(self, sandboxes: int, seconds: float) -> None:
        self.n = sandboxes
        self.seconds = seconds
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failed: Counter[str] = Counter()
        self.health: list[float] = []
        self.health_failed = 0
        self.create_failed: Counter[str] = Counter()
        self.stop = threading.Event()

    def create(self, _: int) -> Sandbox | None:
        try:
            return Sandbox.create(timeout=int(self.seconds) + 600)
        except Exception as e:  # counted: a create that fails is a failed call
            with self.lock:
                self.create_failed[kind(e)] += 1
            return None

    def client(self, sbx: Sandbox, deadline: float, var: str = "n") -> None:
        code = f"{var} = globals().get('{var}', 0) + 1\n{var}"
        expected = 0
        while time.monotonic() < deadline:
            expected += 1
            t = time.monotonic()
            try:
                ex = sbx.run_code(code, timeout=120, request_timeout=180)
                took = time.monotonic() - t
                got = ex.results[0].text if ex.results else None
                ok = ex.error is None and got == str(expected)
                with self.lock:
                    if ok:
                        self.latencies.append(took)
                    else:
                        self.failed["wrong answer" if ex.error is None else f"error {ex.error.name}"] += 1
                if not ok:
                    return
            except Exception as e:
                with self.lock:
                    self.failed[kind(e)] += 1
                return

    def poll_health(self, api: str) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=10) as r:
                    r.read()
                    ok = r.status == 200
            except Exception:
                ok = False
            with self.lock:
                if ok:
                    self.health.append(time.monotonic() - t)
                else:
                    self.health_failed += 1
            self.stop.wait(0.2)

    def run(self, api: str) -> dict[str, object]:
        poller = threading.Thread(target=self.poll_health, args=(api,), daemon=True)
        poller.start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            created = [s for s in pool.map(self.create, range(self.n)) if s is not None]
        create_s = time.monotonic() - t0
        try:
            # Baseline, in the same run: one client alone on one of the sandboxes.
            alone = Load(1, min(10.0, self.seconds))
            if created:
                alone.client(created[0], time.monotonic() + alone.seconds, var="alone")
                self.failed.update(alone.failed)
            deadline = time.monotonic() + self.seconds
            threads = [threading.Thread(target=self.client, args=(s, deadline)) for s in created]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            self.stop.set()
            poller.join()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda s: s.kill(), created))
        calls = len(self.latencies) + sum(self.failed.values())
        return {
            "failed_total": sum(self.failed.values()) + sum(self.create_failed.values()),
            "health_failed": self.health_failed,
            "sandboxes_asked": self.n,
            "sandboxes_created": len(created),
            "create_seconds": create_s,
            "create_failed": dict(self.create_failed),
            "seconds": self.seconds,
            "calls": calls,
            "failed": dict(self.failed),
            "calls_per_second": calls / self.seconds if self.seconds else 0.0,
            "run_code_ms": {
                "p50": pct(self.latencies, 50) * 1e3,
                "p95": pct(self.latencies, 95) * 1e3,
                "p99": pct(self.latencies, 99) * 1e3,
                "max": max(self.latencies, default=float("nan")) * 1e3,
                "mean": (statistics.fmean(self.latencies) * 1e3) if self.latencies else float("nan"),
            },
            "alone": {
                "seconds": alone.seconds,
                "calls": len(alone.latencies),
                "calls_per_second": len(alone.latencies) / alone.seconds,
                "p50_ms": pct(alone.latencies, 50) * 1e3,
            },
            "health_ms": {
                "polls": len(self.health) + self.health_failed,
                "failed": self.health_failed,
                "p99": pct(self.health, 99) * 1e3,
                "max": max(self.health, default=float("nan")) * 1e3,
            },
        }


def table(r: dict[str, object]) -> str:
    lat = r["run_code_ms"]
    health = r["health_ms"]
    alone = r["alone"]
    assert isinstance(lat, dict) and isinstance(health, dict) and isinstance(alone, dict)
    failed = r["failed_total"]
    rows = [
        (
            "sandboxes created / asked",
            f"{r['sandboxes_created']} / {r['sandboxes_asked']} in {r['create_seconds']:.1f} s",
        ),
        ("run_code calls (each checked)", f"{r['calls']} in {r['seconds']:.0f} s ({r['calls_per_second']:.1f}/s)"),
        ("failed calls", f"{failed} {r['failed'] or ''} {r['create_failed'] or ''}".strip()),
        (
            "run_code latency p50 / p95 / p99 / max",
            f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} ms",
        ),
        (
            "baseline: one client alone on one sandbox, calls/s and p50",
            (
                f"{alone['calls_per_second']:.1f}/s, {alone['p50_ms']:.1f} ms (all at once: "
                f"{float(str(r['calls_per_second'])) / alone['calls_per_second']:.2f}x the calls/s)"
            ),
        ),
        (
            "/health meanwhile: polls, failed, p99 / max",
            f"{health['polls']}, {health['failed']}, {health['p99']:.1f} / {health['max']:.1f} ms",
        ),
    ]
    out = ["| what | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="the load suite (see the module docstring)")
    ap.add_argument("--sandboxes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = a.out or HERE / "results" / f"load-{stamp}"
    api = os.environ["E2B_API_URL"].rstrip("/")
    result = Load(a.sandboxes, a.seconds).run(api)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    (out / "results.md").write_text(f"# Load: {a.sandboxes} sandboxes, {a.seconds:.0f} s ({stamp})\n\n{md}")
    print(md)
    return 1 if result["failed_total"] or result["health_failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
