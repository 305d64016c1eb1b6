#!/usr/bin/env bash
# Installs the ARM cross toolchain exactly as DESIGN.md §5 describes, idempotently:
#   - Debian's rustc-web 1.85 (its own standard library for the host),
#   - the aarch64 and armv7 standard libraries of the same version, downloaded and extracted
#     (multiarch dependency resolution breaks on version skew between mirrors, so no apt install),
#   - the GNU cross linkers and qemu-user to run the results.
# It also installs the real peers the tests run against (see `targets/setup-peers.sh`).
# Safe to run twice; survives one architecture's package index failing to update.
set -euo pipefail

RUST_DEB_VERSION="1.85.0+dfsg3-1~deb12u3"
TARGETS=("arm64:aarch64-unknown-linux-gnu" "armhf:armv7-unknown-linux-gnueabihf")
RUSTLIB=/usr/lib/rustlib

log() { printf 'setup-toolchain: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -E "$0" "$@"; fi
    log "must run as root (apt-get, dpkg); re-run with sudo"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

have_all() {
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --version 2>/dev/null | grep -q '^rustc 1\.85\.' || return 1
    for pair in "${TARGETS[@]}"; do
        [ -d "$RUSTLIB/${pair#*:}/lib" ] || return 1
    done
    for tool in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm; do
        command -v "$tool" >/dev/null 2>&1 || return 1
    done
    return 0
}

if have_all; then
    log "cross toolchain already installed: $(/usr/bin/rustc --version)"
    exit 0
fi

# Foreign architectures first, so a single update fetches every index we need. A failing index
# (one architecture out of sync on the mirror) must not stop us: the host index is what apt-get
# install needs, and the ARM packages are fetched with `apt-get download`, which only needs its
# own index.
for pair in "${TARGETS[@]}"; do
    dpkg --add-architecture "${pair%%:*}"
done
if ! apt-get update -q >/tmp/dm-apt-update.log 2>&1; then
    log "apt-get update reported errors (continuing; see /tmp/dm-apt-update.log):"
    grep -E '^(E|W):' /tmp/dm-apt-update.log >&2 || true
fi

apt-get install -y -q --no-install-recommends \
    "rustc-web=$RUST_DEB_VERSION" \
    "libstd-rust-web-dev=$RUST_DEB_VERSION" \
    "libstd-rust-web-1.85=$RUST_DEB_VERSION" \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
    qemu-user file binutils

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for pair in "${TARGETS[@]}"; do
    arch=${pair%%:*}
    triple=${pair#*:}
    if [ -d "$RUSTLIB/$triple/lib" ]; then
        log "$triple standard library already present"
        continue
    fi
    log "fetching libstd-rust-web-dev:$arch=$RUST_DEB_VERSION"
    (cd "$work" && apt-get download -q "libstd-rust-web-dev:$arch=$RUST_DEB_VERSION")
    deb=$(ls "$work"/libstd-rust-web-dev_*_"$arch".deb)
    dpkg -x "$deb" "$work/$arch"
    src="$work/$arch/usr/lib/rustlib/$triple"
    if [ ! -d "$src" ]; then
        log "package $deb has no usr/lib/rustlib/$triple: cannot install the $triple standard library"
        exit 1
    fi
    # Copy to a sibling then rename, so a half-copied library is never mistaken for a whole one.
    rm -rf "$RUSTLIB/.$triple.partial"
    cp -a "$src" "$RUSTLIB/.$triple.partial"
    mv "$RUSTLIB/.$triple.partial" "$RUSTLIB/$triple"
    log "installed $RUSTLIB/$triple"
done

if ! have_all; then
    log "toolchain still incomplete after installation; check the messages above"
    exit 1
fi
log "cross toolchain ready: $(/usr/bin/rustc --version)"
