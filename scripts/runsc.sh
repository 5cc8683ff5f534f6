#!/usr/bin/env bash
# Prints the path of a gVisor `runsc` for `hutch serve --runtime gvisor`, fetching it first
# when the cache has none:
#
#   hutch serve --runtime gvisor --runsc "$(scripts/runsc.sh)"
#
# Which build, and why (docs/security.md, "gVisor"): Debian 12's own package (2022-12-19)
# fails `statx` with AT_NO_AUTOMOUNT, which coreutils passes (every `ls` fails), and ignores
# the user-namespace mappings hutch's id ranges need; the 2024-07-29 builds of Debian 13 and
# unstable are compiled with a Go whose runtime that gVisor release does not know, and their
# sentry panics on its first blocking file read. bookworm-backports' build of 2024-07-29
# (Go 1.22) runs everything hutch does. It is fetched with apt from Debian's archive (the
# Release signature and the package's hash checked, as for any install) into a private apt
# state below the cache and unpacked there: nothing is installed on the host, no apt source
# is added to it. Set HUTCH_RUNSC to use another runsc instead.
set -euo pipefail
if [ -n "${HUTCH_RUNSC:-}" ]; then
    echo "$HUTCH_RUNSC"
    exit 0
fi
CACHE=${HUTCH_TEST_CACHE:-/var/cache/hutch-test}
SUITE=bookworm-backports
VERSION=0.0~20240729.0-4~bpo12+2
DIR="$CACHE/runsc-${VERSION//[~+]/_}"
if [ -x "$DIR/runsc" ] && "$DIR/runsc" --version >/dev/null 2>&1; then
    echo "$DIR/runsc"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "fetching runsc needs root (apt); run it as root or set HUTCH_RUNSC" >&2
    exit 1
fi
MIRROR=${HUTCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
APT="$CACHE/runsc-apt"
rm -rf "$APT" "$DIR.tmp"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DIR.tmp"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -f "$KEYRING" ]; then
    echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$APT/sources.list"
else
    echo "deb $MIRROR $SUITE main" > "$APT/sources.list"
fi
OPTS=(-q -o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
echo "fetching runsc $VERSION from Debian's $SUITE (apt, signature checked)" >&2
apt-get "${OPTS[@]}" update >&2
(cd "$DIR.tmp" && apt-get "${OPTS[@]}" download "runsc=$VERSION" >&2)
dpkg-deb -x "$DIR.tmp"/runsc_*.deb "$DIR.tmp/x"
install -m 0755 "$DIR.tmp/x/usr/bin/runsc" "$DIR.tmp/runsc"
"$DIR.tmp/runsc" --version >&2
rm -rf "$DIR.tmp/x" "$DIR.tmp"/*.deb "$APT" "$DIR"
mv "$DIR.tmp" "$DIR"
echo "$DIR/runsc"
