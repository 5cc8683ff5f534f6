"""API keys: created, listed and revoked with the CLI while the server runs."""

from __future__ import annotations

import subprocess

import pytest
from e2b import Sandbox
from e2b.exceptions import AuthenticationException, RateLimitException

from conftest import DATA_DIR, WORK


def hutch(*args: str) -> str:
    binary = (WORK / "server.cmd").read_text().splitlines()[0]
    out = subprocess.run([binary, *args, "--data-dir", str(DATA_DIR)], capture_output=True, text=True, check=True)
    return out.stdout


def test_created_key_works_until_revoked() -> None:
    key = hutch("keys", "create", "--name", "e2e").strip()
    assert key.startswith("e2b_") and len(key) == 44
    listing = hutch("keys", "list")
    assert "e2e" in listing and key not in listing  # only a masked form is shown

    sbx = Sandbox.create(api_key=key)
    try:
        assert [s.sandbox_id for s in Sandbox.list(api_key=key).next_items()].count(sbx.sandbox_id) == 1
    finally:
        sbx.kill()

    hutch("keys", "revoke", key)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=key).next_items()
    assert "revoked" in hutch("keys", "list")


def test_a_key_with_a_sandbox_limit_gets_429_beyond_it() -> None:
    key = hutch("keys", "create", "--name", "limited", "--max-sandboxes", "1").strip()
    first = Sandbox.create(api_key=key, template="base")
    try:
        with pytest.raises(RateLimitException) as refused:
            Sandbox.create(api_key=key, template="base")
        assert "at most 1 sandbox" in str(refused.value)
        # Other keys are not held back by this one's limit.
        other = Sandbox.create(template="base")
        other.kill()
    finally:
        first.kill()
    # Once the first is gone, the key may create again.
    again = Sandbox.create(api_key=key, template="base")
    again.kill()
    assert "limited" in hutch("keys", "list")
    hutch("keys", "revoke", key)
