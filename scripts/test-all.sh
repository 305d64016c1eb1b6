#!/usr/bin/env bash
# Sets up this machine and runs every check and test the project has:
#   formatting, clippy (-D warnings), docs (-D warnings), the host test suites (unit, property,
#   end-to-end against real peers on loopback), the ARM release builds of the device programs,
#   the shared library's tests built for aarch64 and run under qemu-aarch64, and the client
#   under a real systemd in a virtual machine (tests/vm).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() {
    printf '\n==> [%4ds] %s\n' "$(($(date +%s) - started))" "$*" >&2
}

step "machine setup (cross toolchain, peers)"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "imports point one way (no circle between files of a crate)"
python3 scripts/check-circles.py

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "host build"
# The end-to-end tests run the real binaries, so build them all first.
cargo build --workspace --bins --locked

step "ARM release builds"
# After the host build: the tests refuse ARM binaries older than the host ones (stale code).
targets/build.sh

step "fast tier: unit and in-process tests"
# DM_REQUIRE_POSTGRES makes a missing PostgreSQL a failure of the store suite, not a skip.
DM_REQUIRE_POSTGRES=1 cargo test --workspace --exclude dm-tests --locked

step "end-to-end tier: real binaries and peers"
# DM_REQUIRE_CROSS makes a missing ARM binary or qemu a failure instead of a skip.
DM_REQUIRE_CROSS=1 DM_REQUIRE_POSTGRES=1 cargo test -p dm-tests --locked

step "shared tests for aarch64 under qemu"
targets/test-qemu.sh

step "systemd VM: the client as dmsvc.service, upgraded and uninstalled over the air"
# A Debian guest with systemd as PID 1 (built once into target/vm, about a minute).
tests/vm/systemd.sh

step "all checks passed in $(($(date +%s) - started))s"
