"""Large downloads (1 MiB and more) are handed off: the agent opens the file and answers
everything about the download, the server takes the open file and sends the bytes itself
(docs/wire.md, "Download hand-off"). To a client it must be the very download the agent
gives when asked directly, and it must end with its sandbox.
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import urlsplit

import httpx
import pytest
from e2b import Sandbox

from conftest import host_resources, sandbox_ip
from sdk_helpers import plain_client

AGENT_PORT = 49983
BIG = 3 * 1024 * 1024 + 123
# What says anything about the content; Date and the like differ between two answers.
COMPARED = (
    "content-length",
    "content-type",
    "content-disposition",
    "content-range",
    "last-modified",
    "accept-ranges",
    "vary",
    "content-encoding",
)


def direct(sbx: Sandbox, url: str) -> str:
    """The same signed URL, sent straight to the agent (no router, so no hand-off)."""
    parts = urlsplit(url)
    return f"http://{sandbox_ip(sbx)}:{AGENT_PORT}{parts.path}?{parts.query}"


def same_download(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.status_code, b.status_code, a.text[:200])
    for name in COMPARED:
        assert a.headers.get(name) == b.headers.get(name), name
    assert "x-hutch-file-handoff" not in a.headers


@pytest.fixture
def big_file(sandbox: Sandbox) -> bytes:
    data = os.urandom(BIG)
    sandbox.files.write("/home/user/big.bin", data)
    return data


def test_a_large_download_is_the_agents_own_answer(sandbox: Sandbox, big_file: bytes) -> None:
    url = sandbox.download_url("/home/user/big.bin")
    with plain_client() as c:
        routed = c.get(url)
        own = c.get(direct(sandbox, url))
    same_download(routed, own)
    assert routed.content == big_file
    # The SDK's own read goes the same way.
    assert sandbox.files.read("/home/user/big.bin", format="bytes") == big_file


def test_ranges_of_a_large_file(sandbox: Sandbox, big_file: bytes) -> None:
    url = sandbox.download_url("/home/user/big.bin")
    with plain_client() as c:
        one = {"Range": "bytes=100-2000099"}
        routed, own = c.get(url, headers=one), c.get(direct(sandbox, url), headers=one)
        same_download(routed, own)
        assert routed.status_code == 206
        assert routed.content == big_file[100:2000100]

        many = {"Range": "bytes=0-9,1500000-2999999"}
        routed, own = c.get(url, headers=many), c.get(direct(sandbox, url), headers=many)
    assert routed.status_code == own.status_code == 206
    # Each answer has its own multipart boundary; with it taken out they are the same bytes.
    boundary = re.compile(rb"[0-9a-f]{32}")
    assert boundary.sub(b"B", routed.content) == boundary.sub(b"B", own.content)
    assert big_file[1500000:3000000] in routed.content
    assert int(routed.headers["content-length"]) == len(routed.content)


def test_a_client_cannot_ask_for_the_file_itself(sandbox: Sandbox, big_file: bytes) -> None:
    url = sandbox.download_url("/home/user/big.bin")
    with plain_client() as c:
        r = c.get(url, headers={"X-Hutch-File-Handoff": "1"})
    assert r.status_code == 200
    assert r.content == big_file
    assert "x-hutch-file-handoff" not in r.headers


def test_small_and_conditional_downloads_are_unchanged(sandbox: Sandbox, big_file: bytes) -> None:
    sandbox.files.write("/home/user/small.txt", "small")
    with plain_client() as c:
        small = c.get(sandbox.download_url("/home/user/small.txt"))
        assert small.status_code == 200 and small.text == "small"
        url = sandbox.download_url("/home/user/big.bin")
        first = c.get(url)
        again = c.get(url, headers={"If-Modified-Since": first.headers["last-modified"]})
    assert again.status_code == 304
    assert again.content == b""


def test_killing_the_sandbox_cuts_a_download_and_frees_its_disk() -> None:
    sbx = Sandbox.create(template="base", timeout=120)

    def held() -> dict[str, list[str]]:
        """What this sandbox's disk holds on the host: its mounts, loop device and directory."""
        found = host_resources()
        return {k: [v for v in found[k] if sbx.sandbox_id in v] for k in ("mounts", "loops", "sandbox_dirs")}

    try:
        size = 512 * 1024 * 1024
        sbx.commands.run(f"head -c {size} /dev/urandom > /home/user/huge.bin")
        assert held()["loops"], "the sandbox's disk is a loop device"
        url = sbx.download_url("/home/user/huge.bin")
        with plain_client(timeout=60) as c, c.stream("GET", url) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()
            got = len(next(chunks))
            sbx.kill()
            with pytest.raises(httpx.HTTPError):
                got += sum(len(chunk) for chunk in chunks)
        assert got < size
    finally:
        sbx.kill()
    deadline = time.monotonic() + 30
    while any(held().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(held().values()), held()
