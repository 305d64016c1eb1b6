#!/usr/bin/env bash
# Minimizes a target's committed corpus (fuzz/README.md): keeps the smallest set of inputs
# that reaches the same edges (libFuzzer's -merge=1, through `cargo fuzz cmin`). Edges, not
# hit counts (-use_counters=0): the committed corpus stays a few hundred files; the fuzzer
# finds the counts again in seconds.
#   fuzz/cmin.sh TARGET
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/cmin.sh TARGET}
if [[ -d /dev/shm && -w /dev/shm ]]; then
    export TMPDIR=/dev/shm
fi
before=$(find "fuzz/corpus/$target" -type f | wc -l)
cargo fuzz cmin -s none "$target" "fuzz/corpus/$target" -- -rss_limit_mb=2048 -timeout=10 -use_counters=0
after=$(find "fuzz/corpus/$target" -type f | wc -l)
echo "$target: $before files before, $after after, $(du -sh --apparent-size "fuzz/corpus/$target" | cut -f1)"
