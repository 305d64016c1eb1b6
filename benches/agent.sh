#!/usr/bin/env bash
# Benchmark of the agent (release builds):
#   - stripped size of dm, the one device program, for aarch64 (target: under 3 MB)
#   - idle RSS of the agent between polls (target: under 5 MB)
#   - CPU time of a poll with nothing to do
#   - download throughput of a 1 GiB artifact over loopback, against curl fetching the same
#     file with sha256sum after it (target: at least 0.9x)
# A real dmmp serves a real device installed from a deployment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

targets/build.sh aarch64-unknown-linux-gnu >/dev/null 2>&1 || { echo "ARM build failed (run targets/setup-toolchain.sh)"; exit 1; }
arm=target/cross/aarch64-unknown-linux-gnu/release/dm
printf 'dm (all four device programs) for aarch64, stripped: %d bytes (%.2f MB; target under 3 MB)\n' "$(stat -c %s "$arm")" "$(echo "$(stat -c %s "$arm") / 1000000" | bc -l)"

cargo build --release --locked --quiet -p dm-device -p dm-mp
R=$root/target/release
work=$(mktemp -d)
cleanup() {
    [ -f "$work/device/run/dm/dmsvc.pid" ] && kill "$(cat "$work/device/run/dm/dmsvc.pid")" 2>/dev/null || true
    [ -n "${mp_pid:-}" ] && kill "$mp_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$R/dmpack" dev-pki --out pki >/dev/null 2>&1
"$R/dmmp" init --dir mp --listen 127.0.0.1:0 --tls-cert pki/server.pem --tls-key pki/server.key --poll-sleep 1 >/dev/null
"$R/dmmp" --config mp/dmmp.toml serve > mp/serve.out 2> mp/serve.err &
mp_pid=$!
for _ in $(seq 50); do grep -q listening mp/serve.out && break; sleep 0.1; done
url=$(sed -n 's/^listening //p' mp/serve.out)
"$R/dmmp" --config mp/dmmp.toml device add --id bench-1 --token bench-token-0001 >/dev/null

mkdir -p bins device/var/log device/etc/dm/certs/root
cp pki/root-ca.pem device/etc/dm/certs/root/
cp "$R/dm" bins/
cat > DMCommonInstaller.ini <<INI
[Installation]
ClientInstallAction=Install
[Environment]
ManagementPoint=$url
ControllerId=bench-1
[Communication]
TargetToken=bench-token-0001
MinPollInterval=1
INI
platform="linux-$(uname -m)"
"$R/dmpack" folder --out folder --client-version 1.0.0.0 --platform-bin "$platform=$work/bins" \
    --settings DMCommonInstaller.ini --key pki/publisher.key --cert pki/publisher.pem >/dev/null 2>&1
"folder/dminstaller_$platform" --device-root "$work/device" >/dev/null 2>&1
pid=$(cat device/run/dm/dmsvc.pid)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 5
t0=$(ticks "$pid"); s0=$(date +%s.%N)
sleep 20
t1=$(ticks "$pid"); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hz=$(getconf CLK_TCK)
echo "idle agent RSS between polls: ${rss} KiB (target under 5120 KiB)"
awk -v t="$((t1 - t0))" -v hz="$hz" -v s0="$s0" -v s1="$s1" 'BEGIN {
    secs = s1 - s0; polls = secs / 1.0
    printf "CPU of an idle poll: %.2f ms (%.2f s of CPU over %.0f polls at the 1 s poll interval)\n", 1000 * t / hz / polls, t / hz, polls }'

echo "downloading a 1 GiB artifact..."
mkdir -p src
head -c $((1024 * 1024 * 1024)) /dev/urandom > src/big.bin
printf '#!/bin/sh\ntrue\n' > src/run.sh && chmod +x src/run.sh
"$R/dmpack" package --source src --out pkg --name big --package-version 1.0.0.0 --program run=run.sh --key pki/publisher.key --cert pki/publisher.pem >/dev/null 2>&1
rm -f src/big.bin
"$R/dmmp" --config mp/dmmp.toml package add --source pkg --roots pki/root-ca.pem >/dev/null
"$R/dmmp" --config mp/dmmp.toml program add --package big --name big-run --program run >/dev/null
"$R/dmmp" --config mp/dmmp.toml collection add --name all --rule all >/dev/null
"$R/dmmp" --config mp/dmmp.toml advertise --name big-ad --program big-run --collection all --mandatory >/dev/null
for _ in $(seq 600); do
    grep -q "downloaded big.bin" device/var/log/dm/DMSvc*.log 2>/dev/null && break
    sleep 0.5
done
agent_mbs=$(grep -ho "downloaded big.bin ([0-9.]* MB/s" device/var/log/dm/DMSvc*.log | grep -o "[0-9.]* MB/s" | cut -d' ' -f1)
rm -rf pkg
href="$url/DEFAULT/controller/v1/bench-1/softwaremodules/1/artifacts/big.bin"
s0=$(date +%s.%N)
curl -s --cacert pki/root-ca.pem -H "Authorization: TargetToken bench-token-0001" -o curl.bin "$href"
sha256sum curl.bin >/dev/null
s1=$(date +%s.%N)
curl_mbs=$(awk -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.1f", 1073.741824 / (s1 - s0) }')
echo "agent download, SHA-256 while streaming: ${agent_mbs} MB/s"
echo "curl, then sha256sum:                    ${curl_mbs} MB/s"
awk -v a="$agent_mbs" -v c="$curl_mbs" 'BEGIN { printf "ratio: %.2fx (target: at least 0.90x)\n", a / c }'
