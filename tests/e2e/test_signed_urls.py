"""Signed file URLs (`download_url` / `upload_url`), fetched with plain httpx and nothing but the
returned URL: no routing header, no access token. The URL carries no sandbox id either, so the
server has to tell from the URL alone which sandbox it is for.
"""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from e2b import AsyncSandbox, Sandbox

from sdk_helpers import plain_async_client, plain_client

EXPIRED = {"code": 401, "message": "signature is already expired"}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_download_url_without_expiration(sandbox: Sandbox) -> None:
    sandbox.files.write("signed.txt", "signed download")
    url = sandbox.download_url("signed.txt")
    assert "signature=v1_" in url
    with plain_client() as c:
        r = c.get(url)
    assert r.status_code == 200, r.text
    assert r.text == "signed download"

    # naming the user explicitly gives a URL that works too
    url_user = sandbox.download_url("signed.txt", user="user")
    with plain_client() as c:
        assert c.get(url_user).text == "signed download"


def test_download_url_with_expiration_and_binary_content(sandbox: Sandbox) -> None:
    data = bytes(range(256)) * 1000
    sandbox.files.write("/tmp/signed.bin", data)
    url = sandbox.download_url("/tmp/signed.bin", use_signature_expiration=120)
    assert "signature_expiration=" in url
    with plain_client() as c:
        r = c.get(url)
    assert r.status_code == 200, r.text
    assert r.content == data


def test_download_url_as_root_reads_roots_file(sandbox: Sandbox) -> None:
    sandbox.files.write("/root/only-root.txt", "root's", user="root")
    url = sandbox.download_url("/root/only-root.txt", user="root", use_signature_expiration=60)
    with plain_client() as c:
        r = c.get(url)
    assert r.status_code == 200, r.text
    assert r.text == "root's"


def test_expired_signature_is_refused(sandbox: Sandbox) -> None:
    sandbox.files.write("expired.txt", "too late")
    down = sandbox.download_url("expired.txt", use_signature_expiration=-120)
    up = sandbox.upload_url("expired-upload.txt", use_signature_expiration=-120)
    with plain_client() as c:
        r = c.get(down)
        assert r.status_code == 401
        assert r.json() == EXPIRED
        r = c.post(up, files={"file": ("expired-upload.txt", b"nope")})
        assert r.status_code == 401
        assert r.json() == EXPIRED
    assert not sandbox.files.exists("expired-upload.txt")


def test_tampered_or_misused_signatures_are_refused(sandbox: Sandbox) -> None:
    sandbox.files.write("public.txt", "public")
    sandbox.files.write("private.txt", "private")
    url = sandbox.download_url("public.txt")
    with plain_client() as c:
        # the signature covers the path
        r = c.get(with_query(url, path="private.txt"))
        assert r.status_code == 401
        assert "private" not in r.text
        # and the expiration
        timed = sandbox.download_url("public.txt", use_signature_expiration=60)
        later = int(parse_qs(urlsplit(timed).query)["signature_expiration"][0]) + 3600
        r = c.get(with_query(timed, signature_expiration=str(later)))
        assert r.status_code == 401
        # a read signature does not allow writing
        r = c.post(url, files={"file": ("public.txt", b"overwritten")})
        assert r.status_code == 401
        # and without any signature or token nothing is served
        r = c.get(with_query(url, signature=""))
        assert r.status_code == 401
    assert sandbox.files.read("public.txt") == "public"


def test_upload_url_with_and_without_expiration(sandbox: Sandbox) -> None:
    with plain_client() as c:
        url = sandbox.upload_url("uploads/plain.txt")
        r = c.post(url, files={"file": ("plain.txt", b"uploaded without expiration")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body, list) and len(body) == 1
        assert body[0]["path"] == "/home/user/uploads/plain.txt"
        assert body[0]["type"] == "file"

        url = sandbox.upload_url("/tmp/timed.bin", use_signature_expiration=120)
        data = bytes(range(256)) * 100
        r = c.post(url, files={"file": ("timed.bin", data)})
        assert r.status_code == 200, r.text
    assert sandbox.files.read("uploads/plain.txt") == "uploaded without expiration"
    assert bytes(sandbox.files.read("/tmp/timed.bin", format="bytes")) == data
    assert sandbox.files.get_info("uploads/plain.txt").owner == "user"


def test_signed_urls_reach_the_right_sandbox() -> None:
    a = Sandbox.create(timeout=120)
    b = Sandbox.create(timeout=120)
    try:
        a.files.write("whoami.txt", "sandbox A")
        b.files.write("whoami.txt", "sandbox B")
        with plain_client() as c:
            assert c.get(a.download_url("whoami.txt")).text == "sandbox A"
            assert c.get(b.download_url("whoami.txt")).text == "sandbox B"
            r = c.post(b.upload_url("from-url.txt", use_signature_expiration=60), files={"file": ("x", b"to B")})
            assert r.status_code == 200, r.text
        assert b.files.read("from-url.txt") == "to B"
        assert not a.files.exists("from-url.txt")
    finally:
        a.kill()
        b.kill()


def test_signed_url_of_a_killed_sandbox_no_longer_works() -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        sbx.files.write("gone.txt", "soon gone")
        url = sbx.download_url("gone.txt")
        with plain_client() as c:
            assert c.get(url).text == "soon gone"
            sbx.kill()
            r = c.get(url)
        assert r.status_code >= 400
        assert "soon gone" not in r.text
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@pytest.mark.asyncio
async def test_async_sandbox_signed_urls(async_sandbox: AsyncSandbox) -> None:
    await async_sandbox.files.write("async-signed.txt", "async signed")
    async with plain_async_client() as c:
        r = await c.get(async_sandbox.download_url("async-signed.txt", use_signature_expiration=60))
        assert r.status_code == 200, r.text
        assert r.text == "async signed"

        r = await c.post(async_sandbox.upload_url("async-up.txt"), files={"file": ("async-up.txt", b"async upload")})
        assert r.status_code == 200, r.text

        r = await c.get(async_sandbox.download_url("async-signed.txt", use_signature_expiration=-1))
        assert r.status_code == 401
        assert r.json() == EXPIRED
    assert await async_sandbox.files.read("async-up.txt") == "async upload"
