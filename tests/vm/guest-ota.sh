#!/bin/sh
# Runs inside the virtual machine (tests/vm/systemd.sh), as root, with systemd as PID 1, at
# every boot: the client installed as dmsvc.service, upgraded over the air, software updates
# through apt; then the system images (tests/vm/guest-images.sh), whose installs restart the
# guest, and the uninstall. After a restart it goes on where guest-images.sh left off.
set -eu
. /mnt/host/guest-lib.sh
if [ -e "$W/restarted" ]; then
    exec sh /mnt/host/guest-images.sh
fi

say "systemd $(systemctl --version | head -1 | cut -d' ' -f2) is PID 1: $(cat /proc/1/comm)"
[ "$(cat /proc/1/comm)" = systemd ] || fail "systemd is not PID 1"
systemctl is-system-running --wait >/dev/null || true

say "PKI and the management point on loopback"
"$B/dmpack" dev-pki --out pki >/dev/null
"$B/dmmp" init --dir mp --listen 127.0.0.1:0 --poll-sleep 2 \
    --tls-cert pki/server.pem --tls-key pki/server.key >/dev/null
"$B/dmmp" --config mp/dmmp.toml serve > mp/serve.out 2> mp/serve.log &
wait_for 30 'grep -q listening mp/serve.out'
sed -n 's/^listening //p' mp/serve.out > url
dmmp device add --id vm-1 > token

say "client 1.0.0.0 from a signed folder of four programs (as before the client was one), as dmsvc.service"
mkdir -p bins four /etc/dm/certs/root /etc/dm/certs/tls-root
cp "$B/dm" bins/
for p in dminstaller dmclientsetup dmsvc dmcertenroll; do cp "$B/dm" "four/$p"; done
cp pki/root-ca.pem /etc/dm/certs/root/
cp pki/root-ca.pem /etc/dm/certs/tls-root/
mkdir -p v1
settings v1/DMCommonInstaller.ini Install
"$B/dmpack" folder --out v1.signed --client-version 1.0.0.0 --platform-bin linux-x86_64=four \
    --settings v1/DMCommonInstaller.ini --key pki/publisher.key --cert pki/publisher.pem >/dev/null
v1.signed/dminstaller_linux-x86_64 --device-root / || fail "the install failed"
systemctl is-active --quiet dmsvc.service || fail "dmsvc.service is not active"
grep -q '^Delegate=yes' /etc/systemd/system/dmsvc.service || fail "the unit does not delegate"
wait_for 60 'dmmp --json device show vm-1 | grep -q "\"client_version\": \"1.0.0.0\""'

say "an upgrade over the air to 1.1.0.0, the one program dm"
client_folder v2.signed 1.1.0.0 Install
dmmp package add --source v2.signed --roots pki/root-ca.pem >/dev/null
dmmp program add --package dm-client@1.1.0.0 --name upgrade >/dev/null
dmmp collection add --name all --rule all >/dev/null
dmmp advertise --name up --program upgrade --collection all --mandatory >/dev/null
wait_for 240 'dmmp --json advertisement status up | grep -q "\"finished\": 1"'
[ "$(readlink /opt/dm/current)" = versions/1.1.0.0 ] || fail "1.1.0.0 is not the active version"
[ "$(readlink /opt/dm/current/dmsvc)" = dm ] || fail "dmsvc is not a link to the one program dm"
systemctl is-active --quiet dmsvc.service || fail "dmsvc.service is not active after the upgrade"
grep -q "ran as unit dm-setup-\|setup (unit dm-setup-" /var/log/dm/DMSvc*.log \
    || fail "setup did not run in a unit of its own"
grep -qi "interrupted setup" /var/log/dm/DMSvc*.log && fail "setup was interrupted"
say "upgraded: $(dmmp advertisement status up | tail -1)"

