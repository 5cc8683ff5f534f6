"""Egress policy, E2B's `network={"allow_out", "deny_out", "rules", "mask_request_host",
"https_ports"}` at create and `update_network` on a running sandbox, with the official SDK.

The "internet" is made here (fakenet.py): hosts in network namespaces of their own, at
198.18.0.0/15 addresses, that answer HTTP on 80 and 8080, HTTPS on 443 (certificates of the
test CA, which is also hutch's egress CA in a test run), and UDP echo on 7. Their names are in
the hosts file hutch's egress proxy resolves with; inside a sandbox, curl is told the address
of a name with `--resolve`, so nothing is ever looked up in DNS or sent beyond this machine.

Each fake host logs what reached it: a refused request is checked both by curl's failure and
by its unique path never showing up at any host.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from e2b import (
    ALL_TRAFFIC,
    AsyncSandbox,
    Sandbox,
    SandboxException,
    SandboxNetworkInfo,
    SandboxNetworkOpts,
    SandboxNetworkUpdate,
    SandboxNotFoundException,
    SandboxQuery,
)

from conftest import restart_server_hard
from fakenet import (
    CA_IN_SANDBOX,
    FakeInternetHost,
    acurl,
    adatagrams,
    answer,
    aupload_ca,
    curl,
    datagrams,
    peer_cert_sha256,
    resolve,
    self_signed_cert,
    token,
    upload_ca,
)
from sdk_helpers import SANDBOX_URL, plain_client, wait_for_port_cmd

CACERT = ("--cacert", CA_IN_SANDBOX)
UNKNOWN_SANDBOX = "doesnotexist00000000"


@dataclass(frozen=True)
class Net:
    a: FakeInternetHost  # allowed.test
    b: FakeInternetHost  # denied.test
    wild: FakeInternetHost  # wild.test and names under it
    api: FakeInternetHost  # api.test, the host the transform rules are for


# scripts/test.sh starts the server with `--egress-ca-file $HUTCH_TEST_EGRESS_CA` and
# `--egress-hosts $HUTCH_TEST_EGRESS_HOSTS` (fakenet.py signs its hosts' certificates with that
# CA, whose key is $HUTCH_TEST_EGRESS_CA_KEY, and lists their names in that file).
EGRESS_ENV = ("HUTCH_TEST_EGRESS_CA", "HUTCH_TEST_EGRESS_CA_KEY", "HUTCH_TEST_EGRESS_HOSTS")


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    missing = [v for v in EGRESS_ENV if not os.environ.get(v)]
    assert not missing, f"the server under test shares the fake internet's CA and hosts file through {missing}"
    with contextlib.ExitStack() as stack:
        yield Net(
            a=stack.enter_context(FakeInternetHost("allowed", ["allowed.test"])),
            b=stack.enter_context(FakeInternetHost("denied", ["denied.test"])),
            wild=stack.enter_context(FakeInternetHost("wild", ["wild.test", "www.wild.test", "deep.www.wild.test"])),
            api=stack.enter_context(FakeInternetHost("api", ["api.test"])),
        )


@contextlib.contextmanager
def sandbox_with(
    network: SandboxNetworkOpts | None = None, allow_internet_access: bool | None = None
) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300, network=network, allow_internet_access=allow_internet_access)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@contextlib.asynccontextmanager
async def async_sandbox_with(network: SandboxNetworkOpts | None = None) -> AsyncIterator[AsyncSandbox]:
    sbx = await AsyncSandbox.create(timeout=300, network=network)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            await sbx.kill()


def network_of(sandbox_id: str) -> SandboxNetworkInfo:
    info = Sandbox.get_info(sandbox_id)
    return info.network if info.network is not None else SandboxNetworkInfo()


# --- requests from the sandbox -------------------------------------------------------------------


def _request_args(
    host: FakeInternetHost, scheme: str, name: str | None, port: int | None, via: FakeInternetHost | None
) -> tuple[str, str, list[str]]:
    """(token, url, curl args) for a request to `host` by address, or by `name` resolved to the
    address of `via` (`host` by default)."""
    tok = token()
    default = 443 if scheme == "https" else 80
    args = resolve(name, port or default, (via or host).ip) if name is not None else []
    netloc = (name or host.ip) + (f":{port}" if port not in (None, default) else "")
    return tok, f"{scheme}://{netloc}/{tok}", args


def request(
    sbx: Sandbox,
    host: FakeInternetHost,
    scheme: str = "http",
    name: str | None = None,
    port: int | None = None,
    via: FakeInternetHost | None = None,
    args: Sequence[str] = (),
) -> tuple[str, int, str]:
    """curl from the sandbox to `host` (see _request_args): (token in the path, rc, body)."""
    tok, url, extra = _request_args(host, scheme, name, port, via)
    rc, body = curl(sbx, url, *extra, *args)
    return tok, rc, body


async def arequest(
    sbx: AsyncSandbox,
    host: FakeInternetHost,
    scheme: str = "http",
    name: str | None = None,
    port: int | None = None,
    args: Sequence[str] = (),
) -> tuple[str, int, str]:
    tok, url, extra = _request_args(host, scheme, name, port, None)
    rc, body = await acurl(sbx, url, *extra, *args)
    return tok, rc, body


def _check_reached(host: FakeInternetHost, tok: str, rc: int, body: str) -> dict[str, Any]:
    got = answer(rc, body)
    assert got["host"] == host.label and got["path"] == f"/{tok}", got
    return got


def _check_refused(hosts: Sequence[FakeInternetHost], tok: str, rc: int, body: str) -> None:
    assert rc != 0, f"the request went through: {body!r}"
    reached = [h.label for h in hosts if h.saw(tok)]
    assert not reached, f"the refused request reached {reached}"


def reached(
    sbx: Sandbox,
    host: FakeInternetHost,
    scheme: str = "http",
    name: str | None = None,
    port: int | None = None,
    args: Sequence[str] = (),
) -> dict[str, Any]:
    """Asserts the request reaches `host` itself; returns its answer."""
    tok, rc, body = request(sbx, host, scheme, name, port, args=args)
    return _check_reached(host, tok, rc, body)


def refused(
    sbx: Sandbox,
    host: FakeInternetHost,
    scheme: str = "http",
    name: str | None = None,
    port: int | None = None,
    args: Sequence[str] = (),
) -> None:
    """Asserts the request fails and never reaches `host`."""
    tok, rc, body = request(sbx, host, scheme, name, port, args=args)
    _check_refused([host], tok, rc, body)


async def areached(
    sbx: AsyncSandbox,
    host: FakeInternetHost,
    scheme: str = "http",
    name: str | None = None,
    args: Sequence[str] = (),
) -> dict[str, Any]:
    tok, rc, body = await arequest(sbx, host, scheme, name, args=args)
    return _check_reached(host, tok, rc, body)


async def arefused(sbx: AsyncSandbox, host: FakeInternetHost, scheme: str = "http", name: str | None = None) -> None:
    tok, rc, body = await arequest(sbx, host, scheme, name)
    _check_refused([host], tok, rc, body)


def reaches_everything_of(sbx: Sandbox, host: FakeInternetHost) -> None:
    """HTTP on 80 and 8080, HTTPS (the host's own certificate), UDP echo and ping all answer."""
    reached(sbx, host)
    reached(sbx, host, port=8080)
    got = reached(sbx, host, "https", args=CACERT)
    assert got["sni"] is None, got  # by address: no server name
    d = datagrams(sbx, host.ip)
    assert d.udp_echoed and host.saw(d.token), f"UDP echo of {host.label} did not answer"
    assert d.ping_answered, f"{host.label} did not answer ping"


def reaches_nothing_of(sbx: Sandbox, host: FakeInternetHost) -> None:
    refused(sbx, host)
    refused(sbx, host, port=8080)
    refused(sbx, host, "https", args=CACERT)
    d = datagrams(sbx, host.ip)
    assert not d.udp_echoed and not host.saw(d.token), f"UDP reached {host.label}"
    assert not d.ping_answered, f"{host.label} answered ping"


# --- 1. deny_out alone -----------------------------------------------------------------------------


def test_deny_out_blocks_that_host_and_nothing_else(net: Net) -> None:
    deny = [f"{net.b.ip}/32"]
    with sandbox_with(network={"deny_out": deny}) as sbx:
        upload_ca(sbx)
        reaches_everything_of(sbx, net.a)
        reaches_nothing_of(sbx, net.b)
        # Not every name is denied: only that address.
        reached(sbx, net.wild, name="www.wild.test")
        info = network_of(sbx.sandbox_id)
        assert info.get("deny_out") == deny and not info.get("allow_out"), info


# --- 2. allow_out of an address, everything else denied --------------------------------------------


def test_allow_out_of_an_address_with_all_traffic_denied(net: Net) -> None:
    with sandbox_with(network={"allow_out": [net.a.ip], "deny_out": [ALL_TRAFFIC]}) as sbx:
        upload_ca(sbx)
        reaches_everything_of(sbx, net.a)
        reaches_nothing_of(sbx, net.b)
        # A name of the allowed address is the same host: reached by its name too.
        got = reached(sbx, net.a, "https", name="allowed.test", args=CACERT)
        assert got["sni"] == "allowed.test", got
        # A name that is not allowed, on an address that is not either.
        refused(sbx, net.b, name="denied.test")
        info = network_of(sbx.sandbox_id)
        assert info.get("allow_out") == [net.a.ip] and info.get("deny_out") == [ALL_TRAFFIC], info


# --- 3. domains in allow_out ----------------------------------------------------------------------


def test_allowed_domains_exact_and_wildcard(net: Net) -> None:
    network: SandboxNetworkOpts = {"allow_out": ["allowed.test", "*.wild.test"], "deny_out": [ALL_TRAFFIC]}
    with sandbox_with(network=network) as sbx:
        upload_ca(sbx)
        assert reached(sbx, net.a, name="allowed.test")["headers"]["host"] == "allowed.test"
        got = reached(sbx, net.a, "https", name="allowed.test", args=CACERT)
        assert got["sni"] == "allowed.test", got
        # A wildcard matches names under it at any depth...
        for name in ("www.wild.test", "deep.www.wild.test"):
            reached(sbx, net.wild, name=name)
            got = reached(sbx, net.wild, "https", name=name, args=CACERT)
            assert got["sni"] == name, got
        # ...but not the name itself, though it is the same host.
        refused(sbx, net.wild, name="wild.test")
        refused(sbx, net.wild, "https", name="wild.test", args=CACERT)
        # Names not allowed, and the allowed host by its address (only its name is allowed).
        refused(sbx, net.b, name="denied.test")
        refused(sbx, net.b, "https", name="denied.test", args=CACERT)
        refused(sbx, net.a)
        refused(sbx, net.a, "https", args=CACERT)
        refused(sbx, net.b)
        # An allowed name pointed at the denied host's address: the proxy goes to the name's own
        # host or nowhere, never to the address the sandbox chose.
        for scheme in ("http", "https"):
            tok, rc, body = request(sbx, net.a, scheme, name="allowed.test", via=net.b, args=CACERT)
            assert not net.b.saw(tok), f"{scheme}: the denied host was reached through an allowed name"
            if rc == 0:
                assert answer(rc, body)["host"] == "allowed", body
        # The Host header is what is checked for HTTP: an allowed one on a denied address goes
        # to the allowed name's host, if anywhere.
        tok, rc, body = request(sbx, net.b, args=["-H", "Host: allowed.test"])
        assert not net.b.saw(tok), "the denied host was reached with an allowed Host header"
        if rc == 0:
            assert answer(rc, body)["host"] == "allowed", body
        # Domains do not apply to UDP or ICMP: everything else is denied.
        d = datagrams(sbx, net.a.ip)
        assert not d.udp_echoed and not d.ping_answered and not net.a.saw(d.token), d
        info = network_of(sbx.sandbox_id)
        assert info.get("allow_out") == ["allowed.test", "*.wild.test"], info
        assert info.get("deny_out") == [ALL_TRAFFIC], info


# --- 4. transform rules ---------------------------------------------------------------------------

RULE_HEADERS = {"X-Injected": "secret-1", "User-Agent": "hutch-rule"}
SENT_HEADERS = ["-H", "User-Agent: original", "-H", "X-Keep: kept"]


def test_transform_rules_set_headers_over_http_and_https(net: Net) -> None:
    network: SandboxNetworkOpts = {
        "allow_out": ["api.test", "allowed.test"],
        "deny_out": [ALL_TRAFFIC],
        "rules": {
            "api.test": [{"transform": {"headers": RULE_HEADERS}}],
            # A rule grants nothing: denied.test is not in allow_out.
            "denied.test": [{"transform": {"headers": {"X-Injected": "never"}}}],
        },
    }
    with sandbox_with(network=network) as sbx:
        ca = upload_ca(sbx)
        # Plain HTTP: the headers are set, same-named ones replaced, the others kept.
        got = reached(sbx, net.api, name="api.test", args=SENT_HEADERS)["headers"]
        assert got["x-injected"] == "secret-1" and got["user-agent"] == "hutch-rule", got
        assert got["x-keep"] == "kept" and got["host"] == "api.test", got
        # HTTPS: the proxy terminates TLS with a certificate of hutch's CA, which the sandbox's
        # system bundle trusts: no --cacert, no -k.
        answer_https = reached(sbx, net.api, "https", name="api.test", args=SENT_HEADERS)
        got = answer_https["headers"]
        assert got["x-injected"] == "secret-1" and got["user-agent"] == "hutch-rule", got
        assert got["x-keep"] == "kept" and got["host"] == "api.test", got
        assert answer_https["sni"] == "api.test", answer_https
        seen = peer_cert_sha256(sbx, "api.test", net.api.ip)
        assert not seen.startswith("error") and seen != net.api.cert_sha256, f"api.test was not intercepted: {seen}"
        # A host without rules is not intercepted: the sandbox sees its own certificate, and
        # its requests go out as sent.
        assert peer_cert_sha256(sbx, "allowed.test", net.a.ip, cafile=ca) == net.a.cert_sha256
        for scheme in ("http", "https"):
            got = reached(sbx, net.a, scheme, name="allowed.test", args=[*SENT_HEADERS, *CACERT])["headers"]
            assert "x-injected" not in got and got["user-agent"] == "original", (scheme, got)
        refused(sbx, net.b, name="denied.test")
        refused(sbx, net.b, "https", name="denied.test", args=CACERT)
        info = network_of(sbx.sandbox_id)
        assert info.get("rules") == {
            "api.test": [{"transform": {"headers": RULE_HEADERS}}],
            "denied.test": [{"transform": {"headers": {"X-Injected": "never"}}}],
        }, info


def test_a_rule_grants_no_access_through_an_allowed_address(net: Net) -> None:
    # A's address is allowed; the rule is for denied.test, which is not. A request to A's
    # address naming denied.test goes to A as sent: the rule neither reaches denied.test
    # nor puts its headers on it.
    network: SandboxNetworkOpts = {
        "allow_out": [net.a.ip],
        "deny_out": [ALL_TRAFFIC],
        "rules": {"denied.test": [{"transform": {"headers": {"X-Injected": "never"}}}]},
    }
    with sandbox_with(network=network) as sbx:
        tok = token()
        got = answer(*curl(sbx, f"http://{net.a.ip}/{tok}", "-H", "Host: denied.test"))
        assert got["host"] == "allowed" and "x-injected" not in got["headers"], got
        assert net.a.saw(tok) and not net.b.saw(tok)


@pytest.mark.asyncio
async def test_a_wildcard_rule_on_an_async_sandbox(net: Net) -> None:
    network: SandboxNetworkOpts = {
        "allow_out": ["*.wild.test"],
        "deny_out": [ALL_TRAFFIC],
        "rules": {"*.wild.test": [{"transform": {"headers": {"X-Injected": "secret-2"}}}]},
    }
    async with async_sandbox_with(network) as sbx:
        await aupload_ca(sbx)
        sent = ["-H", "X-Injected: from-the-sandbox", "-H", "X-Keep: kept"]
        for scheme, name in (("http", "www.wild.test"), ("https", "deep.www.wild.test")):
            got = (await areached(sbx, net.wild, scheme, name=name, args=sent))["headers"]
            assert got["x-injected"] == "secret-2" and got["x-keep"] == "kept", (scheme, got)
        await arefused(sbx, net.wild, name="wild.test")
        await arefused(sbx, net.a, name="allowed.test")
        info = (await AsyncSandbox.get_info(sbx.sandbox_id)).network
        assert info is not None and info.get("rules") == network["rules"], info


# --- 5. update_network ------------------------------------------------------------------------------


def test_update_network_replaces_the_whole_policy(net: Net) -> None:
    with sandbox_with() as sbx:
        reached(sbx, net.a)
        reached(sbx, net.b)

        sbx.update_network({"deny_out": [ALL_TRAFFIC]})
        refused(sbx, net.a)
        refused(sbx, net.b)
        d = datagrams(sbx, net.a.ip)
        assert not d.udp_echoed and not d.ping_answered, d
        info = network_of(sbx.sandbox_id)
        assert info.get("deny_out") == [ALL_TRAFFIC] and not info.get("allow_out"), info

        # The class method, by id.
        Sandbox.update_network(sbx.sandbox_id, {"allow_out": [net.a.ip], "deny_out": [ALL_TRAFFIC]})
        reached(sbx, net.a)
        assert datagrams(sbx, net.a.ip).udp_echoed
        refused(sbx, net.b)
        info = network_of(sbx.sandbox_id)
        assert info.get("allow_out") == [net.a.ip] and info.get("deny_out") == [ALL_TRAFFIC], info

        # allow_internet_access=False denies everything but allow_out; the old allow_out is gone.
        sbx.update_network({"allow_out": [net.b.ip], "allow_internet_access": False})
        reached(sbx, net.b)
        refused(sbx, net.a)

        sbx.update_network({"allow_internet_access": False})
        refused(sbx, net.a)
        refused(sbx, net.b)

        # Omitted fields are cleared: an empty update opens everything again.
        sbx.update_network({})
        reached(sbx, net.a)
        reached(sbx, net.b)
        d = datagrams(sbx, net.b.ip)
        assert d.udp_echoed and d.ping_answered, d
        info = network_of(sbx.sandbox_id)
        assert not info.get("allow_out") and not info.get("deny_out") and not info.get("rules"), info


def test_update_network_adds_and_drops_rules(net: Net) -> None:
    with sandbox_with(network={"allow_out": ["api.test"], "deny_out": [ALL_TRAFFIC]}) as sbx:
        assert "x-injected" not in reached(sbx, net.api, name="api.test")["headers"]
        rules = {"api.test": [{"transform": {"headers": {"X-Injected": "after-update"}}}]}
        sbx.update_network(
            cast(SandboxNetworkUpdate, {"allow_out": ["api.test"], "deny_out": [ALL_TRAFFIC], "rules": rules})
        )
        assert reached(sbx, net.api, name="api.test")["headers"]["x-injected"] == "after-update"
        # The CA is in the bundle of a sandbox that got its rules by an update, too.
        got = reached(sbx, net.api, "https", name="api.test")["headers"]
        assert got["x-injected"] == "after-update", got
        assert network_of(sbx.sandbox_id).get("rules") == rules
        sbx.update_network({"allow_out": ["api.test"], "deny_out": [ALL_TRAFFIC]})
        assert "x-injected" not in reached(sbx, net.api, name="api.test")["headers"]
        assert not network_of(sbx.sandbox_id).get("rules")


@pytest.mark.asyncio
async def test_update_network_on_an_async_sandbox(net: Net) -> None:
    async with async_sandbox_with({"deny_out": [ALL_TRAFFIC]}) as sbx:
        await arefused(sbx, net.a)
        await sbx.update_network({"allow_out": [net.a.ip], "deny_out": [ALL_TRAFFIC]})
        await areached(sbx, net.a)
        await arefused(sbx, net.b)
        assert (await adatagrams(sbx, net.a.ip)).udp_echoed
        await AsyncSandbox.update_network(sbx.sandbox_id, {})
        await areached(sbx, net.b)
        info = (await sbx.get_info()).network
        assert info is None or not (info.get("allow_out") or info.get("deny_out")), info
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.update_network(UNKNOWN_SANDBOX, {"deny_out": [ALL_TRAFFIC]})


def test_update_network_of_an_unknown_sandbox_is_not_found() -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.update_network(UNKNOWN_SANDBOX, {"deny_out": [ALL_TRAFFIC]})


def test_update_network_of_a_paused_sandbox_conflicts() -> None:
    with sandbox_with() as sbx:
        assert sbx.pause()
        with pytest.raises(SandboxException) as err:
            Sandbox.update_network(sbx.sandbox_id, {"deny_out": [ALL_TRAFFIC]})
        assert err.value.status_code == 409, err.value


# --- 6. allow_internet_access=False with allow_out ---------------------------------------------------


def test_no_internet_access_but_allow_out(net: Net) -> None:
    with sandbox_with(network={"allow_out": [net.a.ip]}, allow_internet_access=False) as sbx:
        upload_ca(sbx)
        reaches_everything_of(sbx, net.a)
        reaches_nothing_of(sbx, net.b)
        refused(sbx, net.wild, name="www.wild.test")


# --- 7. through the router: mask_request_host and https_ports ----------------------------------------

# Answers every GET with the request's headers, over TLS when given a certificate and key.
ECHO_SERVER = r"""
import json, socketserver, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, tls = int(sys.argv[1]), len(sys.argv) > 2
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps({"tls": tls, "port": port, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    daemon_threads = True
    server_bind = socketserver.TCPServer.server_bind
s = S(("0.0.0.0", port), H)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"""


def test_policies_and_rules_survive_a_restart_of_the_server(net: Net) -> None:
    network: SandboxNetworkOpts = {
        "allow_out": [net.a.ip, "api.test"],
        "deny_out": [ALL_TRAFFIC],
        "rules": {"api.test": [{"transform": {"headers": RULE_HEADERS}}]},
    }
    with sandbox_with(network=network) as sbx:
        restart_server_hard()
        # The firewall's sets are rebuilt and the proxy knows the policy again; the CA it
        # mints with is the one the sandbox trusts (kept in the data dir).
        reached(sbx, net.a)
        refused(sbx, net.b)
        d = datagrams(sbx, net.b.ip)
        assert not d.udp_echoed and not d.ping_answered, d
        got = reached(sbx, net.api, "https", name="api.test")["headers"]
        assert got["x-injected"] == "secret-1", got
        assert network_of(sbx.sandbox_id).get("deny_out") == [ALL_TRAFFIC]


def test_mask_request_host_and_https_ports_through_the_router() -> None:
    network: SandboxNetworkOpts = {"mask_request_host": "${PORT}-masked.test", "https_ports": [8443]}
    with sandbox_with(network=network) as sbx:
        cert, key = self_signed_cert("localhost")
        sbx.files.write("/tmp/echo_server.py", ECHO_SERVER)
        sbx.files.write("/tmp/echo.crt", cert)
        sbx.files.write("/tmp/echo.key", key)
        sbx.commands.run("python3 /tmp/echo_server.py 8000", background=True)
        sbx.commands.run("python3 /tmp/echo_server.py 8443 /tmp/echo.crt /tmp/echo.key", background=True)
        sbx.commands.run(wait_for_port_cmd(8000))
        sbx.commands.run(wait_for_port_cmd(8443))
        with plain_client() as c:
            for port, tls in ((8000, False), (8443, True)):
                tok = token()
                r = c.get(f"{SANDBOX_URL}/{tok}", headers={"Host": sbx.get_host(port)})
                assert r.status_code == 200, (port, r.status_code, r.text)
                got = r.json()
                assert got["tls"] is tls and got["path"] == f"/{tok}", got
                assert got["headers"]["host"] == f"{port}-masked.test", got
        info = network_of(sbx.sandbox_id)
        assert info.get("mask_request_host") == "${PORT}-masked.test", info
        assert info.get("https_ports") == [8443], info


# --- 8. bad input --------------------------------------------------------------------------------

DENY_ALL = [ALL_TRAFFIC]
# (id, network, whether update_network takes it too: mask_request_host and https_ports are
# create-only).
BAD_NETWORKS: list[tuple[str, dict[str, Any], bool]] = [
    ("domain-in-deny_out", {"deny_out": ["deny.test"]}, True),
    ("prefix-33", {"allow_out": ["10.0.0.0/33"]}, True),
    ("not-a-domain", {"allow_out": ["not a domain!"], "deny_out": DENY_ALL}, True),
    ("domain-without-all-traffic-denied", {"allow_out": ["x.test"]}, True),
    (
        "header-name-with-a-space",
        {
            "allow_out": ["api.test"],
            "deny_out": DENY_ALL,
            "rules": {"api.test": [{"transform": {"headers": {"Bad Header": "x"}}}]},
        },
        True,
    ),
    (
        "rule-for-every-host",
        {"allow_out": ["api.test"], "deny_out": DENY_ALL, "rules": {"*": [{"transform": {"headers": {"X-A": "b"}}}]}},
        True,
    ),
    ("mask-request-host", {"mask_request_host": "bad host/"}, False),
    ("https-port-0", {"https_ports": [0]}, False),
    ("https-port-70000", {"https_ports": [70000]}, False),
]


def listed_ids() -> set[str]:
    paginator = Sandbox.list(limit=100)
    ids: set[str] = set()
    while paginator.has_next:
        ids |= {s.sandbox_id for s in paginator.next_items()}
    return ids


def create_refused(network: dict[str, Any], metadata: dict[str, str]) -> SandboxException:
    """What Sandbox.create raises for `network`; a sandbox it made after all is killed."""
    try:
        sbx = Sandbox.create(timeout=60, network=cast(SandboxNetworkOpts, network), metadata=metadata)
    except SandboxException as e:
        return e
    sbx.kill()
    pytest.fail(f"created a sandbox with network={network}")


@pytest.mark.parametrize("network", [pytest.param(n, id=i) for i, n, _ in BAD_NETWORKS])
def test_bad_network_is_refused_at_create(network: dict[str, Any]) -> None:
    tag = token()
    before = listed_ids()
    err = create_refused(network, {"egress-bad": tag})
    assert err.status_code == 400, f"{type(err).__name__}: {err}"
    assert Sandbox.list(query=SandboxQuery(metadata={"egress-bad": tag})).next_items() == []
    assert listed_ids() - before == set(), "a refused create left a sandbox behind"


@pytest.fixture(scope="module")
def policed(net: Net) -> Iterator[Sandbox]:
    """One sandbox for every bad update: none of them may change its policy."""
    sbx = Sandbox.create(timeout=600, network={"deny_out": [f"{net.b.ip}/32"]})
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()


@pytest.mark.parametrize("network", [pytest.param(n, id=i) for i, n, update in BAD_NETWORKS if update])
def test_bad_network_is_refused_by_update(net: Net, policed: Sandbox, network: dict[str, Any]) -> None:
    before = network_of(policed.sandbox_id)
    with pytest.raises(SandboxException) as err:
        policed.update_network(cast(SandboxNetworkUpdate, network))
    assert err.value.status_code == 400, f"{type(err.value).__name__}: {err.value}"
    # Nothing of it was applied: the old policy is whole.
    assert network_of(policed.sandbox_id) == before
    reached(policed, net.a)
    refused(policed, net.b)
