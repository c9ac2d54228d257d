#!/usr/bin/env bash
# Runs the load generator RUNS times against a fresh server and reports, per run, events/s,
# latency, the CPU time the server and the load generator each spent per event (from
# /proc/<pid>/stat and the load generator's rusage), and the bytes the server wrote per event
# (its wchar in /proc/<pid>/io: sled's log, its segment cleaning, checkpoints). On a shared
# 2-core machine the CPU figures are steadier than throughput, and they say where a target's
# CPU budget goes.
#
#   benches/cpu-per-event.sh --concurrency 32 --seconds 5               # single events
#   benches/cpu-per-event.sh --concurrency 32 --seconds 5 --connections 4   # on 4 shared connections
#   benches/cpu-per-event.sh --concurrency 4 --batch 1000 --seconds 6   # batches
#   benches/cpu-per-event.sh --mix head --concurrency 32 --seconds 5    # GetHead: a call's floor
#   RUNS=3 benches/cpu-per-event.sh …
#   BIN=/tmp/other/rollstore NOBUILD=1 benches/cpu-per-event.sh …       # another build, A/B
#   STORE=/tmp/scale/store benches/cpu-per-event.sh …   # against that store (kept), not a fresh one
#   THREADS=1 benches/cpu-per-event.sh …    # and the server's CPU per event by thread: the writer's
#                                           # decider, committer and folder, tokio, sled's I/O,
#                                           # and threads that ended meanwhile (checkpoints)
#   WAKEUPS=1 benches/cpu-per-event.sh …    # and the server's futex calls and context switches
#                                           # per event (`perf stat` on it during the run): what
#                                           # its threads' waking of each other costs; and the
#                                           # events a commit (events over fsyncs)
#                                           # (counting slows it a little: compare builds with
#                                           # WAKEUPS=1 on both sides)
#
# With --mix head nothing is written, and the figures are per call instead of per event.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
PORT=${PORT:-29996}
BIN=${BIN:-target/release/rollstore}
[ -n "${NOBUILD:-}" ] || cargo build --release --quiet
DIR=$(mktemp -d /tmp/rollstore-cpu.XXXXXX)
# The server serves DIR/store: a fresh store, or STORE through a link (the exit removes the
# link, not the store).
[ -z "${STORE:-}" ] || ln -s "$(realpath "$STORE")" "$DIR/store"
# shellcheck source=benches/start-up-log.sh
. benches/start-up-log.sh
start_serving "$DIR"
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
# A server that fails to start (its port taken, say) ends the script with its log, instead of
# leaving the loop below to wait for it forever.
wait_until_serving "$SERVER" "$DIR/server.log"
until "$BIN" bench --address "127.0.0.1:$PORT" --concurrency 1 --requests 1 --seconds 5 >/dev/null 2>&1; do
    sleep 0.05
done
THREADS=${THREADS:-} WAKEUPS=${WAKEUPS:-} python3 - "$BIN" "$PORT" "$SERVER" "$RUNS" "$DIR/run.json" "$DIR/server.log" "$@" <<'PY'
import glob, json, os, re, resource, signal, subprocess, sys, time
binary, port, server, runs, out, log, *args = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
def server_written():
    # Bytes the server handed to write(2) and friends: sled's log, its segment cleaning and
    # the checkpoints, each counted as often as it is written.
    for line in open(f"/proc/{server}/io"):
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0
def server_seconds():
    fields = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz  # utime + stime
def thread_seconds():
    # CPU seconds by thread name, a pool's threads together (sled-io-0..6 as sled-io).
    seconds = {}
    for stat in glob.glob(f"/proc/{server}/task/*/stat"):
        try:
            text = open(stat).read()
        except OSError:
            continue  # a thread that ended meanwhile
        name = re.sub(r"-\d+$", "", text[text.index("(") + 1:text.rindex(")")])
        fields = text.rsplit(")", 1)[1].split()
        seconds[name] = seconds.get(name, 0) + (int(fields[11]) + int(fields[12])) / hz
    return seconds
