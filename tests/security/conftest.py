"""Shared fixtures of the attack suite.

Every test here is an attack run as real code inside a real sandbox of the `hutch serve`
that scripts/test.sh started (the official `e2b` SDK, pointed at it by E2B_API_URL /
E2B_SANDBOX_URL / E2B_API_KEY), as the sandbox's user and as root inside. Each attack is
bounded (timeouts, small sizes) so that if it succeeded it could not harm the machine, and
its outcome is checked where it would show: inside the sandbox and on the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create(template="base", timeout=120)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


def python(sbx: Sandbox, code: str, user: str = "user") -> str:
    """Runs `code` with the sandbox's python3 as `user`; its stdout (stderr on failure)."""
    script = f"/tmp/attack-{user}.py"
    sbx.files.write(script, code, user=user)
    try:
        return sbx.commands.run(f"python3 {script}", user=user, timeout=30).stdout
    except CommandExitException as e:
        raise AssertionError(f"the attack script failed: {e.stderr}") from e
