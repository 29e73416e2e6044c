#!/usr/bin/env bash
# Issue 19's benchmark: produce latency on a shard while its cleaner
# compacts a big partition, against the same run with the cleaner off, and
# the cleaner's throughput. One shard, so the produce and the cleaning share
# it. A compacted topic is filled with FILL_MB MiB of 1 KiB records over
# half as many keys (every key twice: cleaning halves it) with the cleaner
# off; the broker restarts with the cleaner on (or off, for the baseline)
# and producer_perf (librdkafka) sends RATE records/s of 1 KiB for
# LOAD_SECONDS to another topic, acks=all; its p50/p99 are compared.
# Prints a Markdown section.
#   scripts/bench-compaction.sh        (FILL_MB=2048 RATE=20000 LOAD_SECONDS=30)
set -euo pipefail
cd "$(dirname "$0")/.."
fill_mb=${FILL_MB:-2048}
rate=${RATE:-20000}
load_seconds=${LOAD_SECONDS:-30}
cargo build --quiet --release --bin chronik-ingest --example producer_perf
. scripts/lib/broker.sh
python=${PYTHON:-target/interop-venv/bin/python}
perf=target/release/examples/producer_perf
scratch=$(scratch_on_target bench-compaction)
pid=
trap 'stop_broker; rm -rf "$scratch"' EXIT
records=$((fill_mb * 1024))

echo "filling a compacted topic with $fill_mb MiB (cleaner off)" >&2
start_broker "$scratch/fill.log" "$scratch/data" SHARDS=1 LOG_CLEANER_ENABLE=false
"$python" - "$addr" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
config = {"cleanup.policy": "compact", "segment.bytes": str(64 << 20), "min.cleanable.dirty.ratio": "0.5"}
for f in admin.create_topics([NewTopic("big", 1, 1, config=config), NewTopic("load", 1, 1)]).values():
    f.result(30)
PY
"$perf" --topic big --num-records "$records" --record-size 1024 --throughput -1 --key-space $((records / 2)) \
    --producer-props acks=1 bootstrap.servers="$addr" | tail -1 >&2
stop_broker
cp -a "$scratch/data" "$scratch/filled"

# load NAME CLEANER [VAR=value ...]: restarts on a copy of the filled data
# with the cleaner on or off and prints producer_perf's summary line for the
# load topic.
load() {
    local name=$1 enable=$2
    shift 2
    rm -rf "$scratch/data"
    cp -a "$scratch/filled" "$scratch/data"
    # The copy's dirty pages would otherwise be written back during the
    # measured run, stalling its fsyncs whatever the cleaner does.
    sync
    start_broker "$scratch/run-$name.log" "$scratch/data" SHARDS=1 LOG_CLEANER_ENABLE="$enable" \
        LOG_CLEANER_BACKOFF_MS=100 "$@"
    "$perf" --topic load --num-records $((rate * load_seconds)) --record-size 1024 --throughput "$rate" \
        --producer-props acks=all linger.ms=1 bootstrap.servers="$addr" | tail -1
    if [ "$enable" = true ]; then
        # The cleaning's figures come when it ends.
        for _ in $(seq 1 600); do
            grep -q ' cleaned ' "$scratch/run-$name.log" && break
            sleep 1
        done
    fi
    stop_broker 120
}

# The broker paces its cleaner at 64 MiB/s by default: "unpaced" says 0.
paced_mb=${PACED_MB:-64}
off=$(load off false)
on=$(load on true LOG_CLEANER_IO_MAX_BYTES_PER_SECOND=0)
paced=$(load paced true LOG_CLEANER_IO_MAX_BYTES_PER_SECOND=$((paced_mb << 20)))
# cleaned NAME: the run's cleanings: bytes read and written, time, rate.
cleaned() {
    grep ' cleaned ' "$scratch/run-$1.log" | sed -n 's/.*read_bytes=\([0-9]*\) written_bytes=\([0-9]*\) took_ms=\([0-9]*\).*/\1 \2 \3/p' |
        awk '{r += $1; w += $2; t += $3} END {if (t > 0) printf "%d run(s), %.0f MiB read and %.0f MiB written in %.1f s (%.0f MiB/s read, %.0f MiB/s read+written)", NR, r / 1048576, w / 1048576, t / 1000, r / 1048576 / (t / 1000), (r + w) / 1048576 / (t / 1000); else print "none"}'
}
pct() { echo "$1" | sed -n "s/.*, \([0-9.]*\) ms $2.*/\1/p"; }
echo
echo "## Compaction ($fill_mb MiB compacted partition, produce of $rate x 1 KiB/s acks=all on the same shard, $load_seconds s)"
echo
echo "| cleaner | produce p50 ms | p99 ms | p99.9 ms | producer_perf |"
echo "|---|---:|---:|---:|---|"
echo "| off | $(pct "$off" 50th) | $(pct "$off" 99th) | $(pct "$off" 99.9th) | $off |"
echo "| on, unpaced | $(pct "$on" 50th) | $(pct "$on" 99th) | $(pct "$on" 99.9th) | $on |"
echo "| on, LOG_CLEANER_IO_MAX_BYTES_PER_SECOND=$paced_mb MiB | $(pct "$paced" 50th) | $(pct "$paced" 99th) | $(pct "$paced" 99.9th) | $paced |"
echo
echo "Cleaner, unpaced: $(cleaned on). Paced: $(cleaned paced)."
