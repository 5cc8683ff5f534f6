"""Every sandbox is secured: its agent answers only requests that carry its own access token
(`X-Access-Token`, handed out in the create/connect response), except `GET /health` and
signed `/files` URLs.
"""

from __future__ import annotations

import pytest
from e2b import AsyncSandbox, Sandbox

from sdk_helpers import SANDBOX_URL, envd_get, envd_headers, envd_unary, plain_async_client


def test_create_and_connect_hand_out_the_access_token(sandbox: Sandbox) -> None:
    token = sandbox._envd_access_token
    assert isinstance(token, str) and len(token) >= 16
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again._envd_access_token == token
    assert again.commands.run("echo via connect").stdout == "via connect\n"
    assert again.is_running()


def test_rpc_calls_without_the_right_token_are_refused(sandbox: Sandbox) -> None:
    r = envd_unary(sandbox, "process.Process/List")
    assert r.status_code == 200, r.text

    r = envd_unary(sandbox, "process.Process/List", with_token=False)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"
    r = envd_unary(sandbox, "process.Process/Start", '{"process":{"cmd":"/bin/true"}}', with_token=False)
    assert r.status_code == 401
    r = envd_unary(sandbox, "filesystem.Filesystem/Stat", '{"path":"/etc"}', with_token=False)
    assert r.status_code == 401
    # a wrong token is no better than none
    r = envd_unary(sandbox, "process.Process/List", token="0" * 48)
    assert r.status_code == 401
    # the health check is open
    assert envd_get(sandbox, "/health", with_token=False).status_code == 204


def test_file_and_env_endpoints_without_the_right_token_are_refused() -> None:
    sbx = Sandbox.create(envs={"FROM_CREATE": "visible"}, timeout=120)
    try:
        r = envd_get(sbx, "/files", {"path": "/etc/hostname"})
        assert r.status_code == 200, r.text
        envs = envd_get(sbx, "/envs")
        assert envs.status_code == 200
        assert envs.json().get("FROM_CREATE") == "visible"
        # an unknown user is refused as well
        assert envd_get(sbx, "/files", {"path": "/etc/hostname", "username": "nosuchuser"}).status_code == 401

        assert envd_get(sbx, "/files", {"path": "/etc/hostname"}, with_token=False).status_code == 401
        assert envd_get(sbx, "/envs", with_token=False).status_code == 401
        assert envd_get(sbx, "/files", {"path": "/etc/hostname"}, token="wrong").status_code == 401
    finally:
        sbx.kill()


def test_one_sandboxs_token_does_not_open_another() -> None:
    a = Sandbox.create(timeout=120)
    b = Sandbox.create(timeout=120)
    try:
        assert a._envd_access_token != b._envd_access_token
        stolen = a._envd_access_token
        r = envd_unary(b, "process.Process/List", token=stolen)
        assert r.status_code == 401
        r = envd_unary(b, "process.Process/Start", '{"process":{"cmd":"/bin/true"}}', token=stolen)
        assert r.status_code == 401
        r = envd_unary(b, "filesystem.Filesystem/ListDir", '{"path":"/tmp"}', token=stolen)
        assert r.status_code == 401
        b.commands.run("echo 'only B' > /tmp/b-secret.txt")
        r = envd_get(b, "/files", {"path": "/tmp/b-secret.txt"}, token=stolen)
        assert r.status_code == 401
        assert "only B" not in r.text
        # each token still opens its own sandbox
        assert envd_unary(a, "process.Process/List").status_code == 200
        assert envd_unary(b, "process.Process/List").status_code == 200
    finally:
        a.kill()
        b.kill()


@pytest.mark.asyncio
async def test_async_sandbox_token_is_required(async_sandbox: AsyncSandbox) -> None:
    assert async_sandbox._envd_access_token
    async with plain_async_client() as c:
        headers = {**envd_headers(async_sandbox, with_token=False), "Content-Type": "application/json"}
        r = await c.post(f"{SANDBOX_URL}/process.Process/List", content="{}", headers=headers)
        assert r.status_code == 401
        headers = {**envd_headers(async_sandbox), "Content-Type": "application/json"}
        r = await c.post(f"{SANDBOX_URL}/process.Process/List", content="{}", headers=headers)
        assert r.status_code == 200
    assert (await async_sandbox.commands.run("echo ok")).stdout == "ok\n"
