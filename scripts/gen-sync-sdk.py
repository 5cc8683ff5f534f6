#!/usr/bin/env python3
"""Generates the blocking modules of the Python SDK from their asyncio sources.

    python3 scripts/gen-sync-sdk.py           # rewrites python/hutch/{code,commands,...}.py
    python3 scripts/gen-sync-sdk.py --check   # fails when a checked-in one is out of date

`python/hutch/X_async.py` is the one source of `python/hutch/X.py`: unasync (pinned in
tests/requirements.txt) takes out `async` / `await` and renames the asyncio names to their
blocking twins (RENAMES); then the same renames are applied inside docstrings, comments and
f-strings, the docstrings' asyncio wording is replaced (WORDING), and ruff sorts the imports,
drops the unused ones and formats the result.

What only one side has is marked in the asyncio source: the lines between `# unasync: async-only`
and `# unasync: end` are left out of the blocking module; the comment lines between
`# unasync: sync-only` and `# unasync: end` are code of the blocking module only (uncommented
there, taken as they are). Shared helpers that differ by side live in `_concurrency.py`, whose
`AsyncX` names RENAMES turns into their `SyncX` twins.

Run it with a Python that has tests/requirements.txt installed (the test venv has it).
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import unasync  # type: ignore[import-untyped]
except ImportError:
    sys.exit(
        "scripts/gen-sync-sdk.py needs unasync and ruff: run it with the test venv's python, or install "
        "tests/requirements.txt (pip install -r tests/requirements.txt)"
    )

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "hutch"
COMMAND = "python3 scripts/gen-sync-sdk.py"

MODULES = ("code", "commands", "filesystem", "pty", "sandbox")
"""Each `X_async.py` of the package becomes `X.py`."""

RENAMES = {
    # the public classes
    "AsyncSandbox": "Sandbox",
    "AsyncCodeInterpreter": "CodeInterpreter",
    "AsyncSandboxPaginator": "SandboxPaginator",
    "AsyncNotebook": "Notebook",
    "AsyncCommands": "Commands",
    "AsyncProcess": "Process",
    "AsyncCommandHandle": "CommandHandle",
    "AsyncProcessHandle": "ProcessHandle",
    "AsyncStreamHandle": "StreamHandle",
    "AsyncPty": "Pty",
    "AsyncPtyHandle": "PtyHandle",
    "AsyncTerminal": "Terminal",
    "AsyncFilesystem": "Filesystem",
    "AsyncFileStreamReader": "FileStreamReader",
    "AsyncWatchHandle": "WatchHandle",
    # the modules
    "code_async": "code",
    "commands_async": "commands",
    "filesystem_async": "filesystem",
    "pty_async": "pty",
    "sandbox_async": "sandbox",
    # httpx
    "AsyncClient": "Client",
    "aiter_bytes": "iter_bytes",
    "aiter_lines": "iter_lines",
    "aread": "read",
    "aclose": "close",
    # the SDK's own pairs (_connect, api, _errors, _callbacks, process_models, filesystem_models)
    "AsyncRpc": "Rpc",
    "arun": "run",
    "amessage_of": "message_of",
    "call_async": "call_sync",
    "ASYNC_KEEPALIVE_SECONDS": "SYNC_KEEPALIVE_SECONDS",
    "AsyncWriteData": "WriteData",
    "iter_async_chunks": "iter_sync_chunks",
    "agzip_chunks": "gzip_chunks",
    "astart_watch": "start_watch",
    "ASYNC_WATCH_TIMEOUT": "SYNC_WATCH_TIMEOUT",
    # helpers of the asyncio modules themselves
    "_aclose": "_close",
    "aopen_stream": "open_stream",
    "anext_or_none": "next_or_none",
    "adrive": "drive",
    # _concurrency: the asyncio primitives and their blocking twins
    "AsyncQueue": "SyncQueue",
    "AsyncWorker": "SyncWorker",
    "AsyncLock": "SyncLock",
}
"""Names (whole words) of the asyncio code and what the blocking code calls them."""

CODE_PATTERNS = (
    # An awaitable result is the result itself.
    (r"\bAwaitable\[([\w.]+)\]", r"\1"),
)
"""Regular expressions applied to the generated code, after RENAMES."""

WORDING = (
    # commands_async.py, pty_async.py
    (", of an `AsyncSandbox`)", ")"),
    (", in asyncio code", ""),
    ("in the calling task", "in the calling thread"),
    ("the asyncio handles", "the blocking handles"),
    ("a task reads", "a thread reads"),
    ("(by that task)", "(from that thread)"),
    ("`async for` over the handle, or", "Iterating over the handle, or"),
    ("by a task of the event loop", "from a reader thread"),
    # code_async.py
    ("`sandbox.notebook` of an `AsyncSandbox`;", "`sandbox.notebook`;"),
    # filesystem_async.py
    (
        "for asyncio code: `sandbox.files` (also `sandbox.filesystem`) of an `AsyncSandbox`.",
        "for blocking code: `sandbox.files` (also `sandbox.filesystem`).",
    ),
    ("inside a sandbox, for asyncio code:", "inside a sandbox:"),
    ("async with await sandbox.files.read(", "with sandbox.files.read("),
    ("an async iterator", "an iterator"),
    ("async for chunk in chunks:", "for chunk in chunks:"),
    (
        (
            "(binary or text, blocking or with an async `read`), or an iterable or async iterable of `bytes`"
            " chunks; file-like objects and iterables are streamed, never held in memory whole."
        ),
        (
            "(binary or text)\n            or an iterable of `bytes` chunks; file-like objects and iterables are"
            " streamed,\n            never held in memory whole."
        ),
    ),
    ("a task calls it", "a background thread calls it"),
    (
        "(default 60, as E2B's; None or 0: never); `on_exit` then gets a `TimeoutException`.",
        "(None or 0: never); `on_exit` then gets a `TimeoutException`.",
    ),
    # sandbox_async.py
    ("driven from asyncio code with `await`.", "driven with blocking calls."),
    ("processes and terminals; for asyncio code.", "processes and terminals."),
    ("`await AsyncSandbox.create()` creates one", "`Sandbox()` creates one"),
    (
        "and `await AsyncSandbox.connect(sandbox_id)` connects to a running one.",
        "and `Sandbox(sandbox_id=...)` connects to a running one.",
    ),
    ('print((await sandbox.run_code("x += 1; x")).text)', 'print(sandbox.run_code("x += 1; x").text)'),
    (
        (
            "Its methods are awaited, streams are async iterators and callbacks may be plain functions or"
            " `async def`. `AsyncSandbox(...)` alone only describes a sandbox: `await` or `async with` starts it."
        ),
        (
            "`async with Sandbox() as sandbox:` works too: the block then gets an `AsyncSandbox` on the\n"
            "    same sandbox, whose methods are awaited."
        ),
    ),
    (
        (
            "Describes a sandbox to create, or the running sandbox `sandbox_id` to connect to. Nothing happens"
            " until it is awaited or entered; `await AsyncSandbox.create(...)` does both at once."
        ),
        "Creates a sandbox, or connects to the running sandbox `sandbox_id`.",
    ),
    ("Describes an `AsyncSandbox` (see there)", "Creates a `Sandbox` (see there)"),
    # everywhere
    ("asyncio API", "blocking API"),
    ("`async for` over its output", "iteration over its output"),
    ("`async for` over", "iterating over"),
    ("an `async with` block", "a `with` block"),
)
"""Docstring and comment phrases of the asyncio modules and what the blocking modules say instead.

