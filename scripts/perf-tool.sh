#!/usr/bin/env bash
# Shared by perf-produce.sh and perf-consume.sh: runs Kafka's own perf tool
# KAFKA_TOOL (or KAFKA_TOOL.sh) when it is on PATH, else the librdkafka
# stand-in EXAMPLE (examples/EXAMPLE.rs) with the same arguments.
#   scripts/perf-tool.sh KAFKA_TOOL EXAMPLE ARGS...
set -euo pipefail
cd "$(dirname "$0")/.."
kafka_tool=$1
example=$2
shift 2
for tool in "$kafka_tool" "$kafka_tool.sh"; do
    if command -v "$tool" >/dev/null; then
        exec "$tool" "$@"
    fi
done
cargo build --quiet --release --example "$example"
exec "target/release/examples/$example" "$@"