say "software updates through apt: a real dpkg and apt as the system's package manager"
cp /mnt/host/key/keyring.gpg /etc/dm/fleet-keyring.gpg
dpkg -i /mnt/host/debs/pool/main/d/*/*.deb >/dev/null || fail "the packages at their old versions did not install"
version_of() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null; }
status_of() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null; }
dmmp update import --name fleet --source /mnt/host/repo --suite stable --keyring /mnt/host/key/keyring.gpg \
    || fail "the import failed"
wait_for 120 'dmmp --json update compliance --device vm-1 | grep -q "new updates available"'
dmmp update compliance --device vm-1
dmmp update approve dmtest-tool dmtest-fail dmtest-slow dmtest-extra dmtest-bad dmtest-lock dmtest-full >/dev/null
dmmp update deploy --name wave1 --collection all --update dmtest-tool --update dmtest-fail >/dev/null
wait_for 240 '[ "$(version_of dmtest-tool)" = 1.1 ] && dmmp --json update compliance --device vm-1 | grep -q "\"failed\""'
wait_for 60 'dmmp --json update compliance --device vm-1 | grep -q "pending_reboot"'
dmmp update compliance --device vm-1
dmmp --json update compliance --device vm-1 | grep -q 'post-installation script' \
    || fail "the failed update does not carry dpkg's reason"
grep -q "update dmtest-tool 1.1 installed; the device must restart" /var/log/dm/DMSvc*.log \
    || fail "the agent did not log the install"

say "dpkg killed in the middle of an install, repaired by the next run"
dmmp update deploy --name wave2 --collection all --update dmtest-slow >/dev/null
wait_for 120 '[ -e /var/tmp/dmtest-slow-once ]'
sleep 1
pkill -9 -x dpkg || true
pkill -9 -f dmtest-slow.postinst || true
wait_for 60 'status_of dmtest-slow | grep -q half-configured'
say "dmtest-slow is $(status_of dmtest-slow)"
say "an update deployment released by a rollout: held from the device until its group is, counted once apt installed it"
# dmtest-tool asked for a restart above, which would leave every later update pending the
# restart (a rollout counts those installing); the restarts are guest-images.sh's.
rm -f /run/reboot-required /run/reboot-required.pkgs
dmmp update deploy --name wave3 --collection all --update dmtest-extra --held >/dev/null
dmmp rollout create --name wave3 --update-deployment wave3 --groups 100% \
    --success-threshold 100 --error-threshold 100 --soak 2 >/dev/null
sleep 8
grep -q "update deployment wave3" /var/log/dm/DMSvc*.log \
    && fail "a held update deployment reached the device before its rollout started"
status_of dmtest-slow | grep -q half-configured || fail "apt ran before the rollout started"
dmmp rollout start wave3 >/dev/null
wait_for 240 '[ "$(version_of dmtest-extra)" = 1.1 ]'
( wait_for 60 'dmmp --json rollout show wave3 | grep -q "\"finished\""' ) || {
    dmmp rollout show wave3; dmmp device show vm-1; grep -i rollout mp/serve.log | tail -20
    fail "the rollout of wave3 did not finish"
}
dmmp rollout show wave3
grep -q "update deployment wave3 is due: installing dmtest-extra 1.1" /var/log/dm/DMSvc*.log \
    || fail "the agent did not log the due deployment"
[ "$(status_of dmtest-slow)" = "install ok installed" ] || fail "dmtest-slow was not repaired: $(status_of dmtest-slow)"
grep -q "dpkg was interrupted" /var/log/dm/DMSvc*.log || fail "the repair was not logged"
wait_for 60 'dmmp --json update compliance --device vm-1 | grep -q "\"installed\""'

say "a package the management point serves changed on its disk: the device refuses it"
deb=$(ls "$W"/mp/content/updates/fleet/pool/main/d/dmtest-bad/*.deb)
printf 'X' | dd of="$deb" bs=1 seek=200 conv=notrunc 2>/dev/null
dmmp update deploy --name wave4 --collection all --update dmtest-bad --held >/dev/null
dmmp rollout create --name wave4 --update-deployment wave4 --groups 100% \
    --success-threshold 100 --error-threshold 100 --soak 0 >/dev/null
dmmp rollout start wave4 >/dev/null
wait_for 120 'dmmp update compliance --device vm-1 | grep dmtest-bad | grep -q failed'
[ "$(version_of dmtest-bad)" = 1.0 ] || fail "the changed package was installed"
dmmp update compliance --device vm-1 | grep dmtest-bad | grep -q "SHA-256" || fail "the refusal does not name the hash"
wait_for 60 'dmmp --json rollout show wave4 | grep -q "\"paused\""'
dmmp rollout show wave4 | grep -q "vm-1 (update dmtest-bad .* failed: .*SHA-256" \
    || fail "the rollout does not name the device and apt's reason: $(dmmp rollout show wave4)"

say "dpkg's lock held by another program: waited for, then reported"
dpkg -i /mnt/host/hold/pool/main/d/dmtest-hold/*.deb > "$W/hold.log" 2>&1 &
holder=$!
wait_for 30 'pgrep -f dmtest-hold >/dev/null'
dmmp update deploy --name wave5 --collection all --update dmtest-lock >/dev/null
wait_for 120 'dmmp update compliance --device vm-1 | grep dmtest-lock | grep -q failed'
dmmp update compliance --device vm-1 | grep dmtest-lock | grep -q "Unable to acquire the dpkg frontend lock" \
    || fail "the refusal does not quote apt on the lock"
[ "$(version_of dmtest-lock)" = 1.0 ] || fail "dmtest-lock was installed under a held lock"
grep -q "0x80040236" /var/log/dm/DMSvc*.log || fail "the held lock was not reported as DM_E_DPKG_LOCKED"
wait "$holder" || true

say "a full disk where the agent stages updates: the update fails with the reason, nothing else changes"
pool=/var/lib/dm/updates/apt/repo/fleet/pool/main/d/dmtest-full
mkdir -p "$pool"
mount -t tmpfs -o size=4k tmpfs "$pool"
dd if=/dev/zero of="$pool/filler" bs=1k count=4 2>/dev/null || true
dmmp update deploy --name wave6 --collection all --update dmtest-full >/dev/null
wait_for 120 'dmmp update compliance --device vm-1 | grep dmtest-full | grep -q failed'
umount "$pool"
[ "$(version_of dmtest-full)" = 1.0 ] || fail "dmtest-full changed on a full disk"
dmmp update compliance --device vm-1 | grep dmtest-full | grep -qi "no space" \
    || fail "the refusal does not say the disk is full"
dmmp update compliance --device vm-1
say "software updates: $(dmmp update compliance --collection all | head -1)"

exec sh /mnt/host/guest-images.sh