Applied in order, before DOC_PATTERNS and RENAMES; a run of whitespace in a phrase matches any run of whitespace
(a line break in it is kept where it can be). Each phrase must be used at least once: one no
longer in the sources is a stale rule.
"""

DOC_PATTERNS = (
    # `await x`, `async for x` and `async with x` in a docstring are `x`, `for x` and `with x`
    # (the code has none left).
    (r"\bawait (?=[\w(])", ""),
    (r"\basync (?=for |with )", ""),
    # "an `AsyncSandbox`" is "a `Sandbox`": every such name's blocking twin starts with a consonant.
    (r"\ban `Async(?=[A-Z])", "a `Async"),
)
"""Regular expressions applied to the asyncio text after the WORDING."""

ASYNC_ONLY = "# unasync: async-only"
SYNC_ONLY = "# unasync: sync-only"
END = "# unasync: end"


def header(module: str) -> str:
    return (
        f"# Generated from python/hutch/{module}_async.py by scripts/gen-sync-sdk.py: do not edit.\n"
        f'# Change the asyncio module and run `{COMMAND}` (python/README.md, "Developing the SDK").\n'
    )


class Kept:
    """Text the blocking module gets as it is: held out of unasync and the renames behind a
    placeholder (a comment line, or a marker inside a docstring)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def hold(self, text: str, line: bool = False) -> str:
        self.texts.append(text)
        return f"# unasync-kept-{len(self.texts) - 1}" if line else f"\x00{len(self.texts) - 1}\x00"

    def restore(self, text: str) -> str:
        text = re.sub(r"(?m)^[ \t]*# unasync-kept-(\d+)\n", lambda m: self.texts[int(m.group(1))], text)
        return re.sub(r"\x00(\d+)\x00", lambda m: self.texts[int(m.group(1))], text)


