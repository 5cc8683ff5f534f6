"""A fake internet for the egress tests: hosts that live in network namespaces of their own.

`FakeInternetHost` makes a network namespace behind a veth, with a /30 in 198.18.0.0/15 (the
benchmark range, which hutch does not block) chosen at random among those not routed on this
machine, and runs ONE Python process in it that serves

- plain HTTP on ports 80 and 8080,
- HTTPS on port 443, with a certificate for the host's DNS names and its address signed by the
  test CA (the one hutch mints its interception certificates from),
- a UDP echo on port 7.

Every HTTP(S) answer is the JSON object `{"host": <label>, "sni": <server name the TLS client
sent, or null>, "path": ..., "headers": {<lowercased name>: <value, repeated ones joined with
", ">}, "port": ..., "method": ...}`; every request (and every UDP datagram) is also written to
a log the test reads back, so that a test can prove a host was never reached.

The test CA is `$HUTCH_TEST_EGRESS_CA` (PEM certificate) with its key at
`$HUTCH_TEST_EGRESS_CA_KEY`, as scripts/test.sh hands it to the server (`--egress-ca-file`);
without them (a standalone run) a throwaway CA is made in a temporary directory. The server
resolves domain names for its egress proxy with the hosts(5) file `$HUTCH_TEST_EGRESS_HOSTS`
(`--egress-hosts`): each host appends its "<ip> <names...>" line on enter and removes exactly
that line on exit, under an flock of the file (tests may run hosts concurrently).

Inside a sandbox names are given to curl with `--resolve name:port:ip`: nothing is ever looked
up in DNS, and nothing is sent beyond this machine.

Run standalone (as root) to check the fixture itself: `python3 tests/e2e/fakenet.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import random
import select
import shlex
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2b import AsyncSandbox, Sandbox

# The benchmark range; scripts/test.sh denies 198.18.255.0/24 for everyone (test_network.py).
PREFIX = "198.18"
THIRD_OCTETS = range(1, 251)
# Serializes the choice of addresses and the making of veths among fixtures of all processes.
REGISTRY_LOCK = Path(tempfile.gettempdir()) / "hutch-fakenet.lock"

HTTP_PORTS = (80, 8080)
HTTPS_PORT = 443
UDP_ECHO_PORT = 7


def _run(*args: str) -> str:
    """Runs a command, returns its stdout; a failure raises with its stderr."""
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


@functools.cache
def _scratch() -> Path:
    """A temporary directory of this process (throwaway CA, standalone hosts file), removed at exit."""
    d = Path(tempfile.mkdtemp(prefix="hutch-fakenet-"))
    atexit.register(shutil.rmtree, d, True)
    return d


# --- the test CA and certificates, with the openssl CLI -----------------------------------------

# A minimal openssl configuration, so that the host's openssl.cnf adds nothing of its own.
_REQ_CONFIG = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hutch fakenet
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class EgressCA:
    """The CA the fake hosts' certificates are signed with (and hutch's egress CA in a test run)."""

    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def _req_config(d: Path) -> Path:
    cfg = d / "req.cnf"
    if not cfg.exists():
        cfg.write_text(_REQ_CONFIG)
    return cfg


@functools.cache
def egress_ca() -> EgressCA:
    """The test CA: scripts/test.sh's ($HUTCH_TEST_EGRESS_CA, $HUTCH_TEST_EGRESS_CA_KEY), or a
    throwaway one made for this process when they are unset."""
    cert, key = os.environ.get("HUTCH_TEST_EGRESS_CA"), os.environ.get("HUTCH_TEST_EGRESS_CA_KEY")
    if cert or key:
        if not (cert and key):
            raise RuntimeError("set both HUTCH_TEST_EGRESS_CA and HUTCH_TEST_EGRESS_CA_KEY, or neither")
        return EgressCA(Path(cert), Path(key))
    d = _scratch() / "ca"
    d.mkdir()
    ca = EgressCA(d / "ca.pem", d / "ca.key")
    _run(
        "openssl", "req", "-x509", "-new", *_EC_KEY, "-config", str(_req_config(_scratch())),
        "-extensions", "v3_ca", "-subj", "/CN=hutch fakenet throwaway CA", "-days", "2",
        "-keyout", str(ca.key), "-out", str(ca.cert),
    )  # fmt: skip
    return ca


def issue_cert(d: Path, cn: str, names: Sequence[str], ips: Sequence[str]) -> tuple[Path, Path]:
    """A server certificate for `names` and `ips` signed by the test CA, with its key, in `d`."""
    key, csr, cert, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "server.ext"
    sans = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    ext.write_text(
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {sans}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid,issuer\n"
    )
    _run("openssl", "req", "-new", *_EC_KEY, "-config", str(_req_config(d)), "-subj", f"/CN={cn}",
         "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ca = egress_ca()
    _run(
        "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(random.getrandbits(63)), "-days", "2", "-sha256", "-extfile", str(ext),
        "-out", str(cert),
    )  # fmt: skip
    return cert, key


def self_signed_cert(name: str) -> tuple[str, str]:
    """A self-signed certificate for `name` and its key, as PEM texts (a sandbox's own TLS server)."""
    with tempfile.TemporaryDirectory(prefix="hutch-fakenet-cert-") as tmp:
        d = Path(tmp)
        _run(
            "openssl", "req", "-x509", "-new", *_EC_KEY, "-config", str(_req_config(d)),
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-days", "2",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
        )  # fmt: skip
        return (d / "cert.pem").read_text(), (d / "key.pem").read_text()


def cert_sha256(pem: str) -> str:
    """The SHA-256 of a PEM certificate's DER form (what the sandbox-side TLS probe prints)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


# --- the hosts file hutch's egress proxy resolves names with -------------------------------------


def hosts_file() -> Path:
    """$HUTCH_TEST_EGRESS_HOSTS, or a file of this process's own in a standalone run."""
    env = os.environ.get("HUTCH_TEST_EGRESS_HOSTS")
    return Path(env) if env else _scratch() / "hosts"


def _hosts_add(line: str) -> None:
    # In place (appended), never replaced by a rename: the server may watch the file itself.
    with open(hosts_file(), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        f.write(("\n" if text and not text.endswith("\n") else "") + line + "\n")


def _hosts_remove(line: str) -> None:
    """Removes one occurrence of exactly `line`, in place: the lines that stay are never missing
    from the file, not even while it is rewritten (written first, then truncated)."""
    with contextlib.suppress(FileNotFoundError), open(hosts_file(), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines()
        if line in lines:
            lines.remove(line)
        f.seek(0)
        f.write("".join(f"{x}\n" for x in lines))
        f.truncate()


# --- the server that runs in each host's namespace ----------------------------------------------

SERVER = r"""
import json, socket, socketserver, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cfg = json.load(open(sys.argv[1]))
log_lock = threading.Lock()


def log(entry):
    with log_lock, open(cfg["log"], "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        tls = isinstance(self.connection, ssl.SSLSocket)
        body = {
            "host": cfg["label"],
            "sni": getattr(self.connection, "fakenet_sni", None) if tls else None,
            "path": self.path,
            "headers": headers,
            "port": self.server.server_address[1],
            "method": self.command,
        }
        log({"proto": "https" if tls else "http", **body})
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # no reverse lookup of its own name
    server_bind = socketserver.TCPServer.server_bind


def remember_sni(sock, name, ctx):
    sock.fakenet_sni = name


tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls_ctx.load_cert_chain(cfg["cert"], cfg["key"])
tls_ctx.sni_callback = remember_sni


class TLSServer(Server):
    def finish_request(self, request, client_address):
        # The handshake happens here, in the connection's own thread.
        request.settimeout(30)
        try:
            tls = tls_ctx.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ValueError):
            pass
        finally:
            tls.settimeout(2)
            try:
                tls.unwrap()  # close_notify: the answer ends cleanly for TLS clients that read to EOF
            except (OSError, ValueError):
                pass
            tls.close()


servers = [Server(("0.0.0.0", port), Handler) for port in cfg["http_ports"]]
servers.append(TLSServer(("0.0.0.0", cfg["https_port"]), Handler))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", cfg["udp_port"]))
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    data, peer = udp.recvfrom(65535)
    log({"proto": "udp", "data": data.decode(errors="replace")})
    udp.sendto(data, peer)
"""


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination routed on this machine (all tables: addresses are in `local`)."""
    kinds = {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole", "unreachable", "prohibit"}
    nets = []
    for line in _run("ip", "-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        while words and words[0] in kinds:
            words.pop(0)
        if words and words[0] != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(words[0], strict=False))
    return nets


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # Proxy settings of the environment must not send a request elsewhere.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeInternetHost:
    """One host of the fake internet (see the module's docstring). `label` is what its answers
    name it by; `names` are its DNS names (in its certificate and in the hosts file)."""

    def __init__(self, label: str, names: Sequence[str] = ()) -> None:
        self.label = label
        self.names = list(names)
        self.ns = ""
        self.host_if = ""
        self.host_ip = ""
        self.ip = ""
        self.cert_pem = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._hosts_line: str | None = None
        self._made_ns = False
        self._made_if = False

    # --- life cycle ---

    def __enter__(self) -> FakeInternetHost:
        try:
            self._dir = Path(tempfile.mkdtemp(prefix=f"hutch-fakenet-{self.label}-"))
            self._make_network()
            cert, key = issue_cert(self._dir, f"{self.label}.fakenet", self.names, [self.ip])
            self.cert_pem = cert.read_text()
            self._start_server(cert, key)
            if self.names:
                self._hosts_line = f"{self.ip} {' '.join(self.names)}"
                _hosts_add(self._hosts_line)
            return self
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self._hosts_line is not None:
            with contextlib.suppress(OSError):
                _hosts_remove(self._hosts_line)
            self._hosts_line = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self._made_if:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
            self._made_if = False
        if self._made_ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            self._made_ns = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _make_network(self) -> None:
        with open(REGISTRY_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            routed = _routed_networks()
            links = set(os.listdir("/sys/class/net"))
            for _ in range(1000):
                net = ipaddress.IPv4Network(f"{PREFIX}.{random.choice(THIRD_OCTETS)}.{4 * random.randrange(64)}/30")
                if not any(net.overlaps(r) for r in routed):
                    break
            else:
                raise RuntimeError(f"no free /30 left in {PREFIX}.0.0/16")
            self.host_ip, self.ip = str(net[1]), str(net[2])
            while True:
                self.host_if = f"hf{random.randrange(10**8)}"
                self.ns = f"hutchfakenet{random.randrange(10**8)}"
                if self.host_if not in links and not Path("/run/netns", self.ns).exists():
                    break
            peer = "hg" + self.host_if[2:]
            _run("ip", "netns", "add", self.ns)
            self._made_ns = True
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer, "netns", self.ns)
            self._made_if = True
            _run("ip", "-n", self.ns, "link", "set", peer, "name", "eth0")
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.ns, "addr", "add", f"{self.ip}/30", "dev", "eth0")
            _run("ip", "-n", self.ns, "link", "set", "eth0", "up")
            _run("ip", "-n", self.ns, "link", "set", "lo", "up")
            # No default route: replies go back to the host end of the /30, where hutch's NAT
            # puts every sandbox's traffic. Nothing here can reach beyond this machine.

    def _start_server(self, cert: Path, key: Path) -> None:
        assert self._dir is not None
        cfg = self._dir / "server.json"
        cfg.write_text(
            json.dumps(
                {
                    "label": self.label,
                    "cert": str(cert),
                    "key": str(key),
                    "log": str(self.log_path),
                    "http_ports": list(HTTP_PORTS),
                    "https_port": HTTPS_PORT,
                    "udp_port": UDP_ECHO_PORT,
                }
            )
        )
        errors = self._dir / "server.err"
        with open(errors, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVER, str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        if not ready or self.proc.stdout.readline() != b"ready\n":
            raise RuntimeError(f"fake host {self.label} did not start: {errors.read_text()!r}")
        # Reachable from the host: what a sandbox's NATed traffic looks like to it.
        with _no_proxy_opener().open(f"http://{self.ip}:8080/fakenet-ready", timeout=10) as r:
            assert json.loads(r.read())["host"] == self.label

    # --- what the tests read ---

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "the host is not running"
        return self._dir / "requests.log"

    @property
    def cert_sha256(self) -> str:
        return cert_sha256(self.cert_pem)

    def requests(self) -> list[dict[str, Any]]:
        """Every HTTP(S) request and UDP datagram the host got, oldest first."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def saw(self, token: str) -> bool:
        """Whether any request (path, header) or datagram that reached the host carried `token`."""
        return any(token in json.dumps(entry) for entry in self.requests())

    def url(self, scheme: str = "http", name: str | None = None, port: int | None = None, path: str = "/") -> str:
        """A URL of the host, by `name` (curl needs `resolve(...)` for it) or by address."""
        netloc = name or self.ip
        if port is not None:
            netloc += f":{port}"
        return f"{scheme}://{netloc}{path}"


def resolve(name: str, port: int, ip: str) -> list[str]:
    """curl's arguments that make `name:port` connect to `ip` (no DNS anywhere)."""
    return ["--resolve", f"{name}:{port}:{ip}"]


def token() -> str:
    """A unique path component, to find one request in a host's log."""
    return uuid.uuid4().hex


# --- inside a sandbox ---------------------------------------------------------------------------

CA_IN_SANDBOX = "/tmp/fakenet-ca.pem"


def curl_cmd(url: str, *args: str) -> str:
    """A shell command that runs curl (5 s at most, no proxy) and prints its body then " rc=<rc>"."""
    argv = ["curl", "-s", "--noproxy", "*", "--max-time", "5", *args, url]
    return f'{shlex.join(argv)}; echo " rc=$?"'


def _curl_result(stdout: str) -> tuple[int, str]:
    body, rc = stdout.rsplit(" rc=", 1)
    return int(rc.strip()), body


def curl(sbx: Sandbox, url: str, *args: str) -> tuple[int, str]:
    """curl in the sandbox: (exit code, body)."""
    return _curl_result(sbx.commands.run(curl_cmd(url, *args), timeout=60).stdout)


async def acurl(sbx: AsyncSandbox, url: str, *args: str) -> tuple[int, str]:
    """curl in an AsyncSandbox: (exit code, body)."""
    return _curl_result((await sbx.commands.run(curl_cmd(url, *args), timeout=60)).stdout)


def answer(rc: int, body: str) -> dict[str, Any]:
    """The fake host's JSON answer of a curl that must have succeeded."""
    assert rc == 0, f"curl failed with {rc}: {body!r}"
    try:
        got = json.loads(body)
    except ValueError:
        raise AssertionError(f"not a fake host's answer: {body!r}") from None
    assert isinstance(got, dict) and "host" in got, body
    return got


def upload_ca(sbx: Sandbox) -> str:
    """Puts the test CA into the sandbox (for curl --cacert); returns its path there."""
    sbx.files.write(CA_IN_SANDBOX, egress_ca().pem)
    return CA_IN_SANDBOX


async def aupload_ca(sbx: AsyncSandbox) -> str:
    await sbx.files.write(CA_IN_SANDBOX, egress_ca().pem)
    return CA_IN_SANDBOX


# UDP to the echo port, then ICMP echo (a datagram socket, as ping does without CAP_NET_RAW),
# three tries each: {"udp": <echoed text or null>, "ping": <answered>}.
DATAGRAM_PROBE = r"""
import json, socket, struct, sys
ip, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
out = {"udp": None, "ping": False}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1.5)
for _ in range(3):
    try:
        u.sendto(token, (ip, port))
        out["udp"] = u.recvfrom(65535)[0].decode(errors="replace")
        break
    except OSError:
        pass
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p.settimeout(1.5)
for seq in range(1, 4):
    try:
        p.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + token, (ip, 0))
        reply = p.recvfrom(65535)[0]
        if reply[0] == 0 and reply.endswith(token):
            out["ping"] = True
            break
    except OSError:
        pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Datagrams:
    token: str
    udp_echoed: bool
    ping_answered: bool


def _datagram_cmd(ip: str, tok: str) -> str:
    return shlex.join(["python3", "-c", DATAGRAM_PROBE, ip, str(UDP_ECHO_PORT), tok])


def _datagram_result(tok: str, stdout: str) -> Datagrams:
    got = json.loads(stdout)
    return Datagrams(tok, got["udp"] == tok, bool(got["ping"]))


def datagrams(sbx: Sandbox, ip: str) -> Datagrams:
    """Sends a UDP datagram to the echo port of `ip` and an ICMP echo to it, from the sandbox."""
    tok = token()
    return _datagram_result(tok, sbx.commands.run(_datagram_cmd(ip, tok), timeout=60).stdout)


async def adatagrams(sbx: AsyncSandbox, ip: str) -> Datagrams:
    tok = token()
    return _datagram_result(tok, (await sbx.commands.run(_datagram_cmd(ip, tok), timeout=60)).stdout)


# A TLS handshake with `name` as SNI to ip:port, verified with `cafile` (or the system's
# bundle when empty): the SHA-256 of the certificate the sandbox was shown, or "error: ...".
TLS_PROBE = r"""
import hashlib, socket, ssl, sys
name, ip, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile or None)
try:
    with socket.create_connection((ip, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as tls:
        print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
except (OSError, ssl.SSLError) as e:
    print("error: " + repr(e))
"""


def peer_cert_sha256(sbx: Sandbox, name: str, ip: str, port: int = HTTPS_PORT, cafile: str = "") -> str:
    """The SHA-256 of the certificate the sandbox sees for `name` at ip:port (or "error: ...")."""
    cmd = shlex.join(["python3", "-c", TLS_PROBE, name, ip, str(port), cafile])
    return sbx.commands.run(cmd, timeout=60).stdout.strip()


# --- standalone check of the fixture (root; no hutch server needed) ------------------------------


def _host_curl(*args: str) -> tuple[int, str]:
    r = subprocess.run(["curl", "-s", "--noproxy", "*", "--max-time", "5", *args], capture_output=True, text=True)
    return r.returncode, r.stdout


def _host_ping(ip: str) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(3)
    payload = b"fakenet"
    header = struct.pack("!BBHHH", 8, 0, 0, 0x4654, 1)
    checksum = _icmp_checksum(header + payload)
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum, 0x4654, 1) + payload, (ip, 0))
    try:
        while True:
            packet, (src, _) = s.recvfrom(65535)
            icmp = packet[(packet[0] & 0x0F) * 4 :]
            if src == ip and icmp[0] == 0 and icmp.endswith(payload):
                return True
    except OSError:
        return False
    finally:
        s.close()


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


@contextlib.contextmanager
def _standalone_env() -> Iterator[None]:
    """A standalone run never touches a test run's CA or hosts file."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HUTCH_TEST_EGRESS_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def _self_test() -> None:
    netns_before = set(_run("ip", "netns", "list").split())
    links_before = set(os.listdir("/sys/class/net"))
    with _standalone_env(), FakeInternetHost("one", ["one.test", "www.one.test"]) as one:
        with FakeInternetHost("two", ["two.test"]) as two:
            hosts = hosts_file().read_text().splitlines()
            assert f"{one.ip} one.test www.one.test" in hosts and f"{two.ip} two.test" in hosts, hosts
            ca = str(egress_ca().cert)
            for port in HTTP_PORTS:
                tok = token()
                got = answer(*_host_curl(one.url(port=port, path=f"/{tok}"), "-H", "X-Dup: a", "-H", "X-Dup: b"))
                assert got["host"] == "one" and got["sni"] is None and got["path"] == f"/{tok}", got
                assert got["headers"]["x-dup"] == "a, b" and got["port"] == port, got
                assert one.saw(tok) and not two.saw(tok)
            got = answer(*_host_curl("--cacert", ca, *resolve("www.one.test", 443, one.ip), "https://www.one.test/x"))
            assert got["host"] == "one" and got["sni"] == "www.one.test" and got["port"] == 443, got
            got = answer(*_host_curl("--cacert", ca, f"https://{two.ip}/by-ip"))
            assert got["host"] == "two" and got["sni"] is None, got
            rc, _ = _host_curl("--cacert", ca, *resolve("two.test", 443, one.ip), "https://two.test/")
            assert rc == 60, f"one's certificate passed for two.test: curl {rc}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(3)
                tok = token()
                u.sendto(tok.encode(), (two.ip, UDP_ECHO_PORT))
                assert u.recvfrom(100)[0] == tok.encode()
                assert two.saw(tok)
            assert _host_ping(one.ip) and _host_ping(two.ip)
            assert len(one.cert_sha256) == 64 and one.cert_sha256 != two.cert_sha256
            two_line = f"{two.ip} two.test"
        hosts = hosts_file().read_text().splitlines()
        assert two_line not in hosts and f"{one.ip} one.test www.one.test" in hosts, hosts
    assert hosts_file().read_text() == "", hosts_file().read_text()
    assert set(_run("ip", "netns", "list").split()) == netns_before, "a namespace was left behind"
    assert set(os.listdir("/sys/class/net")) == links_before, "a veth was left behind"
    sys.stderr.write("fakenet: self-test passed\n")


if __name__ == "__main__":
    _self_test()
