"""Reaching servers that run inside a sandbox, through hutch's router.

`sandbox.get_host(port)` names `<port>-<sandbox id>.<domain>`. That name is never resolved
here: the tests connect to the hutch server's own address (from E2B_SANDBOX_URL) and send
the name as the `Host` header, which is how the router picks the sandbox and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import pytest
import websockets.asyncio.client
import websockets.sync.client
from e2b import AsyncSandbox, CommandHandle, Sandbox

from sdk_helpers import (
    SANDBOX_URL,
    plain_async_client,
    plain_client,
    start_ws_echo_server_cmd,
    user_port_connection,
    wait_for_port_cmd,
)


def start_http_server(sbx: Sandbox, port: int, marker: str) -> CommandHandle:
    sbx.commands.run(f"mkdir -p /tmp/www && echo '{marker}' > /tmp/www/hello.txt")
    handle = sbx.commands.run(f"python3 -m http.server {port} --bind 0.0.0.0", background=True, cwd="/tmp/www")
    sbx.commands.run(wait_for_port_cmd(port))
    return handle


def test_http_server_in_the_sandbox_is_reached_by_its_host_name(sandbox: Sandbox) -> None:
    marker = uuid.uuid4().hex
    start_http_server(sandbox, 8000, marker)
    host = sandbox.get_host(8000)
    assert host.startswith(f"8000-{sandbox.sandbox_id}.")

    with plain_client() as c:
        r = c.get(f"{SANDBOX_URL}/hello.txt", headers={"Host": host})
        assert r.status_code == 200, r.text
        assert r.text == f"{marker}\n"
        assert "SimpleHTTP" in r.headers.get("server", "")

        listing = c.get(f"{SANDBOX_URL}/", headers={"Host": host})
        assert listing.status_code == 200
        assert "hello.txt" in listing.text

        missing = c.get(f"{SANDBOX_URL}/nope", headers={"Host": host})
        assert missing.status_code == 404

        # the SDK's routing headers reach the same port
        r = c.get(
            f"{SANDBOX_URL}/hello.txt", headers={"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"}
        )
        assert r.status_code == 200
        assert r.text == f"{marker}\n"


def test_request_bodies_and_large_responses_pass_through(sandbox: Sandbox) -> None:
    # python's http.server answers POST with 501, so use a tiny echo handler
    sandbox.commands.run(
        "cat > /tmp/echo_http.py <<'EOF'\n"
        "import http.server, socketserver\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    protocol_version = 'HTTP/1.1'\n"
        "    def do_POST(self):\n"
        "        body = self.rfile.read(int(self.headers['content-length']))\n"
        "        out = body[::-1]\n"
        "        self.send_response(200); self.send_header('content-length', str(len(out))); self.end_headers()\n"
        "        self.wfile.write(out)\n"
        "    def do_GET(self):\n"
        "        out = b'x' * 5_000_000\n"
        "        self.send_response(200); self.send_header('content-length', str(len(out))); self.end_headers()\n"
        "        self.wfile.write(out)\n"
        "    def log_message(self, *a): pass\n"
        "class S(http.server.ThreadingHTTPServer):\n"
        "    server_bind = socketserver.TCPServer.server_bind\n"
        "S(('0.0.0.0', 8080), H).serve_forever()\n"
        "EOF"
    )
    sandbox.commands.run("python3 /tmp/echo_http.py", background=True)
    sandbox.commands.run(wait_for_port_cmd(8080))
    host = sandbox.get_host(8080)
    body = os.urandom(1_000_000)
    with plain_client() as c:
        r = c.post(f"{SANDBOX_URL}/echo", content=body, headers={"Host": host})
        assert r.status_code == 200
        assert r.content == body[::-1]
        r = c.get(f"{SANDBOX_URL}/big", headers={"Host": host})
        assert r.status_code == 200
        assert r.content == b"x" * 5_000_000


def test_closed_port_and_unknown_sandbox_answer_502(sandbox: Sandbox) -> None:
    with plain_client() as c:
        r = c.get(f"{SANDBOX_URL}/", headers={"Host": sandbox.get_host(8999)})
        assert r.status_code == 502
        r = c.get(f"{SANDBOX_URL}/", headers={"Host": "8000-doesnotexist00000000.e2b.app"})
        assert r.status_code == 502
        assert r.json()["sandboxId"] == "doesnotexist00000000"


def start_ws_echo_server(sbx: Sandbox, port: int) -> CommandHandle:
    handle = sbx.commands.run(start_ws_echo_server_cmd(port), background=True)
    sbx.commands.run(wait_for_port_cmd(port))
    return handle


def ws_connect(url: str) -> websockets.sync.client.ClientConnection:
    """A WebSocket to `url` (ws://<port>-<id>.<domain>/...) through the router: `sock` is an open
    connection to the hutch server, and the URL only supplies Host and path."""
    return websockets.sync.client.connect(
        url, sock=user_port_connection(), proxy=None, compression=None, open_timeout=15, close_timeout=5
    )


def test_websocket_server_in_the_sandbox_echoes_through_the_router(sandbox: Sandbox) -> None:
    start_ws_echo_server(sandbox, 8765)
    host = sandbox.get_host(8765)
    with ws_connect(f"ws://{host}/chat") as ws:
        ws.send("hello through the router")
        assert ws.recv(timeout=15) == "echo:hello through the router"
        blob = os.urandom(200_000)
        ws.send(blob)
        assert ws.recv(timeout=15) == blob
        for i in range(20):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=15) for _ in range(20)] == [f"echo:message {i}" for i in range(20)]
        ws.ping().wait(timeout=15)


def test_two_websocket_clients_at_once(sandbox: Sandbox) -> None:
    start_ws_echo_server(sandbox, 8765)
    host = sandbox.get_host(8765)
    with ws_connect(f"ws://{host}/") as one, ws_connect(f"ws://{host}/") as two:
        one.send("from one")
        two.send("from two")
        assert two.recv(timeout=15) == "echo:from two"
        assert one.recv(timeout=15) == "echo:from one"


@pytest.mark.timeout(60)
def test_websocket_ends_when_the_sandbox_is_killed() -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        start_ws_echo_server(sbx, 8765)
        with ws_connect(f"ws://{sbx.get_host(8765)}/") as ws:
            ws.send("before")
            assert ws.recv(timeout=15) == "echo:before"
            sbx.kill()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                ws.recv(timeout=30)
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@pytest.mark.asyncio
async def test_async_http_and_websocket_through_the_router(async_sandbox: AsyncSandbox) -> None:
    marker = uuid.uuid4().hex
    await async_sandbox.commands.run(f"mkdir -p /tmp/www && echo '{marker}' > /tmp/www/hello.txt")
    await async_sandbox.commands.run("python3 -m http.server 8000 --bind 0.0.0.0", background=True, cwd="/tmp/www")
    await async_sandbox.commands.run(start_ws_echo_server_cmd(8765), background=True)
    await async_sandbox.commands.run(wait_for_port_cmd(8000) + " && " + wait_for_port_cmd(8765))

    async with plain_async_client() as c:
        r = await c.get(f"{SANDBOX_URL}/hello.txt", headers={"Host": async_sandbox.get_host(8000)})
        assert r.status_code == 200, r.text
        assert r.text == f"{marker}\n"

    async with websockets.asyncio.client.connect(
        f"ws://{async_sandbox.get_host(8765)}/",
        sock=user_port_connection(),
        proxy=None,
        compression=None,
        open_timeout=15,
        close_timeout=5,
    ) as ws:
        await ws.send("async hello")
        assert await asyncio.wait_for(ws.recv(), 15) == "echo:async hello"
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), 15) == b"\x00\x01binary"
