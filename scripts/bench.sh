#!/usr/bin/env bash
# Issue 11's benchmark in one command (docs/performance.md):
#
#   scripts/bench.sh [--smoke] [--out DIR] [other options of benches/instant.py]
#
# 1. builds the release binaries (scripts/build.sh);
# 2. makes (or reuses) the benchmark's venv (benches/requirements.txt) and the kernel venv of
#    the jupyter_client baselines (tests/kernel-requirements.txt on /usr/bin/python3), cached
#    outside the clone like scripts/test.sh's;
# 3. starts a real `hutch serve` on loopback with a fresh data dir and the templates of
#    $HUTCH_CACHE_DIR (default /var/cache/hutch), and waits until code-interpreter-v1 is ready;
# 4. runs benches/instant.py against it (results in benches/results/<UTC time>/ or --out);
# 5. stops the server by its pid and runs `hutch cleanup`, also when something failed.
#
# --external skips 1, 3 and 5 and runs against the server in E2B_API_URL / E2B_API_KEY
# (scripts/test.sh's smoke run). Needs root. Only one `hutch serve` may run on a host at a time.
# The exit status reflects crashes only: targets are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then exec sudo -E -- "$0" "$@"; fi
    echo "the benchmark starts hutch serve, mounts and reads other processes' memory: run it as root" >&2
    exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=${HUTCH_TEST_CACHE:-/var/cache/hutch-test}
TEMPLATE_CACHE=${HUTCH_CACHE_DIR:-/var/cache/hutch}
mkdir -p "$CACHE"

EXTERNAL=0
ARGS=()
for a in "$@"; do
    if [ "$a" = --external ]; then EXTERNAL=1; else ARGS+=("$a"); fi
done

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if [ $EXTERNAL = 0 ]; then
    step "build"
    scripts/build.sh
fi

step "python venvs (the benchmark's; the kernel venv of the jupyter_client baselines)"
VENV=$(make_venv bench-venv python3 benches/requirements.txt tests/requirements.txt)
# The same key as scripts/test.sh's, so both share it.
HUTCH_KERNEL_VENV=$(make_venv kernel-venv /usr/bin/python3 tests/kernel-requirements.txt)
export HUTCH_KERNEL_VENV HUTCH_CACHE_DIR="$TEMPLATE_CACHE"
unset E2B_DEBUG

if [ $EXTERNAL = 1 ]; then
    : "${E2B_API_URL:?--external needs E2B_API_URL}" "${E2B_API_KEY:?--external needs E2B_API_KEY}"
    export E2B_SANDBOX_URL="${E2B_SANDBOX_URL:-$E2B_API_URL}"
    step "benches/instant.py against $E2B_API_URL"
    exec "$VENV/bin/python" benches/instant.py "${ARGS[@]}"
fi

step "start hutch serve"
WORK=$(mktemp -d /tmp/hutch-bench.XXXXXX)
PORT=${HUTCH_BENCH_PORT:-49970}
KEY="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
RUST_BACKTRACE=0 "$ROOT/target/release/hutch" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
    --cache-dir "$TEMPLATE_CACHE" --api-key "$KEY" >"$WORK/server.out" 2>"$WORK/server.log" &
echo $! > "$WORK/server.pid"

cleanup() {
    local rc=$? pid
    step "cleanup"
    pid=$(cat "$WORK/server.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    "$ROOT/target/release/hutch" cleanup --data-dir "$WORK/data" --cache-dir "$TEMPLATE_CACHE" || rc=1
    if [ $rc -ne 0 ]; then
        echo "---- server log (end) ----" >&2
        tail -n 40 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

wait_for_templates "$WORK" "$PORT"

step "benches/instant.py ${ARGS[*]}"
export E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$KEY"
"$VENV/bin/python" benches/instant.py "${ARGS[@]}"
