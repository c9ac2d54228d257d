#!/usr/bin/env bash
# Counts the instructions the server executes per event (valgrind's callgrind), for builds in
# turn, on the same load: a fresh store, WARM requests unmeasured, then REQUESTS measured, from
# one client with the load generator's fixed seed, so that every build gets the same events in
# the same groups (the first build named is the load generator for all of them). Instructions, unlike seconds, repeat on this noisy machine to a fraction of
# a percent, which is what tells a change of 1–3% from noise. They count only user space:
# what the kernel does for the server (its writes into the page cache, page faults, syscalls)
# is not in them, so a figure here is a lower bound on a change's effect, never the rate.
#
#   benches/instructions.sh /tmp/before/rollstore target/release/rollstore    # batches of 1,000
#   BATCH=1 REQUESTS=2000 benches/instructions.sh target/release/rollstore    # single events
#   TOP=25 benches/instructions.sh target/release/rollstore    # and the 25 costliest functions
#   KEEP=1 …    # keep each build's callgrind output, for callgrind_annotate --tree=caller
#   STORE=/tmp/scale/store …   # on that store (kept, and appended to), not a fresh one
#
# Each build prints `Ir/event`, the instructions per event while measured. The server runs
# under valgrind about 50 times slower than natively; the default load takes ~30 s a build.
# On a STORE of 10M events a build takes ~4 minutes, most of it the start-up under valgrind.
# The server is then killed (-9), not stopped: a clean stop writes a whole checkpoint, minutes
# more under valgrind, and the next start replays the few events this one added instead.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
cd "$(dirname "$0")/.."
PORT=${PORT:-29997}
BATCH=${BATCH:-1000}
WARM=${WARM:-10}
REQUESTS=${REQUESTS:-30}
MIX=${MIX:-mixed}
DIR=$(mktemp -d /tmp/rollstore-instructions.XXXXXX)
SERVER=
trap '[ -z "$SERVER" ] || { kill -9 "$SERVER"; wait "$SERVER"; } 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$DIR"' EXIT
LOADGEN=$1

# shellcheck source=benches/start-up-log.sh
. benches/start-up-log.sh

load() {
    "$LOADGEN" bench --address "127.0.0.1:$PORT" --concurrency 1 --batch "$BATCH" --mix "$MIX" \
        --seconds 600 --seed 1 "$@" >/dev/null
}

n=0
for BUILD in "$@"; do
    n=$((n + 1))
    OUT=$DIR/callgrind.$n.out
    rm -rf "$DIR/store"
    # The server serves DIR/store: a fresh one, or STORE through a link (the exit removes the
    # link, not the store).
    [ -z "${STORE:-}" ] || ln -s "$(realpath "$STORE")" "$DIR/store"
    : >"$DIR/server.log"
    # Instrumentation starts switched off: the start-up and the warm-up are not measured.
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=%s %s "$@"\n' \
        "$OUT" "$BUILD" >"$DIR/under-callgrind"
    chmod +x "$DIR/under-callgrind"
    BIN=$DIR/under-callgrind
    start_serving "$DIR"
    wait_until_serving "$SERVER" "$DIR/server.log"
    load --requests "$WARM"
    callgrind_control --instr=on "$SERVER" >/dev/null 2>&1
    load --requests "$REQUESTS"
    callgrind_control --instr=off "$SERVER" >/dev/null 2>&1
    # Written now, from the server as it runs: a server killed below writes nothing at its end.
    callgrind_control --dump "$SERVER" >/dev/null 2>&1
    if [ -n "${STORE:-}" ]; then kill -KILL "$SERVER"; else kill -TERM "$SERVER"; fi
    wait "$SERVER" || true
    SERVER=
    # valgrind hides the CPU's SHA extensions, so SHA-256 runs in software under it, at ~40%
    # of the total here against ~2.5% of the samples natively: it is counted apart, and the
    # rest is what a change elsewhere moves.
    # The dump above is OUT.1 (callgrind numbers its dumps); what a stopped server writes at
    # its end, into OUT, is empty, since its instrumentation is off by then.
    callgrind_annotate --auto=no --inclusive=no "$OUT.1" 2>/dev/null >"$DIR/annotated"
    awk -v build="$BUILD" -v n="$((REQUESTS * BATCH))" '
        function count(s) { gsub(",", "", s); return s + 0 }
        /PROGRAM TOTALS/ { total = count($1) }
        / [^ ]*:sha2::sha256::compress256/ { sha += count($1) }
        END { printf "%s: %.0f Ir/event without SHA-256, %.0f with it (%d events)\n",
                     build, (total - sha) / n, total / n, n }' "$DIR/annotated"
    [ -z "${KEEP:-}" ] || echo "  callgrind output kept in $OUT.1"
    if [ -n "${TOP:-}" ]; then
        grep -E '^ *[0-9,]+ ' "$DIR/annotated" | grep -v compress256 | head -n "$TOP" |
            sed -E 's|/root/.cargo/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/library/||'
    fi
done
