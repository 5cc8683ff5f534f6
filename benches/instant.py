"""Issue 11's benchmark: every row of "instant sandboxes" against its baseline, in one run.

    scripts/bench.sh [--smoke]            # builds, starts a server, runs this, cleans up
    python benches/instant.py [--smoke] [--out DIR] [--rows 1,3] ...   # against a running server

Against a live `hutch serve` (E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set), as root (the
chroot baseline mounts, and memory is read from other users' processes), through the official
SDKs (`e2b`, `e2b-code-interpreter`, as pinned in tests/requirements.txt):

1. create → first `run_code("1+1")` result, one after another, with the warm pool sized and with
   it empty; baseline: a cold local `jupyter_client` KernelManager start of ipykernel → first result.
2. the same with C sandboxes created at once (50, and 200 in the full run), pool sized for C and
   empty; failures counted by status (429/503 ask to retry; a 500 is a failure); baseline: C local
   kernels started at once.
3. warm `run_code` round trip; baseline: a raw `jupyter_client` execute round trip on a local kernel.
4. `commands.run("true")`; baseline: `bash -l -c true` run by `chroot` in the same template's root
   filesystem (its read-only layers mounted in a temp dir).
5. `base` create + kill per second with 8 client threads; baseline: `unshare` of the same
   namespaces running `true`, 8 threads.
6. idle code-interpreter sandboxes held at once, each answering `run_code`: memory per sandbox
   (PSS of its processes, found by its cgroup; and the MemAvailable delta) and `/health` latency
   meanwhile; baseline: the PSS of a fresh local ipykernel.
7. upload and download of 1 GiB with curl on the SDK's signed URLs, and the SDK's own
   `files.write` / `files.read`; baseline: `cp` of the same file on the host.

Baselines that need `jupyter_client` run benches/jupyter_baseline.py on the kernel venv
($HUTCH_KERNEL_VENV; scripts/test.sh and scripts/bench.sh build it). Pools are set through hutch's
`/pools` API; a server without it gets a note and only the pool-less rows.

Writes results.md (the table), results.json (every sample) and PNG plots to --out (default
benches/results/<UTC time>/). Never asserts a timing: the exit status is 1 only when a row
crashed (its error is in the outputs too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import glob
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from e2b import Sandbox as BaseSandbox
from e2b_code_interpreter.code_interpreter_async import AsyncSandbox
from e2b_code_interpreter.code_interpreter_sync import Sandbox
from instant_report import Results, Row, fmt_s, lat_cell, mib, p, ratio, write_all, yes_no

HERE = Path(__file__).resolve().parent
TEMPLATE = "code-interpreter-v1"
# hutch serve's cgroup parent (crates/hutch-server/src/lib.rs; layout in crates/hutch-runtime/src/cgroup.rs).
CGROUP_PARENT = "hutch"
LIFETIME = 3600  # seconds a benchmark sandbox may live: longer than any row
REQUEST_TIMEOUT = 900.0
GB = 1e9


@dataclass
class Config:
    smoke: bool
    out: Path
    rows: set[int]
    n_seq: int  # row 1: creates per variant
    n_cold: int  # row 1: baseline kernel starts
    seq_pool: int  # row 1: pool size of the "sized" variant
    concurrency: list[int]  # row 2
    burst_baseline_max: int  # row 2: largest C whose baseline (C local kernels) is run
    n_rt: int  # rows 3 and 4: samples of each side
    blocks: int  # rows 3 and 4: hutch and baseline alternate in this many blocks
    churn_seconds: float  # row 5
    churn_threads: int
    idle: int  # row 6
    idle_workers: int
    idle_baseline: int  # row 6: local kernels whose PSS is the baseline
    xfer_bytes: int  # row 7
    xfer_reps: int
    mem_floor: int  # row 6: bytes of MemAvailable it leaves to the host
    reduced: bool  # counts were set by hand

    @staticmethod
    def parse(argv: list[str]) -> Config:
        ap = argparse.ArgumentParser(description="issue 11's benchmark (see the module docstring)")
        ap.add_argument("--smoke", action="store_true", help="small counts: a couple of minutes")
        ap.add_argument("--out", type=Path, help="results folder (default benches/results/<UTC time>)")
        ap.add_argument("--rows", default="1,2,3,4,5,6,7", help="which rows to run, e.g. 1,3")
        ap.add_argument("--n", type=int, help="row 1: creates per variant (50; smoke 5)")
        ap.add_argument("--concurrency", help="row 2: comma-separated C values (50,200; smoke 5)")
        ap.add_argument("--idle", type=int, help="row 6: sandboxes held (400; smoke 4)")
        ap.add_argument(
            "--mem-floor-mib",
            type=int,
            default=3072,
            help="row 6 stops creating before MemAvailable would fall below this (3072)",
        )
        ap.add_argument("--size-mib", type=int, help="row 7: file size in MiB (1024; smoke 16)")
        ap.add_argument("--churn-seconds", type=float, help="row 5: duration (30; smoke 5)")
        a = ap.parse_args(argv)
        smoke = bool(a.smoke)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        conc = a.concurrency or ("5" if smoke else "50,200")
        return Config(
            smoke=smoke,
            out=a.out or HERE / "results" / stamp,
            rows={int(x) for x in a.rows.split(",") if x.strip()},
            n_seq=a.n or (5 if smoke else 50),
            n_cold=3 if smoke else 10,
            seq_pool=2 if smoke else 4,
            concurrency=[int(x) for x in conc.split(",") if x.strip()],
            burst_baseline_max=50,
            n_rt=40 if smoke else 400,
            blocks=2 if smoke else 4,
            churn_seconds=a.churn_seconds or (5.0 if smoke else 30.0),
            churn_threads=8,
            idle=a.idle if a.idle is not None else (4 if smoke else 400),
            idle_workers=8,
            idle_baseline=2 if smoke else 8,
            xfer_bytes=(a.size_mib or (16 if smoke else 1024)) << 20,
            xfer_reps=2 if smoke else 3,
            mem_floor=a.mem_floor_mib << 20,
            reduced=any(x is not None for x in (a.n, a.concurrency, a.idle, a.size_mib, a.churn_seconds))
            or a.rows != "1,2,3,4,5,6,7",
        )


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def status_of(e: BaseException) -> str:
    """The HTTP status an SDK error carries ('429', '500', ...), else the error's type."""
    code = getattr(e, "status_code", None)
    if isinstance(code, int):
        return str(code)
    m = re.match(r"\s*(\d{3}):", str(e))
    return m.group(1) if m else type(e).__name__


