"""Bad input by hand: huge, slow, malformed and traversal requests to the control plane get
a clear 4xx in E2B's format (`{"code", "message"}`) or a closed connection, and the server
keeps answering everyone else. (Generated bad input: test_openapi.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator

import pytest

from conftest import API_URL

KEY = os.environ["E2B_API_KEY"]
HOST, PORT = urllib.parse.urlsplit(API_URL).hostname or "127.0.0.1", urllib.parse.urlsplit(API_URL).port or 80
# Longer than the server's header timeout (30 s): a wait this long means "never".
NEVER = 120.0


def raw(request: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Sends `request` as it is on a new connection; the answer's status, headers and body."""
    with socket.create_connection((HOST, PORT), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])
                }
                length = int(headers.get("content-length", "-1"))
                if 0 <= length <= len(body):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    extra = {"Host": f"{HOST}:{PORT}", "X-API-KEY": KEY, "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT"):
        extra["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
    return head.encode("latin-1") + body


def e2b_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    """Checks an answer is E2B's error with this status; its message."""
    assert status == expected, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(body)
    assert err["code"] == expected and isinstance(err["message"], str) and err["message"]
    return str(err["message"])


def healthy() -> None:
    status, _, body = raw(request("GET", "/health"))
    assert status == 200, body


@pytest.fixture
def idle_connections() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def closed_by_server(s: socket.socket) -> bool:
    """Waits (up to NEVER) for the server to close `s` without answering."""
    s.settimeout(NEVER)
    try:
        return s.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_huge_bodies_and_headers_are_refused_and_change_nothing() -> None:
    before = raw(request("GET", "/v2/sandboxes"))[2]
    big = json.dumps({"templateID": "base", "metadata": {"k": "a" * (3 << 20)}}).encode()
    msg = e2b_error(*raw(request("POST", "/sandboxes", big, {"Content-Type": "application/json"})), 413)
    assert "limit" in msg
    # A 1 MiB header: refused before any handler runs (hyper's 431), the server lives on.
    status, _, _ = raw(request("GET", "/v2/sandboxes", headers={"X-Big": "b" * (1 << 20)}))
    assert status in (400, 431)
    assert raw(request("GET", "/v2/sandboxes"))[2] == before
    healthy()


def test_malformed_requests_get_e2b_errors() -> None:
    cases: list[tuple[bytes, int]] = [
        # Not UTF-8 in a path parameter.
        (request("GET", "/sandboxes/%ff%fe"), 400),
        # Not a number, negative, out of range.
        (request("GET", "/v2/sandboxes?limit=%ff"), 400),
        (request("GET", "/v2/sandboxes?limit=0"), 400),
        (request("GET", "/templates/x/builds/y/status?logsOffset=-1"), 400),
        (request("GET", "/v2/sandboxes?state="), 400),
        (request("GET", "/v2/sandboxes?startedAfter=yesterday"), 400),
        # Bodies: not JSON, the wrong types, a NUL in an environment variable.
        (request("POST", "/sandboxes", b"{not json"), 400),
        (request("POST", "/sandboxes", b'{"templateID": 1}'), 400),
        (request("POST", "/sandboxes", b'{"templateID": "base", "timeout": -5}'), 400),
        (request("POST", "/sandboxes", b'{"templateID": "base", "envVars": {"A=B": "x"}}'), 400),
        (request("POST", "/sandboxes", b'{"templateID": "base", "envVars": {"X": "a\\u0000b"}}'), 400),
        (request("PUT", "/pools/base", b'{"size": -1}'), 400),
        # A method the path does not have.
        (request("PATCH", "/sandboxes"), 405),
        (request("DELETE", "/health"), 405),
        # No key, a wrong key.
        (request("GET", "/v2/sandboxes", headers={"X-API-KEY": ""}), 401),
        (request("GET", "/v2/sandboxes", headers={"X-API-KEY": "e2b_" + "0" * 40}), 401),
    ]
    for req, expected in cases:
        status, headers, body = raw(req)
        e2b_error(status, headers, body, expected)
        if expected == 405:
            assert headers.get("allow"), headers
    # Not HTTP at all: hyper answers 400 (or closes), nothing else happens.
    with socket.create_connection((HOST, PORT), timeout=30) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        answer = s.recv(1024)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    healthy()


def test_traversal_in_names_and_ids_reaches_nothing() -> None:
    for path in [
        "/templates/..%2F..%2F..%2Fetc%2Fpasswd",
        "/templates/aliases/..%2F..%2Fetc",
        "/sandboxes/..%2F..%2Fetc%2Fpasswd",
        "/templates/x/files/..%2F..%2Fhutch.db",
        "/templates/%2E%2E/builds/%2E%2E/status",
    ]:
        status, headers, body = raw(request("GET", path))
        e2b_error(status, headers, body, status)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body and b"SQLite" not in body
    status, headers, body = raw(request("POST", "/sandboxes", b'{"templateID": "../../etc"}'))
    e2b_error(status, headers, body, 404)
    status, headers, body = raw(request("PUT", "/templates/x/files/..%2F..%2Fhutch.db/upload?token=x", b"evil"))
    assert status in (400, 401, 404), status
    healthy()


def test_slow_and_silent_clients_are_dropped_while_others_are_served(
    idle_connections: list[socket.socket],
) -> None:
    # A client that trickles half its headers and stops, and clients that send nothing.
    slow = socket.create_connection((HOST, PORT), timeout=30)
    idle_connections.append(slow)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(200):
        idle_connections.append(socket.create_connection((HOST, PORT), timeout=30))
    # Everyone else is served meanwhile.
    for _ in range(5):
        healthy()
    assert closed_by_server(slow), "a client that stopped half-way through its headers kept its connection"
    assert closed_by_server(idle_connections[-1]), "a client that sent nothing kept its connection"
    healthy()
