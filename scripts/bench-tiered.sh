#!/usr/bin/env bash
# Tiered storage's figures (issue 15), with librdkafka's rdkafka_performance
# against release brokers on ephemeral ports, scratch data on target/'s
# filesystem, and an object store:
#   - produce, 1 KiB acks=1, one partition, tiering off and on (alternated,
#     ROUNDS times, best of each): the cost of uploading while producing;
#   - upload throughput: segment bytes uploaded over the time from the
#     first segment's seal to the last upload;
#   - consume of the remote history from offset 0 by a restarted broker
#     (empty read cache, page cache dropped) against the same consume of the
#     same records from local disk (tiering off, restarted, caches dropped).
# The object store is OBJECT_STORE_URL when set (any S3/GCS/Azure URL with
# its usual environment; each run under its own prefix), else a file://
# directory in /dev/shm: then the figures measure the broker's tiering
# path, not a network. Topics are made with confluent-kafka from target/interop-venv
# (scripts/test --install-only installs it).
#   scripts/bench-tiered.sh
#   RECORDS=500000 ROUNDS=1 scripts/bench-tiered.sh
# RECORDS (2000000), ROUNDS (3), SEGMENT_MB (64), LOCAL_MB (256),
# OUT (target/bench-tiered.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

records=${RECORDS:-2000000}
rounds=${ROUNDS:-3}
segment_mb=${SEGMENT_MB:-64}
local_mb=${LOCAL_MB:-256}
out=${OUT:-target/bench-tiered.md}
python=target/interop-venv/bin/python
[ -x "$python" ] || { echo "needs $python: run scripts/test --install-only" >&2; exit 2; }

say() { echo "[bench-tiered $(date +%T)] $*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", ($1) }"; }
best() { printf '%s\n' "$@" | sort -g | tail -1; }

say "building the release broker and rdkafka_performance"
cargo build --quiet --release --bin chronik-ingest
. scripts/lib/broker.sh
. scripts/lib/rdkafka-performance.sh
build_rdkafka_performance