def failure_summary(fails: Counter[str]) -> str:
    """'429 (2, retry), 500 (1)': how many of each, the retryable ones marked."""
    parts = []
    for k, v in sorted(fails.items()):
        tag = ", retry" if k in ("429", "503") else ""
        parts.append(f"{k} ({v}{tag})")
    return ", ".join(parts)


def failure_message(e: BaseException) -> str:
    """An SDK error, its status first (once), cut to a line's length."""
    code, text = status_of(e), str(e)
    return (text if text.startswith(code) else f"{code}: {text}")[:300]


class StatusCounter(logging.Handler):
    """Counts the API's error answers the SDK logs ("Response 429"), retried ones included."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"Response (\d{3})", record.getMessage())
        if m and int(m.group(1)) >= 400:
            self.counts[m.group(1)] += 1

    def logger(self, name: str) -> logging.Logger:
        lg = logging.getLogger(f"instant.{name}")
        lg.handlers = [self]
        lg.setLevel(logging.INFO)
        lg.propagate = False
        return lg


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def pss_of(pid: int) -> int:
    """PSS of one process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cgroup_pids(sandbox_id: str) -> list[int] | None:
    """Every process in sandbox `sandbox_id`'s cgroup (and below it), or None if none is found.
    cgroup v1 (the memory hierarchy), then v2, then any v1 hierarchy."""
    candidates = [
        f"/sys/fs/cgroup/memory/{CGROUP_PARENT}/{sandbox_id}",
        f"/sys/fs/cgroup/{CGROUP_PARENT}/{sandbox_id}",
        *glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}/{sandbox_id}"),
    ]
    for d in candidates:
        if not os.path.isdir(d):
            continue
        pids: set[int] = set()
        for root, _, files in os.walk(d):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError), open(os.path.join(root, "cgroup.procs")) as f:
                    pids.update(int(x) for x in f.read().split())
        return sorted(pids)
    return None


