#!/usr/bin/env bash
# The server's memory while it loads, against the same store restarted: what the loading peak
# is made of. Starts a fresh server, runs the load generator with the arguments given, samples
# the server's RSS every half second, then restarts the server on that store and reports the
# RSS once it serves again.
#
#   benches/rss-during-load.sh --concurrency 4 --batch 1000 --requests 1000 --mix mixed \
#       --households 100000 --request-ids                   # 1M events: requests in flight
#   (vary --concurrency and --batch between runs to see what requests in flight cost)
#   SERVE_ARGS="--checkpoint-every 100000000" benches/rss-during-load.sh …   # no checkpoints
#   BIN=/tmp/other/rollstore NOBUILD=1 benches/rss-during-load.sh …          # another build
#
# Prints the load generator's events line, the peak RSS while loading (the kernel's VmHWM),
# the RSS samples (one per 3 s), the RSS a second at a time around each reopen of sled with
# what the server had read and written since the first of those seconds (`rchar` and `wchar`
# in /proc/<pid>/io: page cache hits and disk alike), and the RSS restarted. In MiB throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-29995}
BIN=${BIN:-target/release/rollstore}
[ -n "${NOBUILD:-}" ] || cargo build --release --quiet
# shellcheck source=benches/start-up-log.sh
. benches/start-up-log.sh
DIR=$(mktemp -d /tmp/rollstore-rss.XXXXXX)
SERVER=
stop_server() {
    [ -z "$SERVER" ] || { kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
    SERVER=
}
trap 'stop_server; rm -rf "$DIR"' EXIT

start_server() {
    start_serving "$DIR"
    # A read, so that waiting for the server writes nothing to the store.
    until "$BIN" bench --address "127.0.0.1:$PORT" --mix head --concurrency 1 --requests 1 \
        --seconds 5 >/dev/null 2>&1; do
        sleep 0.05
    done
}

mib() { awk -v key="$1" '$1 == key":" { printf "%d", $2 / 1024 }' "/proc/$SERVER/status"; }

start_server
# "seconds since the epoch, RSS, MiB read, MiB written", four times a second.
io() { awk '$1 == "rchar:" { r = $2 } $1 == "wchar:" { w = $2 }
            END { printf "%d %d", r / 1048576, w / 1048576 }' "/proc/$SERVER/io"; }
( while kill -0 "$SERVER" 2>/dev/null; do
      echo "$(date +%s.%N) $(mib VmRSS 2>/dev/null || true) $(io 2>/dev/null || true)"
      sleep 0.25
  done ) >"$DIR/rss.txt" &
SAMPLER=$!
"$BIN" bench --address "127.0.0.1:$PORT" --seconds 3600 "$@" | grep -E '^events'
echo "peak RSS loading: $(mib VmHWM) MiB"
kill "$SAMPLER" 2>/dev/null || true
echo "samples (MiB, every 3 s): $(awk 'NF == 4 && NR % 12 == 1 { print $2 }' "$DIR/rss.txt" | tr '\n' ' ')"
# Around each reopen of sled (see `serve --reopen-log-every`): the RSS a second at a time, from
# 3 s before its log line (written once sled is open again) to 10 s after, each with the MiB
# read (r) and written (w) since the first of those seconds.
server_log "$DIR/server.log" | grep -a 'the store was reopened' | while read -r line; do
    at=$(date -d "${line%% *}" +%s.%N)
    head=$(grep -oE 'head=[0-9]+' <<<"$line")
    echo "around sled's reopen at $head (0 s: its log line): $(awk -v at="$at" '
        NF == 4 && $1 >= at - 3 && $1 < at + 10 {
            if (!started) { started = 1; r = $3; w = $4 }
            second = int($1 - at + 3) - 3
            if (!(second in seen)) {
                seen[second] = 1
                printf "%+ds %d (r%d w%d)  ", second, $2, $3 - r, $4 - w
            }
        }' "$DIR/rss.txt")"
done
stop_server
start_server
sleep 1
echo "RSS restarted: $(mib VmRSS) MiB"
