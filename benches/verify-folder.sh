#!/usr/bin/env bash
# Benchmark: how long verifying a 50 MB deployment folder takes (signature, chain, SHA-256 of
# every file: the same code dminstaller runs) against `sha256sum` of the same files.
# Target: at most 1.2x. Both run warm (files in the page cache), median of 7 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet -p dm-mp --bin dmpack
dmpack=target/release/dmpack
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$dmpack" dev-pki --out "$work/pki" >/dev/null 2>&1
mkdir -p "$work/bins"
for prog in dminstaller dmclientsetup dmsvc dmcertenroll; do
    # 12.5 MiB of incompressible bytes per program: 50 MiB in all.
    head -c $((25 * 1024 * 1024 / 2)) /dev/urandom > "$work/bins/$prog"
done
"$dmpack" folder --out "$work/folder" --client-version 1.0.0.0 --platform-bin "linux-aarch64=$work/bins" \
    --key "$work/pki/publisher.key" --cert "$work/pki/publisher.pem" >/dev/null 2>&1
files=("$work"/folder/dm*_linux-aarch64)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ms() {
    local s e
    s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N)
    echo $(((e - s) / 1000000))
}
for _ in 1 2; do "$dmpack" verify "$work/folder" --roots "$work/pki/root-ca.pem" >/dev/null 2>&1; sha256sum "${files[@]}" >/dev/null; done
ours=$(for _ in $(seq 7); do time_ms "$dmpack" verify "$work/folder" --roots "$work/pki/root-ca.pem"; done | median)
ref=$(for _ in $(seq 7); do time_ms sha256sum "${files[@]}"; done | median)
size=$(du -cb "${files[@]}" | tail -1 | cut -f1)
printf 'deployment folder: %d bytes in %d files\n' "$size" "${#files[@]}"
printf 'dmpack verify (signature + chain + SHA-256 of every file): %5d ms\n' "$ours"
printf 'sha256sum of the same files:                             %5d ms\n' "$ref"
awk -v a="$ours" -v b="$ref" 'BEGIN { printf "ratio: %.2fx (target: at most 1.20x)\n", (b > 0 ? a / b : 0) }'
