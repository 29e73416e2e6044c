#!/usr/bin/env bash
# Produce load test with kafka-producer-perf-test's flags and output.
# Runs Kafka's own tool when it is on PATH (kafka-producer-perf-test or
# kafka-producer-perf-test.sh); otherwise a librdkafka-based equivalent
# (examples/producer_perf.rs) with the same flags and output lines:
#   scripts/perf-produce.sh --topic perf --num-records 1000000 --record-size 1024 \
#       --throughput -1 --producer-props acks=1 bootstrap.servers=127.0.0.1:9092
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in kafka-producer-perf-test kafka-producer-perf-test.sh; do
    if command -v "$tool" >/dev/null; then
        exec "$tool" "$@"
    fi
done
cargo build --quiet --release --example producer_perf
exec target/release/examples/producer_perf "$@"
