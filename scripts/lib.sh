# Shell functions scripts/test.sh and scripts/bench.sh share (sourced, not run). They expect
# CACHE (where venvs are cached) to be set.

step() { echo; echo "==> $*" >&2; }

# make_venv NAME PYTHON REQUIREMENTS [MORE FILES...]: prints the path of a venv of PYTHON with
# REQUIREMENTS installed, cached under $CACHE and keyed by the files' contents and the
# interpreter's path. Built in place (a venv cannot be moved) and marked complete only at the end.
make_venv() {
    local name=$1 python=$2 req=$3 dir
    shift 3
    dir="$CACHE/$name-$( (cat "$req" "$@"; command -v "$python") | sha256sum | cut -c1-16)"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir"
        "$python" -m venv "$dir"
        "$dir/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# wait_for_templates WORK PORT: waits until the `hutch serve` on PORT (its pid in
# WORK/server.pid) lists code-interpreter-v1 as ready; exits the script when the server dies,
# a template build fails, or 40 minutes pass (a cold cache builds the templates first).
# /health is 200 once `base` is built and lists the templates that are ready; match the name
# inside "templates": while it builds, the progress object names it too.
wait_for_templates() {
    local work=$1 port=$2 i
    ci_ready() { grep -Eq '"templates":\[[^]]*"code-interpreter-v1"' "$work/health" 2>/dev/null; }
    for i in $(seq 1 4800); do
        curl -s -o "$work/health" "http://127.0.0.1:$port/health" || true
        ci_ready && return 0
        if ! kill -0 "$(cat "$work/server.pid")" 2>/dev/null; then
            echo "hutch serve exited during start-up" >&2
            exit 1
        fi
        if grep -q '"status":"failed"' "$work/health" 2>/dev/null; then
            echo "template build failed: $(cat "$work/health")" >&2
            exit 1
        fi
        if [ $((i % 20)) = 0 ]; then echo "waiting for hutch serve's templates: $(cat "$work/health" 2>/dev/null)" >&2; fi
        sleep 0.5
    done
    echo "code-interpreter-v1 never became ready" >&2
    exit 1
}
