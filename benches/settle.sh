# Sourced by the bench scripts. settle PID: waits (up to a minute, then says so) until the
# server with that pid has used at most 4% of a core for half a second. A load's last million
# events start a background checkpoint that encodes for seconds: a measurement taken meanwhile
# measures the two of them sharing the cores, and a crash meanwhile loses that checkpoint.
settle() {
    local before
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, 1/100 s
    for _ in $(seq 120); do
        before=$(ticks "$1"); sleep 0.5
        [ $(( $(ticks "$1") - before )) -le 2 ] && return
    done
    echo "the server was still busy a minute after the load; measuring anyway" >&2
}
