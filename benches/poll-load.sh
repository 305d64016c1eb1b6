#!/usr/bin/env bash
# Benchmark: simulated devices polling dmmp over keep-alive TLS while others send feedback
# (management-point/benches/poll_load.rs): 100,000 devices at 1,700 polls/s (each every
# 60 s) and 500 feedback/s, first against one instance on SQLite, then against two instances
# on one PostgreSQL cluster (a private one, started and stopped by the bench). Prints polls/s,
# the generator's latency and lag, a probe device's own latency, feedback/s, CPU per process
# and memory per connection. Connections are bounded by the file descriptor limit; devices
# share them beyond it.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for spec in "sqlite 1" "postgres 2"; do
    set -- $spec
    echo "== $1, $2 instance(s)"
    cargo bench --locked --quiet -p dm-mp --bench poll_load -- --devices 100000 --rate 1700 \
        --feedback 500 --store "$1" --instances "$2" --seconds 20 2>/dev/null | grep -v '^$'
done
