"""Large downloads and uploads (1 MiB and more) are handed off: the agent opens the file and
answers everything about the request, the server takes the open file and sends (or writes)
the bytes itself (docs/wire.md, "File hand-off"). To a client it must be the very answer the
agent gives when asked directly, and it must end with its sandbox.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from e2b import Sandbox

from conftest import disk_of, host_resources, sandbox_ip
from sdk_helpers import SANDBOX_URL, envd_headers, plain_client

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


def held(sandbox_id: str, disk: Path) -> dict[str, list[str]]:
    """What a sandbox holds on the host: its mounts, its disk's loop device, its directory.
    `disk` is its disk's directory (`disk_of`), read while it lived."""
    found = host_resources()
    return {k: [v for v in found[k] if sandbox_id in v or f"{disk}/" in v] for k in ("mounts", "loops", "sandbox_dirs")}


def assert_disk_freed(sandbox_id: str, disk: Path) -> None:
    """Waits (30 s at most) until a killed sandbox's disk holds nothing on the host: thrown
    away, or emptied and kept for the next sandbox."""
    deadline = time.monotonic() + 30
    while any(held(sandbox_id, disk).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(held(sandbox_id, disk).values()), held(sandbox_id, disk)


def test_killing_the_sandbox_cuts_a_download_and_frees_its_disk() -> None:
    sbx = Sandbox.create(template="base", timeout=120)

    disk = disk_of(sbx.sandbox_id)
    assert disk is not None
    try:
        size = 512 * 1024 * 1024
        sbx.commands.run(f"head -c {size} /dev/urandom > /home/user/huge.bin")
        assert held(sbx.sandbox_id, disk)["loops"], "the sandbox's disk is a loop device"
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
    assert_disk_freed(sbx.sandbox_id, disk)


# ---- uploads --------------------------------------------------------------------------


def form(
    parts: list[tuple[str, str | None, bytes]], boundary: str = "hutchTestBoundary"
) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (field name, filename, content) parts, and its content type."""
    body = b"preamble\r\n"
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\nepilogue".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def both(
    sbx: Sandbox, path: str | None, body: bytes, headers: dict[str, str], user: str = "user"
) -> tuple[httpx.Response, httpx.Response]:
    """The same upload through the router (handed off) and straight to the agent."""
    if path:
        url = sbx.upload_url(path, user=user)
        routed_to, own_to = (url, headers), (direct(sbx, url), headers)
    else:
        # Paths from the parts' file names, as `write_files` sends them: the token in a header.
        auth = envd_headers(sbx)
        query = f"/files?username={user}"
        routed_to = (SANDBOX_URL + query, {**headers, **auth})
        own_to = (
            f"http://{sandbox_ip(sbx)}:{AGENT_PORT}{query}",
            {**headers, "X-Access-Token": auth["X-Access-Token"]},
        )
    with plain_client(timeout=120) as c:
        routed = c.post(routed_to[0], content=body, headers=routed_to[1])
        own = c.post(own_to[0], content=body, headers=own_to[1])
    return routed, own


def same_answer(routed: httpx.Response, own: httpx.Response) -> None:
    assert routed.status_code == own.status_code, (
        routed.status_code,
        own.status_code,
        routed.text[:300],
        own.text[:300],
    )
    assert routed.headers.get("content-type") == own.headers.get("content-type")
    assert routed.json() == own.json()
    assert "x-hutch-file-handoff" not in routed.headers


def test_a_large_multipart_upload_is_the_agents_own_answer(sandbox: Sandbox) -> None:
    first, second = os.urandom(BIG), os.urandom(2 * 1024 * 1024)
    body, headers = form([("note", None, b"x" * 100), ("file", "up/a.bin", first), ("file", "/tmp/b.bin", second)])
    routed, own = both(sandbox, None, body, headers)
    same_answer(routed, own)
    assert [f["path"] for f in routed.json()] == ["/home/user/up/a.bin", "/tmp/b.bin"]
    assert sandbox.files.read("/home/user/up/a.bin", format="bytes") == first
    assert sandbox.files.read("/tmp/b.bin", format="bytes") == second
    owners = sandbox.commands.run("stat -c %U /home/user/up /home/user/up/a.bin /tmp/b.bin").stdout.split()
    assert owners == ["user", "user", "user"]


def test_large_raw_uploads_and_the_sdks_writes(sandbox: Sandbox) -> None:
    data = os.urandom(BIG)
    routed, own = both(sandbox, "/home/user/raw.bin", data, {"Content-Type": "application/octet-stream"})
    same_answer(routed, own)
    assert sandbox.files.read("/home/user/raw.bin", format="bytes") == data
    # The SDK's own writes (multipart with a path; several files without) go the same way.
    info = sandbox.files.write("sdk.bin", data, metadata={"kind": "big"})
    assert info.path == "/home/user/sdk.bin" and info.metadata == {"kind": "big"}
    many = sandbox.files.write_files([{"path": f"many/{i}.bin", "data": data[i:]} for i in range(3)])
    assert [w.path for w in many] == [f"/home/user/many/{i}.bin" for i in range(3)]
    for i in range(3):
        assert sandbox.files.read(f"many/{i}.bin", format="bytes") == data[i:]
    assert sandbox.files.get_info("sdk.bin").metadata == {"kind": "big"}
    # Root's uploads are root's.
    sandbox.files.write("/root.bin", data, user="root")
    assert sandbox.commands.run("stat -c %U /root.bin").stdout.strip() == "root"


def test_large_upload_errors_are_the_agents_own(sandbox: Sandbox) -> None:
    data = os.urandom(BIG)
    sandbox.files.make_dir("/home/user/adir")
    octet = {"Content-Type": "application/octet-stream"}
    # A directory as the target; a user who does not exist; a wrong access token (all refused
    # before any file opens).
    same_answer(*both(sandbox, "/home/user/adir", data, octet))
    same_answer(*both(sandbox, "/home/user/x.bin", data, octet, user="nobody-here"))
    query = "/files?path=/home/user/x.bin&username=user"
    with plain_client(timeout=60) as c:
        routed, own = (
            c.post(SANDBOX_URL + query, content=data, headers={**octet, **envd_headers(sandbox, token="wrong")}),
            c.post(
                f"http://{sandbox_ip(sandbox)}:{AGENT_PORT}{query}",
                content=data,
                headers={**octet, "X-Access-Token": "wrong"},
            ),
        )
    same_answer(routed, own)
    assert routed.status_code == 401
    # Two parts for one path: the second is refused, the first stays as written.
    body, headers = form([("file", "dup.bin", data), ("file", "/home/user/dup.bin", b"second" * 300000)])
    routed, own = both(sandbox, None, body, headers)
    same_answer(routed, own)
    assert routed.status_code == 400 and "multiple files to the same path" in routed.json()["message"]
    assert sandbox.files.read("/home/user/dup.bin", format="bytes") == data
    # A body cut before its closing boundary, after a file; a form with no file at all.
    body, headers = form([("file", "cut.bin", data)])
    same_answer(*both(sandbox, None, body[: len(body) - 30], headers))
    body, headers = form([("other", None, data)])
    routed, own = both(sandbox, None, body, headers)
    same_answer(routed, own)
    assert routed.json() == []


def test_a_client_cannot_hand_off_an_upload_itself(sandbox: Sandbox) -> None:
    data = os.urandom(BIG)
    headers = {"Content-Type": "application/octet-stream", "X-Hutch-File-Handoff": "1"}
    with plain_client(timeout=60) as c:
        r = c.post(sandbox.upload_url("/home/user/mine.bin"), content=data, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()[0]["path"] == "/home/user/mine.bin"
    assert sandbox.files.read("/home/user/mine.bin", format="bytes") == data


def test_a_streamed_upload_of_unknown_length(sandbox: Sandbox) -> None:
    pieces = [os.urandom(256 * 1024) for _ in range(12)]

    def chunks() -> Iterator[bytes]:
        yield from pieces

    with plain_client(timeout=60) as c:
        r = c.post(
            sandbox.upload_url("/home/user/chunked.bin"),
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
        )
    assert r.status_code == 200, r.text
    assert sandbox.files.read("/home/user/chunked.bin", format="bytes") == b"".join(pieces)


def test_killing_the_sandbox_cuts_an_upload_and_frees_its_disk() -> None:
    sbx = Sandbox.create(template="base", timeout=120)
    disk = disk_of(sbx.sandbox_id)
    assert disk is not None
    killed = False

    def body() -> Iterator[bytes]:
        nonlocal killed
        piece = os.urandom(1024 * 1024)
        for i in range(2048):
            if i == 8:
                sbx.kill()
                killed = True
            yield piece

    try:
        with plain_client(timeout=60) as c:
            try:
                r = c.post(
                    sbx.upload_url("/home/user/cut.bin"),
                    content=body(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert r.status_code == 502, r.text
            except httpx.HTTPError:
                pass
        assert killed
    finally:
        sbx.kill()
    assert_disk_freed(sbx.sandbox_id, disk)
