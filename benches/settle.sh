# Sourced by the bench scripts. settle PID STORE: waits (up to a minute, then says so) until
# the server with that pid has used at most 4% of a core for half a second and is not writing
# a checkpoint or a delta into STORE (its data directory). A load's last million events start
# a background checkpoint that encodes for seconds: a measurement taken meanwhile measures the
# two of them sharing the cores, and a crash meanwhile loses that checkpoint. The file check
# is for its fsync (~1 s on a slow host), when the server uses no CPU but the checkpoint is not
# done, and a delta may follow it at once (`Shared::delta_if_due`).
settle() {
    local before
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, 1/100 s
    # A checkpoint or delta is written to roll.checkpoint.tmp or roll.delta.tmp and renamed
    # into place once synced (src/store/checkpoint.rs).
    writing() { compgen -G "$1/roll.*.tmp" >/dev/null; }
    for _ in $(seq 120); do
        before=$(ticks "$1"); sleep 0.5
        [ $(( $(ticks "$1") - before )) -le 2 ] && ! writing "$2" && return
    done
    echo "the server was still busy a minute after the load; measuring anyway" >&2
}
