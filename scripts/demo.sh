#!/usr/bin/env bash
# The main job: a demo device installed from a signed deployment folder.
#   1. set up this machine and build the programs
#   2. make a demo PKI (root CA, code-signing publisher) with dmpack
#   3. build and sign a client deployment folder, laid out like a memory card
#   4. make a demo device root that trusts the demo root CA
#   5. run the folder's dminstaller on the device: it verifies the folder, installs the
#      publisher certificate and chains to setup, which installs the client and starts the agent
#   6. show the installed client and its logs
# Everything lives in ./demo (removed and recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "setting up the machine and building"
scripts/setup.sh
cargo build --workspace --bins --locked --quiet
bin=$root/target/debug
platform="linux-$(uname -m | sed 's/^armv7l$/armv7/')"

if [ -f "$demo/device/run/dm/dmsvc.pid" ]; then
    kill "$(cat "$demo/device/run/dm/dmsvc.pid")" 2>/dev/null || true
fi
rm -rf "$demo"
mkdir -p "$demo/bins" "$demo/device/var/log"

say "demo PKI"
"$bin/dmpack" dev-pki --out "$demo/pki"

say "signed client deployment folder 1.0.0.0 for $platform"
for p in dminstaller dmclientsetup dmsvc dmcertenroll; do cp "$bin/$p" "$demo/bins/"; done
cat > "$demo/DMCommonInstaller.ini" <<'INI'
; Client deployment settings for the demo device (docs/settings.md)
[Installation]
ClientInstallAction=Install

[Environment]
ManagementPoint=https://127.0.0.1:8443
ControllerId=demo-device-1

[Communication]
Authentication=TargetToken
TargetToken=demo-target-token-0001
PollInterval=60
INI
"$bin/dmpack" folder --out "$demo/card/DMClient" --client-version 1.0.0.0 \
    --platform-bin "$platform=$demo/bins" --settings "$demo/DMCommonInstaller.ini" \
    --key "$demo/pki/publisher.key" --cert "$demo/pki/publisher.pem" >/dev/null
ls -l "$demo/card/DMClient"

say "demo device: trusts the demo root CA"
mkdir -p "$demo/device/etc/dm/certs/root"
cp "$demo/pki/root-ca.pem" "$demo/device/etc/dm/certs/root/"

say "running dminstaller from the card"
"$demo/card/DMClient/dminstaller_$platform" --device-root "$demo/device"

say "installed client (dmclientsetup --status)"
"$bin/dmclientsetup" --status --device-root "$demo/device"

say "device files"
(cd "$demo/device" && find . -path ./var/log -prune -o -print | sort)

say "logs"
for f in "$demo"/device/var/log/dm/*.log; do
    echo "--- $f"
    cat "$f"
done

say "done: the agent runs as pid $(cat "$demo/device/run/dm/dmsvc.pid"); stop it with: kill \$(cat $demo/device/run/dm/dmsvc.pid)"
