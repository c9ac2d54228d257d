#!/usr/bin/env bash
# Compares two builds on this noisy machine by alternating them: PAIRS runs of
# benches/cpu-per-event.sh with build A then build B, and prints each pair's events/s and the
# ratio B/A, then the median of the ratios and of each build's runs. A pair's two runs are
# seconds apart, so a ratio is far steadier than either figure: the other tenants of the host
# move throughput by a third between hours, but seldom within a pair. Still, one set of eight
# pairs does not resolve 3%: two changes each came out at 1.03 (ahead in 6 of 8) alone, and at
# 0.995-0.998 together against the same base (benches/JOURNAL.md, 2026-11-30's sixth session).
# Confirm a small ratio with a second set, or count instructions (benches/instructions.sh).
#
#   benches/pairs.sh /tmp/before/rollstore target/release/rollstore                 # batches of 1,000, 4 clients
#   PAIRS=8 benches/pairs.sh A B --concurrency 8 --batch 1000 --seconds 5 --mix mixed
#   benches/pairs.sh A B --concurrency 32 --seconds 5                                # single events
#   STORE_B=/tmp/scale/store benches/pairs.sh BIN BIN --concurrency 32 --seconds 5   # a full store against a fresh one
#
# Arguments after the two builds go to the load generator (the default: 4 clients, batches of
# 1,000, the mixed load, 5 s). Each run starts a fresh server, as cpu-per-event.sh does, on a
# fresh store, or on STORE_A's or STORE_B's for that side (cpu-per-event.sh's STORE).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
cd "$(dirname "$0")/.."
A=$1
B=$2
shift 2
[ $# -gt 0 ] || set -- --concurrency 4 --batch 1000 --seconds 5 --mix mixed
PAIRS=${PAIRS:-8}
rate() {
    local build=$1 store=$2
    shift 2
    local out
    out=$(RUNS=1 BIN=$build NOBUILD=1 STORE=$store benches/cpu-per-event.sh "$@" 2>&1) || {
        printf '%s\n' "$out" >&2
        exit 1
    }
    printf '%s\n' "$out" | tail -n 1 | awk '{print $1}'
}
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
printf '%10s %10s %7s\n' A/s B/s B/A
for _ in $(seq "$PAIRS"); do
    a=$(rate "$A" "${STORE_A:-}" "$@")
    b=$(rate "$B" "${STORE_B:-}" "$@")
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%10d %10d %7.3f\n", a, b, b / a }' | tee -a "$RESULTS"
done
awk '
    function median(v, n,    i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    { a[NR] = $1; b[NR] = $2; r[NR] = $3; if ($3 > 1) wins++ }
    END { printf "median B/A %.3f (B ahead in %d of %d pairs); median A %d/s, B %d/s\n",
                 median(r, NR), wins, NR, median(a, NR), median(b, NR) }' "$RESULTS"
