#!/usr/bin/env bash
# Builds the shared library's test suite for aarch64 and runs it under qemu-aarch64 (the runner
# comes from .cargo/config.toml). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/cross-env.sh
triple=${DM_QEMU_TARGET:-aarch64-unknown-linux-gnu}
# Property tests are emulated instruction by instruction: fewer cases keep this under a minute.
export PROPTEST_CASES=${PROPTEST_CASES:-64}
# Doc tests are left out: they need rustdoc, which Debian ships separately from rustc-web.
cargo test --locked --target "$triple" -p dm-shared --lib --tests "$@"
