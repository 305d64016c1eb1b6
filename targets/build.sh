#!/usr/bin/env bash
# Builds the client's one device program, dm (which is dminstaller, dmclientsetup, dmsvc and
# dmcertenroll by the name it is started with), for every ARM target as a stripped release
# build, and prints its size. Output:
#   target/cross/<triple>/device/dm, and a link to it for each program name
# (profile `device` of Cargo.toml: release, optimized for size)
# Usage: targets/build.sh [triple...]   (default: every target in targets/cross-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/cross-env.sh
[ "$#" -gt 0 ] && DM_TARGETS=("$@")

if [ ! -x "$RUSTC" ]; then
    echo "build.sh: $RUSTC is missing; run targets/setup-toolchain.sh first" >&2
    exit 1
fi

# No unwind tables in the device program (.eh_frame and its search table .eh_frame_hdr, 330 KB
# of aarch64's 3.08 MB): it never unwinds (panic = "abort"), so they would serve only the
# backtrace a panic could print; a panic still prints its message and location. Here, not in
# .cargo/config.toml: the tests built for ARM unwind when one fails. (32-bit ARM unwinds with
# its own tables, .ARM.exidx and .ARM.extab, 36 KB, which stay.)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/targets/discard-unwind-tables.ld"

for triple in "${DM_TARGETS[@]}"; do
    echo "== $triple ($(dm_platform_of "$triple"))" >&2
    cargo build --profile device --locked --target "$triple" -p dm-device
    release="$CARGO_TARGET_DIR/$triple/device"
    # Cargo leaves an up-to-date binary's time alone; the tests compare it with the host
    # build's to catch ARM binaries built from older sources, and it is current now.
    touch "$release/dm"
    printf '%-34s %-14s %9d bytes  %s\n' "$triple" dm "$(stat -c %s "$release/dm")" \
        "$(file -b "$release/dm" | cut -d, -f1-2)"
    # Each program is the one program by its name, as on a device.
    for bin in "${DM_DEVICE_BINS[@]}"; do
        ln -sfn dm "$release/$bin"
    done
done
