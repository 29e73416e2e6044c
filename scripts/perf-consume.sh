#!/usr/bin/env bash
# Consume load test with kafka-consumer-perf-test's flags and output.
# Runs Kafka's own tool when it is on PATH (kafka-consumer-perf-test or
# kafka-consumer-perf-test.sh); otherwise a librdkafka-based equivalent
# (examples/consumer_perf.rs) with the same flags and output line:
#   scripts/perf-consume.sh --bootstrap-server 127.0.0.1:9092 --topic perf --messages 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in kafka-consumer-perf-test kafka-consumer-perf-test.sh; do
    if command -v "$tool" >/dev/null; then
        exec "$tool" "$@"
    fi
done
cargo build --quiet --release --example consumer_perf
exec target/release/examples/consumer_perf "$@"
