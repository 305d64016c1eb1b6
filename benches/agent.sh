#!/usr/bin/env bash
# Benchmark of the device program, dm, as it ships (profile `device`), against a real dmmp on
# loopback, with devices installed from signed deployment folders. Prints:
#   - the size of dm (all four device programs) for aarch64 and armv7, stripped (target: at
#     most 3.0 MB)
#   - the agent's RSS between polls (target: at most 3 MB), and its wake-ups while idle
#   - CPU per idle hour at a 300 s poll interval: the idle agent's CPU between polls, plus
#     twelve polls (each measured on an agent polling every 10 s, the shortest interval)
#   - the agent's peak RSS while it downloads, verifies and installs a 1 GiB package (target:
#     at most 12 MB)
#   - its download speed (SHA-256 while streaming, an fsync) against `curl -o` then `sha256sum`
#     of the same file from the same server, in the same run
# First natively (x86_64), then, with --arm, for aarch64 and armv7 under qemu-user: there the
# figures are the emulator's (its CPU, and an RSS that includes qemu itself), not a device's.
# Environment: SIZE_MIB (default 1024), IDLE_SECS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
size_mib=${SIZE_MIB:-1024}
idle_secs=${IDLE_SECS:-60}
arm=0
[ "${1:-}" = "--arm" ] && arm=1

echo "== sizes (targets/build.sh, profile device, stripped)"
targets/build.sh >/dev/null 2>&1 || { echo "ARM build failed (run targets/setup-toolchain.sh)"; exit 1; }
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    b=target/cross/$t/device/dm
    awk -v n="$(stat -c %s "$b")" -v t="$t" \
        'BEGIN { printf "dm for %-31s %9d bytes (%.2f MB; target at most 3.0 MB)\n", t, n, n / 1e6 }'
done

