#!/usr/bin/env bash
# The client under a real systemd as PID 1 (tests/vm/vm.sh): installed from a deployment
# folder as dmsvc.service, upgraded over the air by its own management point, then uninstalled
# over the air. Setup stops dmsvc.service while it works; it must not be stopped with it.
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
rc=0
tests/vm/vm.sh run "$share" || rc=$?
cat "$share/out/output.log" 2>/dev/null || true
if [ "$rc" -ne 0 ]; then
    echo "systemd.sh: the guest test failed (exit $rc); its files are in $share" >&2
    exit "$rc"
fi
rm -rf "$share"
