"""An LLM tool-calling loop: the model writes Python, the sandbox runs it, the model sees the output.

    OPENAI_API_KEY=... [OPENAI_BASE_URL=...] [MODEL=...] python examples/llm_tool_calling.py "question"

Any OpenAI-compatible chat-completions endpoint works (OPENAI_BASE_URL, default
https://api.openai.com/v1). The model gets one tool, `run_code`, described by the JSON schema
below; every call it makes runs in the same sandbox, so variables persist between calls.

Without a model key, `--replay FILE` plays recorded model turns (a JSON list of assistant
messages) instead of calling a model: the code in them still runs in a real sandbox. The
example's test does that with `examples/recorded/primes.json`; it checks the loop and the
sandbox, not a model.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

from hutch import Execution, Sandbox

RUN_CODE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "run_code",
        "description": (
            "Run Python code in a stateful Jupyter-like sandbox. Variables, imports and files persist "
            "between calls. Returns stdout, stderr, the value of the last expression and any error."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}

SYSTEM = "You are a careful analyst. Use the run_code tool to compute answers instead of guessing."

Model = Callable[[list[dict[str, Any]]], dict[str, Any]]


def openai_model(base_url: str, api_key: str, model: str) -> Model:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint."""

    def call(messages: list[dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(
            f"{base_url.rstrip('/')}/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"model": model, "messages": messages, "tools": [RUN_CODE_TOOL]},
            timeout=120,
        )
        response.raise_for_status()
        message: dict[str, Any] = response.json()["choices"][0]["message"]
        return message

    return call


def replayed_model(path: str) -> Model:
    """Plays recorded assistant messages, one per call, in order."""
    with open(path) as f:
        turns: list[dict[str, Any]] = json.load(f)

    def call(messages: list[dict[str, Any]]) -> dict[str, Any]:
        if not turns:
            raise RuntimeError("the recording has no more model turns")
        return turns.pop(0)

    return call


def tool_output(execution: Execution) -> str:
    """What the model sees of one run: printed output, the result, or the error."""
    parts: list[str] = []
    if execution.logs.stdout:
        parts.append("stdout:\n" + "".join(execution.logs.stdout))
    if execution.logs.stderr:
        parts.append("stderr:\n" + "".join(execution.logs.stderr))
    if execution.text is not None:
        parts.append(f"result: {execution.text}")
    if execution.error is not None:
        parts.append(f"error: {execution.error.name}: {execution.error.value}")
    return "\n".join(parts) or "(no output)"


def answer(question: str, model: Model, sandbox: Sandbox, max_turns: int = 8) -> str:
    """Runs the loop until the model answers without calling a tool."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
    ]
    for _ in range(max_turns):
        message = model(messages)
        messages.append(message)
        calls = message.get("tool_calls") or []
        if not calls:
            return str(message.get("content") or "")
        for call in calls:
            args = json.loads(call["function"]["arguments"] or "{}")
            print(f"--- model runs:\n{args.get('code', '')}")
            output = tool_output(sandbox.run_code(args.get("code", "")))
            print(f"--- sandbox says:\n{output}")
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    raise RuntimeError(f"no answer after {max_turns} model turns")


def main() -> None:
    args = sys.argv[1:]
    replay = None
    if "--replay" in args:
        at = args.index("--replay")
        replay = args[at + 1]
        del args[at : at + 2]
    question = args[0] if args else "What is the sum of the first 10 prime numbers?"
    if replay:
        model = replayed_model(replay)
    else:
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise SystemExit("set OPENAI_API_KEY (and OPENAI_BASE_URL / MODEL), or pass --replay FILE")
        base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        model = openai_model(base, key, os.environ.get("MODEL", "gpt-4o-mini"))
    with Sandbox() as sandbox:
        print(f"=== answer:\n{answer(question, model, sandbox)}")


if __name__ == "__main__":
    main()
