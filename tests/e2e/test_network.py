"""Sandbox networking, tested only against hosts this test creates itself.

The "internet" is a network namespace with a web server at a 198.18.0.0/15 (benchmark
range) address; the "metadata service" is another at a 169.254.0.0/16 address; the
host's own addresses are hutch's gateway address and a dummy interface made here.
Nothing is sent beyond this machine.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from conftest import sandbox_ip


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class FakeHost:
    """A web server in a network namespace of its own, reachable from the host by a veth."""

    def __init__(self, prefix: str, n: int | None = None) -> None:
        n = random.randint(1, 250) if n is None else n
        self.name = f"hutchtest{random.randint(0, 99999)}"
        self.host_if = f"ht{random.randint(0, 999999)}"
        self.ns_if = "eth0"
        self.host_ip = f"{prefix}.{n}.1"
        self.ip = f"{prefix}.{n}.2"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeHost:
        try:
            sh("ip", "netns", "add", self.name)
            sh(
                "ip",
                "link",
                "add",
                self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                "tmp" + self.host_if[2:],
                "netns",
                self.name,
            )
            sh("ip", "-n", self.name, "link", "set", "tmp" + self.host_if[2:], "name", self.ns_if)
            sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            sh("ip", "-n", self.name, "addr", "add", f"{self.ip}/30", "dev", self.ns_if)
            sh("ip", "-n", self.name, "link", "set", self.ns_if, "up")
            # No default route: replies go to the host end of the /30, where hutch's NAT
            # puts every sandbox's traffic. Nothing here can reach beyond this machine.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, "python3", "-c", SERVER, self.ip],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://{self.ip}:8080/", timeout=1) as r:
                        assert r.read() == b"hello from the fake internet"
                        return self
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError("fake host did not start")
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


SERVER = """
import http.server, socketserver, sys
class S(http.server.ThreadingHTTPServer):
    # skip HTTPServer's reverse DNS lookup of its own name
    server_bind = socketserver.TCPServer.server_bind
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the fake internet"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
S((sys.argv[1], 8080), H).serve_forever()
"""


@pytest.fixture
def internet() -> Iterator[FakeHost]:
    with FakeHost("198.18") as h:
        yield h


def curl(sbx: Sandbox, url: str) -> tuple[int, str]:
    r = sbx.commands.run(f'curl -s --max-time 3 {url}; echo " rc=$?"', timeout=30)
    out, rc = r.stdout.rsplit(" rc=", 1)
    return int(rc.strip()), out


def test_egress_allowed_by_default_and_blocked_when_disabled(internet: FakeHost) -> None:
    open_sbx = Sandbox.create()
    closed = Sandbox.create(allow_internet_access=False)
    try:
        rc, body = curl(open_sbx, f"http://{internet.ip}:8080/")
        assert rc == 0 and body == "hello from the fake internet"
        rc, body = curl(closed, f"http://{internet.ip}:8080/")
        assert rc != 0 and "fake internet" not in body
        assert closed.get_info().allow_internet_access is False
    finally:
        open_sbx.kill()
        closed.kill()


def test_host_addresses_and_hutch_itself_are_unreachable(sandbox: Sandbox) -> None:
    # An extra address on the host: the host end of a veth to a namespace made here.
    with FakeHost("198.19") as extra:
        server = subprocess.Popen(
            ["python3", "-c", SERVER.replace("8080", "8081"), "0.0.0.0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(f"http://{extra.host_ip}:8081/", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError("host listener did not start")
            gateway = sandbox.commands.run("ip route show default").stdout.split()[2]
            hutch_port = os.environ["E2B_API_URL"].rsplit(":", 1)[1]
            for url in (
                f"http://{extra.host_ip}:8081/",
                f"http://{gateway}:8081/",
                f"http://{gateway}:{hutch_port}/health",
                f"http://{extra.host_ip}:{hutch_port}/health",
            ):
                rc, body = curl(sandbox, url)
                assert rc != 0, f"{url} was reachable from the sandbox: {body!r}"
        finally:
            server.kill()
            server.wait()


def test_link_local_metadata_range_is_unreachable(sandbox: Sandbox) -> None:
    with FakeHost("169.254") as metadata:
        # reachable from the host, so a failure from the sandbox is the firewall's doing
        rc, body = curl(sandbox, f"http://{metadata.ip}:8080/")
        assert rc != 0 and "fake internet" not in body


# scripts/test.sh starts the server with `--deny-cidr 198.18.255.0/24`; the fake internet
# host of the other tests is in 198.18.1-250.x.
DENIED_PREFIX, DENIED_N = "198.18", 255


def test_the_operators_denied_ranges_are_unreachable(sandbox: Sandbox, internet: FakeHost) -> None:
    with FakeHost(DENIED_PREFIX, DENIED_N) as denied:
        # Reachable from the host, and an allowed host next to it is reachable from the
        # sandbox: a failure is the firewall's doing.
        assert urllib.request.urlopen(f"http://{denied.ip}:8080/", timeout=5).read() == b"hello from the fake internet"
        rc, body = curl(sandbox, f"http://{internet.ip}:8080/")
        assert rc == 0 and body == "hello from the fake internet"
        rc, body = curl(sandbox, f"http://{denied.ip}:8080/")
        assert rc != 0 and "fake internet" not in body


def test_sandboxes_cannot_reach_each_other() -> None:
    a = Sandbox.create()
    b = Sandbox.create()
    try:
        a.commands.run("python3 -m http.server 8000 --bind 0.0.0.0", background=True)
        assert (
            a.commands.run(
                "for i in $(seq 50); do curl -s -o /dev/null localhost:8000 && break; sleep 0.1; done; "
                "curl -s -o /dev/null -w '%{http_code}' localhost:8000"
            ).stdout
            == "200"
        )
        rc, _ = curl(b, f"http://{sandbox_ip(a)}:8000/")
        assert rc != 0
    finally:
        a.kill()
        b.kill()


def test_ipv6_is_off_at_both_ends_and_neighbours_need_no_arp(sandbox: Sandbox) -> None:
    inside = sandbox.commands.run(
        "cat /proc/sys/net/ipv6/conf/{all,default,lo,eth0}/disable_ipv6; echo '--'; cat /proc/net/if_inet6; "
        "echo '--'; ip -4 neigh show dev eth0; ip route show default"
    ).stdout
    flags, addrs, rest = inside.split("--\n")
    assert flags.split() == ["1", "1", "1", "1"]
    assert addrs.strip() == "", f"the sandbox has IPv6 addresses: {addrs!r}"
    gateway = rest.split("default via ", 1)[1].split()[0]
    # The host's end is known from the start: a permanent entry, never asked by ARP.
    assert f"{gateway} lladdr" in rest and "PERMANENT" in rest, rest
    ip = sandbox_ip(sandbox)
    route = subprocess.run(["ip", "-o", "route", "get", ip], check=True, capture_output=True, text=True).stdout
    host_if = route.split(" dev ", 1)[1].split()[0]
    assert host_if.startswith("hv"), route
    with open(f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6") as f:
        assert f.read().strip() == "1"
    neigh = subprocess.run(
        ["ip", "-4", "neigh", "show", ip, "dev", host_if], check=True, capture_output=True, text=True
    )
    assert "PERMANENT" in neigh.stdout, neigh.stdout
