"""Helpers shared by the tests of the in-sandbox agent (commands, PTY, files, router).

Everything here talks only to the hutch server named by E2B_SANDBOX_URL (loopback): host
names such as `8000-<id>.e2b.app` that `sandbox.get_host()` returns are never resolved;
they travel as the `Host` header of a connection to the server's own address.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from e2b import AsyncSandbox, Sandbox

SANDBOX_URL = os.environ["E2B_SANDBOX_URL"].rstrip("/")
ENVD_PORT = 49983

AnySandbox = Sandbox | AsyncSandbox


def sandbox_origin() -> tuple[str, int]:
    """The (address, port) every sandbox request goes to: the hutch server itself."""
    parts = urlsplit(SANDBOX_URL)
    assert parts.hostname is not None
    return parts.hostname, parts.port or 80


def plain_client(timeout: float = 30) -> httpx.Client:
    """An httpx client that ignores proxy settings, so nothing leaves this machine."""
    return httpx.Client(timeout=timeout, trust_env=False)


def plain_async_client(timeout: float = 30) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, trust_env=False)


def envd_headers(sbx: AnySandbox, token: str | None = None, with_token: bool = True) -> dict[str, str]:
    """The routing headers the SDK sends to a sandbox's agent; the access token is optional."""
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if with_token:
        tok = token if token is not None else sbx._envd_access_token
        assert tok, "the sandbox was created without an envd access token"
        headers["X-Access-Token"] = tok
    return headers


def envd_unary(
    sbx: AnySandbox,
    rpc: str,
    body: str = "{}",
    token: str | None = None,
    with_token: bool = True,
) -> httpx.Response:
    """A raw Connect unary call (JSON codec) to the agent of `sbx`, e.g. rpc="process.Process/List"."""
    headers = envd_headers(sbx, token, with_token)
    headers["Content-Type"] = "application/json"
    with plain_client() as c:
        return c.post(f"{SANDBOX_URL}/{rpc}", content=body, headers=headers)


def envd_get(
    sbx: AnySandbox,
    path: str,
    params: dict[str, str] | None = None,
    token: str | None = None,
    with_token: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A raw GET to the agent of `sbx` (for example /files or /health)."""
    all_headers = envd_headers(sbx, token, with_token)
    all_headers.update(headers or {})
    with plain_client() as c:
        return c.get(f"{SANDBOX_URL}{path}", params=params, headers=all_headers)


def wait_until(pred: Callable[[], bool], timeout: float = 15.0, interval: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


# A shell loop that returns once something listens on a TCP port inside the sandbox
# (bash's /dev/tcp; bounded to ~10 s).
def wait_for_port_cmd(port: int) -> str:
    return (
        f"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0; sleep 0.1; done; "
        f"echo 'nothing listens on {port}' >&2; exit 1"
    )


def user_port_connection() -> socket.socket:
    """A TCP connection to the hutch server, to speak to a sandbox port through its router."""
    host, port = sandbox_origin()
    return socket.create_connection((host, port), timeout=10)


# A WebSocket echo server written with the standard library only (the sandbox has no
# internet, so nothing can be pip-installed there). Text frames come back as "echo:<text>",
# binary frames byte for byte; pings get pongs; a close frame is answered and ends the
# connection. Client frames are masked (RFC 6455), server frames are not.
WS_ECHO_SERVER = r"""
import base64, hashlib, socket, struct, sys, threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def send(conn, opcode, data):
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    conn.sendall(head + data)


def serve(conn):
    buf = b""

    def read(n):
        nonlocal buf
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    with conn:
        try:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            key = headers.get("sec-websocket-key", "")
            if headers.get("upgrade", "").lower() != "websocket" or not key:
                body = b"not a websocket request"
                conn.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                return
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            conn.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: " + accept + "\r\n\r\n"
                ).encode()
            )
            while True:
                b0, b1 = read(2)
                opcode = b0 & 0x0F
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", read(8))[0]
                mask = read(4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(x ^ mask[i % 4] for i, x in enumerate(read(n)))
                if opcode == 8:
                    send(conn, 8, data[:2])
                    return
                if opcode == 9:
                    send(conn, 10, data)
                elif opcode == 1:
                    send(conn, 1, b"echo:" + data)
                elif opcode == 2:
                    send(conn, 2, data)
        except (EOFError, OSError):
            return


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def start_ws_echo_server_cmd(port: int) -> str:
    """A shell command that writes the echo server into the sandbox and runs it in the foreground."""
    return f"cat > /tmp/ws_echo.py <<'PYEOF'\n{WS_ECHO_SERVER}\nPYEOF\nexec python3 /tmp/ws_echo.py {port}"
