# Shared by the guest's scripts (tests/vm/guest-ota.sh, tests/vm/guest-images.sh), which run
# inside the virtual machine as root with systemd as PID 1: the dm programs in /mnt/host/bin,
# the management point in the guest on loopback, the work folder on the guest's disk (kept
# across the guest's restarts).
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
# The client's settings file $1 with ClientInstallAction=$2, for the management point at
# $W/url with the device's token in $W/token.
settings() {
    cat > "$1" <<INI
[Installation]
ClientInstallAction=$2
[Environment]
ManagementPoint=$(cat "$W/url")
ControllerId=vm-1
[Communication]
TargetToken=$(cat "$W/token")
PollInterval=10
MinPollInterval=1
RetryMaxDelay=4
[SoftwareUpdates]
AptKeyring=/etc/dm/fleet-keyring.gpg
AptTimeout=120
DpkgLockTimeout=5
[SystemImages]
RebootCommand=/usr/local/sbin/dm-e2e-reboot
INI
}
# A signed client folder $1 of version $2 whose settings say ClientInstallAction=$3, with the
# one program dm from bins/.
client_folder() {
    mkdir -p "$1.settings"
    settings "$1.settings/DMCommonInstaller.ini" "$3"
    "$B/dmpack" folder --out "$1" --client-version "$2" --platform-bin linux-x86_64=bins \
        --settings "$1.settings/DMCommonInstaller.ini" --key pki/publisher.key \
        --cert pki/publisher.pem >/dev/null
}
