"""The baselines of benches/instant.py that need `jupyter_client` and a local ipykernel.

It runs on the kernel venv that scripts/test.sh builds (tests/kernel-requirements.txt on
/usr/bin/python3), not on the benchmark's venv, and is started by instant.py:

    python jupyter_baseline.py cold N        N kernels one after another: start → first `1+1` result
    python jupyter_baseline.py burst C       C kernels started at once: start → first `1+1` result
    python jupyter_baseline.py roundtrip N   N warm `1+1` round trips on one kernel
    python jupyter_baseline.py pss K         K idle kernels held at once, each past `1+1`: PSS of each

Prints one JSON object on stdout: {"samples": [...], "errors": [...]}; durations in seconds,
PSS in bytes. Every kernel it starts is shut down before it exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from jupyter_client import AsyncKernelManager, BlockingKernelClient, KernelManager

# E2B's kernels run with colours off; so do these.
KERNEL_ARGS = ["--InteractiveShell.colors=NoColor"]
# A baseline kernel that never answers (seen once among 50 started at once: the run then
# waited 600 s) is counted as an error after this long; 50 at once answer within ~15 s.
TIMEOUT = 120.0


def _iopub_step(m: dict[str, Any], msg_id: str, text: str) -> tuple[bool, str]:
    """Folds one iopub message of execution `msg_id` into its result text; True once idle."""
    if m["parent_header"].get("msg_id") != msg_id:
        return False, text
    if m["msg_type"] == "execute_result":
        return False, str(m["content"]["data"].get("text/plain", ""))
    return m["msg_type"] == "status" and m["content"]["execution_state"] == "idle", text


def execute(kc: BlockingKernelClient, code: str) -> str:
    """Runs `code`; waits for our idle status and the shell reply; returns the result's text."""
    msg_id = kc.execute(code)
    done, text = False, ""
    while not done:
        done, text = _iopub_step(kc.get_iopub_msg(timeout=TIMEOUT), msg_id, text)
    while kc.get_shell_msg(timeout=TIMEOUT)["parent_header"].get("msg_id") != msg_id:
        pass
    return text


async def execute_async(kc: Any, code: str) -> str:
    """`execute` for an asyncio client."""
    msg_id = kc.execute(code)
    done, text = False, ""
    while not done:
        done, text = _iopub_step(await kc.get_iopub_msg(timeout=TIMEOUT), msg_id, text)
    while (await kc.get_shell_msg(timeout=TIMEOUT))["parent_header"].get("msg_id") != msg_id:
        pass
    return text


def cold(n: int) -> dict[str, Any]:
    """A KernelManager start of ipykernel → the first `1+1` result, `n` times in a row."""
    samples: list[float] = []
    errors: list[str] = []
    for _ in range(n):
        t = time.perf_counter()
        km = KernelManager()
        km.start_kernel(extra_arguments=KERNEL_ARGS)
        kc = km.client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=TIMEOUT)
            text = execute(kc, "1+1")
            dt = time.perf_counter() - t
            if text == "2":
                samples.append(dt)
            else:
                errors.append(f"1+1 gave {text!r}")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return {"samples": samples, "errors": errors}


async def start_one(gate: asyncio.Event, kms: list[Any]) -> float:
    await gate.wait()
    t = time.perf_counter()
    km = AsyncKernelManager()
    kms.append(km)
    await km.start_kernel(extra_arguments=KERNEL_ARGS)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=TIMEOUT)
        text = await execute_async(kc, "1+1")
    finally:
        kc.stop_channels()
    if text != "2":
        raise RuntimeError(f"1+1 gave {text!r}")
    return time.perf_counter() - t


async def start_many(c: int) -> tuple[list[float], list[str], list[Any]]:
    """Starts `c` kernels at once; each one's time from the common start to its first result."""
    gate = asyncio.Event()
    kms: list[Any] = []
    tasks = [asyncio.ensure_future(start_one(gate, kms)) for _ in range(c)]
    await asyncio.sleep(0)
    gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    samples = [d for d in done if isinstance(d, float)]
    errors = [f"{type(d).__name__}: {d}" for d in done if isinstance(d, BaseException)]
    return samples, errors, kms


async def shutdown(kms: list[Any]) -> None:
    await asyncio.gather(*(km.shutdown_kernel(now=True) for km in kms), return_exceptions=True)


async def burst(c: int) -> dict[str, Any]:
    samples, errors, kms = await start_many(c)
    await shutdown(kms)
    return {"samples": samples, "errors": errors}


def pss_of(pid: int) -> int:
    """Proportional set size of process `pid`, in bytes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line for {pid}")


async def pss(k: int) -> dict[str, Any]:
    """`k` idle kernels held at once (started a few at a time, each past `1+1`): their PSS."""
    kms: list[Any] = []
    errors: list[str] = []
    try:
        for i in range(0, k, 4):
            _, errs, started = await start_many(min(4, k - i))
            kms += started
            errors += errs
        await asyncio.sleep(1)
        samples = [pss_of(int(km.provisioner.process.pid)) for km in kms if km.has_kernel]
    finally:
        await shutdown(kms)
    return {"samples": samples, "errors": errors}


def roundtrip(n: int) -> dict[str, Any]:
    """`n` warm `1+1` round trips (execute_request → idle and the shell reply) on one kernel."""
    km = KernelManager()
    km.start_kernel(extra_arguments=KERNEL_ARGS)
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=TIMEOUT)
        for _ in range(10):
            execute(kc, "1+1")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            execute(kc, "1+1")
            samples.append(time.perf_counter() - t)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"samples": samples, "errors": []}


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    if mode == "cold":
        out = cold(count)
    elif mode == "roundtrip":
        out = roundtrip(count)
    elif mode == "burst":
        out = asyncio.run(burst(count))
    elif mode == "pss":
        out = asyncio.run(pss(count))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
