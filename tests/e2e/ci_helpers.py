"""Helpers shared by the tests of the stateful code interpreter (`e2b-code-interpreter`).

Sandboxes here use the SDK's default template, `code-interpreter-v1`, whose code
interpreter listens on port 49999 and runs Jupyter kernels. Everything talks only to the
hutch server named by E2B_SANDBOX_URL (loopback).
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from e2b_code_interpreter import Execution
from e2b_code_interpreter.code_interpreter_async import AsyncSandbox
from e2b_code_interpreter.code_interpreter_sync import Sandbox

TEMPLATE = "code-interpreter-v1"
HOME = "/home/user"

# Long enough for a test that runs a minute of code plus kernel start-ups; short enough
# that a server that never answers fails the test instead of holding the suite.
SANDBOX_LIFETIME = 600

# The code interpreter's sandbox classes, for the tests to import from here. The SDK's package
# runs `from e2b import *` before it imports its own `Sandbox` and `AsyncSandbox`, and mypy
# keeps the first of two bindings of a name: through the package it would see e2b's classes,
# which have no `run_code`. These come from the classes' own modules (the very same objects
# at run time).
CodeSandbox = Sandbox
AsyncCodeSandbox = AsyncSandbox


@contextmanager
def code_sandbox(**kwargs: Any) -> Iterator[CodeSandbox]:
    """A code-interpreter sandbox (created with `kwargs`), killed afterwards whatever happened."""
    kwargs.setdefault("timeout", SANDBOX_LIFETIME)
    sbx = CodeSandbox.create(**kwargs)
    try:
        yield sbx
    finally:
        with suppress(Exception):
            sbx.kill()


@asynccontextmanager
async def async_code_sandbox(**kwargs: Any) -> AsyncIterator[AsyncCodeSandbox]:
    """The async twin of `code_sandbox`."""
    kwargs.setdefault("timeout", SANDBOX_LIFETIME)
    sbx = await AsyncCodeSandbox.create(**kwargs)
    try:
        yield sbx
    finally:
        with suppress(Exception):
            await sbx.kill()


def stdout_of(execution: Execution) -> str:
    return "".join(execution.logs.stdout)


def stderr_of(execution: Execution) -> str:
    return "".join(execution.logs.stderr)


# --- images ---------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(b64: str | None) -> tuple[int, int]:
    """(width, height) of a base64 PNG, read from its IHDR chunk; fails if it is not a PNG."""
    assert b64 is not None, "no PNG"
    raw = base64.b64decode(b64)
    assert raw[:8] == PNG_MAGIC, f"not a PNG: starts with {raw[:8]!r}"
    assert raw[12:16] == b"IHDR", "a PNG starts with its IHDR chunk"
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


# --- streaming --------------------------------------------------------------------------------


class Arrivals:
    """Records what an output callback receives and the wall-clock second it arrived in."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []

    def __call__(self, item: Any) -> None:
        self.items.append((time.time(), item))

    def distinct_seconds(self) -> int:
        return len({int(t) for t, _ in self.items})

    def text(self) -> str:
        return "".join(str(item.line) for _, item in self.items)


# --- environment variables per language -----------------------------------------------------


# Reading an environment variable differs per kernel; Java reads E2B's per-run and sandbox
# variables as system properties (E2B sets them with System.setProperty).
@dataclass(frozen=True)
class EnvProbe:
    """How to read an environment variable in one language, and get its value back."""

    language: str
    read: Callable[[str], str]
    read_or: Callable[[str, str], str]
    value: Callable[[Execution], str]
    print: Callable[[str], str]  # code printing the value verbatim on stdout

    def run(self, sbx: CodeSandbox, code: str, envs: dict[str, str] | None = None) -> str:
        """Runs `code` in this language in `sbx` and returns its `value`."""
        return self.value(sbx.run_code(code, language=self.language, envs=envs))

    async def run_async(self, sbx: AsyncCodeSandbox, code: str, envs: dict[str, str] | None = None) -> str:
        """The async twin of `run`."""
        return self.value(await sbx.run_code(code, language=self.language, envs=envs))


def _text(e: Execution) -> str:
    assert e.error is None, f"{e.error.name}: {e.error.value}"
    assert e.text is not None, f"no main result: {e}"
    return e.text.strip()


def _r_text(e: Execution) -> str:
    # IRkernel shows a value as display data (not a main result), and a character vector
    # as `[1] "value"`.
    assert e.error is None, f"{e.error.name}: {e.error.value}"
    assert e.results, f"no result: {e}"
    text = (e.results[0].text or "").strip()
    assert text.startswith('[1] "') and text.endswith('"'), text
    return text[len('[1] "') : -1]


def _bash_stdout(e: Execution) -> str:
    assert e.error is None, f"{e.error.name}: {e.error.value}"
    return stdout_of(e).strip()


PROBES = [
    EnvProbe(
        "python",
        lambda k: f"import os; os.getenv('{k}')",
        lambda k, d: f"import os; os.getenv('{k}', '{d}')",
        _text,
        lambda k: f"import os; print(os.environ['{k}'])",
    ),
    EnvProbe(
        "bash",
        lambda k: f'echo "${k}"',
        lambda k, d: f'echo "${{{k}:-{d}}}"',
        _bash_stdout,
        lambda k: f"printf '%s\\n' \"${k}\"",
    ),
    EnvProbe(
        "javascript",
        lambda k: f"process.env.{k}",
        lambda k, d: f"process.env.{k} || '{d}'",
        _text,
        lambda k: f"console.log(process.env.{k})",
    ),
    EnvProbe(
        "r",
        lambda k: f"Sys.getenv('{k}')",
        lambda k, d: f"Sys.getenv('{k}', unset = '{d}')",
        _r_text,
        lambda k: f"cat(Sys.getenv('{k}'), '\\n', sep = '')",
    ),
    EnvProbe(
        "java",
        lambda k: f'System.getProperty("{k}")',
        lambda k, d: f'System.getProperty("{k}", "{d}")',
        _text,
        lambda k: f'System.out.println(System.getProperty("{k}"));',
    ),
]
