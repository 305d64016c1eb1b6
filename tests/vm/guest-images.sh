#!/bin/sh
# System images in the virtual machine (run by tests/vm/guest-ota.sh, at every boot once it
# has run): the device's own SWUpdate and RAUC install images the management point deploys,
# the agent restarts the guest (RebootCommand) and, after the restart, reports what the engine
# says: SWUpdate's update state in its U-Boot environment file (libubootenv), RAUC's booted
# slot. The "bootloader" is /usr/local/sbin/dm-e2e-reboot: before the restart it picks the
# slot RAUC made primary (rauc.slot= on the next kernel command line, through tests/vm/vm.sh)
# and, when the test asks for a fall-back, marks SWUpdate's update failed. Then the uninstall.
set -eu
. /mnt/host/guest-lib.sh
I=/mnt/host/images
S=/var/lib/dm-e2e
mkdir -p "$S"
phase=$(cat "$S/phase" 2>/dev/null || echo setup)
say "system images: phase $phase (boot $(cat /proc/sys/kernel/random/boot_id | cut -c1-8))"

# After a restart: the management point again, on the port the agent knows.
serve_again() {
    port=$(sed -n 's|^https://127.0.0.1:\([0-9]*\).*|\1|p' "$W/url")
    sed -i "s|^listen = .*|listen = \"127.0.0.1:$port\"|" mp/dmmp.toml
    : > mp/serve.out
    "$B/dmmp" --config mp/dmmp.toml serve > mp/serve.out 2>> mp/serve.log &
    wait_for 30 'grep -q listening mp/serve.out'
}
# Advertises the raw image $2 as package $1 version $3 (advertisement $1), the agent installs
# it and restarts the guest once it reported it pending reboot; the next boot goes on at phase
# $4, written before: the restart may come at any moment.
install_and_restart() {
    echo "$4" > "$S/phase"
    touch "$W/restarted"
    sync
    dmmp package add --raw "$2" --name "$1" --package-version "$3" >/dev/null
    dmmp program add --package "$1" --name "flash-$1" --command install >/dev/null
    dmmp advertise --name "$1" --program "flash-$1" --collection all --mandatory >/dev/null
    wait_for 300 'dmmp --json advertisement status "$1" | grep -q "pending reboot"'
    say "$1: $(dmmp advertisement status "$1" | tail -1)"
    wait_for 300 false
}
status_is() { dmmp --json advertisement status "$1" | grep -q "\"$2\": 1"; }

case $phase in
setup)
    say "SWUpdate: its configuration, public key, hardware revision and U-Boot environment file"
    mkdir -p /etc/dm-e2e
    cp "$I/keys/signer.pem" /etc/dm-e2e/image-signer.pem
    printf 'globals :\n{\n\tbootloader = "uboot";\n\tpublic-key-file = "/etc/dm-e2e/image-signer.pem";\n};\n' \
        > /etc/swupdate.cfg
    echo "dmtest 1.0" > /etc/hwrevision
    echo "$S/uboot.env 0x0 0x4000" > /etc/fw_env.config
    echo "ustate=0" > /etc/u-boot-initial-env
    dd if=/dev/zero of="$S/uboot.env" bs=1k count=16 2>/dev/null
    fw_setenv ustate 0
    : > "$S/slot-b.img"
    say "RAUC: two slots that are files, its keyring, a bootloader backend keeping its state in $S/boot"
    mkdir -p /etc/rauc "$S/boot"
    cp "$I/keys/signer.pem" /etc/rauc/keyring.pem
    truncate -s 1M "$S/rauc-a.img" "$S/rauc-b.img"
    cat > /usr/local/sbin/dm-e2e-bootloader <<'SH'
#!/bin/sh
d=/var/lib/dm-e2e/boot
case "$1" in
    get-primary) cat "$d/primary" 2>/dev/null || echo A ;;
    set-primary) echo "$2" > "$d/primary"; echo good > "$d/state.$2" ;;
    get-state) cat "$d/state.$2" 2>/dev/null || echo good ;;
    set-state) echo "$3" > "$d/state.$2" ;;
    *) exit 1 ;;
esac
SH
    cat > /etc/rauc/system.conf <<CONF
[system]
compatible=dm-vm
bootloader=custom
data-directory=$S/rauc
[handlers]
bootloader-custom-backend=/usr/local/sbin/dm-e2e-bootloader
[keyring]
path=/etc/rauc/keyring.pem
[slot.rootfs.0]
device=$S/rauc-a.img
type=raw
bootname=A
[slot.rootfs.1]
device=$S/rauc-b.img
type=raw
bootname=B
CONF
    cat > /usr/local/sbin/dm-e2e-reboot <<'SH'