def regions(text: str, name: str, kept: Kept) -> str:
    """`text` without its async-only regions, and with the code of its sync-only regions (comment
    lines, uncommented here) held in `kept`. The marker lines go too."""
    out: list[str] = []
    region: str | None = None
    indent = ""
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        marker = line.strip()
        if marker in (ASYNC_ONLY, SYNC_ONLY):
            if region is not None:
                raise SystemExit(f"{name}:{number}: {marker} inside another region")
            region, lines = marker, []
            indent = line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if region is None:
                raise SystemExit(f"{name}:{number}: {END} without a region to end")
            if region == SYNC_ONLY:
                code = []
                for kept_line in lines:
                    body = kept_line[len(indent) :] if kept_line.startswith(indent) else kept_line.lstrip()
                    if not body.startswith("#"):
                        raise SystemExit(f"{name}: a line of a sync-only region is not a comment: {kept_line!r}")
                    body = body[2:] if body.startswith("# ") else body[1:]
                    code.append(indent + body if body.strip() else "\n")
                out.append(indent + kept.hold("".join(code), line=True) + "\n")
            region = None
        elif region is None:
            out.append(line)
        else:
            lines.append(line)
    if region is not None:
        raise SystemExit(f"{name}: {region} is never ended")
    return "".join(out)


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(r"\s+".join(re.escape(word) for word in phrase.split()))


def reworded(replacement: str) -> Callable[[re.Match[str]], str]:
    """The replacement of a WORDING phrase. A phrase broken over lines is replaced by one broken
    at the same place when the replacement would not fit before that break (a replacement with
    line breaks of its own is taken as it is)."""
    words = replacement.split(" ")

    def substitute(match: re.Match[str]) -> str:
        if "\n" in replacement:
            return replacement
        phrase = match.group(0)
        gaps = re.findall(r"\s+", phrase)
        breaks = [i for i, gap in enumerate(gaps) if "\n" in gap]
        joints = [" "] * (len(words) - 1)
        if breaks and joints and len(replacement) > phrase.index("\n"):
            joints[min(breaks[0], len(joints) - 1)] = gaps[breaks[0]]
        return "".join(word + joint for word, joint in zip(words, [*joints, ""], strict=True))

    return substitute


class Rule(unasync.Rule):  # type: ignore[misc]
    """unasync's rule, without its default of renaming any other `AsyncX` to `SyncX` (even inside
    strings): every name is in RENAMES, and the rest of the text is renamed by whole words."""

    def _unasync_name(self, name: str) -> str:
        return str(self.token_replacements.get(name, name))


