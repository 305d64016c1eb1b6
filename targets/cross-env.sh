# Sourced by the targets/ scripts: the compiler and target folder for ARM cross builds.
# Debian's rustc 1.85 (targets/setup-toolchain.sh) has the ARM standard libraries that rustup
# cannot fetch here. It gets its own target folder so host builds with rustup's compiler and
# cross builds never invalidate each other's artifacts.
DM_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
DM_DEVICE_BINS=(dminstaller dmclientsetup dmsvc dmcertenroll)
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${DM_CROSS_TARGET_DIR:-$PWD/target/cross}"

# The platform name a target's binaries carry in a deployment folder.
dm_platform_of() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo linux-aarch64 ;;
        armv7-unknown-linux-gnueabihf) echo linux-armv7 ;;
        x86_64-unknown-linux-gnu) echo linux-x86_64 ;;
        *) echo "unknown target $1" >&2; return 1 ;;
    esac
}

# The qemu command line that runs a target's binaries.
dm_runner_of() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armv7-unknown-linux-gnueabihf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
        *) echo "" ;;
    esac
}
