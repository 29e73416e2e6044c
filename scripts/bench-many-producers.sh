#!/usr/bin/env bash
# 10,000 connections each producing one small record per second (acks=1),
# load generator and broker in separate processes: reports whether every
# request was answered without error, the broker's RSS per connection while
# they produce, and its CPU. Loopback only, bounded in time.
#   scripts/bench-many-producers.sh [CONNECTIONS] [SECONDS]     (default 10000 30)
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-10000}
seconds=${2:-30}
ulimit -n "$(ulimit -Hn)"
cargo build --quiet --release --bin chronik-ingest --example many_producers
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
. scripts/lib/broker.sh
start_broker "$data/broker.log" "$data/store" MAX_CONNECTIONS=$((connections + 100)) \
    MAX_CONNECTIONS_PER_IP=$((connections + 100)) CONNECTION_RATE_LIMIT=0
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
rss0=$(rss)
cpu0=$(broker_cpu_seconds)
target/release/examples/many_producers --bootstrap "$addr" --connections "$connections" \
    --seconds "$seconds" --interval-ms 1000 --topic many >"$data/out" 2>&1 &
load=$!
# Sample the broker while the load runs (connect + run + settle).
peak=$rss0
while kill -0 "$load" 2>/dev/null; do
    now=$(rss)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 1
done
status=0
wait "$load" || status=$?
cpu1=$(broker_cpu_seconds)
cat "$data/out"
echo "broker RSS: $rss0 KiB idle, $peak KiB peak with $connections producing connections =" \
    "$(( (peak - rss0) * 1024 / connections )) bytes per connection"
echo "broker CPU: $(echo "scale=1; ($cpu1 - $cpu0) * 100 / $seconds" | bc)% of one core over the run"
exit "$status"
