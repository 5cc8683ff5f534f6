"""Fixtures of the SDK's tests: they run against a live `hutch serve`.

The server is named by HUTCH_API_URL / HUTCH_API_KEY (or E2B_API_URL / E2B_API_KEY);
scripts/test.sh starts one and sets them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from hutch import AsyncSandbox, Sandbox

# Long enough for the slowest test; short enough that a leaked sandbox goes away by itself.
LIFETIME = 600


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A code-interpreter sandbox for one test, ended afterwards."""
    sbx = Sandbox(timeout=LIFETIME)
    try:
        yield sbx
    finally:
        sbx.close()


@pytest_asyncio.fixture
async def async_sandbox() -> AsyncIterator[AsyncSandbox]:
    """An AsyncSandbox on the code-interpreter template for one test, ended afterwards."""
    sbx = await AsyncSandbox.create(timeout=LIFETIME)
    try:
        yield sbx
    finally:
        await sbx.close()
