#!/usr/bin/env bash
# Where a loaded server's memory is: loads EVENTS events (the mixed load, batches of 1,000) into
# a fresh server built with the `heap-stats` feature, stops it, and starts it again on the same
# store, reporting each time the bytes its allocations hold (live), its RSS, and the difference,
# which is what the allocator holds around them (pages partly used, freed pages not yet given
# back). A server that has loaded holds more than one restarted on the same store; this says
# whether the difference is data or the allocator's (see src/heap.rs).
#
#   HOUSEHOLDS=1000000 EVENTS=3000000 REQUEST_IDS=1 benches/heap-split.sh   # ~2 min, README
#   HOUSEHOLDS=1000000 EVENTS=10000000 REQUEST_IDS=1 benches/heap-split.sh  # the scale run's
#   SERVE_ARGS="--reopen-log-every 0" …                 # serve's options, A/B
#
# The loaded figures are taken at the shutdown's checkpoint (after the load has settled, with
# nothing in flight); the restarted ones once it serves. The build goes to target/heap-stats, so
# that it never replaces the release binary the other scripts run.
set -euo pipefail
cd "$(dirname "$0")/.."
HOUSEHOLDS=${HOUSEHOLDS:-1000000}
EVENTS=${EVENTS:-3000000}
IDS=(); [ -z "${REQUEST_IDS:-}" ] || IDS=(--request-ids)
PORT=${PORT:-29992}
BIN=target/heap-stats/release/rollstore
cargo build --release --quiet --features heap-stats --target-dir target/heap-stats
# shellcheck source=benches/settle.sh
. benches/settle.sh
# shellcheck source=benches/start-up-log.sh
. benches/start-up-log.sh
DIR=$(mktemp -d /tmp/rollstore-heap.XXXXXX)
SERVER=
trap '[ -z "$SERVER" ] || { kill -9 "$SERVER"; wait "$SERVER"; } 2>/dev/null; rm -rf "$DIR"' EXIT

start_server() {
    # A fresh log for each start: the wait below looks for the line saying it serves.
    : >"$DIR/server.log"
    start_serving "$DIR"
    wait_until_serving "$SERVER" "$DIR/server.log"
}

# The last "heap …" line's figures.
heap() {
    server_log "$DIR/server.log" | grep -a " heap " | tail -1 |
        grep -oE '(live|rss|held_by_allocator)_mib=[0-9]+' | tr '\n' ' '
}

echo "== $HOUSEHOLDS households, $EVENTS events${IDS:+ with request_ids}"
start_server
"$BIN" bench --address "127.0.0.1:$PORT" --concurrency 4 --batch 1000 --mix mixed \
    --households "$HOUSEHOLDS" --requests $((EVENTS / 1000)) --seconds 36000 "${IDS[@]}" |
    grep -E '^events'
settle "$SERVER"
peak=$(awk '$1 == "VmHWM:" { print int($2 / 1024) }' "/proc/$SERVER/status")
kill -TERM "$SERVER"
wait "$SERVER" || true
SERVER=
echo "loaded:     $(heap)(peak RSS while loading ${peak} MiB)"
start_server
echo "restarted:  $(heap)"
kill -TERM "$SERVER"
wait "$SERVER" || true
SERVER=
