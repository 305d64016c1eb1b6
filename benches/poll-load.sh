#!/usr/bin/env bash
# Benchmark: simulated devices polling dmmp over TLS with keep-alive (management-point/benches/
# poll_load.rs), for 1,000 and 10,000 devices at 2,000 polls/s, then 10,000 devices at a higher
# rate to show the headroom. Target: >= 2,000 polls/s at p99 < 50 ms with 10,000 devices.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
for spec in "1000 2000" "10000 2000" "10000 8000"; do
    set -- $spec
    echo "== $1 devices, $2 polls/s"
    cargo bench --locked --quiet -p dm-mp --bench poll_load -- --devices "$1" --rate "$2" --seconds 15 2>/dev/null | grep -v '^$'
done
