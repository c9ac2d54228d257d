#!/usr/bin/env bash
# What this machine charges for memory a process touches for the first time: maps ROUNDS
# regions of MIB MiB in turn (anonymous, without huge pages), writes one byte in each 4 KiB
# page, unmaps it, and prints the time per page. On a virtual machine whose host takes back
# the memory its guest frees (a balloon's free page reporting), the first round pays for the
# host to supply every page again (unless as much was freed moments before, which the guest
# hands out first); the rounds after it reuse the pages just freed. A server's
# start-up builds its roll in fresh pages, and sled's writes fill fresh page cache, so this is
# part of both of their costs here (`clear_page_erms` in their profiles).
#
#   benches/first-touch.sh              # 2 rounds of 4096 MiB
#   ROUNDS=3 MIB=1024 benches/first-touch.sh
set -euo pipefail
python3 - "${ROUNDS:-2}" "${MIB:-4096}" <<'PY'
import mmap, sys, time
rounds, mib = int(sys.argv[1]), int(sys.argv[2])
size, page = mib << 20, 4096
for r in range(rounds):
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(region, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    started = time.perf_counter()
    for at in range(0, size, page):
        region[at] = 1
    took = time.perf_counter() - started
    region.close()
    print(f"round {r + 1}: {mib} MiB in {took:.2f} s, {took / (size // page) * 1e6:.2f} µs a page",
          flush=True)
PY
