#!/usr/bin/env bash
# Issue 13's acceptance check: a cold read of old segments on one partition
# must not delay produce answers on another partition of the same shard
# beyond a stated bound. Starts a one-shard broker (SHARDS=1: both
# partitions on the same shard) on an ephemeral port with a scratch data
# directory and runs examples/cold_read_latency.rs against it: hot-partition
# produce latencies (acks=1, one in flight) alone, then while a consumer
# reads COLD_MB of the cold partition from its start with the partition's
# files dropped from the page cache every 50 ms. Exits with the example's
# status: non-zero when the cold-phase p99 exceeds BOUND_MS.
#   scripts/bench-cold-read.sh [COLD_MB] [SAMPLES] [BOUND_MS]   (default 1024 2000 50)
# BROKER_BIN: another broker binary (default target/release/chronik-ingest,
# built here). TIME_LIMIT: seconds the example may run (default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
cold_mb=${1:-1024}
samples=${2:-2000}
bound_ms=${3:-50}
limit=${TIME_LIMIT:-900}
if [ -z "${BROKER_BIN:-}" ]; then
    cargo build --quiet --release --bin chronik-ingest
    broker=target/release/chronik-ingest
else
    broker=$BROKER_BIN
fi
[ -x "$broker" ] || { echo "no broker binary at $broker" >&2; exit 2; }
cargo build --quiet --release --example cold_read_latency

scratch=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# As scripts/lib/broker.sh's start_broker, with the binary chosen above.
log=$scratch/broker.log
data=$scratch/store
env BIND_ADDRESS=127.0.0.1:0 STORAGE_PATH="$data" METRICS_ADDRESS= RUST_LOG=info SHARDS=1 \
    "$broker" 2>"$log" &
pid=$!
addr=
for _ in $(seq 1 100); do
    started=$(grep -m1 "chronik-ingest started" "$log" || true)
    if [ -n "$started" ]; then
        addr=$(echo "$started" | sed -n 's/.*listen=\([^ ]*\).*/\1/p')
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    cat "$log" >&2
    echo "the broker did not start" >&2
    exit 1
fi
echo "broker $broker (SHARDS=1) at $addr, data in $data"

# Bytes the broker made the block layer read (page-cache misses): shows
# the cold reads really went to the device.
read_bytes() { awk '/^read_bytes:/ {print $2}' "/proc/$pid/io" 2>/dev/null || echo 0; }
r0=$(read_bytes)
status=0
timeout --signal=TERM --kill-after=10 "$limit" target/release/examples/cold_read_latency \
    --bootstrap "$addr" --data-dir "$data" --cold-mb "$cold_mb" --samples "$samples" \
    --bound-ms "$bound_ms" || status=$?
r1=$(read_bytes)
echo "broker device reads during the run: $(( (r1 - r0) / 1048576 )) MiB"
if [ "$status" -eq 124 ]; then
    echo "cold_read_latency did not finish within ${limit} s" >&2
fi
exit "$status"
