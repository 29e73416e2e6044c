# Sourced by the bench scripts (run from the repository root): librdkafka's
# own benchmark, examples/rdkafka_performance.c, the tool the performance
# issue's reference figures (mock cluster, Tansu) were measured with. It is
# built from the librdkafka source the rdkafka-sys crate vendors, against the
# static library cargo already built, so no download is needed. It spends
# far less CPU per record than the Kafka-style stand-in behind
# scripts/perf-produce.sh, which matters when client and broker share 2 cores.

# build_rdkafka_performance: sets `rdkafka_performance` to the binary's path
# (target/release/rdkafka_performance), compiling it when missing or older
# than the library. Needs cc, libssl-dev (scripts/test installs both).
build_rdkafka_performance() {
    cargo build --quiet --release --example producer_perf
    local lib out zstd zlib
    lib=$(ls -t target/release/build/rdkafka-sys-*/out/src/librdkafka.a 2>/dev/null | head -1)
    zstd=$(ls -t target/release/build/zstd-sys-*/out/libzstd.a 2>/dev/null | head -1)
    zlib=$(ls -t target/release/build/libz-sys-*/out/lib/libz.a 2>/dev/null | head -1)
    if [ -z "$lib" ] || [ -z "$zstd" ]; then
        echo "rdkafka_performance: no librdkafka.a / libzstd.a under target/release/build" >&2
        return 1
    fi
    out=${lib%/src/librdkafka.a}
    rdkafka_performance=target/release/rdkafka_performance
    if [ ! -x "$rdkafka_performance" ] || [ "$lib" -nt "$rdkafka_performance" ]; then
        cc -O2 -o "$rdkafka_performance" "$out/examples/rdkafka_performance.c" -I"$out/src" -I"$out" \
            "$lib" "$zstd" ${zlib:--lz} -lssl -lcrypto -lm -ldl -lpthread -lrt
    fi
}

# rdkafka_produce_rate RECORDS SIZE ACKS ARGS...: one producer, linger.ms=5,
# batch.size=1000000 as in the issue; prints delivered records/s, or exits
# non-zero if any record was not delivered. ARGS: -b ADDR -t TOPIC, or
# -X test.mock.num.brokers=1 for the in-memory mock cluster.
rdkafka_produce_rate() {
    local records=$1 size=$2 acks=$3
    shift 3
    "$rdkafka_performance" -P -c "$records" -s "$size" -a "$acks" -X linger.ms=5 -X batch.size=1000000 \
        -u -q "$@" 2>/dev/null | awk -F'|' -v want="$records" '
        /^\|/ && $2 + 0 > 0 { dr = $6 + 0; rate = $7 + 0; err = $9 + 0 }
        END { if (dr != want || err != 0) exit 1; printf "%d\n", rate }'
}

# rdkafka_latency RECORDS RATE ACKS ARGS...: one producer of 1 KiB records
# at RATE records/s, linger.ms=0; prints the per-record delivery latency
# (produce call to delivery report) "p50 p99 p99.9 max" in ms.
rdkafka_latency() {
    local records=$1 rate=$2 acks=$3 file
    shift 3
    file=$(mktemp)
    "$rdkafka_performance" -P -c "$records" -s 1024 -a "$acks" -r "$rate" -X linger.ms=0 \
        -l -A "$file" -q "$@" >/dev/null 2>&1 || true
    sort -n "$file" | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "- - - -"; exit }
              printf "%.2f %.2f %.2f %.2f\n", v[int(NR * .5) + 1] / 1000, v[int(NR * .99) + 1] / 1000,
                     v[int(NR * .999) + 1] / 1000, v[NR] / 1000 }'
    rm -f "$file"
}

# rdkafka_consume_rate RECORDS ARGS...: reads RECORDS from partition 0 from
# the beginning (simple consumer, no group); prints records/s.
rdkafka_consume_rate() {
    local records=$1
    shift
    "$rdkafka_performance" -C -p 0 -o beginning -c "$records" -u "$@" 2>/dev/null | awk -F'|' -v want="$records" '
        /^\|/ && $2 + 0 > 0 { n = $3 + 0; rate = $6 + 0 }
        END { if (n != want) exit 1; printf "%d\n", rate }'
}
