#!/usr/bin/env bash
# Builds the release binaries (hutch and hutch-agent) into target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p hutch -p hutch-agent >&2
