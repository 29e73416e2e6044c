# Sourced by the bench scripts (run from the repository root): a release
# broker on an ephemeral port with a scratch data directory, and its CPU.

# start_broker LOG DATA_DIR [VAR=value ...]: starts target/release/chronik-ingest
# (or $BROKER_BIN, to compare another build) in the background with the extra environment given; sets `pid`, `started`
# (its start log line, naming every listener) and `addr` (the first
# listener). Waits at most 10 s; on failure prints the log and returns 1.
start_broker() {
    local log=$1 dir=$2
    shift 2
    env BIND_ADDRESS=127.0.0.1:0 STORAGE_PATH="$dir" METRICS_ADDRESS= RUST_LOG=info "$@" \
        "${BROKER_BIN:-target/release/chronik-ingest}" 2>"$log" &
    pid=$!
    for _ in $(seq 1 100); do
        started=$(grep -m1 "chronik-ingest started" "$log" || true)
        if [ -n "$started" ]; then
            addr=$(echo "$started" | sed -n 's/.*listen=\([^ ]*\).*/\1/p')
            return 0
        fi
        sleep 0.1
    done
    cat "$log" >&2
    return 1
}

# broker_cpu_seconds: user + system CPU seconds the broker ($pid) has used.
broker_cpu_seconds() {
    awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$pid/stat"
}

# broker_metrics_addr LOG: prints the address the broker's metrics endpoint
# bound (its "metrics listening" line); start_broker leaves metrics off
# unless METRICS_ADDRESS=127.0.0.1:0 is among its extra variables. Waits at
# most 10 s; returns 1 when metrics are off or the line never came.
broker_metrics_addr() {
    local log=$1 m
    for _ in $(seq 1 100); do
        m=$(sed -n 's/.*metrics listening.*metrics=\([^ ]*\).*/\1/p' "$log" | head -1)
        if [ -n "$m" ]; then
            echo "$m"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# stop_broker [SECONDS]: SIGTERM to the broker ($pid), SIGKILL if it has not
# exited within SECONDS (default 30: a clean stop syncs its partitions);
# clears `pid`.
stop_broker() {
    local limit=${1:-30}
    [ -n "${pid:-}" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

# scratch_on_target NAME: prints a new scratch directory on the filesystem
# target/ is on (the one the benches measure): under $TMPDIR or /tmp when
# that is the same filesystem and not a tmpfs, else under target/tmp.
scratch_on_target() {
    local parent=${TMPDIR:-/tmp}
    mkdir -p target
    if [ "$(stat -f -c %T "$parent")" = tmpfs ] || [ "$(stat -c %d "$parent")" != "$(stat -c %d target)" ]; then
        parent=target/tmp
        mkdir -p "$parent"
    fi
    realpath "$(mktemp -d "$parent/$1.XXXXXX")"
}
