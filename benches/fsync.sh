#!/usr/bin/env bash
# What this machine's disk charges for a durable commit, alone: appends BYTES to a new file in
# DIR and fsyncs after each append, for DURATION seconds, then prints the commits a second,
# the fsync's latency (p50, p90, p99), and the latency of the write into the page cache before
# it. A commit of the server is its group written into sled's file and one fsync
# (`Log::append`), so this is the disk's share of a commit, apart from everything else the
# server does: a group of ~12 single events is ~6,000 bytes, and a batch of 1,000 events of the
# mixed load writes ~1,700,000 (`written` in benches/cpu-per-event.sh). The write's cost is
# mostly fresh pages of the page cache (see benches/first-touch.sh).
#
#   benches/fsync.sh                        # 6,000 bytes a commit, 3 s, in /tmp
#   BYTES=1700000 benches/fsync.sh          # a commit the size of a batch of 1,000
#   DIR=/data DURATION=10 benches/fsync.sh  # another disk, longer
set -euo pipefail
DIR=${DIR:-/tmp}
FILE=$(mktemp "$DIR/rollstore-fsync.XXXXXX")
trap 'rm -f "$FILE"' EXIT
python3 - "$FILE" "${BYTES:-6000}" "${DURATION:-3}" <<'PY'
import os, sys, time
path, size, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
block = b"x" * size
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
writes, syncs = [], []
started = time.perf_counter()
while time.perf_counter() - started < seconds:
    before = time.perf_counter()
    os.write(fd, block)
    written = time.perf_counter()
    os.fsync(fd)
    writes.append(written - before)
    syncs.append(time.perf_counter() - written)
took = time.perf_counter() - started
os.close(fd)
def percentiles(what, times):
    times = sorted(times)
    at = lambda q: times[min(len(times) - 1, int(len(times) * q))] * 1e3
    return f"{what} p50 {at(0.5):.2f} ms, p90 {at(0.9):.2f} ms, p99 {at(0.99):.2f} ms"
print(f"{size} bytes a commit: {len(syncs) / took:.0f} commits/s, "
      f"{len(syncs) * size / took / 1e6:.0f} MB/s; {percentiles('fsync', syncs)}; "
      f"{percentiles('the write before it', writes)}")
PY
