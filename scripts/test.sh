#!/usr/bin/env bash
# The test command (README; CI runs it through .ci/run as root on a clean clone).
#
# 1. installs what is missing and builds the release binaries;
# 2. runs the Rust unit and integration tests and clippy, then ruff and mypy over the Python;
# 3. starts a real `hutch serve` on loopback with a fresh data dir (templates come from
#    the cache outside the clone, built on first use);
# 4. runs the end-to-end tests in tests/e2e with the official e2b SDK from PyPI, the attack
#    suite in tests/security, then the tests of our own SDK (python/) and of the examples
#    (examples/);
# 5. kills every sandbox and the server, and removes what they left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Root runs it directly; anyone else is asked for root through sudo, when there is one.
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then exec sudo -E -- "$0" "$@"; fi
    echo "the tests create namespaces, cgroups and network interfaces: they need root: run this as root" >&2
    exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=${HUTCH_TEST_CACHE:-/var/cache/hutch-test}
TEMPLATE_CACHE=${HUTCH_CACHE_DIR:-/var/cache/hutch}
mkdir -p "$CACHE" "$TEMPLATE_CACHE"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

step "dependencies"
scripts/install-deps.sh

step "build"
scripts/build.sh

# Venvs are cached outside the clone, keyed by their pinned requirements (scripts/lib.sh).

step "python venvs (official SDKs; a host ipykernel for hutch-kernel's tests; schemathesis)"
VENV=$(make_venv venv python3 tests/requirements.txt)
# Kernels run as an unprivileged user: build this venv on the system Python, not on an
# interpreter under root's home (pyenv), which that user cannot execute.
HUTCH_KERNEL_VENV=$(make_venv kernel-venv /usr/bin/python3 tests/kernel-requirements.txt)
export HUTCH_KERNEL_VENV
HUTCH_SCHEMATHESIS="$(make_venv schemathesis-venv python3 tests/schemathesis-requirements.txt)/bin/schemathesis"
export HUTCH_SCHEMATHESIS

if [ "${HUTCH_TEST_SKIP_CARGO:-0}" != 1 ]; then
    step "cargo fmt --check, clippy, cargo test"
    cargo fmt --all -- --check
    cargo clippy --release --locked --all-targets -- -D warnings
    cargo test --release --locked --workspace
    # `cargo test` may have put a dynamically linked agent in target/release: the
    # statically linked one goes back (scripts/build.sh).
    scripts/build.sh
fi

if [ "${CI:-}" = true ] || [ "${HUTCH_FUZZ_SMOKE:-0}" = 1 ]; then
    step "fuzz smoke run (scripts/fuzz.sh --smoke: every target of fuzz/, 15 s each)"
    HUTCH_TEST_CACHE="$CACHE" scripts/fuzz.sh --smoke
fi

step "ruff check, ruff format --check, mypy --strict (Python)"
# Settings: ruff.toml and mypy.ini at the root; the tools are pinned in tests/requirements.txt.
# The SDK (python/) and examples/ are checked once they hold Python. Caches stay outside the clone.
export RUFF_CACHE_DIR="$CACHE/ruff-cache" MYPY_CACHE_DIR="$CACHE/mypy-cache"
has_py() { [ -n "$(find "$@" -name '*.py' -print -quit 2>/dev/null)" ]; }
# mypy takes each module name once per run, and several of these folders have a conftest.py:
# one run per group (the SDK's tests go with the package they import).
MYPY_GROUPS=("tests/e2e" "tests/security" "benches" "python-kernel-ext" "scripts" "crates/hutch-runtime/src/zygote")
sdk=()
for d in python/hutch python/tests; do
    if has_py "$d"; then sdk+=("$d"); fi
