# Sourced by the bench scripts. settle PID: waits (up to a minute, then says so) until the
# server with that pid has used at most 4% of a core for half a second and holds no checkpoint
# or delta open. A load's last million events start a background checkpoint that encodes for
# seconds: a measurement taken meanwhile measures the two of them sharing the cores, and a
# crash meanwhile loses that checkpoint. The open file is for its fsync (~1 s on a slow host),
# when the server uses no CPU but the checkpoint is not done, and a delta may follow it at
# once (`Shared::delta_if_due`).
settle() {
    local before
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, 1/100 s
    # A checkpoint or delta is written to roll.checkpoint.tmp or roll.delta.tmp, held open
    # until it is synced, then renamed into place (src/store/checkpoint.rs). The open file,
    # not the name: a crash leaves a .tmp behind until the server starts again.
    writing() { find "/proc/$1/fd" -lname '*/roll.*.tmp' 2>/dev/null | grep -q .; }
    for _ in $(seq 120); do
        before=$(ticks "$1"); sleep 0.5
        [ $(( $(ticks "$1") - before )) -le 2 ] && ! writing "$1" && return
    done
    echo "the server was still busy a minute after the load; measuring anyway" >&2
}