def held(substitute: Callable[[re.Match[str]], str], kept: Kept) -> Callable[[re.Match[str]], str]:
    """`substitute`, whose replacement `kept` holds out of the renames."""
    return lambda match: kept.hold(substitute(match))


def rewrite(text: str, name: str, used: dict[str, int], kept: Kept, renames: dict[str, str]) -> str:
    """The wording, renames and code patterns over the whole of unasync's output."""
    for phrase, replacement in WORDING:
        text, count = phrase_pattern(phrase).subn(held(reworded(replacement), kept), text)
        used[phrase] += count
    for pattern, replacement in DOC_PATTERNS:
        text = re.sub(pattern, replacement, text)
    names = re.compile(r"\b(" + "|".join(sorted(renames, key=len, reverse=True)) + r")\b")
    text = names.sub(lambda m: renames[m.group(1)], text)
    for pattern, replacement in CODE_PATTERNS:
        text = re.sub(pattern, replacement, text)
    left = sorted(set(re.findall(r"\b(?:Async[A-Z]|async_|a(?:next|iter|close|read)\b)\w*", text)))
    if re.search(r"(?m)^\s*(?:import|from) (?:asyncio|anyio)\b", text):
        left.append("asyncio (use an AsyncX of _concurrency.py)")
    if left:
        raise SystemExit(f"scripts/gen-sync-sdk.py: {name}: asyncio names without a blocking twin in RENAMES: {left}")
    return kept.restore(text)


def generate(out_dir: Path) -> list[Path]:
    """Writes the blocking modules into `out_dir`; returns their paths."""
    used = dict.fromkeys((phrase for phrase, _ in WORDING), 0)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        source_dir = Path(tmp) / "_async"
        target_dir = Path(tmp) / "_sync"
        source_dir.mkdir()
        sources = []
        kept = {module: Kept() for module in MODULES}
        for module in MODULES:
            source = PACKAGE / f"{module}_async.py"
            (source_dir / f"{module}.py").write_text(regions(source.read_text(), source.name, kept[module]))
            sources.append(str(source_dir / f"{module}.py"))
        rule = Rule("/_async/", "/_sync/", additional_replacements=RENAMES)
        unasync.unasync_files(sources, [rule])
        for module in MODULES:
            text = rewrite(
                (target_dir / f"{module}.py").read_text(), module, used, kept[module], rule.token_replacements
            )
            path = out_dir / f"{module}.py"
            path.write_text(header(module) + text)
            written.append(path)
    stale = [phrase for phrase, count in used.items() if count == 0]
    if stale:
        raise SystemExit(f"scripts/gen-sync-sdk.py: WORDING rules that no longer match anything: {stale}")
    ruff = [sys.executable, "-m", "ruff"]
    config = ["--config", str(ROOT / "python" / "ruff.toml")]
    files = [str(path) for path in written]
    # Sorting the imports and dropping those the blocking code no longer uses are safe fixes.
    subprocess.run([*ruff, "check", "--quiet", "--fix-only", *config, *files], check=True)
    subprocess.run([*ruff, "format", "--quiet", *config, *files], check=True)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare with the checked-in modules")
    args = parser.parse_args()
    stale: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = PACKAGE / path.name
            new = path.read_text()
            old = target.read_text() if target.exists() else ""
            if new == old:
                continue
            if args.check:
                stale.append(target)
                where = str(target.relative_to(ROOT))
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True), new.splitlines(keepends=True), where, f"{where} (generated)"
                )
                sys.stderr.writelines(list(diff)[:40])
            else:
                shutil.copyfile(path, target)
                print(f"regenerated {target.relative_to(ROOT)}")
    if stale:
        names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
        print(
            f"\n{names}: out of date with the asyncio modules they are generated from (or edited by hand).\n"
            f"Edit the *_async.py module instead, then regenerate with `{COMMAND}` "
            "(with the test venv's python: tests/requirements.txt).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
