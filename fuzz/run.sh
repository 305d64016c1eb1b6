#!/usr/bin/env bash
# Fuzzes one target for a while (fuzz/README.md): stable Rust without a sanitizer, one fuzzing
# process (-workers=1 -jobs=1), the target's committed corpus, its dictionary when it has one,
# and the limits every run uses.
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]
# Inputs that reach new coverage are added to fuzz/corpus/TARGET (minimize it afterwards:
# fuzz/cmin.sh TARGET). The log (fuzz-0.log) and any crash land in fuzz/artifacts/TARGET/.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
(cd "$fuzz/.." && cargo fuzz build -s none "$target")
bin=$fuzz/target/x86_64-unknown-linux-gnu/release/$target
out=$fuzz/artifacts/$target
mkdir -p "$out"
flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -workers=1 -jobs=1
    -print_final_stats=1 -artifact_prefix="$out/")
if [[ -f $fuzz/dicts/$target.dict ]]; then
    flags+=(-dict="$fuzz/dicts/$target.dict")
fi
# The bundle target writes each input to a temp file: keep those in memory when possible.
if [[ -d /dev/shm && -w /dev/shm ]]; then
    export TMPDIR=/dev/shm
fi
cd "$out"
rm -f fuzz-0.log
status=0
"$bin" "${flags[@]}" "$@" "$fuzz/corpus/$target" || status=$?
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|^INFO: seed corpus|ERROR|panicked|^SUMMARY' fuzz-0.log || true
exit "$status"
