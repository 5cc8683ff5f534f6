"""`network={"allow_public_traffic": False}`: the sandbox's ports answer only requests that
carry its traffic access token, as E2B's proxy does; the agent's port keeps its own token.
Options hutch cannot honour are refused with a 400 that names them."""

from __future__ import annotations

import uuid

import pytest
from e2b import Sandbox
from e2b.exceptions import InvalidArgumentException, SandboxException

from ci_helpers import code_sandbox
from sdk_helpers import SANDBOX_URL, plain_client, wait_for_port_cmd

HEADER = "E2B-Traffic-Access-Token"


def test_a_private_sandboxs_ports_want_its_traffic_token() -> None:
    sbx = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        token = sbx.traffic_access_token
        assert token
        # The agent's port is not behind it: the SDK's own calls work as before.
        marker = uuid.uuid4().hex
        sbx.commands.run(f"mkdir -p /tmp/www && echo {marker} > /tmp/www/hello.txt")
        sbx.commands.run("python3 -m http.server 8000 --bind 0.0.0.0", background=True, cwd="/tmp/www")
        sbx.commands.run(wait_for_port_cmd(8000))
        route = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
        url = f"{SANDBOX_URL}/hello.txt"
        with plain_client() as c:
            missing = c.get(url, headers=route)
            assert missing.status_code == 403
            assert missing.headers["content-type"].startswith("application/json")
            assert missing.json()["message"] == (
                "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing"
            )
            assert missing.json()["sandboxId"] == sbx.sandbox_id
            wrong = c.get(url, headers={**route, HEADER: "abcd"})
            assert wrong.status_code == 403
            assert "is invalid" in wrong.json()["message"]
            browser = c.get(url, headers={**route, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
            assert browser.status_code == 403
            assert browser.headers["content-type"].startswith("text/html")
            assert "Missing Traffic Access Token" in browser.text and sbx.sandbox_id in browser.text
            # By host name too, and with the token the request goes through.
            host = {"Host": sbx.get_host(8000)}
            assert c.get(f"{SANDBOX_URL}/hello.txt", headers=host).status_code == 403
            ok = c.get(f"{SANDBOX_URL}/hello.txt", headers={**host, HEADER: token})
            assert ok.status_code == 200 and ok.text == f"{marker}\n"
        # The token is the sandbox's: connecting again hands it back.
        assert Sandbox.connect(sbx.sandbox_id).traffic_access_token == token
    finally:
        sbx.kill()


def test_a_public_sandbox_has_no_traffic_token(sandbox: Sandbox) -> None:
    assert sandbox.traffic_access_token is None


def test_the_code_interpreter_of_a_private_sandbox_works_with_its_token() -> None:
    with code_sandbox(network={"allow_public_traffic": False}) as sbx:
        assert sbx.traffic_access_token
        assert sbx.run_code("1 + 1").text == "2"
        with plain_client() as c:
            r = c.post(
                f"{SANDBOX_URL}/execute",
                headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"},
                json={"code": "1"},
            )
            assert r.status_code == 403


def test_an_egress_proxy_hutch_lacks_is_refused_by_name() -> None:
    # A bring-your-own SOCKS5 proxy is E2B Cloud's; E2B's open-source deployment refuses
    # it too.
    with pytest.raises((InvalidArgumentException, SandboxException)) as err:
        Sandbox.create(timeout=60, network={"egress_proxy": {"address": "proxy.test:1080"}})
    assert "network.egressProxy" in str(err.value) and "not supported" in str(err.value), err.value
