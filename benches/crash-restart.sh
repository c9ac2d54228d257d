#!/usr/bin/env bash
# How long a start-up takes after a crash: loads EVENTS events (the mixed load, batches of
# 1,000) into a fresh server, lets its background checkpoint finish, kills it with SIGKILL (no
# shutdown checkpoint), and restarts it, reporting what it loaded (and where it reopened sled
# while loading, with how long writes waited), how long it took until it served, and its RSS
# then. Then it appends AFTER more events, kills it again, and restarts it once more: the
# second restart shows where the next checkpoint fell after a crash. Last, it stops the server
# and exports the whole log, reporting the export's time and peak RSS: what reading the whole
# log costs (every reader of the log, a subscriber's catch-up or VerifyChain as much as a
# start-up's replay, reads it the same way).
#
#   HOUSEHOLDS=1000000 EVENTS=9940000 AFTER=200000 benches/crash-restart.sh  # ~10M, as README
#   EVENTS=900000 benches/crash-restart.sh                                 # a minute or two
#   SERVE_ARGS="--checkpoint-every 300000" …                               # another interval
#   LOAD_ARGS=--request-ids …                        # more options for the load generator
#   KEEP=/tmp/crashed …      # keeps a copy of the store as the first crash left it, for
#                            # benches/start-up.sh to start builds on in turn
#
# The replayed tail is EVENTS minus the seq of the last checkpoint (one every 1M events by
# default) or delta on it (one 250,000 events after the checkpoint, the delta before, or the
# reopen of sled that follows a checkpoint every 4M events). Where the deltas fall depends on
# when those reopens came, so the tail is not fixed: EVENTS=9940000 gave a tail of 181,000
# after a delta of the 724,000 events since the checkpoint. SERVE_ARGS="--delta-every 0"
# crashes a server without deltas (a tail of up to 1M: EVENTS just under a multiple of 1M).
set -euo pipefail
cd "$(dirname "$0")/.."
HOUSEHOLDS=${HOUSEHOLDS:-100000}
EVENTS=${EVENTS:-900000}
AFTER=${AFTER:-200000}
PORT=${PORT:-29994}
BIN=${BIN:-target/release/rollstore}
[ -n "${NOBUILD:-}" ] || cargo build --release --quiet
# shellcheck source=benches/settle.sh
. benches/settle.sh
# shellcheck source=benches/start-up-log.sh
. benches/start-up-log.sh
DIR=$(mktemp -d /tmp/rollstore-crash.XXXXXX)
SERVER=
trap '[ -z "$SERVER" ] || { kill -9 "$SERVER"; wait "$SERVER"; } 2>/dev/null; rm -rf "$DIR"' EXIT


start_server() {
    : >"$DIR/server.log"
    start_serving "$DIR"
    wait_until_serving "$SERVER" "$DIR/server.log"
    # What it loaded, then each step's time.
    server_log "$DIR/server.log" | sed -n 's/.*loaded the roll: \(.*\) head=.*/\1; /p' | tr -d '\n'
    start_up_steps "$DIR/server.log"
    awk '$1 == "VmRSS:" { printf "RSS %d MiB\n", $2 / 1024 }' "/proc/$SERVER/status"
}

load() {
    # LOAD_ARGS is split into words on purpose: it holds the load generator's options.
    # shellcheck disable=SC2086
    "$BIN" bench --address "127.0.0.1:$PORT" --concurrency 4 --batch 1000 --mix mixed \
        --households "$HOUSEHOLDS" --requests $(($1 / 1000)) --seconds 36000 ${LOAD_ARGS:-} |
        grep -E '^events'
    # A background checkpoint may be encoding still: let it finish, as a crash would not.
    settle "$SERVER"
    reopens "$DIR/server.log"
}

crash() {
    kill -9 "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=
}

start_server >/dev/null
load "$EVENTS"
crash
if [ -n "${KEEP:-}" ]; then
    rm -rf "$KEEP"
    cp -r "$DIR/store" "$KEEP"
fi
echo -n "restart after the crash:        "
start_server
load "$AFTER"
crash
echo -n "restart after a second crash:   "
start_server
crash
echo -n "export of the whole log:        "
python3 - "$BIN" "$DIR/store" "$DIR/export.jsonl" <<'PY'
import resource, subprocess, sys, time
binary, store, out = sys.argv[1:]
began = time.monotonic()
done = subprocess.run([binary, "export", "--data", store, "--out", out],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
if done.returncode != 0:
    sys.exit(f"the export failed: {done.stderr.strip()}")
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
print(f"{time.monotonic() - began:.1f} s, peak RSS {peak} MiB")
PY
