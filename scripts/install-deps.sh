#!/usr/bin/env bash
# Installs what hutch needs on a Debian/Ubuntu host: the tools the runtime calls (ip, nft,
# mkfs.ext4), debootstrap for the default templates, Python for the tests, and a Rust
# toolchain when none is present. Idempotent and quiet when everything is there.
set -euo pipefail

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v curl >/dev/null || need+=(curl)
# The egress tests sign their fake hosts' certificates with it.
command -v openssl >/dev/null || need+=(openssl)
command -v gcc >/dev/null || need+=(build-essential)
# libFuzzer (the fuzz targets, scripts/fuzz.sh) is C++.
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)

if [ ${#need[@]} -gt 0 ]; then
    echo "hutch: installing Debian packages: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        :
    else
        echo "hutch: installing a Rust toolchain with rustup" >&2
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    fi
fi
