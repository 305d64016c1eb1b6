#!/usr/bin/env bash
# The client under a real systemd as PID 1 (tests/vm/vm.sh): installed from a deployment
# folder as dmsvc.service, upgraded over the air by its own management point, software updates
# through apt, system images through SWUpdate and RAUC with the guest restarted between each
# install and its confirmation, then uninstalled over the air. Setup stops dmsvc.service while
# it works; it must not be stopped with it.
# Uses the host build (target/debug); prints the guest's output; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target
share=$(mktemp -d "$PWD/target/vm-share.XXXXXX")
mkdir -p "$share/bin"
for p in dmpack dmmp dm; do
    strip -o "$share/bin/$p" "target/debug/$p"
done
cp tests/vm/guest-ota.sh "$share/test.sh"
cp tests/vm/guest-lib.sh tests/vm/guest-images.sh "$share/"
# The system images, made here with the engines' own tools and signed with a key made here.
img=tests/peers/images.sh
$img key "$share/images/keys"
head -c 100000 /dev/urandom > "$share/images/payload-2"
head -c 100000 /dev/urandom > "$share/images/payload-3"
$img swu "$share/images/system-2.0.0.swu" 2.0.0 /var/lib/dm-e2e/slot-b.img \
    "$share/images/payload-2" "$share/images/keys"
$img swu "$share/images/system-3.0.0.swu" 3.0.0 /var/lib/dm-e2e/slot-b.img \
    "$share/images/payload-3" "$share/images/keys"
$img rauc "$share/images/rootfs-2.0.0.raucb" 2.0.0 dm-vm "$share/images/payload-2" \
    "$share/images/keys"
# The bootloader's first choice: RAUC's slot A (the guest rewrites it before a restart).
echo "rauc.slot=A" > "$share/cmdline"
# The software update tests' repository, made here with Debian's tools (the guest is minimal):
# packages at their installed versions in debs/, their updates in repo/, signed with key/.
apt=tests/peers/apt-repo.sh
$apt key "$share/key"
mkdir -p "$share/debs"
$apt deb "$share/debs" dmtest-tool 1.0 amd64
$apt deb "$share/debs" dmtest-fail 1.0 amd64
$apt deb "$share/debs" dmtest-slow 1.0 amd64
$apt deb "$share/debs" dmtest-extra 1.0 amd64
$apt deb "$share/debs" dmtest-bad 1.0 amd64
$apt deb "$share/debs" dmtest-lock 1.0 amd64
$apt deb "$share/debs" dmtest-full 1.0 amd64
# Installed by hand while an update deployment runs: its preinst holds dpkg's lock.
$apt deb "$share/hold" dmtest-hold 1.0 amd64 '' 'sleep 20'
$apt deb "$share/repo" dmtest-tool 1.1 amd64 'touch /run/reboot-required'
$apt deb "$share/repo" dmtest-fail 2.0 amd64 'echo "dmtest-fail: this postinst fails" >&2; exit 1'
$apt deb "$share/repo" dmtest-slow 2.0 amd64 \
    'if [ ! -e /var/tmp/dmtest-slow-once ]; then touch /var/tmp/dmtest-slow-once; sleep 600; fi'
$apt deb "$share/repo" dmtest-extra 1.1 amd64
$apt deb "$share/repo" dmtest-bad 1.1 amd64
$apt deb "$share/repo" dmtest-lock 1.1 amd64
$apt deb "$share/repo" dmtest-full 1.1 amd64
$apt index "$share/repo" stable amd64 "$share/key"
rc=0
tests/vm/vm.sh run "$share" || rc=$?
cat "$share/out/output.log" 2>/dev/null || true
if [ "$rc" -ne 0 ]; then
    echo "systemd.sh: the guest test failed (exit $rc); its files are in $share" >&2
    exit "$rc"
fi
rm -rf "$share"
