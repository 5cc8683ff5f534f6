#!/usr/bin/env bash
# The one command to run hutch on this machine: installs what is missing, builds, and runs
# `hutch serve` with the embedded defaults (the first start builds the default templates,
# with a progress bar). Extra arguments go to `hutch serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Root runs it directly; anyone else is asked for root through sudo, when there is one.
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then exec sudo -E -- "$0" "$@"; fi
    echo "hutch serve needs root (namespaces, cgroups, mounts, network): run this as root" >&2
    exit 1
fi
scripts/install-deps.sh
scripts/build.sh
exec target/release/hutch serve "$@"