scratch=$(scratch_on_target bench-tiered)
pid=
cleanup() {
    stop_broker 10 || true
    rm -rf "$scratch" "${bucket_root:-}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Without OBJECT_STORE_URL: a directory in memory (/dev/shm) stands in for
# a remote store, which takes nothing from the data disk's bandwidth; a
# bucket on the data disk would triple its traffic (write, read, write).
bucket_root=$scratch/bucket
if [ -d /dev/shm ] && [ -w /dev/shm ]; then bucket_root=/dev/shm/bench-tiered-$$; fi

drop_caches() {
    timeout 600 sync
    { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null || true
}

# make_topic TIERED: the bench topic, one partition, SEGMENT_MB segments,
# LOCAL_MB kept locally when tiered.
make_topic() {
    "$python" - "$addr" "$1" "$segment_mb" "$local_mb" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
addr, tiered, segment_mb, local_mb = sys.argv[1], sys.argv[2] == "on", int(sys.argv[3]), int(sys.argv[4])
config = {"segment.bytes": str(segment_mb << 20)}
if tiered:
    config.update({"remote.storage.enable": "true", "local.retention.bytes": str(local_mb << 20)})
admin = AdminClient({"bootstrap.servers": addr})
admin.create_topics([NewTopic("bench", 1, 1, config=config)])["bench"].result(30)
EOF
}

run=0
# start TIERED: a broker on a fresh data dir (tiering configured either way:
# the off runs differ only in the topic's remote.storage.enable).
start() {
    run=$((run + 1))
    data=$scratch/run$run
    log=$scratch/run$run.log
    # Each run its own prefix: a broker on an empty data directory takes
    # back whatever topics the bucket holds.
    store_url=${OBJECT_STORE_URL:+$OBJECT_STORE_URL/bench-$$-run$run}
    store_url=${store_url:-file://$bucket_root/run$run}
    timeout 600 sync
    start_broker "$log" "$data/store" OBJECT_STORE_URL="$store_url" LOG_RETENTION_CHECK_INTERVAL_SECS=1
    make_topic "$1"
}
restart() {
    stop_broker 30
    drop_caches
    start_broker "$log" "$data/store" OBJECT_STORE_URL="$store_url" LOG_RETENTION_CHECK_INTERVAL_SECS=1
}
finish() {
    stop_broker 30
    rm -rf "$data"
    # A file:// store given by the caller: this run's prefix goes too.
    case $store_url in file://*) rm -rf "${store_url#file://}" ;; esac
}

# uploaded_total LOG: segment bytes uploaded per the log.
uploaded_total() { grep -o 'segment uploaded.* bytes=[0-9]*' "$1" | sed 's/.*bytes=//' | awk '{s += $1} END {print s + 0}'; }

declare -a off_rates on_rates upload_rates
for r in $(seq 1 "$rounds"); do
    say "round $r of $rounds: tiering off"
    start off
    off_rates+=("$(rdkafka_produce_rate "$records" 1024 1 -b "$addr" -t bench)")
    say "  ${off_rates[-1]} records/s"
    if [ "$r" = "$rounds" ]; then
        restart
        local_consume=$(rdkafka_consume_rate "$records" -b "$addr" -t bench)
        say "  local consume (cold): $local_consume records/s"
    fi
    finish

    say "round $r of $rounds: tiering on"
    start on
    t0=$(date +%s.%N)
    on_rates+=("$(rdkafka_produce_rate "$records" 1024 1 -b "$addr" -t bench)")
    say "  ${on_rates[-1]} records/s"
    # Uploads drain: no new upload for 5 s (every closed segment is remote).
    last=-1
    for _ in $(seq 1 120); do
        now=$(grep -c 'segment uploaded' "$log" || true)
        [ "$now" = "$last" ] && break
        last=$now
        sleep 5
    done
    t1=$(grep 'segment uploaded' "$log" | tail -1 | cut -c1-26)
    bytes=$(uploaded_total "$log")
    span=$(calc "$(date -d "$t1" +%s.%N) - $t0" 3)
    upload_rates+=("$(calc "$bytes / 1048576 / $span" 1)")
    say "  uploaded $((bytes >> 20)) MiB in $span s from the first record: ${upload_rates[-1]} MiB/s"
    if [ "$r" = "$rounds" ]; then
        remote_end=$(grep 'segment uploaded' "$log" | tail -1 | sed 's/.*next_offset=\([0-9]*\).*/\1/')
        sleep 3 # a retention pass deletes the uploaded local segments
        restart
        remote_consume=$(rdkafka_consume_rate "$remote_end" -b "$addr" -t bench)
        say "  remote consume of $remote_end records (cold): $remote_consume records/s"
    fi
    finish
done

off=$(best "${off_rates[@]}")
on=$(best "${on_rates[@]}")
upload=$(best "${upload_rates[@]}")
{
    echo "# Tiered storage, $(date -u +%F) on $(nproc) cores"
    echo
    echo "Object store: ${OBJECT_STORE_URL:-file://$bucket_root}; $records x 1 KiB, acks=1, one partition,"
    echo "segment.bytes ${segment_mb} MiB, local.retention.bytes ${local_mb} MiB; best of $rounds."
    echo
    echo "| figure | runs | best |"
    echo "|---|---|---:|"
    echo "| produce, tiering off (records/s) | ${off_rates[*]} | $off |"
    echo "| produce, tiering on (records/s) | ${on_rates[*]} | $on ($(calc "100 * $on / $off")% of off) |"
    echo "| upload (MiB/s, first record to last upload) | ${upload_rates[*]} | $upload |"
    echo "| consume from local disk, cold (records/s) | | $local_consume |"
    echo "| consume of the remote history, cold (records/s) | | $remote_consume ($(calc "100 * $remote_consume / $local_consume")% of local) |"
} | tee "$out"
