#!/usr/bin/env bash
# What authentication and authorization cost on the produce path: the
# matrix's 1 KiB acks=1 row (1 producer, 1 partition, linger.ms=5,
# batch.size=1000000) against two fresh release brokers, run alternately
# ROUNDS times (default 3; the median of each is compared):
#   none: PLAINTEXT, AUTHORIZER=none (the default);
#   acl:  SASL_PLAINTEXT with SCRAM-SHA-512, AUTHORIZER=acl, the producer's
#         user granted ALL on topics prefixed auth- by an ACL (so every
#         produce is authorized by the ACL authorizer, decisions cached per
#         connection) and not a super user.
# Prints a Markdown section (bench-matrix.sh appends it to its report).
#   scripts/bench-auth.sh [RECORDS]     (default 3000000)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-3000000}
rounds=${ROUNDS:-3}
cargo build --quiet --release --bin chronik-ingest --example producer_perf
. scripts/lib/broker.sh
scratch=$(scratch_on_target bench-auth)
pid=
trap 'stop_broker; rm -rf "$scratch"' EXIT

# run MODE ROUND: one fresh broker, one producer; prints records/s.
run() {
    local mode=$1 round=$2 dir="$scratch/$1-$2"
    local props=(acks=1 linger.ms=5 batch.size=1000000)
    mkdir -p "$dir"
    if [ "$mode" = acl ]; then
        # The ACL as CreateAcls would have stored it (acls.json), so the
        # script needs no admin client.
        cat >"$dir/acls.json" <<'EOF'
[{"resource_type": 2, "resource_name": "auth-", "pattern_type": 4, "principal": "User:bench",
  "host": "*", "operation": 2, "permission": 3}]
EOF
        start_broker "$dir.log" "$dir" LISTENERS=SASL_PLAINTEXT://127.0.0.1:0 AUTHORIZER=acl \
            SASL_BOOTSTRAP_USERS=bench:bench-pw NUM_PARTITIONS=1 >&2
        props+=(security.protocol=sasl_plaintext sasl.mechanism=SCRAM-SHA-512 sasl.username=bench
            sasl.password=bench-pw)
    else
        start_broker "$dir.log" "$dir" NUM_PARTITIONS=1 >&2
    fi
    sync
    local out
    out=$(target/release/examples/producer_perf --topic "auth-$mode-$round" --num-records "$records" \
        --record-size 1024 --throughput -1 --producer-props "${props[@]}" bootstrap.servers="$addr" 2>&1 | tail -1)
    stop_broker
    rm -rf "$dir"
    echo "$out" | awk '{ for (f = 1; f <= NF; f++) if ($(f+1) == "records/sec") { printf "%.0f\n", $f; exit } }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

: >"$scratch/none"
: >"$scratch/acl"
for round in $(seq 1 "$rounds"); do
    for mode in none acl; do
        rate=$(run "$mode" "$round")
        echo "round $round $mode: $rate records/s" >&2
        echo "$rate" >>"$scratch/$mode"
    done
done
none=$(median <"$scratch/none")
acl=$(median <"$scratch/acl")
echo
echo "## Authentication and ACLs (1 KiB, acks=1, 1 producer, 1 partition, $records records, median of $rounds alternating runs)"
echo
echo "| broker | runs (records/s) | median records/s |"
echo "|---|---|---:|"
echo "| PLAINTEXT, AUTHORIZER=none | $(paste -sd' ' "$scratch/none") | $none |"
echo "| SASL_PLAINTEXT SCRAM-SHA-512, AUTHORIZER=acl (prefixed ACL) | $(paste -sd' ' "$scratch/acl") | $acl |"
echo
echo "acl / none = $(echo "scale=3; $acl / $none" | bc)"
