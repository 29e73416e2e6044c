#!/usr/bin/env bash
# Cluster mode's figures (issue 16), one release broker, producer_perf
# (librdkafka, kafka-producer-perf-test's flags and output) on 127.0.0.1:
#   - acks=all latency (p50/p99/p99.9) at RATE records/s of 1 KiB in cluster
#     mode against a local S3 server (moto), the WAL committing to etcd;
#   - acks=all and acks=1 throughput (unpaced) of the broker in cluster
#     mode and of the same broker as a single node (no etcd, no store).
# Failover times come from scripts/interop/cluster_failover.py (RECORDS=1000000
# ROUNDS=5 against the release binary), which prints p50/max.
# Needs etcd (Debian's etcd-server) and an S3 server: moto from
# target/interop-venv (scripts/test --install-only installs both), or
# s3s-fs (cargo install s3s-fs --features binary) when S3S_FS names its
# binary: a Rust server, which takes far less of this machine's two cores
# than moto's Python.
#   scripts/bench-cluster.sh
# RATE (20000), SECONDS_AT_RATE (30), RECORDS (1000000), PARTITIONS (4),
# SHARDS (the broker's, 2), OUT (target/bench-cluster.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

rate=${RATE:-20000}
seconds=${SECONDS_AT_RATE:-30}
records=${RECORDS:-1000000}
partitions=${PARTITIONS:-4}
shards=${SHARDS:-2}
out=${OUT:-target/bench-cluster.md}
venv=target/interop-venv
s3s_fs=${S3S_FS:-}
[ -n "$s3s_fs" ] || [ -x "$venv/bin/moto_server" ] || { echo "needs $venv/bin/moto_server: run scripts/test --install-only" >&2; exit 2; }
command -v etcd >/dev/null || { echo "needs etcd: run scripts/test --install-only" >&2; exit 2; }

say() { echo "[bench-cluster $(date +%T)] $*" >&2; }

say "building the release broker and producer_perf"
cargo build --quiet --release --bin chronik-ingest --example producer_perf
perf=target/release/examples/producer_perf
. scripts/lib/broker.sh

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
etcd_pid= moto_pid=
cleanup() {
    stop_broker 10 || true
    [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

etcd_port=$(free_port) peer_port=$(free_port) s3_port=$(free_port)
etcd --data-dir "$scratch/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" --initial-cluster "default=http://127.0.0.1:$peer_port" \
    >"$scratch/etcd.log" 2>&1 &
etcd_pid=$!
if [ -n "$s3s_fs" ]; then
    mkdir -p "$scratch/s3"
    "$s3s_fs" --host 127.0.0.1 --port "$s3_port" --access-key test --secret-key test "$scratch/s3" >"$scratch/s3.log" 2>&1 &
    s3_name="s3s-fs"
else
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$scratch/moto.log" 2>&1 &
    s3_name="moto"
fi
moto_pid=$!
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null && curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break
    sleep 0.2
done
"$venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='bench')"

# run NAME ACKS THROUGHPUT RECORDS MODE: one producer_perf run against a
# fresh broker (MODE cluster or single); prints producer_perf's summary.
run() {
    local name=$1 acks=$2 throughput=$3 n=$4 mode=$5
    local env=(NUM_PARTITIONS="$partitions" SHARDS="$shards")
    if [ "$mode" = cluster ]; then
        env+=(ETCD_ENDPOINTS="127.0.0.1:$etcd_port" NODE_ID=1 OBJECT_STORE_URL="s3://bench/$name")
    fi
    start_broker "$scratch/$name.log" "$scratch/$name" "${env[@]}"
    local summary
    summary=$("$perf" --topic "perf-$name" --num-records "$n" --record-size 1024 --throughput "$throughput" \
        --producer-props acks="$acks" bootstrap.servers="$addr" linger.ms=1 2>/dev/null | tail -1)
    stop_broker 30
    say "$name: $summary"
    echo "$summary"
}
pct() { echo "$1" | sed -n "s/.*, \([0-9.]*\) ms $2.*/\1/p"; }
rps() { echo "$1" | sed -n 's/.* records sent, \([0-9.]*\) records\/sec.*/\1/p'; }

at_rate=$((rate * seconds))
latency=$(run latency all "$rate" "$at_rate" cluster)
single_latency=$(run single-latency all "$rate" "$at_rate" single)
cluster_all=$(run cluster-all all -1 "$records" cluster)
cluster_one=$(run cluster-one 1 -1 "$records" cluster)
single_all=$(run single-all all -1 "$records" single)
single_one=$(run single-one 1 -1 "$records" single)

{
    echo "## Cluster mode (one release broker, SHARDS=$shards, $partitions partitions, 1 KiB records; etcd and $s3_name (S3) on 127.0.0.1)"
    echo
    echo "| run | records/s | p50 ms | p99 ms | p99.9 ms |"
    echo "|---|---:|---:|---:|---:|"
    echo "| acks=all at $rate/s, cluster mode (WAL to S3 + etcd) | $(rps "$latency") | $(pct "$latency" 50th) | $(pct "$latency" 99th) | $(pct "$latency" 99.9th) |"
    echo "| acks=all at $rate/s, single node | $(rps "$single_latency") | $(pct "$single_latency" 50th) | $(pct "$single_latency" 99th) | $(pct "$single_latency" 99.9th) |"
    echo "| acks=all unpaced, cluster mode | $(rps "$cluster_all") | $(pct "$cluster_all" 50th) | $(pct "$cluster_all" 99th) | $(pct "$cluster_all" 99.9th) |"
    echo "| acks=all unpaced, single node | $(rps "$single_all") | $(pct "$single_all" 50th) | $(pct "$single_all" 99th) | $(pct "$single_all" 99.9th) |"
    echo "| acks=1 unpaced, cluster mode | $(rps "$cluster_one") | $(pct "$cluster_one" 50th) | $(pct "$cluster_one" 99th) | $(pct "$cluster_one" 99.9th) |"
    echo "| acks=1 unpaced, single node | $(rps "$single_one") | $(pct "$single_one" 50th) | $(pct "$single_one" 99th) | $(pct "$single_one" 99.9th) |"
} | tee "$out"
