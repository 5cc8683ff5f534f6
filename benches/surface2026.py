"""Issue 13's surface, each row against a baseline measured in the same run, through the
official `e2b` SDK: snapshots, forks, pauses without memory, volumes and egress policies.

Run as root against a live `hutch serve` (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and
E2B_VOLUME_API_URL set):

    python benches/surface2026.py [N]

The egress rows need a fake internet host (tests/e2e/fakenet.py: a network namespace of
this machine, nothing leaves it). For the header-rule rows the server must resolve the fake
host's name and trust its certificate: start it with `--egress-hosts FILE --egress-ca-file
CA.pem` and set HUTCH_TEST_EGRESS_HOSTS=FILE, HUTCH_TEST_EGRESS_CA=CA.pem and
HUTCH_TEST_EGRESS_CA_KEY (the CA's key) here; without them those rows are skipped.

Rows (baseline in brackets):
- `create_snapshot()` [a freezer pause + resume of the same sandbox: what a snapshot does
  besides copying the upper dir];
- create from a snapshot [create from the warm pool of `base`];
- fork 1 and fork 10 [1 and 10 `base` creates at once];
- `pause(mode="filesystem")` + `connect()` [`pause()` + `connect()` with memory];
- volume write / read of 1 MiB through the content API [the same through the sandbox's
  `files` API];
- an HTTP request from inside a sandbox (a new connection each, timed inside) allowed by a
  policy through the egress proxy, and with a header rule [the same request of a sandbox
  without a policy, NATed by the kernel]; HTTPS with a header rule (intercepted) [HTTPS
  without a policy].
Medians and p90, ratios; never asserts anything.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import statistics
import sys
import uuid
from pathlib import Path

from e2b import ALL_TRAFFIC, Sandbox, SandboxNetworkOpts, Volume
from stats import pct, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

Row = tuple[str, list[float], str, list[float]]


def report(rows: list[Row]) -> None:
    print("| what | median (p90) | baseline | baseline median | ratio |")
    print("|---|---|---|---|---|")
    for name, xs, base_name, base in rows:
        m, b = statistics.median(xs), statistics.median(base)
        print(
            f"| {name} | {m * 1000:.2f} ms ({pct(xs, 0.9) * 1000:.2f}) | {base_name} | "
            f"{b * 1000:.2f} ms | {m / b:.2f}x |"
        )


def snapshots(n: int) -> list[Row]:
    rows: list[Row] = []
    sbx = Sandbox.create("base", timeout=600)
    try:
        sbx.files.write("/home/user/data.bin", os.urandom(1 << 20))
        snaps: list[str] = []

        def snap() -> None:
            snaps.append(sbx.create_snapshot().snapshot_id)

        def freeze() -> None:
            sbx.pause()
            Sandbox.connect(sbx.sandbox_id)

        rows.append(
            ("`create_snapshot()` (1 MiB written)", timed(snap, n), "pause + connect (freezer)", timed(freeze, n))
        )

        def from_snapshot() -> None:
            Sandbox.create(snaps[0], timeout=60).kill()

        def from_pool() -> None:
            Sandbox.create("base", timeout=60).kill()

        rows.append(
            (
                "create + kill from a snapshot",
                timed(from_snapshot, n),
                "create + kill `base` (pool)",
                timed(from_pool, n),
            )
        )
        for s in snaps:
            Sandbox.delete_snapshot(s)

        for count in (1, 10):

            def fork(count: int = count) -> None:
                for f in sbx.fork(count=count, timeout=60):
                    if isinstance(f, Sandbox):
                        f.kill()

            def creates(count: int = count) -> None:
                with concurrent.futures.ThreadPoolExecutor(count) as pool:
                    for s in pool.map(lambda _: Sandbox.create("base", timeout=60), range(count)):
                        s.kill()

            m = max(3, n // 3) if count > 1 else n
            rows.append(
                (f"fork({count}) + kill", timed(fork, m), f"{count} `base` creates at once + kill", timed(creates, m))
            )

        def fs_pause() -> None:
            sbx.pause(mode="filesystem")
            Sandbox.connect(sbx.sandbox_id)

        rows.append(("pause(filesystem) + connect", timed(fs_pause, n), "pause + connect (freezer)", timed(freeze, n)))
    finally:
        sbx.kill()
    return rows


def volumes(n: int) -> list[Row]:
    data = os.urandom(1 << 20)
    vol = Volume.create(f"bench-{uuid.uuid4().hex[:8]}")
    sbx = Sandbox.create("base", timeout=600)
    try:
        w = timed(lambda: vol.write_file("/x.bin", data), n)
        r = timed(lambda: vol.read_file("/x.bin", format="bytes"), n)
        sw = timed(lambda: sbx.files.write("/home/user/x.bin", data), n)
        sr = timed(lambda: sbx.files.read("/home/user/x.bin", format="bytes"), n)
        return [
            ("volume write 1 MiB (content API)", w, "sandbox `files.write`", sw),
            ("volume read 1 MiB (content API)", r, "sandbox `files.read`", sr),
        ]
    finally:
        sbx.kill()
        Volume.destroy(vol.volume_id)


# Inside the sandbox: N sequential requests, a new connection each; prints seconds each took.
LOOP = r"""
import json, ssl, sys, time, urllib.request
url, n, host, ip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
out = []
for _ in range(n):
    t = time.perf_counter()
    with opener.open(url, timeout=10) as r:
        r.read()
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def in_sandbox(sbx: Sandbox, url: str, n: int, name: str, ip: str) -> list[float]:
    if name:
        sbx.commands.run(f"echo '{ip} {name}' >> /etc/hosts", user="root")
    cmd = shlex.join(["python3", "-c", LOOP, url, str(n), name, ip])
    return [float(x) for x in json.loads(sbx.commands.run(cmd, timeout=300).stdout)]


