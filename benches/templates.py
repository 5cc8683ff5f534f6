"""Custom-template benchmark: what a user-built layer costs, against its parent in the same run.

Run against a live `hutch serve` (E2B_API_URL / E2B_API_KEY set):

    python benches/templates.py [N]

Measures, each with a baseline measured in the same run:
- create → first `commands.run("true")` on a template one layer above `base` (a RUN that
  writes 20 MB of small files), against the same on `base` itself;
- the same on a chain of 5 stacked templates, against `base`;
- building a one-step template (a `RUN true`), against creating and killing a `base`
  sandbox (a build is at least that);
- the disk one such template takes (its layer), against the base rootfs it stands on.
Reports medians, p90 and ratios; never asserts anything.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from e2b import Sandbox, Template
from stats import pct, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
API = os.environ["E2B_API_URL"]
HEADERS = {"X-API-KEY": os.environ["E2B_API_KEY"]}


def report(name: str, xs: list[float], base: list[float], base_name: str) -> None:
    m, b = statistics.median(xs), statistics.median(base)
    print(
        f"{name:<40} median {m * 1000:8.1f} ms  p90 {pct(xs, 0.9) * 1000:8.1f} ms  "
        f"{base_name} median {b * 1000:7.1f} ms  ratio {m / b:5.2f}x"
    )


def first_command(template: str) -> None:
    sbx = Sandbox.create(template=template)
    try:
        sbx.commands.run("true")
    finally:
        sbx.kill()


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    tag = uuid.uuid4().hex[:6]
    one = f"bench-one-{tag}"
    chain = [f"bench-chain{i}-{tag}" for i in range(5)]
    made: list[str] = []
    try:
        Template.build(
            Template()
            .from_template("base")
            .run_cmd(
                "mkdir -p /opt/bench && for i in $(seq 1 2000); do head -c 10000 /dev/urandom > /opt/bench/f$i; done",
                user="root",
            ),
            one,
        )
        made.append(one)
        parent = "base"
        for name in chain:
            Template.build(Template().from_template(parent).run_cmd(f"echo {name} > /tmp/{name}"), name)
            made.append(name)
            parent = name

        first_command("base")  # warm caches evenly
        first_command(one)
        base = timed(lambda: first_command("base"), N)
        layered = timed(lambda: first_command(one), N)
        stacked = timed(lambda: first_command(chain[-1]), N)
        report("create → first command, 1 layer", layered, base, "base")
        report("create → first command, 5 layers", stacked, base, "base")

        with httpx.Client(base_url=API, headers=HEADERS, timeout=60) as c:

            def churn() -> None:
                r = c.post("/sandboxes", json={"templateID": "base"})
                r.raise_for_status()
                c.delete(f"/sandboxes/{r.json()['sandboxID']}").raise_for_status()

            churned = timed(churn, N)

        builds = []
        for i in range(max(3, N // 4)):
            name = f"bench-build{i}-{tag}"
            t = time.perf_counter()
            Template.build(Template().from_template("base").run_cmd("true"), name)
            builds.append(time.perf_counter() - t)
            made.append(name)
        report("build a one-step template", builds, churned, "create+kill")

        data = os.environ.get("HUTCH_DATA_DIR")
        cache = os.environ.get("HUTCH_CACHE_DIR", "/var/cache/hutch")
        if data:
            layers = list((Path(data) / "templates" / "layers").glob("*/*"))
            rootfs = list((Path(cache) / "templates").glob("*/rootfs"))
            if layers and rootfs:
                smallest = min(du(p) for p in layers)
                base_size = min(du(p) for p in rootfs)
                print(
                    f"{'disk of a one-step template':<40} {smallest / 1e3:8.1f} kB   "
                    f"smallest base rootfs {base_size / 1e6:8.1f} MB  ratio {smallest / base_size:.4f}"
                )
    finally:
        with httpx.Client(base_url=API, headers=HEADERS, timeout=60) as c:
            for name in reversed(made):
                c.delete(f"/templates/{name}")


if __name__ == "__main__":
    main()
