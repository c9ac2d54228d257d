# Sourced by the bench scripts that start a server. The server's log (stderr) has ANSI
# colours; the readers below read it without them.
#
# The scripts' default ports (PORT, 29992–29999) are below Linux's ephemeral range (32768–60999
# here, /proc/sys/net/ipv4/ip_local_port_range): inside it, an outgoing connection of any
# process, a load generator's among them, can hold the port just as a server is to listen on it.
#
#   start_serving DIR               starts $BIN serving DIR/store on 127.0.0.1:$PORT, with
#                                   serve's options from SERVE_ARGS and its log appended to
#                                   DIR/server.log, and sets SERVER to its pid
#   server_log FILE                 the log, plain
#   wait_until_serving PID FILE     returns once the log says it serves; if the server
#                                   died first, prints its log and exits 1
#   start_up_steps FILE             each start-up step's time, on one line: sled's open and
#                                   the checkpoint's decoding (side by side), the replay,
#                                   and the time until it served
#   reopens FILE                    each time the server reopened sled after a checkpoint
#                                   (`--reopen-log-every`), and how long writes waited
start_serving() {
    # SERVE_ARGS is split into words on purpose: it holds serve's options.
    # shellcheck disable=SC2086
    "$BIN" serve --data "$1/store" --listen "127.0.0.1:$PORT" ${SERVE_ARGS:-} 2>>"$1/server.log" &
    SERVER=$!
}

server_log() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }

wait_until_serving() {
    until server_log "$2" | grep -aq "is serving"; do
        kill -0 "$1" 2>/dev/null || { server_log "$2"; exit 1; }
        sleep 0.05
    done
}

start_up_steps() {
    server_log "$1" | grep -aoE '(log_opened|checkpoint_read|replayed|opened_in)_ms=[0-9]+' |
        tr '\n' ' '
}

reopens() {
    local seen
    # No reopen is no match, which is not a failure here (the scripts run under `set -e`).
    seen=$(server_log "$1" | grep -a "reopened to write sled's snapshot" |
        grep -oE '(head|opened_ms)=[0-9]+' | paste -d' ' - - | sed 's/^/at /' |
        paste -sd',' -) || true
    echo "sled reopened: ${seen:-none}"
}