#!/bin/sh
# The agent's RebootCommand here: decides as the bootloader would, then restarts the guest.
S=/var/lib/dm-e2e
if [ -e "$S/fallback" ]; then
    fw_setenv ustate 3
    rm -f "$S/fallback"
fi
echo "rauc.slot=$(cat "$S/boot/primary" 2>/dev/null || echo A)" > /mnt/host/cmdline
touch /mnt/host/out/reboot
sync
exec systemctl reboot
SH
    chmod 755 /usr/local/sbin/dm-e2e-bootloader /usr/local/sbin/dm-e2e-reboot
    rauc status >/dev/null || fail "RAUC does not start: $(rauc status 2>&1)"

    say "a SWUpdate image: installed, then the agent restarts the device"
    install_and_restart system "$I/system-2.0.0.swu" 2.0.0 swu-restarted
    ;;
swu-restarted)
    serve_again
    wait_for 180 'status_is system finished'
    say "system: $(dmmp advertisement status system | tail -1)"
    [ "$(fw_printenv -n ustate)" = 0 ] || fail "SWUpdate's update state is $(fw_printenv -n ustate), not ok (0)"
    cmp -s "$S/slot-b.img" "$I/payload-2" || fail "SWUpdate did not write the slot"
    dmmp --json device show vm-1 | grep -q "update state: installed); SWUpdate now marks it good" \
        || fail "no confirmation in the history"
    dmmp --json device show vm-1 | grep -q "the system runs version" || fail "the report does not name the running system"

    say "a RAUC bundle (verity): installed into slot B, then the agent restarts the device"
    install_and_restart rootfs "$I/rootfs-2.0.0.raucb" 2.0.0 rauc-restarted
    ;;
rauc-restarted)
    serve_again
    grep -q "rauc.slot=B" /proc/cmdline || fail "the bootloader did not boot slot B: $(cat /proc/cmdline)"
    wait_for 180 'status_is rootfs finished'
    say "rootfs: $(dmmp advertisement status rootfs | tail -1)"
    rauc status --output-format=json | grep -q '"booted":"B"' || fail "RAUC did not boot B: $(rauc status)"
    [ "$(cat "$S/boot/state.B")" = good ] || fail "slot B is not marked good"
    head -c 100000 "$S/rauc-b.img" | cmp -s - "$I/payload-2" || fail "RAUC did not write slot B"

    say "a SWUpdate image whose new system does not take: the bootloader falls back"
    touch "$S/fallback"
    install_and_restart system3 "$I/system-3.0.0.swu" 3.0.0 fallback-restarted
    ;;
fallback-restarted)
    serve_again
    wait_for 180 'status_is system3 error'
    say "system3: $(dmmp advertisement status system3 | tail -1)"
    dmmp --json device show vm-1 | grep -q "0x8004023F" || fail "the fall-back is not DM_E_IMAGE_FELL_BACK"
    dmmp --json advertisement status system3 | grep -q "update state is 3 (failed)" \
        || fail "the report does not say what SWUpdate says"
    echo done > "$S/phase"
    say "an uninstall over the air"
    client_folder v3.signed 1.1.0.1 Uninstall
    dmmp package add --source v3.signed --roots pki/root-ca.pem >/dev/null
    dmmp program add --package dm-client@1.1.0.1 --name remove >/dev/null
    dmmp advertise --name rm --program remove --collection all --mandatory >/dev/null
    wait_for 240 '[ ! -e /opt/dm/current ] && ! systemctl is-active --quiet dmsvc.service'
    wait_for 60 'grep -q "uninstall" /var/log/dm/DMClientSetup*.log && ! systemctl list-units --all --no-legend "dm-setup-*" | grep -q running'
    last=$(ls -t /var/log/dm/DMClientSetup*.log | head -1)
    grep -q "DMClientSetup finished" "$last" || fail "the uninstalling setup did not finish ($last)"
    systemctl is-enabled --quiet dmsvc.service 2>/dev/null && fail "dmsvc.service is still enabled"
    say "uninstalled; setup finished: $(grep 'DMClientSetup finished' "$last" | tail -1)"
    echo PASS
    ;;
*) fail "unknown phase $phase" ;;
esac
