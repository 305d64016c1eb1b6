#!/usr/bin/env bash
# Benchmark of the software update scan (docs/software-updates.md) against a real catalog:
# this machine's own apt lists (/var/lib/apt/lists/*_Packages*, every suite it has) as the
# catalog the management point would serve, and its own dpkg status database. Prints the
# entries and installed packages scanned, and the scan's CPU time and peak RSS, natively
# (target: at most 1 s of CPU, peak RSS at most 12 MB) and, when the ARM build and
# qemu-aarch64 are there, for aarch64 under qemu-user (target: at most 5 s; there the RSS
# includes qemu itself). The scan runs as the agent runs it, `dm svc scan-updates`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
arch=$(dpkg --print-architecture)
lists=$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null || true)
[ -n "$lists" ] || { echo "no apt lists: run apt-get update first"; exit 1; }
{
    echo "#dm-update-catalog 1 bench"
    for f in $lists; do /usr/lib/apt/apt-helper cat-file "$f"; done |
        awk -v OFS='\t' '/^Package:/{p=$2} /^Architecture:/{a=$2} /^Version:/{v=$2}
            /^$/{ if (p != "") print ++n, p, a, v; p = "" } END { if (p != "") print ++n, p, a, v }'
} > "$work/catalog.txt"
entries=$(($(wc -l < "$work/catalog.txt") - 1))
installed=$(grep -c '^Status: install ok installed' /var/lib/dpkg/status)
echo "== catalog: $entries entries from $(echo "$lists" | wc -w) apt lists; dpkg status: $installed installed packages"

cargo build --profile device --locked --quiet -p dm-device
# measure LABEL CMD...: the scan's user+system CPU and peak RSS (best of three).
measure() {
    local label=$1; shift
    local best=""
    for _ in 1 2 3; do
        /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" > "$work/out"
        read -r u s m < "$work/time"
        local cpu
        cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
        if [ -z "$best" ] || awk -v a="$cpu" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then
            best="$cpu $m"
        fi
    done
    local required
    required=$(grep -c $'\trequired\t' "$work/out" || true)
    printf '%-28s %s s CPU, peak RSS %.1f MB (%s required, %s rows)\n' "$label" "${best%% *}" \
        "$(awk -v k="${best##* }" 'BEGIN { print k / 1024 }')" "$required" "$(($(wc -l < "$work/out") - 1))"
}
measure "x86_64 (native)" target/device/dm svc scan-updates --device-root / \
    --catalog "$work/catalog.txt" --arch "$arch"
arm=target/cross/aarch64-unknown-linux-gnu/device/dm
if [ -x "$arm" ] && command -v qemu-aarch64 >/dev/null; then
    measure "aarch64 (qemu-user)" qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm" svc scan-updates \
        --device-root / --catalog "$work/catalog.txt" --arch "$arch"
    # What qemu and dm take before any scan, for reading the RSS above.
    /usr/bin/time -f '%M' -o "$work/time" qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm" svc --help > /dev/null
    printf '%-28s peak RSS %.1f MB (qemu-user and dm printing its help)\n' "aarch64, no scan" \
        "$(awk -v k="$(cat "$work/time")" 'BEGIN { print k / 1024 }')"
else
    echo "aarch64: skipped (run targets/build.sh; qemu-user must be installed)"
fi
