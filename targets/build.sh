#!/usr/bin/env bash
# Builds the device binaries (dminstaller, dmclientsetup, dmsvc, dmcertenroll) for every ARM
# target as stripped release builds and prints their sizes. Output:
#   target/cross/<triple>/release/<binary>
# Usage: targets/build.sh [triple...]   (default: every target in targets/cross-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/cross-env.sh
[ "$#" -gt 0 ] && DM_TARGETS=("$@")

if [ ! -x "$RUSTC" ]; then
    echo "build.sh: $RUSTC is missing; run targets/setup-toolchain.sh first" >&2
    exit 1
fi

for triple in "${DM_TARGETS[@]}"; do
    echo "== $triple ($(dm_platform_of "$triple"))" >&2
    cargo build --release --locked --target "$triple" -p dm-installer -p dm-client
    for bin in "${DM_DEVICE_BINS[@]}"; do
        path="$CARGO_TARGET_DIR/$triple/release/$bin"
        # Cargo leaves an up-to-date binary's time alone; the tests compare it with the host
        # build's to catch ARM binaries built from older sources, and it is current now.
        touch "$path"
        printf '%-34s %-14s %9d bytes  %s\n' "$triple" "$bin" "$(stat -c %s "$path")" \
            "$(file -b "$path" | cut -d, -f1-2)"
    done
done
