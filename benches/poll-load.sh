#!/usr/bin/env bash
# Benchmark: simulated devices polling dmmp over keep-alive TLS while others send feedback
# (management-point/benches/poll_load/main.rs): 100,000 devices at 1,700 polls/s (each every
# 60 s) and 500 feedback/s, first against one instance on SQLite, then against two instances
# on one PostgreSQL cluster (a private one, started and stopped by the bench). Prints polls/s,
# the generator's latency and lag, a probe device's own latency, feedback/s, CPU per process
# and memory per connection. Connections are bounded by the file descriptor limit; devices
# share them beyond it.
#
# Then what a poll costs: a poll load of 8,000 polls/s (where waking up is shared by many
# requests, so what is left is what a request costs) against one dmmp, then against a bare
# hyper + rustls server (poll_load/bare.rs) that answers every request with the headers and
# body dmmp gave an idle device, each pinned to one CPU (the last this script may use; the
# generator gets the others). Prints for both the requests/s, the CPU time per request (the
# server's CPU time from /proc/PID/stat over the requests it answered) and the ratio.
#
#   benches/poll-load.sh            the figures docs/management-point.md quotes (about 5 min)
#   benches/poll-load.sh --short    2,000 devices, 4 s per run, 6 s per server to compare:
#                                   about a minute once built; its figures vary more, for
#                                   checking a change
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
devices=100000 seconds=20 compare_devices=20000 compare_seconds=20
if [[ ${1:-} == --short ]]; then
    devices=2000 seconds=4 compare_devices=2000 compare_seconds=6
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--short]" >&2
    exit 2
fi
bench() {
    cargo bench --locked --quiet -p dm-mp --bench poll_load -- "$@" 2>/dev/null | grep -v '^$'
}
for spec in "sqlite 1" "postgres 2"; do
    set -- $spec
    echo "== $1, $2 instance(s)"
    bench --devices "$devices" --rate 1700 --feedback 500 --store "$1" --instances "$2" \
        --seconds "$seconds"
done
echo "== the cost of a poll: dmmp against a bare hyper + rustls server, each pinned to one CPU"
bench --compare --devices "$compare_devices" --rate 8000 --seconds "$compare_seconds"
