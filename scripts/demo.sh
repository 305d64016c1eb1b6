#!/usr/bin/env bash
# The main job, the whole story on one machine:
#   1. build the programs (Rust and a C compiler are all it needs)
#   2. a demo PKI (root CA, code-signing publisher, TLS server certificate) made by dmpack
#   3. dmmp, the management point, on loopback
#   4. a signed client deployment as one bundle on a memory card, beside dminstaller
#   5. a demo device that trusts the demo root CA; the folder's dminstaller installs the
#      client on it, and its agent starts polling dmmp
#   6. a signed package advertised to all devices; the agent downloads, verifies and runs it
#   7. its success, as the management point sees it: `dmmp advertisement status`
# Everything lives in ./demo (recreated on each run); the agent and dmmp are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the management point, dmpack and the device program"
# The demo needs only what builds the programs: Rust (cargo) and a C compiler (for ring and
# SQLite). The tests' peers (Chromium, PostgreSQL, SWUpdate, …) are scripts/test-all.sh's.
if ! command -v cc >/dev/null; then
    echo "demo: installing a C compiler (gcc)"
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq && as_root apt-get install -y -qq gcc >/dev/null
fi
command -v cargo >/dev/null || { echo "demo: cargo is needed (install Rust with rustup)" >&2; exit 1; }
# dmmp without jemalloc (its C build is the longest step of a fresh build; see
# management-point/Cargo.toml); every program the demo runs, and nothing else.
# Profile demo (Cargo.toml): the quickest to compile.
cargo build --locked --quiet --profile demo -p dm-mp -p dm-device --no-default-features \
    --bin dmmp --bin dmpack --bin dm
bin=$root/target/demo
platform="linux-$(uname -m | sed 's/^armv7l$/armv7/')"

stop_all() {
    [ -f "$demo/device/run/dm/dmsvc.pid" ] && kill "$(cat "$demo/device/run/dm/dmsvc.pid")" 2>/dev/null || true
    [ -n "${mp_pid:-}" ] && kill "$mp_pid" 2>/dev/null && wait "$mp_pid" 2>/dev/null || true
}
stop_all
rm -rf "$demo"
mkdir -p "$demo/bins" "$demo/device/var/log" "$demo/device/etc/dm/certs/root" "$demo/package"
trap stop_all EXIT
dmmp() { "$bin/dmmp" --config "$demo/mp/dmmp.toml" "$@"; }

say "demo PKI"
"$bin/dmpack" dev-pki --out "$demo/pki"

say "management point (dmmp) on loopback"
"$bin/dmmp" init --dir "$demo/mp" --listen 127.0.0.1:0 --poll-sleep 5 \
    --tls-cert "$demo/pki/server.pem" --tls-key "$demo/pki/server.key"
"$bin/dmmp" --config "$demo/mp/dmmp.toml" serve > "$demo/mp/serve.out" 2> "$demo/mp/serve.log" &
mp_pid=$!
for _ in $(seq 100); do grep -q listening "$demo/mp/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening //p' "$demo/mp/serve.out")
echo "dmmp listens on $url (log: demo/mp/serve.log)"
# dmmp refuses devices it does not know: the administrator registers the demo device.
"$bin/dmmp" --config "$demo/mp/dmmp.toml" device add --id demo-device-1 --token demo-target-token-0001 >/dev/null

say "signed client deployment folder 1.0.0.0 for $platform"
cp "$bin/dm" "$demo/bins/"
cat > "$demo/DMCommonInstaller.ini" <<INI
; Client deployment settings for the demo device (docs/settings.md)
[Installation]
ClientInstallAction=Install

[Environment]
ManagementPoint=$url
ControllerId=demo-device-1
SiteCode=DEMO

[Communication]
Authentication=TargetToken
TargetToken=demo-target-token-0001
PollInterval=60
; The demo server asks for a poll every 5 s; devices take no less than this.
MinPollInterval=5
INI
"$bin/dmpack" folder --out "$demo/DMClient" --client-version 1.0.0.0 \
    --platform-bin "$platform=$demo/bins" --settings "$demo/DMCommonInstaller.ini" \
    --key "$demo/pki/publisher.key" --cert "$demo/pki/publisher.pem" >/dev/null
say "the folder as one signed bundle on the memory card, beside the installer"
mkdir -p "$demo/card"
"$bin/dmpack" bundle --source "$demo/DMClient" --roots "$demo/pki/root-ca.pem" --out "$demo/card" >/dev/null
# The client's one program, by the installer's name: it is the installer when started so.
cp "$demo/DMClient/dm_$platform" "$demo/card/dminstaller_$platform"
ls -l "$demo/card"

say "demo device trusts the demo root CA for code signing and for TLS; running dminstaller from the card"
cp "$demo/pki/root-ca.pem" "$demo/device/etc/dm/certs/root/"
mkdir -p "$demo/device/etc/dm/certs/tls-root"
cp "$demo/pki/root-ca.pem" "$demo/device/etc/dm/certs/tls-root/"
"$demo/card/dminstaller_$platform" --device-root "$demo/device" 2>&1 | grep -E "step|finished|installed" || true
"$bin/dm" setup --status --device-root "$demo/device"

say "a signed package advertised to every device"
cat > "$demo/package/install.sh" <<'SH'
#!/bin/sh
# Runs on the device in the package folder; see docs/agent.md for its environment.
echo "installing $DM_PACKAGE_NAME $DM_PACKAGE_VERSION on $DM_CONTROLLER_ID ($DM_PLATFORM)"
cp greeting.txt "$DM_DEVICE_ROOT/greeting.txt"
SH
chmod +x "$demo/package/install.sh"
echo "hello from the management point" > "$demo/package/greeting.txt"
# The publisher signs the program with the package: the server can only choose it.
"$bin/dmpack" package --source "$demo/package" --out "$demo/greeting-pkg" --name greeting --package-version 1.0.0.0 \
    --program "install=install.sh" --key "$demo/pki/publisher.key" --cert "$demo/pki/publisher.pem" >/dev/null
"$bin/dmpack" bundle --source "$demo/greeting-pkg" --roots "$demo/pki/root-ca.pem" --out "$demo" >/dev/null
dmmp package add --source "$demo/greeting-1.0.0.0.dmpkg" --roots "$demo/pki/root-ca.pem"
dmmp program add --package greeting --name install-greeting --program install --max-run-time 60
dmmp collection add --name all-devices --rule all
dmmp advertise --name greeting-to-all --program install-greeting --collection all-devices --mandatory

say "waiting for the agent to poll, run it and report"
finished() { [[ "$(dmmp --json advertisement status greeting-to-all)" == *'"finished": 1'* ]]; }
for _ in $(seq 240); do
    finished && break
    sleep 0.5
done

say "dmmp advertisement status greeting-to-all"
dmmp advertisement status greeting-to-all
say "dmmp device show demo-device-1"
dmmp device show demo-device-1
say "on the device"
echo "greeting.txt: $(cat "$demo/device/greeting.txt" 2>/dev/null || echo '(missing)')"
say "the agent's log"
cat "$demo"/device/var/log/dm/DMSvc*.log
finished || { echo "the program did not finish"; exit 1; }
say "done; files, logs and the database are in ./demo"