cargo build --profile device --locked --quiet -p dm-device
cargo build --release --locked --quiet -p dm-mp
R=$root/target/release
work=$(mktemp -d)
pids=()
# stop_agent DIR: stops the agent of the device in DIR, if it runs.
stop_agent() {
    local f=$1/device/run/dm/dmsvc.pid
    [ -f "$f" ] && kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true
}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for d in "$work"/*/; do stop_agent "$d"; done
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$R/dmpack" dev-pki --out pki >/dev/null 2>&1
"$R/dmmp" init --dir mp --listen 127.0.0.1:0 --tls-cert pki/server.pem --tls-key pki/server.key \
    --poll-sleep 1 --unknown-devices register >/dev/null
"$R/dmmp" --config mp/dmmp.toml serve > mp/serve.out 2> mp/serve.err &
pids+=($!)
for _ in $(seq 50); do grep -q listening mp/serve.out && break; sleep 0.1; done
url=$(sed -n 's/^listening //p' mp/serve.out)
dmmp() { "$R/dmmp" --config mp/dmmp.toml "$@"; }

# CPU time in nanoseconds of every thread of a process (schedstat's first field): clock ticks
# (1/100 s) are too coarse for an agent that spends milliseconds an hour.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{n += $1} END {printf "%d\n", n}'; }
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# mb_per_s START END: the package's MB per second between two `date +%s.%N` times.
mb_per_s() { awk -v s="$size_mib" -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", s * 1.048576 / (b - a) }'; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }

# install LABEL DM RUNNER ID POLL: a device in ./LABEL-ID running the agent of DM (through
# RUNNER), polling every POLL seconds; prints the agent's pid.
install() {
    local label=$1 dm=$2 runner=$3 id=$4 poll=$5 d=$work/$1-$4
    mkdir -p "$d/bins" "$d/device/var/log" "$d/device/etc/dm/certs/root"
    cp pki/root-ca.pem "$d/device/etc/dm/certs/root/"
    cp "$dm" "$d/bins/dm"
    printf '[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint=%s\nControllerId=%s-%s\n[Communication]\nTargetToken=tok-%s-%s\nPollInterval=%s\nMinPollInterval=%s\n' \
        "$url" "$label" "$id" "$label" "$id" "$poll" "$poll" > "$d/DMCommonInstaller.ini"
    "$R/dmpack" folder --out "$d/folder" --client-version 1.0.0.0 --platform-bin "$platform=$d/bins" \
        --settings "$d/DMCommonInstaller.ini" --key pki/publisher.key --cert pki/publisher.pem \
        >"$d/pack.out" 2>&1 || { cat "$d/pack.out" >&2; return 1; }
    DM_RUNNER="$runner" $runner "$d/folder/dm_$platform" installer --device-root "$d/device" \
        >"$d/installer.out" 2>&1 || { cat "$d/installer.out" >&2; return 1; }
    for _ in $(seq 600); do
        grep -q "inventory sent" "$d"/device/var/log/dm/DMSvc*.log 2>/dev/null && break
        sleep 0.2
    done
    if [ ! -f "$d/device/run/dm/dmsvc.pid" ]; then
        echo "the agent of $label-$id did not start; its logs:" >&2
        tail -n 20 "$d"/device/var/log/dm/*.log >&2
        return 1
    fi
    cat "$d/device/run/dm/dmsvc.pid"
}

# bench LABEL TITLE DM RUNNER PLATFORM
bench() {
    local label=$1 dm=$3 runner=$4
    platform=$5
    echo "== $2"
    local idle busy
    idle=$(install "$label" "$dm" "$runner" idle 300)
    sleep 5
    local rss anon file t0 s0 w0 t1 s1 w1
    rss=$(status "$idle" VmRSS); anon=$(status "$idle" RssAnon); file=$(status "$idle" RssFile)
    t0=$(cpu_ns "$idle"); w0=$(switches "$idle"); s0=$(date +%s.%N)
    sleep "$idle_secs"
    t1=$(cpu_ns "$idle"); w1=$(switches "$idle"); s1=$(date +%s.%N)
    busy=$(install "$label" "$dm" "$runner" busy 10)
    local p0 q0 p1 q1
    sleep 2
    p0=$(cpu_ns "$busy"); q0=$(date +%s.%N)
    sleep 40
    p1=$(cpu_ns "$busy"); q1=$(date +%s.%N)
    echo "idle agent RSS between polls: ${rss} KiB, of which its own (anonymous) ${anon} KiB, mapped files ${file} KiB (target at most 3072 KiB)"
    awk -v t="$((t1 - t0))" -v w="$((w1 - w0))" -v s0="$s0" -v s1="$s1" \
        -v p="$((p1 - p0))" -v q0="$q0" -v q1="$q1" 'BEGIN {
        idle = t / 1e9 / (s1 - s0); poll = 10 * p / 1e9 / (q1 - q0)
        printf "idle: %.3f ms of CPU per second, %d wake-ups in %.0f s\n", 1000 * idle, w, s1 - s0
        printf "one poll: %.2f ms of CPU (an agent polling every 10 s, over %.0f s)\n", 1000 * poll, q1 - q0
        printf "CPU per idle hour at a 300 s poll interval: %.1f ms (%.1f between polls, %.1f for 12 polls)\n",
            1000 * (idle * 3600 + 12 * poll), 1000 * idle * 3600, 12000 * poll }'

    mkdir -p "$label-src"
    head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$label-src/big.bin"
    printf '#!/bin/sh\ntrue\n' > "$label-src/run.sh" && chmod +x "$label-src/run.sh"
    "$R/dmpack" package --source "$label-src" --out "$label-pkg" --name "big-$label" --package-version 1.0.0.0 \
        --program run=run.sh --key pki/publisher.key --cert pki/publisher.pem >/dev/null 2>&1
    rm -rf "$label-src"
    dmmp package add --source "$label-pkg" --roots pki/root-ca.pem >/dev/null
    rm -rf "$label-pkg"
    dmmp program add --package "big-$label" --name "run-$label" --program run >/dev/null
    dmmp collection add --name "busy-$label" --rule explicit >/dev/null
    dmmp collection members "busy-$label" --add "$label-busy" >/dev/null
    dmmp advertise --name "ad-$label" --program "run-$label" --collection "busy-$label" --mandatory >/dev/null
    local log=$work/$label-busy/device/var/log/dm
    for _ in $(seq 3600); do
        grep -q "(big-$label 1.0.0.0): run completed" "$log"/DMSvc*.log 2>/dev/null && break
        sleep 0.5
    done
    local mbs hwm
    mbs=$(grep -ho "downloaded big.bin ([0-9.]* MB/s" "$log"/DMSvc*.log | grep -o "[0-9.]* MB/s" | cut -d' ' -f1)
    hwm=$(status "$busy" VmHWM)
    echo "peak RSS of the agent, a ${size_mib} MiB package downloaded, verified and installed: ${hwm} KiB (target at most 12288 KiB)"
    local module href c0 c1 c2 curl_mbs curl_sha_mbs
    module=$(dmmp --json package list | python3 -c "import json,sys; print([p['id'] for p in json.load(sys.stdin) if p['name'] == 'big-$label'][0])")
    href="$url/DEFAULT/controller/v1/$label-busy/softwaremodules/$module/artifacts/big.bin"
    c0=$(date +%s.%N)
    curl -s --cacert pki/root-ca.pem -H "Authorization: TargetToken tok-$label-busy" -o curl.bin "$href"
    c1=$(date +%s.%N)
    sha256sum curl.bin >/dev/null
    c2=$(date +%s.%N)
    rm -f curl.bin
    curl_mbs=$(mb_per_s "$c0" "$c1")
    curl_sha_mbs=$(mb_per_s "$c0" "$c2")
    echo "agent download, SHA-256 while streaming, fsync: ${mbs:-?} MB/s"
    echo "curl -o (no hash):                            ${curl_mbs} MB/s"
    echo "curl -o, then sha256sum:                      ${curl_sha_mbs} MB/s"
    awk -v a="${mbs:-0}" -v c="$curl_mbs" -v h="$curl_sha_mbs" \
        'BEGIN { printf "agent / curl -o: %.2fx; agent / curl then sha256sum: %.2fx\n", a / c, a / h }'
    stop_agent "$work/$label-idle"
    stop_agent "$work/$label-busy"
}

bench x86 "x86_64 (native)" "$root/target/device/dm" "" linux-x86_64
if [ "$arm" = 1 ]; then
    bench aarch64 "aarch64 (qemu-user: the emulator's CPU and RSS, not a device's)" \
        "$root/target/cross/aarch64-unknown-linux-gnu/device/dm" \
        "qemu-aarch64 -L /usr/aarch64-linux-gnu" linux-aarch64
    bench armv7 "armv7 (qemu-user: the emulator's CPU and RSS, not a device's)" \
        "$root/target/cross/armv7-unknown-linux-gnueabihf/device/dm" \
        "qemu-arm -L /usr/arm-linux-gnueabihf" linux-armv7
fi
