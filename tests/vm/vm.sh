#!/usr/bin/env bash
# A Debian bookworm virtual machine with systemd as PID 1, for the tests that need a real
# service manager (tests/vm/systemd.sh). Debian packages only; run as root.
#
#   tests/vm/vm.sh deps         install qemu-system-x86, mmdebstrap, e2fsprogs
#   tests/vm/vm.sh build        build the guest image once (cached; see VM_CACHE)
#   tests/vm/vm.sh run DIR      boot, run DIR/test.sh under systemd, power off. DIR is the
#                               guest's /mnt/host; results in DIR/out/{exit_code,output.log,
#                               console.log}. Exits with the guest test's exit code (124:
#                               timeout, 125: no result).
#
# Restarts: the guest's disk is a copy-on-write overlay kept for the whole run (DIR/out/disk.
# qcow2; the cached image itself is never written). A guest that writes DIR/out/reboot before
# it restarts is booted again (at most VM_BOOTS times, default 6), and test.sh runs again at
# every boot: it keeps its own progress on its disk. DIR/cmdline, when it exists, is added to
# the kernel command line of every boot; the guest may rewrite it before a restart, as a
# bootloader would choose what to boot (RAUC's rauc.slot=).
#
# Environment: VM_CACHE (default target/vm), VM_TIMEOUT (seconds, default 600), VM_MEM
# (MiB, default 1536), VM_SMP (default 2), VM_ACCEL (kvm or tcg; default: kvm when the CPU
# has VT-x or AMD-V, else tcg, software emulation: slower but everywhere).
#
# The image is a minimal Debian with systemd, udev, dbus and a kernel; the guest mounts DIR
# over virtio-9p and a unit, e2e-runner.service, runs DIR/test.sh once the system is up. The
# image is never written (-snapshot): every run starts from the same state.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${VM_CACHE:-$PWD/target/vm}
MIRROR=${VM_MIRROR:-http://deb.debian.org/debian}
SECURITY=${VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TIMEOUT=${VM_TIMEOUT:-600}
MEM=${VM_MEM:-1536}
SMP=${VM_SMP:-2}
RECIPE=4   # bump when the image recipe below changes
IMAGE=$CACHE/bookworm-$RECIPE
# The update engines the system image tests drive: SWUpdate (its U-Boot environment read and
# written by libubootenv's tools) and RAUC.
PACKAGES=systemd,systemd-sysv,udev,dbus,kmod,linux-image-amd64,procps,iproute2,swupdate,libubootenv-tool,rauc,rauc-service

say() { echo "[vm $(date +%T)] $*" >&2; }

deps() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    command -v mke2fs >/dev/null || need+=(e2fsprogs)
    [ ${#need[@]} -eq 0 ] && return 0
    # A private apt configuration: amd64 only (a foreign architecture's index being synced
    # must not fail the update) and bookworm-backports, for the case below.
    local a=$CACHE/apt
    mkdir -p "$a/lists/partial" "$a/archives/partial"
    local opt="[arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    printf 'deb %s %s %s main\n' \
        "$opt" "$MIRROR" bookworm "$opt" "$MIRROR" bookworm-updates \
        "$opt" "$SECURITY" bookworm-security "$opt" "$MIRROR" bookworm-backports > "$a/sources.list"
    local apt=(apt-get -q -o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=-
        -o Dir::State::lists="$a/lists" -o Dir::Cache::archives="$a/archives"
        -o APT::Sandbox::User=root)
    export DEBIAN_FRONTEND=noninteractive
    say "installing ${need[*]}"
    "${apt[@]}" update -qq
    if ! "${apt[@]}" install -y --no-install-recommends "${need[@]}"; then
        # A machine with qemu-utils from bookworm-backports (the machine image has one)
        # cannot take bookworm's qemu-system 7.2 beside it: take qemu-system from there too.
        say "retrying with qemu-system from bookworm-backports"
        local from=()
        for p in "${need[@]}"; do
            case $p in
                qemu-system-x86) from+=(qemu-system-x86/bookworm-backports
                    qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports
                    seabios/bookworm-backports) ;;
                *) from+=("$p") ;;
            esac
        done
        "${apt[@]}" install -y --no-install-recommends "${from[@]}"
    fi
}

build() {
    [ -f "$IMAGE/ok" ] && return 0
    deps
    local started=$SECONDS work=$CACHE/build.$$
    rm -rf "$work"
    mkdir -p "$work"
    local root=$work/root
    say "building the guest image (mmdebstrap bookworm)"
    nice -n 10 mmdebstrap --quiet --mode=root --variant=minbase --include="$PACKAGES" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='chroot "$1" apt-get clean' \
        bookworm "$root" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY bookworm-security main"
    echo dm-vm > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 dm-vm\n' > "$root/etc/hosts"
    chroot "$root" passwd --delete root >/dev/null
    cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda  /          ext4  rw,errors=remount-ro  0 1
hostshare /mnt/host  9p    trans=virtio,version=9p2000.L,msize=524288,nofail,x-systemd.device-timeout=10s  0 0
FSTAB
    mkdir -p "$root/mnt/host"
    printf '9p\n9pnet_virtio\n' > "$root/etc/modules-load.d/9p.conf"
    cat > "$root/usr/local/sbin/e2e-runner" <<'RUNNER'
#!/bin/sh
# Runs /mnt/host/test.sh, keeps its exit code and output in /mnt/host/out, powers off. The
# output of every boot is kept (a test may restart the guest).
out=/mnt/host/out
mkdir -p "$out"
echo "== boot $(cat /proc/sys/kernel/random/boot_id)" >> "$out/output.log"
sh /mnt/host/test.sh >> "$out/output.log" 2>&1
rc=$?
echo "$rc" > "$out/exit_code.tmp" && mv "$out/exit_code.tmp" "$out/exit_code"
sync
echo "e2e-runner: exit code $rc" > /dev/console
systemctl poweroff --no-block
RUNNER
    chmod 755 "$root/usr/local/sbin/e2e-runner"
    cat > "$root/etc/systemd/system/e2e-runner.service" <<'UNIT'
[Unit]
Description=dm end-to-end test runner (/mnt/host/test.sh)
ConditionKernelCommandLine=e2e.run=1
Requires=mnt-host.mount
After=mnt-host.mount multi-user.target
FailureAction=poweroff-force

[Service]
# exec, not oneshot: the boot completes while the test runs.
Type=exec
ExecStart=/usr/local/sbin/e2e-runner
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/e2e-runner.service \
        "$root/etc/systemd/system/multi-user.target.wants/e2e-runner.service"
    # SWUpdate's own daemon is not what the tests drive (the agent runs swupdate -i).
    for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer systemd-timesyncd.service swupdate.service swupdate.socket \
        swupdate-progress.service; do
        ln -sf /dev/null "$root/etc/systemd/system/$u"
    done
    # A small initrd: the root is ext4 on virtio.
    echo MODULES=list > "$root/etc/initramfs-tools/conf.d/dm-modules"
    printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
    chroot "$root" update-initramfs -u -k all >/dev/null
    cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
    cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$work/initrd.img"
    local used
    used=$(du -sm "$root" | cut -f1)
    truncate -s "$((used + 1024))M" "$work/rootfs.img"
    mke2fs -q -t ext4 -L dm-root -d "$root" "$work/rootfs.img"
    rm -rf "$root"
    touch "$work/ok"
    rm -rf "$IMAGE"
    mv "$work" "$IMAGE"
    say "image built in $((SECONDS - started)) s"
}

accel() {
    local a=${VM_ACCEL:-auto}
    if [ "$a" = auto ]; then
        # /dev/kvm alone is not enough: without VT-x or AMD-V it may be a paravirtual KVM
        # that boots only kernels built for it.
        if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
            a=kvm
        else
            a=tcg
        fi
    fi
    if [ "$a" = kvm ]; then echo "-accel kvm -cpu host"; else echo "-accel tcg,thread=multi -cpu max"; fi
}

run() {
    local share
    share=$(realpath "$1")
    [ -f "$share/test.sh" ] || { echo "vm.sh: no $share/test.sh" >&2; exit 2; }
    build
    rm -rf "$share/out"
    mkdir -p "$share/out"
    local disk=$share/out/disk.qcow2
    qemu-img create -q -f qcow2 -F raw -b "$IMAGE/rootfs.img" "$disk"
    local boots=${VM_BOOTS:-6} boot=0 rc
    while :; do
        boot=$((boot + 1))
        rm -f "$share/out/reboot"
        rc=0
        boot_once "$share" "$disk" "$boot" || rc=$?
        [ "$rc" -eq 124 ] && return 124
        [ -f "$share/out/exit_code" ] && break
        if [ -f "$share/out/reboot" ] && [ "$boot" -lt "$boots" ]; then
            say "the guest restarted itself; booting it again"
            continue
        fi
        tail -n 40 "$share/out/console.log" >&2
        return 125
    done
    rm -f "$disk"
    return "$(cat "$share/out/exit_code")"
}

# One boot of the guest on disk $2 until it powers off or restarts (-no-reboot: qemu exits).
boot_once() {
    local share=$1 disk=$2 n=$3 started=$SECONDS rc=0 extra=""
    [ -f "$share/cmdline" ] && extra=" $(cat "$share/cmdline")"
    say "boot $n ($(accel | cut -d' ' -f2), timeout ${TIMEOUT} s)${extra:+, with${extra}}"
    # shellcheck disable=SC2046
    timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 $(accel) -m "$MEM" -smp "$SMP" \
        -nographic -nodefaults -serial mon:stdio -no-reboot \
        -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
        -drive "file=$disk,format=qcow2,if=virtio" \
        -virtfs "local,path=$share,mount_tag=hostshare,security_model=none,multidevs=remap" \
        -append "console=ttyS0 root=/dev/vda rw panic=-1 e2e.run=1$extra" \
        < /dev/null >> "$share/out/console.log" 2>&1 || rc=$?
    say "the machine stopped after $((SECONDS - started)) s"
    if [ "$rc" -eq 124 ]; then
        tail -n 40 "$share/out/console.log" >&2
    fi
    return "$rc"
}

[ "$(id -u)" = 0 ] || { echo "vm.sh: run as root" >&2; exit 1; }
case ${1:-} in
    deps) deps ;;
    build) build ;;
    run) run "${2:?the folder to share}" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