class Pools:
    """hutch's warm-pool API (`GET /pools`, `GET`/`PUT /pools/{template}`), or a note that the
    server has none."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        r = http.get("/pools")
        self.available = r.status_code == 200
        self.note = ""
        self.original: dict[str, tuple[int, int]] = {}
        if self.available:
            self.original = {str(x["name"]): (int(x["min"]), int(x["max"])) for x in r.json()}
        else:
            self.note = (
                f"this server has no warm-pool API (GET /pools answered {r.status_code}): the "
                "'pool sized' rows were not run, and 'pool empty' is whatever the server does."
            )
        self.touched: set[str] = set()

    def info(self, template: str) -> dict[str, Any]:
        r = self.http.get(f"/pools/{template}")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def templates(self) -> list[str]:
        r = self.http.get("/pools")
        r.raise_for_status()
        return sorted({str(x["name"]) for x in r.json()} | set(self.original) | {TEMPLATE})

    def put(self, template: str, body: dict[str, int]) -> None:
        self.touched.add(template)
        self.http.put(f"/pools/{template}", json=body).raise_for_status()

    def size(self, template: str, n: int, deadline_s: float | None = None) -> dict[str, Any] | None:
        """Sets the pool of `template` to exactly `n` and waits until `n` are ready (or, for 0,
        until none is ready or starting). Returns the pool's last state; None without pools."""
        if not self.available:
            return None
        self.put(template, {"size": n})
        return self.wait(template, n, deadline_s)

    def wait(self, template: str, n: int, deadline_s: float | None = None) -> dict[str, Any]:
        deadline_s = deadline_s if deadline_s is not None else 60 + 6 * n
        start = time.monotonic()
        last_print = start
        while True:
            info = self.info(template)
            ready, starting = int(info["ready"]), int(info["starting"])
            if (n > 0 and ready >= n) or (n == 0 and ready == 0 and starting == 0):
                return info
            now = time.monotonic()
            if now - start > deadline_s:
                log(f"pool {template}: gave up waiting after {deadline_s:.0f} s at {ready}/{n} ready")
                return info
            if now - last_print >= 5:
                log(f"pool {template}: {ready}/{n} ready, {starting} starting ({now - start:.0f} s)")
                last_print = now
            time.sleep(0.1)

    def quiet(self) -> None:
        """Every pool to 0, drained: nothing refills in the background while a row measures."""
        if not self.available:
            return
        for t in self.templates():
            self.put(t, {"size": 0})
        for t in self.templates():
            self.wait(t, 0)

    def restore(self, templates: list[str] | None = None) -> None:
        """Puts back the sizes the server had when the run started (0 for pools it had not)."""
        if not self.available:
            return
        for t in sorted(templates if templates is not None else self.touched):
            mn, mx = self.original.get(t, (0, 0))
            with contextlib.suppress(httpx.HTTPError):
                self.put(t, {"min": mn, "max": mx})


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.api = os.environ["E2B_API_URL"].rstrip("/")
        self.http = httpx.Client(
            base_url=self.api, headers={"X-API-KEY": os.environ["E2B_API_KEY"]}, timeout=120, trust_env=False
        )
        self.is_root = os.geteuid() == 0
        venv = os.environ.get("HUTCH_KERNEL_VENV")
        self.kernel_python = Path(venv) / "bin" / "python" if venv else None
        if self.kernel_python is not None and not self.kernel_python.exists():
            self.kernel_python = None
        self.cache_dir = Path(os.environ.get("HUTCH_CACHE_DIR", "/var/cache/hutch"))
        self.live: set[str] = set()
        self.live_lock = threading.Lock()
        health = self.http.get("/health").json()
        self.res = Results(
            meta={
                "mode": ("smoke" if cfg.smoke else "full") + (", counts set by hand" if cfg.reduced else ""),
                "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "host": f"{os.cpu_count()} CPUs, {mem_total_gib():.0f} GiB, Linux {platform.release()}",
                "api_url": self.api,
                "argv": sys.argv[1:],
                "health_at_start": health,
                "config": {k: (str(v) if isinstance(v, Path | set) else v) for k, v in vars(cfg).items()},
            }
        )
        self.pools = Pools(self.http)
        self.res.meta["pools_at_start"] = self.pools.original
        if self.pools.note:
            self.res.notes.append(self.pools.note)
        if self.kernel_python is None:
            self.res.notes.append("no kernel venv ($HUTCH_KERNEL_VENV): the jupyter_client baselines were not run.")

    # --- helpers -------------------------------------------------------------------------------

    def track(self, sandbox_id: str, alive: bool) -> None:
        with self.live_lock:
            if alive:
                self.live.add(sandbox_id)
            else:
                self.live.discard(sandbox_id)

    def kill_leftovers(self) -> None:
        for sid in sorted(self.live):
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete(f"/sandboxes/{sid}")
        self.live.clear()

    def jupyter(self, mode: str, n: int) -> tuple[list[float], list[str]]:
        """Runs jupyter_baseline.py on the kernel venv; its samples and errors."""
        if self.kernel_python is None:
            return [], ["no kernel venv"]
        r = subprocess.run(
            [str(self.kernel_python), str(HERE / "jupyter_baseline.py"), mode, str(n)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        lines = [x for x in r.stdout.splitlines() if x.startswith('{"samples"')]
        if r.returncode != 0 or not lines:
            raise RuntimeError(f"jupyter_baseline.py {mode} {n} failed ({r.returncode}): {r.stderr[-2000:]}")
        doc = json.loads(lines[-1])
        return [float(x) for x in doc["samples"]], [str(x) for x in doc["errors"]]

    def create_first_result(self, template: str = TEMPLATE) -> float:
        """Sandbox.create → the first `run_code("1+1")` result; the sandbox is killed after."""
        t = time.perf_counter()
        sbx = Sandbox.create(template=template, timeout=LIFETIME, request_timeout=REQUEST_TIMEOUT)
        self.track(sbx.sandbox_id, True)
        try:
            ex = sbx.run_code("1+1", request_timeout=REQUEST_TIMEOUT)
            dt = time.perf_counter() - t
            if ex.text != "2":
                raise RuntimeError(f"run_code('1+1') gave {ex.text!r} ({ex.error})")
            return dt
        finally:
            sbx.kill()
            self.track(sbx.sandbox_id, False)

    async def kill_async(self, sandboxes: list[AsyncSandbox], at_once: int = 16) -> None:
        sem = asyncio.Semaphore(at_once)

        async def kill(s: AsyncSandbox) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await s.kill()
                self.track(s.sandbox_id, False)

        await asyncio.gather(*(kill(s) for s in sandboxes))

    # --- row 1 ---------------------------------------------------------------------------------

    def row1(self) -> None:
        cfg, res = self.cfg, self.res
        raw: dict[str, Any] = {}
        sized: list[float] = []
        if self.pools.available:
            log(f"row 1: pool of {TEMPLATE} sized {cfg.seq_pool}; {cfg.n_seq} creates one after another")
            self.pools.size(TEMPLATE, cfg.seq_pool)
            ready_before = []
            for _ in range(cfg.n_seq):
                # Each create finds the pool full again, as a user arriving slower than it refills would.
                ready_before.append(int(self.pools.wait(TEMPLATE, cfg.seq_pool, 120)["ready"]))
                sized.append(self.create_first_result())
            raw["pool_ready_before_each"] = ready_before
        log(f"row 1: pool empty; {cfg.n_seq} creates one after another")
        self.pools.size(TEMPLATE, 0)
        empty = [self.create_first_result() for _ in range(cfg.n_seq)]
        log(f"row 1: baseline, {cfg.n_cold} cold jupyter_client kernel starts")
        base, base_err = self.jupyter("cold", cfg.n_cold)
        raw.update(sized=sized, empty=empty, baseline=base, baseline_errors=base_err)
        res.raw["1"] = raw
        res.latency["1 create to first run_code result, sequential"] = {
            "hutch, pool sized": sized,
            "hutch, pool empty": empty,
            "cold jupyter_client + ipykernel": base,
        }
        bcell = f"cold `jupyter_client` + ipykernel → first result: {lat_cell(base)}"
        if self.pools.available:
            ok = bool(sized) and p(sized, 0.5) <= 0.050 and p(sized, 0.99) <= 0.150
            res.rows.append(
                Row(
                    "1",
                    f'create → first `run_code("1+1")`, sequential, pool sized ({cfg.seq_pool}), n={len(sized)}',
                    lat_cell(sized),
                    bcell,
                    ratio(p(sized, 0.5), p(base, 0.5)),
                    "p50 ≤ 50 ms, p99 ≤ 150 ms",
                    yes_no(ok),
                )
            )
        res.rows.append(
            Row(
                "1",
                f"the same, pool empty, n={len(empty)}",
                lat_cell(empty),
                bcell,
                ratio(p(empty, 0.5), p(base, 0.5)),
                "— (an empty pool falls back to a cold start)",
                "—",
            )
        )

    # --- row 2 ---------------------------------------------------------------------------------

    async def burst(self, c: int, counter: StatusCounter) -> tuple[list[float], Counter[str], list[str]]:
        """`c` creates → first result at once (asyncio); kills them after."""
        lg = counter.logger(f"burst{c}")
        gate = asyncio.Event()
        made: list[AsyncSandbox] = []

        async def one() -> float:
            await gate.wait()
            t = time.perf_counter()
            sbx = await AsyncSandbox.create(
                template=TEMPLATE, timeout=LIFETIME, logger=lg, request_timeout=REQUEST_TIMEOUT
            )
            made.append(sbx)
            self.track(sbx.sandbox_id, True)
            ex = await sbx.run_code("1+1", timeout=REQUEST_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
            dt = time.perf_counter() - t
            if ex.text != "2":
                raise RuntimeError(f"run_code('1+1') gave {ex.text!r} ({ex.error})")
            return dt

        tasks = [asyncio.ensure_future(one()) for _ in range(c)]
        await asyncio.sleep(0)
        gate.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        samples = [d for d in done if isinstance(d, float)]
        fails: Counter[str] = Counter(status_of(d) for d in done if isinstance(d, BaseException))
        messages = sorted({failure_message(d) for d in done if isinstance(d, BaseException)})
        await self.kill_async(made)
        return samples, fails, messages

    def row2(self) -> None:
        cfg, res = self.cfg, self.res
        for c in cfg.concurrency:
            raw: dict[str, Any] = {}
            variants: list[tuple[str, int]] = ([("sized", c)] if self.pools.available else []) + [("empty", 0)]
            series: dict[str, list[float]] = {}
            for name, size in variants:
                log(f"row 2: C={c}, pool {name} ({size}); waiting for the pool")
                info = self.pools.size(TEMPLATE, size)
                counter = StatusCounter()
                log(f"row 2: C={c}, pool {name}: {c} creates at once")
                t = time.perf_counter()
                samples, fails, messages = asyncio.run(self.burst(c, counter))
                wall = time.perf_counter() - t
                # Stop refilling before the next variant (and the kills) compete with it.
                self.pools.size(TEMPLATE, 0)
                raw[name] = {
                    "samples": samples,
                    "failures": dict(fails),
                    "failure_messages": messages,
                    "error_answers_seen_by_the_sdk": dict(counter.counts),
                    "pool_before": info,
                    "wall_s": wall,
                }
                series[f"hutch, pool {name}"] = samples
            base: list[float] = []
            base_err: list[str] = []
            if c <= cfg.burst_baseline_max:
                log(f"row 2: baseline, {c} local kernels started at once")
                base, base_err = self.jupyter("burst", c)
            raw.update(baseline=base, baseline_errors=base_err)
            series[f"{c} local kernels at once (jupyter_client)"] = base
            res.raw[f"2-C{c}"] = raw
            res.latency[f"2 create to first result, {c} at once"] = series
            bcell = (
                f"{c} local ipykernels started at once → first result: {lat_cell(base)}"
                if c <= cfg.burst_baseline_max
                else f"not run (over {cfg.burst_baseline_max} local kernels at once)"
            )
            for name, _ in variants:
                r = raw[name]
                samples, fails = r["samples"], Counter(r["failures"])
                hard = sum(v for k, v in fails.items() if k not in ("429", "503"))
                cell = f"{lat_cell(samples)}; {len(samples)}/{c} ok"
                if fails:
                    cell += f"; failed: {failure_summary(fails)}"
                seen = {k: v for k, v in r["error_answers_seen_by_the_sdk"].items() if k in ("429", "503")}
                if seen:
                    cell += f"; the SDK retried {failure_summary(Counter(seen))}"
                limit = "500 ms" if name == "sized" else "3 s"
                limit_s = 0.5 if name == "sized" else 3.0
                if c == 50:
                    target = f"p99 ≤ {limit}; all succeed or 429/503, no 500"
                    ok = bool(samples) and p(samples, 0.99) <= limit_s and hard == 0
                    met = yes_no(ok)
                elif c == 200:
                    target = "all succeed or 429/503, no 500"
                    met = yes_no(hard == 0)
                else:
                    target = f"(at C=50: p99 ≤ {limit}, no 500)"
                    met = f"n/a (C={c})" + (f"; **{hard} hard failures**" if hard else "")
                row = Row(
                    "2",
                    f"{c} created at once → first result, pool {'sized for C' if name == 'sized' else 'empty'}",
                    cell,
                    bcell,
                    ratio(p(samples, 0.5), p(base, 0.5)),
                    target,
                    met,
                )
                if r["failure_messages"]:
                    row.notes.append(f"C={c} pool {name}: " + "; ".join(r["failure_messages"][:5]))
                pool_ready = (r["pool_before"] or {}).get("ready")
                if name == "sized" and pool_ready is not None and pool_ready < c:
                    row.notes.append(f"C={c}: the pool had only {pool_ready} of {c} ready when the burst started.")
                res.rows.append(row)

    # --- rows 3 and 4 --------------------------------------------------------------------------

    def rows34(self) -> None:
        cfg = self.cfg
        self.pools.quiet()
        sbx = Sandbox.create(template=TEMPLATE, timeout=LIFETIME, request_timeout=REQUEST_TIMEOUT)
        self.track(sbx.sandbox_id, True)
        try:
            for _ in range(10):
                sbx.run_code("1+1")
                sbx.commands.run("true")
            per = max(1, cfg.n_rt // cfg.blocks)
            if 3 in cfg.rows:
                try:
                    self.row3(sbx, per)
                except Exception as e:
                    self.row_error("3", e)
            if 4 in cfg.rows:
                try:
                    self.row4(sbx, per)
                except Exception as e:
                    self.row_error("4", e)
        finally:
            sbx.kill()
            self.track(sbx.sandbox_id, False)

    def row3(self, sbx: Sandbox, per: int) -> None:
        cfg, res = self.cfg, self.res
        log(f"row 3: warm run_code vs jupyter_client round trips, {cfg.blocks} blocks of {per}")
        ours: list[float] = []
        base: list[float] = []
        errs: list[str] = []
        for _ in range(cfg.blocks):
            for _ in range(per):
                t = time.perf_counter()
                ex = sbx.run_code("1+1")
                ours.append(time.perf_counter() - t)
                if ex.text != "2":
                    raise RuntimeError(f"run_code('1+1') gave {ex.text!r}")
            b, e = self.jupyter("roundtrip", per)
            base += b
            errs += e
        res.raw["3"] = {"hutch": ours, "baseline": base, "baseline_errors": errs}
        res.latency["3 warm run_code round trip"] = {"hutch run_code (SDK)": ours, "raw jupyter_client": base}
        r = p(ours, 0.5) / p(base, 0.5) if base else math.nan
        res.rows.append(
            Row(
                "3",
                'warm `run_code("1+1")` round trip',
                lat_cell(ours),
                f"raw `jupyter_client` execute round trip on a local ipykernel: {lat_cell(base)}",
                ratio(p(ours, 0.5), p(base, 0.5)),
                "≤ 1.3x the raw Jupyter round trip",
                yes_no(r <= 1.3) if base else "—",
            )
        )

    def template_layers(self) -> list[Path]:
        """The read-only layers of TEMPLATE's root filesystem in the template cache, top first.
        A default template is one directory (`<cache>/templates/<recipe hash>/rootfs`); the
        newest build of that name wins."""
        found: list[tuple[str, Path]] = []
        for meta in glob.glob(str(self.cache_dir / "templates" / "*" / ".hutch-template.json")):
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(Path(meta).read_text())
                if doc.get("name") == TEMPLATE and (Path(meta).parent / "rootfs").is_dir():
                    found.append((str(doc.get("built_at", "")), Path(meta).parent / "rootfs"))
        if not found:
            raise RuntimeError(f"no built {TEMPLATE} under {self.cache_dir / 'templates'}")
        return [max(found)[1]]

    @contextlib.contextmanager
    def mounted_rootfs(self) -> Iterator[Path]:
        """The template's layers mounted read-only in a temp dir (a bind for one layer, an
        overlay of lower dirs for several); unmounted however the block ends."""
        layers = self.template_layers()
        tmp = Path(tempfile.mkdtemp(prefix="hutch-bench-root."))
        mounted = False
        try:
            if len(layers) == 1:
                subprocess.run(["mount", "--bind", str(layers[0]), str(tmp)], check=True)
                mounted = True
                subprocess.run(["mount", "-o", "remount,bind,ro", str(tmp)], check=True)
            else:
                lower = ":".join(str(x) for x in layers)
                subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(tmp)], check=True)
                mounted = True
            yield tmp
        finally:
            if mounted and subprocess.run(["umount", str(tmp)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(tmp)], check=False)
            with contextlib.suppress(OSError):
                tmp.rmdir()

    def row4(self, sbx: Sandbox, per: int) -> None:
        cfg, res = self.cfg, self.res
        log(f"row 4: commands.run('true') vs chroot bash -l -c true, {cfg.blocks} blocks of {per}")
        ours: list[float] = []
        base: list[float] = []
        chroot = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin")
        can_chroot = self.is_root and chroot is not None
        # The sandbox's default user (uid 1000 in the template) with a login shell's environment.
        env = {"HOME": "/home/user", "USER": "user", "LOGNAME": "user", "PATH": "/usr/local/bin:/usr/bin:/bin"}
        with contextlib.ExitStack() as stack:
            root = stack.enter_context(self.mounted_rootfs()) if can_chroot else None
            for _ in range(cfg.blocks):
                for _ in range(per):
                    t = time.perf_counter()
                    r = sbx.commands.run("true")
                    ours.append(time.perf_counter() - t)
                    if r.exit_code != 0:
                        raise RuntimeError(f"commands.run('true') exited {r.exit_code}")
                if root is not None and chroot is not None:
                    cmd = [chroot, "--userspec=1000:1000", str(root), "/bin/bash", "-l", "-c", "true"]
                    for _ in range(per):
                        t = time.perf_counter()
                        subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL)
                        base.append(time.perf_counter() - t)
        res.raw["4"] = {"hutch": ours, "baseline": base, "layers": [str(x) for x in self.template_layers()]}
        res.latency["4 commands.run(true)"] = {"hutch commands.run (SDK)": ours, "chroot + bash -l -c true": base}
        row = Row(
            "4",
            '`commands.run("true")`',
            lat_cell(ours),
            f"`bash -l -c true` by `chroot` in the template's rootfs: {lat_cell(base)}",
            ratio(p(ours, 0.5), p(base, 0.5)),
            "p50 ≤ 5 ms (docs/architecture.md)",
            yes_no(p(ours, 0.5) <= 0.005),
        )
        if not can_chroot:
            row.notes.append("row 4's baseline needs root and chroot: not run.")
        res.rows.append(row)

    # --- row 5 ---------------------------------------------------------------------------------

    def row5(self) -> None:
        cfg, res = self.cfg, self.res
        if self.pools.available:
            self.pools.size(TEMPLATE, 0)
            self.pools.restore(["base"])
            res.raw["5-pool"] = self.pools.info("base")
        log(f"row 5: base create + kill, {cfg.churn_threads} threads for {cfg.churn_seconds:.0f} s")
        counter = StatusCounter()
        lg = counter.logger("churn")

        def churn() -> None:
            s = BaseSandbox.create(template="base", timeout=120, logger=lg, request_timeout=REQUEST_TIMEOUT)
            self.track(s.sandbox_id, True)
            s.kill()
            self.track(s.sandbox_id, False)

        ours, fails, wall = run_for(churn, cfg.churn_threads, cfg.churn_seconds)
        unshare = shutil.which("unshare") or "unshare"
        ns = [unshare, "--user", "--map-root-user", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "true"]

        def baseline() -> None:
            subprocess.run(ns, check=True, stdin=subprocess.DEVNULL)

        log(f"row 5: baseline, unshare + true, {cfg.churn_threads} threads for {cfg.churn_seconds:.0f} s")
        base, bfails, bwall = run_for(baseline, cfg.churn_threads, cfg.churn_seconds)
        rate, brate = len(ours) / wall, len(base) / bwall
        res.raw["5"] = {
            "hutch": ours,
            "hutch_wall_s": wall,
            "failures": dict(fails),
            "error_answers_seen_by_the_sdk": dict(counter.counts),
            "baseline": base,
            "baseline_wall_s": bwall,
            "baseline_failures": dict(bfails),
        }
        res.latency["5 base create + kill, 8 threads"] = {"hutch create + kill": ours, "unshare + true": base}
        cell = f"{rate:.1f}/s; each {lat_cell(ours)}"
        if fails:
            cell += f"; failed: {failure_summary(fails)}"
        res.rows.append(
            Row(
                "5",
                f"`base` create + kill per second, {cfg.churn_threads} client threads, {cfg.churn_seconds:.0f} s",
                cell,
                f"`unshare` (user, pid, mount, net, uts, ipc) + `true`, {cfg.churn_threads} threads: {brate:.1f}/s",
                f"{rate / brate:.2f}x" if brate else "—",
                "≥ 200/s",
                yes_no(rate >= 200),
            )
        )

    # --- row 6 ---------------------------------------------------------------------------------

    def memory_point(self, ids: list[str], mem0: int) -> dict[str, float]:
        pss = 0
        procs = 0
        missing = 0
        for sid in ids:
            pids = cgroup_pids(sid)
            if pids is None:
                missing += 1
                continue
            procs += len(pids)
            pss += sum(pss_of(x) for x in pids)
        return {
            "count": len(ids),
            "pss": pss,
            "mem_delta": mem0 - mem_available(),
            "processes": procs,
            "no_cgroup": missing,
        }

    def row6(self) -> None:
        cfg, res = self.cfg, self.res
        k = cfg.idle
        self.pools.quiet()
        mem0 = settled_mem_available()
        step = max(1, k // 10)
        log(f"row 6: {k} idle {TEMPLATE} sandboxes, {cfg.idle_workers} created at a time; memory every {step}")
        held: list[AsyncSandbox] = []
        fails: Counter[str] = Counter()
        messages: set[str] = set()
        poller_out = Path(tempfile.mkstemp(prefix="hutch-bench-health.")[1])
        poller = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--poll-health", self.api, str(poller_out)],
            stdin=subprocess.DEVNULL,
        )
        answering = 0
        stopped: list[str] = []
        try:
            res.memory.append(self.memory_point([], mem0))

            async def make(sem: asyncio.Semaphore) -> None:
                async with sem:
                    try:
                        s = await AsyncSandbox.create(
                            template=TEMPLATE, timeout=LIFETIME, request_timeout=REQUEST_TIMEOUT
                        )
                    except Exception as e:
                        fails[status_of(e)] += 1
                        messages.add(failure_message(e))
                        return
                    held.append(s)
                    self.track(s.sandbox_id, True)
                    ex = await s.run_code("1+1", request_timeout=REQUEST_TIMEOUT)
                    if ex.text != "2":
                        messages.add(f"run_code('1+1') gave {ex.text!r}")

            async def fill() -> None:
                sem = asyncio.Semaphore(cfg.idle_workers)
                made = 0
                while made < k:
                    n = min(step, k - made)
                    # Each sandbox costs what the last ones did (at first a guess): stop before the
                    # host would run short, rather than have the kernel's OOM killer choose.
                    per = res.memory[-1]["mem_delta"] / len(held) if held else 128 << 20
                    if mem_available() - n * per < cfg.mem_floor:
                        stopped.append(
                            f"row 6 stopped at {len(held)} held: {n} more would leave MemAvailable under "
                            f"{mib(cfg.mem_floor)} (--mem-floor-mib)."
                        )
                        break
                    await asyncio.gather(*(make(sem) for _ in range(n)))
                    made += n
                    await asyncio.sleep(0.5)
                    point = self.memory_point([s.sandbox_id for s in held], mem0)
                    res.memory.append(point)
                    log(f"row 6: {len(held)} held; PSS {mib(point['pss'])}, MemAvailable Δ {mib(point['mem_delta'])}")

            async def check() -> int:
                sem = asyncio.Semaphore(cfg.idle_workers)

                async def one(s: AsyncSandbox) -> bool:
                    async with sem:
                        try:
                            ex = await s.run_code("1+1", request_timeout=REQUEST_TIMEOUT)
                            return ex.text == "2"
                        except Exception as e:
                            messages.add("check: " + failure_message(e))
                            return False

                return sum(await asyncio.gather(*(one(s) for s in held)))

            async def run() -> None:
                nonlocal answering
                try:
                    await fill()
                    log(f"row 6: checking that each of the {len(held)} answers run_code")
                    answering = await check()
                finally:
                    log(f"row 6: killing {len(held)}")
                    await self.kill_async(held)

            asyncio.run(run())
        finally:
            poller.send_signal(signal.SIGTERM)
            poller.wait(timeout=30)
            health = [tuple(json.loads(x)) for x in poller_out.read_text().splitlines() if x.strip()]
            poller_out.unlink()
        lat = [float(h[1]) for h in health]
        bad = [h for h in health if h[2] != 200]
        res.health = [(float(h[0]), float(h[1])) for h in health]
        base, base_err = self.jupyter("pss", cfg.idle_baseline) if self.is_root else ([], ["not root"])
        last = res.memory[-1]
        n = max(1, int(last["count"]))
        slope = fit_slope([(c["count"], c["mem_delta"]) for c in res.memory])
        res.raw["6"] = {
            "held": len(held),
            "answering": answering,
            "failures": dict(fails),
            "messages": sorted(messages),
            "checkpoints": res.memory,
            "health_failures": bad[:50],
            "baseline_pss": base,
            "baseline_errors": base_err,
        }
        full = k >= 400
        r_held = Row(
            "6",
            f"idle `{TEMPLATE}` sandboxes held at once, each answering `run_code`",
            f"{len(held)} held of {k} asked, {answering} answering"
            + (f"; failed: {failure_summary(fails)}" if fails else ""),
            "—",
            "—",
            "≥ 400",
            yes_no(answering >= 400) if full else f"n/a (only {k} asked)",
        )
        r_held.notes += stopped
        if messages:
            r_held.notes.append("row 6: " + "; ".join(sorted(messages)[:5]))
        if last["no_cgroup"]:
            r_held.notes.append(f"row 6: {int(last['no_cgroup'])} sandboxes had no cgroup found: PSS leaves them out.")
        res.rows.append(r_held)
        bpss = sum(base) / len(base) if base else math.nan
        res.rows.append(
            Row(
                "6",
                f"memory per idle sandbox at {int(last['count'])} held",
                f"PSS {mib(last['pss'] / n)} ({int(last['processes'])} processes); MemAvailable "
                f"{mib(slope)} per sandbox (slope; Δ/n {mib(last['mem_delta'] / n)})",
                f"a fresh local ipykernel past `1+1`, PSS: {mib(bpss)}",
                ratio(last["pss"] / n, bpss),
                "— (≥ 400 must fit)",
                "—",
            )
        )
        res.rows.append(
            Row(
                "6",
                "`/health` while they are created and held",
                f"max {fmt_s(max(lat))}, p99 {fmt_s(p(lat, 0.99))}, {len(lat)} polls, {len(bad)} not 200"
                if lat
                else "—",
                "—",
                "—",
                "answers in under 1 s",
                yes_no(bool(lat) and max(lat) < 1.0 and not bad),
            )
        )

    # --- row 7 ---------------------------------------------------------------------------------

    def row7(self) -> None:
        cfg, res = self.cfg, self.res
        size = cfg.xfer_bytes
        label = f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"
        self.pools.quiet()
        curl = shutil.which("curl") or "curl"
        tmp = Path(tempfile.mkdtemp(prefix="hutch-bench-xfer."))
        sbx = BaseSandbox.create(template="base", timeout=LIFETIME, request_timeout=REQUEST_TIMEOUT)
        self.track(sbx.sandbox_id, True)
        try:
            src = tmp / "src.bin"
            log(f"row 7: writing {label} of random bytes")
            digest = hashlib.sha256()
            with open(src, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 8 << 20))
                    digest.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
            want = digest.hexdigest()
            cp, up, down, sdk_w, sdk_r = [], [], [], [], []
            for rep in range(cfg.xfer_reps):
                log(f"row 7: cp, curl upload, curl download ({rep + 1}/{cfg.xfer_reps})")
                dst = tmp / "copy.bin"
                t = time.perf_counter()
                subprocess.run(["cp", str(src), str(dst)], check=True)
                cp.append(size / (time.perf_counter() - t) / GB)
                dst.unlink()

                path = f"/home/user/big-{rep}.bin"
                url = sbx.upload_url(path)
                t = time.perf_counter()
                run_curl([curl, "-o", "/dev/null", "-F", f"file=@{src}", url])
                up.append(size / (time.perf_counter() - t) / GB)
                got = sbx.files.get_info(path).size
                if got != size:
                    raise RuntimeError(f"uploaded {got} bytes, not {size}")

                out = tmp / "down.bin"
                t = time.perf_counter()
                run_curl([curl, "-o", str(out), sbx.download_url(path)])
                down.append(size / (time.perf_counter() - t) / GB)
                if rep == 0 and sha256_file(out) != want:
                    raise RuntimeError("the downloaded file differs from the uploaded one")
                out.unlink()
                sbx.files.remove(path)
            log("row 7: the SDK's files.write and files.read")
            data = src.read_bytes()
            t = time.perf_counter()
            sbx.files.write("/home/user/sdk.bin", data, request_timeout=REQUEST_TIMEOUT)
            sdk_w.append(size / (time.perf_counter() - t) / GB)
            t = time.perf_counter()
            back = sbx.files.read("/home/user/sdk.bin", format="bytes", request_timeout=REQUEST_TIMEOUT)
            sdk_r.append(size / (time.perf_counter() - t) / GB)
            if len(back) != size:
                raise RuntimeError(f"files.read gave {len(back)} bytes, not {size}")
            del data, back
        finally:
            sbx.kill()
            self.track(sbx.sandbox_id, False)
            shutil.rmtree(tmp, ignore_errors=True)
        med = statistics.median
        res.raw["7"] = {"bytes": size, "cp": cp, "upload": up, "download": down, "sdk_write": sdk_w, "sdk_read": sdk_r}
        res.transfer = {
            "cp on the host": med(cp),
            "curl upload (signed URL)": med(up),
            "curl download (signed URL)": med(down),
            "SDK files.write": med(sdk_w),
            "SDK files.read": med(sdk_r),
        }
        bcell = f"`cp` of the same file on the host: {med(cp):.2f} GB/s"
        big = size >= 1 << 30
        for what, xs in (("upload", up), ("download", down)):
            res.rows.append(
                Row(
                    "7",
                    f"{label} {what}, curl on the signed URL",
                    f"{med(xs):.2f} GB/s (median of {len(xs)}; min {min(xs):.2f})",
                    bcell,
                    f"{med(xs) / med(cp):.2f}x",
                    "≥ 1 GB/s",
                    yes_no(med(xs) >= 1.0) if big else f"n/a (smoke: {label}); {med(xs):.2f} GB/s",
                )
            )
        for what, xs in (("`files.write`", sdk_w), ("`files.read`", sdk_r)):
            res.rows.append(
                Row(
                    "7",
                    f"{label} with the official SDK's {what}",
                    f"{med(xs):.2f} GB/s",
                    bcell,
                    f"{med(xs) / med(cp):.2f}x",
                    "— (the SDK's own client)",
                    "—",
                )
            )

    # --- the run -------------------------------------------------------------------------------

    def row_error(self, row: str, e: BaseException) -> None:
        log(f"row {row} failed: {type(e).__name__}: {e}")
        self.res.errors.append(f"row {row}: {type(e).__name__}: {e}")
        self.res.raw.setdefault("tracebacks", {})[row] = traceback.format_exc()

    def run(self) -> int:
        cfg = self.cfg
        steps: list[tuple[str, Callable[[], None]]] = [
            ("1", self.row1),
            ("2", self.row2),
            ("3/4", self.rows34),
            ("5", self.row5),
            ("7", self.row7),
            ("6", self.row6),
        ]
        try:
            for name, fn in steps:
                if not any(int(x) in cfg.rows for x in name.split("/")):
                    continue
                try:
                    fn()
                except Exception as e:
                    self.row_error(name, e)
                finally:
                    self.kill_leftovers()
        finally:
            self.kill_leftovers()
            self.pools.restore()
            self.res.rows.sort(key=lambda r: int(r.row))
            self.res.meta["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
            self.res.meta["seconds"] = round(time.monotonic() - T0, 1)
            write_all(self.res, cfg.out)
            log(f"results in {cfg.out}")
            print((cfg.out / "results.md").read_text())
        return 1 if self.res.errors else 0


def run_for(fn: Callable[[], None], threads: int, seconds: float) -> tuple[list[float], Counter[str], float]:
    """Calls `fn` in a loop on `threads` threads for `seconds`; each call's duration, the
    failures by status, and the wall time until the last call returned."""
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    samples: list[float] = []
    fails: Counter[str] = Counter()

    def worker() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                fn()
            except Exception as e:
                with lock:
                    fails[status_of(e)] += 1
                time.sleep(0.05)
                continue
            dt = time.perf_counter() - t
            with lock:
                samples.append(dt)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker) for _ in range(threads)]:
            f.result()
    return samples, fails, time.perf_counter() - start


