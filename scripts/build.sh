#!/usr/bin/env bash
# Builds the release binaries (hutch and hutch-agent) into target/release.
#
# The agent is linked statically (glibc's static-pie): it runs inside every sandbox,
# whatever C library the template has (or none), and starts without the dynamic loader,
# which every create paid (docs/performance.md). It is built for the host's target triple
# named explicitly, so that its flags reach neither build scripts nor the other binaries,
# and copied next to `hutch`, where `hutch serve` looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p hutch >&2
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
FLAGS_VAR="CARGO_TARGET_$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
env "$FLAGS_VAR=-C target-feature=+crt-static" \
    cargo build --release --locked -p hutch-agent --target "$TRIPLE" >&2
install -m 0755 "target/$TRIPLE/release/hutch-agent" target/release/hutch-agent.new
mv -f target/release/hutch-agent.new target/release/hutch-agent
