#!/usr/bin/env bash
# Prepares a fresh machine (rustup's stable toolchain, gcc, python3 and git) for building and
# testing everything: the ARM cross toolchain and the real peers the tests run against.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -E "$@"; fi; }

as_root targets/setup-toolchain.sh
as_root scripts/setup-peers.sh
log "machine ready"