done
if [ ${#sdk[@]} -gt 0 ]; then MYPY_GROUPS+=("${sdk[*]}"); fi
if has_py examples; then MYPY_GROUPS+=("examples"); fi
read -ra PY_PATHS <<< "${MYPY_GROUPS[*]}"
# The SDK's blocking modules are generated from its asyncio ones (python/README.md).
"$VENV/bin/python" scripts/gen-sync-sdk.py --check || {
    echo "the SDK's generated blocking modules are stale: regenerate them with" \
        "'$VENV/bin/python scripts/gen-sync-sdk.py' (edit the *_async.py modules, not them)" >&2
    exit 1
}
"$VENV/bin/ruff" check "${PY_PATHS[@]}"
"$VENV/bin/ruff" format --check "${PY_PATHS[@]}"
for group in "${MYPY_GROUPS[@]}"; do
    read -ra dirs <<< "$group"
    "$VENV/bin/mypy" "${dirs[@]}"
done

step "the zygote on its own (crates/hutch-runtime/src/zygote/test_zygote.py)"
# Forks kernels into fake sandboxes of its own, confined as hutch runs it and not.
"$VENV/bin/python" crates/hutch-runtime/src/zygote/test_zygote.py

step "start hutch serve"
WORK=$(mktemp -d /tmp/hutch-test.XXXXXX)
PORT=${HUTCH_TEST_PORT:-49990}
KEY="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# HUTCH_TEST_RUNTIME=gvisor runs every suite against sandboxes on gVisor (the full gVisor
# pass, docs/security.md); otherwise a gVisor stage at the end runs tests/e2e/test_gvisor.py.
RUNTIME=${HUTCH_TEST_RUNTIME:-native}
runtime_args() {
    if [ "$1" = gvisor ]; then
        echo --runtime gvisor --runsc "$(scripts/runsc.sh)"
    fi
}
# The egress tests' fake internet (tests/e2e/fakenet.py): its hosts' certificates are
# signed by a CA of this run that the server's egress proxy trusts, and their names are in
# a hosts file the proxy resolves from.
export HUTCH_TEST_EGRESS_CA="$WORK/egress-test-ca.pem" HUTCH_TEST_EGRESS_CA_KEY="$WORK/egress-test-ca.key"
export HUTCH_TEST_EGRESS_HOSTS="$WORK/egress-hosts"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=hutch test internet CA" -keyout "$HUTCH_TEST_EGRESS_CA_KEY" -out "$HUTCH_TEST_EGRESS_CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
: > "$HUTCH_TEST_EGRESS_HOSTS"
# Starts the server (its command line in $WORK/server.cmd, its pid in $WORK/server.pid).
# 198.18.255.0/24: a range the network tests place a fake host in and expect unreachable.
# --agent-log: each agent's output in its sandbox directory, for failures to be read
# (tests/security checks that it travels through a pipe).
start_hutch() {
    local extra
    read -ra extra <<< "$(runtime_args "$1")"
    SERVER_CMD=("$ROOT/target/release/hutch" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data"
        --cache-dir "$TEMPLATE_CACHE" --api-key "$KEY" --deny-cidr 198.18.255.0/24
        --sandbox-disk-read-mbps 4000 --sandbox-disk-write-mbps 3000 --sandbox-disk-iops 200000 --agent-log
        --volume-size-mb 64
        --egress-ca-file "$HUTCH_TEST_EGRESS_CA" --egress-hosts "$HUTCH_TEST_EGRESS_HOSTS"
        "${extra[@]}")
    printf '%s\n' "${SERVER_CMD[@]}" > "$WORK/server.cmd"
    RUST_BACKTRACE=0 "${SERVER_CMD[@]}" >>"$WORK/server.out" 2>>"$WORK/server.log" &
    echo $! > "$WORK/server.pid"
}
# Stops it by its pid and removes whatever its sandboxes left.
stop_hutch() {
    local pid
    pid=$(cat "$WORK/server.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$WORK/server.pid"
    "$ROOT/target/release/hutch" cleanup --data-dir "$WORK/data"
}
start_hutch "$RUNTIME"

cleanup() {
    local rc=$?
    step "cleanup"
    # Stop the server (by its pid only) and sweep what its sandboxes left.
    stop_hutch || rc=1
    if [ $rc -ne 0 ]; then
        echo "---- server log (start and end) ----" >&2
        head -n 20 "$WORK/server.log" >&2 || true
        echo "[...]" >&2
        tail -n 40 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

# A cold first run builds the templates with debootstrap: allow it time.
wait_for_templates "$WORK" "$PORT"

step "end-to-end tests"
export E2B_API_URL="http://127.0.0.1:$PORT"
export E2B_SANDBOX_URL="http://127.0.0.1:$PORT"
export E2B_VOLUME_API_URL="http://127.0.0.1:$PORT"
export E2B_API_KEY="$KEY"
export HUTCH_TEST_WORK="$WORK"
export HUTCH_TEST_RUNTIME="$RUNTIME"
unset E2B_DEBUG
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -o asyncio_default_fixture_loop_scope=function \
    --timeout 600 tests/e2e "$@"

step "attack suite (tests/security)"
if [ "${HUTCH_TEST_SKIP_SECURITY:-0}" != 1 ]; then
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 600 tests/security
fi

step "hutch Python SDK: install, API reference, tests"
# Installed the way users install it; reinstalled every run, since the venv is cached.
"$VENV/bin/pip" install -q --no-deps --force-reinstall ./python
"$VENV/bin/pdoc" -o "$WORK/sdk-reference" hutch
test -s "$WORK/sdk-reference/hutch.html"
export HUTCH_API_URL="$E2B_API_URL" HUTCH_API_KEY="$KEY"
if [ "${HUTCH_TEST_SKIP_SDK:-0}" != 1 ]; then
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 600 python/tests
fi

# Issue 11's benchmark in its quick mode against the same server (CI, or HUTCH_BENCH_SMOKE=1):
# it reports its targets and never fails on them; only a crash of a row fails here.
if [ "${CI:-}" = true ] || [ "${HUTCH_BENCH_SMOKE:-0}" = 1 ]; then
    step "benchmark smoke run (scripts/bench.sh --external --smoke)"
    HUTCH_CACHE_DIR="$TEMPLATE_CACHE" HUTCH_TEST_CACHE="$CACHE" \
        scripts/bench.sh --external --smoke --out "$WORK/bench"
fi

if [ "$RUNTIME" != gvisor ]; then
    step "gVisor: tests/e2e/test_gvisor.py against sandboxes on gVisor (hutch serve --runtime gvisor)"
    stop_hutch
    start_hutch gvisor
    wait_for_templates "$WORK" "$PORT"
    HUTCH_TEST_RUNTIME=gvisor "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        -o asyncio_default_fixture_loop_scope=function --timeout 600 tests/e2e/test_gvisor.py
fi
