#!/usr/bin/env bash
# Issue 18's benchmark: transactional produce at 1 KiB with a commit every
# 100 ms and every 1,000 ms, against idempotent produce in the same run
# (librdkafka, examples/txn_perf.rs; 1 producer, 1 partition, linger.ms=5,
# batch.size=1000000), each against a fresh release broker, ROUNDS
# alternating runs (default 3, medians compared); commit_transaction latency
# (EndTxn alone, after the records are acknowledged) p50/p99 per run. Prints a Markdown section.
#   scripts/bench-txn.sh [RECORDS]     (default 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
rounds=${ROUNDS:-3}
cargo build --quiet --release --bin chronik-ingest --example txn_perf
. scripts/lib/broker.sh
scratch=$(scratch_on_target bench-txn)
pid=
trap 'stop_broker; rm -rf "$scratch"' EXIT

# endtxn_quantiles METRICS: the broker's EndTxn latency p50 and p99 in ms,
# from its request-duration histogram (the bucket each falls in: an upper
# bound), summed over shards.
endtxn_quantiles() {
    curl -s "http://$1/metrics" | awk '
        /^chronik_request_duration_seconds_bucket\{.*api="EndTxn"/ {
            match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n[le] += $NF; if (!(le in seen)) { seen[le] = 1; order[++k] = le }
        }
        END {
            total = n["+Inf"]; if (total == 0) { print "- -"; exit }
            for (i = 1; i <= k; i++) {
                if (p50 == "" && n[order[i]] >= total * 0.5) p50 = order[i]
                if (p99 == "" && n[order[i]] >= total * 0.99) p99 = order[i]
            }
            printf "%.1f %.1f\n", p50 * 1000, p99 * 1000
        }'
}

# run COMMIT_MS ROUND: prints txn_perf's line, then the broker's EndTxn
# p50 and p99.
run() {
    local commit_ms=$1 round=$2 dir="$scratch/$1-$2"
    mkdir -p "$dir"
    start_broker "$dir.log" "$dir" NUM_PARTITIONS=1 METRICS_ADDRESS=127.0.0.1:0 >&2
    local metrics
    metrics=$(broker_metrics_addr "$dir.log")
    sync
    local line
    line=$(target/release/examples/txn_perf --bootstrap "$addr" --topic "txn-$commit_ms-$round" \
        --records "$records" --record-size 1024 --commit-ms "$commit_ms")
    echo "$line $(endtxn_quantiles "$metrics")"
    stop_broker
    rm -rf "$dir"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for round in $(seq 1 "$rounds"); do
    for commit_ms in 0 100 1000; do
        line=$(run "$commit_ms" "$round")
        echo "round $round commit-ms $commit_ms: $line" >&2
        echo "$line" >>"$scratch/runs-$commit_ms"
    done
done
idempotent=$(awk '{print $1}' "$scratch/runs-0" | median)
echo
echo "## Transactions (1 KiB, 1 producer, 1 partition, $records records, median of $rounds alternating runs)"
echo
echo "EndTxn as the client sees it (librdkafka's commit_transaction, records already acknowledged) and as the"
echo "broker answers it (its request-duration histogram: the bucket's upper bound)."
echo
echo "| producer | records/s (runs) | median records/s | / idempotent | commits per run | client commit p50 / p99 ms | broker EndTxn p50 / p99 ms |"
echo "|---|---|---:|---:|---:|---:|---:|"
for commit_ms in 0 100 1000; do
    rates=$(awk '{print $1}' "$scratch/runs-$commit_ms" | paste -sd' ')
    rate=$(awk '{print $1}' "$scratch/runs-$commit_ms" | median)
    label=$([ "$commit_ms" = 0 ] && echo "idempotent" || echo "transactional, commit every $commit_ms ms")
    read -r _ _ _ _ commits _ p50 p99 _ b50 b99 < <(sort -n "$scratch/runs-$commit_ms" | awk -v m="$rate" '$1 == m' | head -1)
    echo "| $label | $rates | $rate | $(echo "scale=2; $rate / $idempotent" | bc) | $commits | $p50 / $p99 | $b50 / $b99 |"
done
