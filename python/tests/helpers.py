"""Helpers shared by the SDK's tests: waiting for what a sandbox does in the background, and the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

PATIENCE = 15.0
"""Seconds a test waits, by default, for something to happen in the sandbox."""

_POLL = 0.05


def wait_until(check: Callable[[], bool], timeout: float = PATIENCE) -> bool:
    """Calls `check()` until it holds or `timeout` seconds pass; whether it held in the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(_POLL)
    return check()


def eventually(check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Waits until `check()` holds; fails the test if it does not within `timeout` seconds."""
    assert wait_until(check, timeout), "condition not reached in time"


async def wait_until_async(check: Callable[[], bool], timeout: float = PATIENCE) -> bool:
    """`wait_until` for asyncio tests: lets the event loop run (and callbacks arrive) between checks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(_POLL)
    return check()


async def eventually_async(check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """`eventually` for asyncio tests: fails the test if `check()` does not hold within `timeout` seconds."""
    assert await wait_until_async(check, timeout), "condition not reached in time"


def hutch_cli(*args: str) -> str:
    """Runs the `hutch` binary of the server under test on its data dir (scripts/test.sh names
    both in HUTCH_TEST_WORK) and returns what it printed."""
    work = Path(os.environ["HUTCH_TEST_WORK"])
    binary = (work / "server.cmd").read_text().splitlines()[0]
    out = subprocess.run([binary, *args, "--data-dir", str(work / "data")], capture_output=True, text=True, check=True)
    return out.stdout
