#!/usr/bin/env bash
# Installs the real programs the tests run against on loopback (DESIGN.md §8). Servers are
# installed but never started here: each test starts and stops its own on 127.0.0.1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# command-to-check:debian-package
PEERS=(
    "unshare:util-linux"
    "file:file"
    "curl:curl"
    "openssl:openssl"
    "swupdate:swupdate"
    "nginx:nginx"
)

missing=()
for pair in "${PEERS[@]}"; do
    cmd=${pair%%:*}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-peers: all peers present" >&2
    exit 0
fi
echo "setup-peers: installing ${missing[*]}" >&2
apt-get update -q >/dev/null 2>&1 || echo "setup-peers: apt-get update reported errors; trying anyway" >&2
apt-get install -y -q --no-install-recommends "${missing[@]}"
