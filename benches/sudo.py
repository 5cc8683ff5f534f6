"""`sudo` benchmark: what running a command through `sudo` costs inside a sandbox, against
running it directly in the same sandbox, in the same run.

Run against a live `hutch serve` (E2B_API_URL / E2B_API_KEY set):

    python benches/sudo.py [N]

Inside one `base` sandbox, as the default user, a shell loop runs `sudo -n true` N times and
`true` N times (the baseline: a fork+exec of the same program); this is repeated 5 times and the
per-call medians are reported with their ratio. Also reported: `commands.run("sudo -n true")`
against `commands.run("true")` through the SDK. Never asserts anything.
"""

from __future__ import annotations

import statistics
import sys

from e2b import Sandbox
from stats import pct, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ROUNDS = 5


def loop_ms(sbx: Sandbox, cmd: str) -> float:
    """Milliseconds per call of `cmd`, run N times in a shell loop inside the sandbox."""
    script = (
        f"s=$(date +%s%N); i=0; while [ $i -lt {N} ]; do {cmd} >/dev/null || exit 1; "
        f"i=$((i+1)); done; e=$(date +%s%N); echo $(( (e-s)/{N} ))"
    )
    return int(sbx.commands.run(script).stdout.strip()) / 1e6


def main() -> None:
    sbx = Sandbox.create(template="base")
    try:
        sbx.commands.run("sudo -n true")  # warm the page cache
        sudo = [loop_ms(sbx, "sudo -n true") for _ in range(ROUNDS)]
        plain = [loop_ms(sbx, "/bin/true") for _ in range(ROUNDS)]
        s, p = statistics.median(sudo), statistics.median(plain)
        print(f"in-sandbox loop, {N} calls x {ROUNDS} rounds, per call:")
        print(f"  sudo -n true   median {s:7.3f} ms")
        print(f"  /bin/true      median {p:7.3f} ms   (baseline)")
        print(f"  ratio          {s / p:7.1f}x")
        rs = timed(lambda: sbx.commands.run("sudo -n true"), 50)
        rp = timed(lambda: sbx.commands.run("true"), 50)
        print("commands.run round trip, 50 calls:")
        print(f"  sudo -n true   median {statistics.median(rs) * 1e3:7.2f} ms (p90 {pct(rs, 0.9) * 1e3:.2f})")
        print(
            f"  true           median {statistics.median(rp) * 1e3:7.2f} ms (p90 {pct(rp, 0.9) * 1e3:.2f})   (baseline)"
        )
        print(f"  ratio          {statistics.median(rs) / statistics.median(rp):7.2f}x")
    finally:
        sbx.kill()


if __name__ == "__main__":
    main()