def run_curl(cmd: list[str]) -> None:
    """curl, quiet, failing on an HTTP error, never through a proxy."""
    full = [cmd[0], "-sS", "--fail-with-body", "--noproxy", "*", *cmd[1:]]
    r = subprocess.run(full, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"curl exited {r.returncode}: {r.stderr.strip()} {r.stdout[:300]}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def fit_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y against x (bytes per sandbox), NaN with fewer than two x values."""
    n = len(points)
    mx = sum(x for x, _ in points) / n if n else 0.0
    my = sum(y for _, y in points) / n if n else 0.0
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if n < 2 or sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def settled_mem_available(timeout: float = 30) -> int:
    """MemAvailable once it has stopped moving (what an earlier row freed or wrote back has
    settled): two readings a second apart within 16 MiB, or the last reading after `timeout`."""
    os.sync()
    deadline = time.monotonic() + timeout
    last = mem_available()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = mem_available()
        if abs(now - last) < 16 << 20:
            return now
        last = now
    return last


def mem_total_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    return math.nan


def poll_health(api: str, out: str) -> None:
    """`--poll-health URL FILE`: GET URL/health every 0.2 s until SIGTERM; one JSON line per
    poll, [seconds since start, latency, status]. A process of its own, so that the
    benchmark's own work does not delay it."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    start = time.perf_counter()
    with httpx.Client(timeout=60, trust_env=False) as c, open(out, "w") as f:
        while not stopping.is_set():
            t = time.perf_counter()
            try:
                status = c.get(f"{api}/health").status_code
            except httpx.HTTPError:
                status = 0
            f.write(json.dumps([round(t - start, 3), time.perf_counter() - t, status]) + "\n")
            f.flush()
            stopping.wait(0.2)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--poll-health":
        poll_health(sys.argv[2], sys.argv[3])
        return 0
    cfg = Config.parse(sys.argv[1:])
    return Bench(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
