#!/usr/bin/env bash
# SHARDS=1 against SHARDS=2 on a load that leaves the broker the CPU:
# examples/blast_producers.rs (8 connections, each re-sending one
# pre-encoded batch of 100 x 100 B records to its own partition of an
# 8-partition topic, 8 requests in flight, acks=1). librdkafka's clients
# need a core of their own on a 2-core box, so with them a second shard
# competes with the client instead of adding capacity (bench-matrix's
# shard row); this client spends ~0.4 core. Alternates ROUNDS times and
# prints each run, the medians and their ratio, and broker CPU per run.
#   scripts/bench-shards.sh [SECONDS] [ROUNDS]      (default 8 3)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
rounds=${2:-3}
cargo build --quiet --release --bin chronik-ingest --example blast_producers
data=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$data"' EXIT
. scripts/lib/broker.sh

run() { # run SHARDS: prints "records/s broker-cpu-s"
    local shards=$1 line c0 c1
    rm -rf "$data/store"
    start_broker "$data/broker.log" "$data/store" SHARDS="$shards" NUM_PARTITIONS=8
    c0=$(broker_cpu_seconds)
    line=$(target/release/examples/blast_producers --bootstrap "$addr" --topic blast --connections 8 \
        --seconds "$seconds" --depth 8 --record-size 100 --records 100)
    c1=$(broker_cpu_seconds)
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
    echo "SHARDS=$shards: $line; broker CPU $(echo "$c1 - $c0" | bc) s in ${seconds} s" >&2
    echo "${line%% records/s*} $(echo "$c1 - $c0" | bc)"
}
ones=()
twos=()
for _ in $(seq 1 "$rounds"); do
    ones+=("$(run 1)")
    twos+=("$(run 2)")
done
median() { printf '%s\n' "$@" | awk '{print $1}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
one=$(median "${ones[@]}")
two=$(median "${twos[@]}")
echo "median records/s: SHARDS=1 $one, SHARDS=2 $two; SHARDS=2 / SHARDS=1 = $(echo "scale=2; $two / $one" | bc)"
