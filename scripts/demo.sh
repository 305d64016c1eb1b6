#!/usr/bin/env bash
# The main job: sets up this machine, builds the programs and shows them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins --locked --quiet
for b in dminstaller dmclientsetup dmsvc dmcertenroll dmmp dmpack; do
    echo "== $b"
    target/debug/$b --help
done
