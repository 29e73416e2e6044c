#!/usr/bin/env bash
# Consume load test with kafka-consumer-perf-test's flags and output: Kafka's
# own tool when it is on PATH, otherwise the librdkafka equivalent
# examples/consumer_perf.rs:
#   scripts/perf-consume.sh --bootstrap-server 127.0.0.1:9092 --topic perf --messages 1000000
exec "$(dirname "$0")/perf-tool.sh" kafka-consumer-perf-test consumer_perf "$@"
