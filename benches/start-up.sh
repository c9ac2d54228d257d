#!/usr/bin/env bash
# How long builds take to start on one store: each build in turn starts on a fresh copy of the
# store, for ROUNDS rounds, and each start reports its steps (sled's open and the checkpoint's
# decoding side by side, then the replay of the log after the checkpoint), the time until it
# served, its peak RSS and the CPU time it had used by then. Alternating the builds on the
# same store is what makes two of them comparable on this noisy machine; the CPU time is the
# steadier of the two measures.
#
#   # a store killed 900,000 events after its last checkpoint, kept by the crash script:
#   KEEP=/tmp/crashed HOUSEHOLDS=300000 EVENTS=1900000 LOAD_ARGS=--request-ids \
#       benches/crash-restart.sh
#   ROUNDS=3 benches/start-up.sh /tmp/crashed /tmp/before/rollstore target/release/rollstore
#
# The store is never started on itself (a start writes to it), only copies of it.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
STORE=$1
shift
[ -d "$STORE" ] || { echo "no store at $STORE" >&2; exit 1; }
PORT=${PORT:-29996}
DIR=$(mktemp -d /tmp/rollstore-start.XXXXXX)
SERVER=
trap '[ -z "$SERVER" ] || { kill -9 "$SERVER"; wait "$SERVER"; } 2>/dev/null; rm -rf "$DIR"' EXIT

# shellcheck source=benches/start-up-log.sh
. "$(dirname "$0")/start-up-log.sh"

for _ in $(seq "${ROUNDS:-3}"); do
    for BIN in "$@"; do
        rm -rf "$DIR/store"
        cp -r "$STORE" "$DIR/store"
        sync
        : >"$DIR/server.log"
        start_serving "$DIR"
        wait_until_serving "$SERVER" "$DIR/server.log"
        # utime and stime, in clock ticks, are the 14th and 15th fields of /proc/<pid>/stat.
        cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$SERVER/stat")
        peak=$(awk '$1 == "VmHWM:" { print int($2 / 1024) }' "/proc/$SERVER/status")
        # minflt, the 10th field: pages touched for the first time (each zeroed by the kernel).
        faults=$(awk '{ print $10 }' "/proc/$SERVER/stat")
        echo "$BIN: $(start_up_steps "$DIR/server.log")peak=${peak}MiB cpu=${cpu}s page_faults=${faults}"
        kill -9 "$SERVER"
        wait "$SERVER" 2>/dev/null || true
        SERVER=
    done
done