WAKEUP_EVENTS = ["syscalls:sys_enter_futex", "context-switches", "syscalls:sys_enter_fsync"]
def start_counting_wakeups():
    # perf stat on the server alone, from before the load starts until after it ends.
    try:
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(WAKEUP_EVENTS), "-p", server],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        sys.exit("WAKEUPS=1 needs perf (linux-tools), with permission to trace the server")
    time.sleep(0.3)  # perf attaches to each of the server's threads before the load begins
    return perf
def wakeups_counted(perf):
    perf.send_signal(signal.SIGINT)
    _, report = perf.communicate()
    # perf's CSV lines: value,unit,event,… ("<not supported>" for a value it could not count).
    counts = {f[2]: float(f[0]) for f in (line.split(",") for line in report.splitlines())
              if len(f) > 2 and f[2] in WAKEUP_EVENTS and f[0].replace(".", "", 1).isdigit()}
    if len(counts) < len(WAKEUP_EVENTS):
        sys.exit(f"perf stat could not count {WAKEUP_EVENTS} on the server:\n{report}")
    return counts
for _ in range(int(runs)):
    threads = thread_seconds()
    perf = start_counting_wakeups() if os.environ.get("WAKEUPS") else None
    before, children = server_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    written = server_written()
    bench = subprocess.run([binary, "bench", "--address", f"127.0.0.1:{port}", "--json", out, *args],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if bench.returncode != 0:
        # A run that fails (a request refused, say) ends the script, with what the load
        # generator saw (its table names the first error) and what the server logged
        # besides its routine lines.
        plain = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in open(log, errors="replace"))
        server_lines = [line for line in plain if " INFO " not in line]
        sys.exit("the load generator failed:\n" + bench.stdout
                 + "the server's log, less its INFO lines:\n" + "".join(server_lines[-20:]))
    after, done = server_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    wakeups = wakeups_counted(perf) if perf else None
    written = server_written() - written
    run = json.load(open(out))
    # Per event; per call when nothing is written (--mix head).
    unit, count = ("event", run["events"]) if run["events"] else ("call", run["requests"])
    count = max(count, 1)
    rate = count / run["seconds"]
    client = (done.ru_utime - children.ru_utime) + (done.ru_stime - children.ru_stime)
    print(f"{rate:9.0f} {unit}s/s  p50 {run['latency_ms']['p50']:6.2f} ms  "
          f"p99 {run['latency_ms']['p99']:6.2f} ms  server {(after - before) * 1e6 / count:5.1f} µs/{unit}  "
          f"load generator {client * 1e6 / count:5.1f} µs/{unit}  "
          f"written {written / count:6.0f} B/{unit}", flush=True)
    if wakeups:
        # Each commit ends in one fsync of sled's file, so events over fsyncs is the group
        # commit's size (a checkpoint's own fsyncs, a few a run, blur it a little).
        fsyncs = wakeups["syscalls:sys_enter_fsync"]
        per_commit = f", {count / fsyncs:.1f} {unit}s a commit (fsync)" if fsyncs else ""
        print(f"  server: {wakeups['syscalls:sys_enter_futex'] / count:.2f} futex calls/{unit}, "
              f"{wakeups['context-switches'] / count:.2f} context switches/{unit}{per_commit}",
              flush=True)
    if os.environ.get("THREADS"):
        now = thread_seconds()
        spent = {name: now[name] - threads.get(name, 0) for name in now}
        # A thread that ended during the run (a background checkpoint's or delta's) is gone
        # from /proc by now, but its CPU is in the process's: what the listed ones do not add
        # up to is theirs.
        ended = (after - before) - sum(spent.values())
        if ended * 1e6 / count >= 0.05:
            spent["(ended threads)"] = ended
        print("  by thread: " + ", ".join(
            f"{name} {seconds * 1e6 / count:.1f} µs" for name, seconds in
            sorted(spent.items(), key=lambda item: -item[1]) if seconds > 0), flush=True)
PY
