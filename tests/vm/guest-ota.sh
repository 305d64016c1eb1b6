#!/bin/sh
# Runs inside the virtual machine (tests/vm/systemd.sh), as root, with systemd as PID 1. The
# dm programs are in /mnt/host/bin; the management point runs in the guest on loopback.
set -eu
B=/mnt/host/bin
W=/root/w
mkdir -p "$W"
cd "$W"
say() { echo "== $(date +%T) $*"; }
dump() {
    echo "---- systemctl status dmsvc"; systemctl status dmsvc --no-pager 2>&1 | tail -20 || true
    for f in /var/log/dm/*.log; do echo "---- $f"; tail -60 "$f"; done 2>/dev/null || true
    echo "---- dmmp"; tail -40 "$W/mp/serve.log" 2>/dev/null || true
}
fail() { echo "FAIL: $*"; dump; exit 1; }
dmmp() { "$B/dmmp" --config "$W/mp/dmmp.toml" "$@"; }
# Waits up to $1 seconds for the shell condition $2.
wait_for() {
    n=0
    while ! eval "$2"; do
        n=$((n + 1))
        [ "$n" -gt "$(($1 * 2))" ] && fail "timed out waiting for: $2"
        sleep 0.5
    done
}

say "systemd $(systemctl --version | head -1 | cut -d' ' -f2) is PID 1: $(cat /proc/1/comm)"
[ "$(cat /proc/1/comm)" = systemd ] || fail "systemd is not PID 1"
systemctl is-system-running --wait >/dev/null || true

say "PKI and the management point on loopback"
"$B/dmpack" dev-pki --out pki >/dev/null
"$B/dmmp" init --dir mp --listen 127.0.0.1:0 --poll-sleep 2 \
    --tls-cert pki/server.pem --tls-key pki/server.key >/dev/null
"$B/dmmp" --config mp/dmmp.toml serve > mp/serve.out 2> mp/serve.log &
wait_for 30 'grep -q listening mp/serve.out'
url=$(sed -n 's/^listening //p' mp/serve.out)
token=$(dmmp device add --id vm-1)

say "client 1.0.0.0 from a signed folder of four programs (as before the client was one), as dmsvc.service"
mkdir -p bins four /etc/dm/certs/root /etc/dm/certs/tls-root
cp "$B/dm" bins/
for p in dminstaller dmclientsetup dmsvc dmcertenroll; do cp "$B/dm" "four/$p"; done
cp pki/root-ca.pem /etc/dm/certs/root/
cp pki/root-ca.pem /etc/dm/certs/tls-root/
settings() {
    cat > "$1" <<INI
[Installation]
ClientInstallAction=$2
[Environment]
ManagementPoint=$url
ControllerId=vm-1
[Communication]
TargetToken=$token
PollInterval=10
MinPollInterval=1
RetryMaxDelay=4
[SoftwareUpdates]
AptKeyring=/etc/dm/fleet-keyring.gpg
AptTimeout=120
DpkgLockTimeout=5
INI
}
mkdir -p v1 v2 v3
settings v1/DMCommonInstaller.ini Install
"$B/dmpack" folder --out v1.signed --client-version 1.0.0.0 --platform-bin linux-x86_64=four \
    --settings v1/DMCommonInstaller.ini --key pki/publisher.key --cert pki/publisher.pem >/dev/null
v1.signed/dminstaller_linux-x86_64 --device-root / || fail "the install failed"
systemctl is-active --quiet dmsvc.service || fail "dmsvc.service is not active"
grep -q '^Delegate=yes' /etc/systemd/system/dmsvc.service || fail "the unit does not delegate"
wait_for 60 'dmmp --json device show vm-1 | grep -q "\"client_version\": \"1.0.0.0\""'

say "an upgrade over the air to 1.1.0.0, the one program dm"
settings v2/DMCommonInstaller.ini Install
"$B/dmpack" folder --out v2.signed --client-version 1.1.0.0 --platform-bin linux-x86_64=bins \
    --settings v2/DMCommonInstaller.ini --key pki/publisher.key --cert pki/publisher.pem >/dev/null
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
dmmp update deploy --name wave3 --collection all --update dmtest-extra >/dev/null
wait_for 240 '[ "$(version_of dmtest-extra)" = 1.1 ]'
[ "$(status_of dmtest-slow)" = "install ok installed" ] || fail "dmtest-slow was not repaired: $(status_of dmtest-slow)"
grep -q "dpkg was interrupted" /var/log/dm/DMSvc*.log || fail "the repair was not logged"
wait_for 60 'dmmp --json update compliance --device vm-1 | grep -q "\"installed\""'

say "a package the management point serves changed on its disk: the device refuses it"
deb=$(ls "$W"/mp/content/updates/fleet/pool/main/d/dmtest-bad/*.deb)
printf 'X' | dd of="$deb" bs=1 seek=200 conv=notrunc 2>/dev/null
dmmp update deploy --name wave4 --collection all --update dmtest-bad >/dev/null
wait_for 120 'dmmp update compliance --device vm-1 | grep dmtest-bad | grep -q failed'
[ "$(version_of dmtest-bad)" = 1.0 ] || fail "the changed package was installed"
dmmp update compliance --device vm-1 | grep dmtest-bad | grep -q "SHA-256" || fail "the refusal does not name the hash"

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

say "an uninstall over the air"
settings v3/DMCommonInstaller.ini Uninstall
"$B/dmpack" folder --out v3.signed --client-version 1.1.0.1 --platform-bin linux-x86_64=bins \
    --settings v3/DMCommonInstaller.ini --key pki/publisher.key --cert pki/publisher.pem >/dev/null
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