def egress(n: int) -> list[Row]:
    from fakenet import FakeInternetHost, egress_ca  # type: ignore[import-not-found]

    rows: list[Row] = []
    n = max(n, 50)
    configured = all(
        os.environ.get(v) for v in ("HUTCH_TEST_EGRESS_HOSTS", "HUTCH_TEST_EGRESS_CA", "HUTCH_TEST_EGRESS_CA_KEY")
    )
    with FakeInternetHost("bench", ["bench.test"]) as host:
        plain = Sandbox.create("base", timeout=600)
        by_address: SandboxNetworkOpts = {"allow_out": [host.ip], "deny_out": [ALL_TRAFFIC]}
        policed = Sandbox.create("base", timeout=600, network=by_address)
        try:
            base = in_sandbox(plain, f"http://{host.ip}/", n, "", host.ip)
            rows.append(
                (
                    "HTTP request, allowed by address (proxied)",
                    in_sandbox(policed, f"http://{host.ip}/", n, "", host.ip),
                    "no policy (kernel NAT)",
                    base,
                )
            )
            if not configured:
                print(
                    "header-rule rows skipped: the server needs --egress-hosts and --egress-ca-file (see the docstring)"
                )
                return rows
            ruled: SandboxNetworkOpts = {
                "allow_out": ["bench.test"],
                "deny_out": [ALL_TRAFFIC],
                "rules": {"bench.test": [{"transform": {"headers": {"X-Bench": "1"}}}]},
            }
            rule = Sandbox.create("base", timeout=600, network=ruled)
            try:
                rows.append(
                    (
                        "HTTP request with a header rule (relayed)",
                        in_sandbox(rule, "http://bench.test/", n, "bench.test", host.ip),
                        "no policy (kernel NAT)",
                        base,
                    )
                )
                # The plain sandbox trusts the fake host's CA for its baseline.
                plain.files.write("/tmp/ca.pem", egress_ca().pem)
                plain.commands.run("cat /tmp/ca.pem >> /etc/ssl/certs/ca-certificates.crt", user="root")
                tls_base = in_sandbox(plain, "https://bench.test/", n, "bench.test", host.ip)
                rows.append(
                    (
                        "HTTPS request with a header rule (intercepted)",
                        in_sandbox(rule, "https://bench.test/", n, "", host.ip),
                        "HTTPS, no policy",
                        tls_base,
                    )
                )
            finally:
                rule.kill()
        finally:
            plain.kill()
            policed.kill()
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rows = snapshots(n) + volumes(n) + egress(n)
    report(rows)


if __name__ == "__main__":
    main()
