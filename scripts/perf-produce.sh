#!/usr/bin/env bash
# Produce load test with kafka-producer-perf-test's flags and output: Kafka's
# own tool when it is on PATH, otherwise the librdkafka equivalent
# examples/producer_perf.rs (bootstrap.servers=mock: librdkafka's mock
# cluster, the client-side ceiling):
#   scripts/perf-produce.sh --topic perf --num-records 1000000 --record-size 1024 \
#       --throughput -1 --producer-props acks=1 bootstrap.servers=127.0.0.1:9092
exec "$(dirname "$0")/perf-tool.sh" kafka-producer-perf-test producer_perf "$@"
