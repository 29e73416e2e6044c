#!/usr/bin/env bash
# Issue 14's crash item: kill -9 during the sustained acks=all run, ROUNDS
# rounds: every acknowledged record reads back, recovery logged, no torn
# batch served. The check is tests/crash_sustained_test.rs (ignored in the
# normal suite: GBs per round), run here against the release broker (or
# $BROKER_BIN) with its data on target/'s filesystem; it shares
# tests/common's broker process and client helpers with tests/crash_test.rs
# (the small always-run version). Each round: a librdkafka producer sends
# 1 KiB records acks=all as fast as it can (value = sequence number + bytes
# derived from it), SIGKILL to the broker at a random 3-15 s, restart on
# the same data dir, the restart must log "recovered partition" for every
# partition holding data, and a check.crcs=true consumer reads everything
# back: every acked record at its acked offset with its value, dense
# offsets, no consumer error.
#   scripts/crash-sustained.sh              5 rounds x {1 partition, 4 partitions on SHARDS=2}
#   ROUNDS=1 MIN_S=3 MAX_S=3 SETS=1 scripts/crash-sustained.sh     the short mode
# SETS: space-separated PARTITIONS[:SHARDS] (default "1 4:2").
# Exits non-zero if any round of any set failed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
min_s=${MIN_S:-3}
max_s=${MAX_S:-15}
sets=${SETS:-1 4:2}

if [ -z "${BROKER_BIN:-}" ]; then
    cargo build --quiet --release --bin chronik-ingest
fi
broker=$(realpath "${BROKER_BIN:-target/release/chronik-ingest}")
[ -x "$broker" ] || { echo "no broker binary at $broker" >&2; exit 2; }
cargo build --quiet --release --test crash_sustained_test

# Scratch on target/'s filesystem (the one the bench measures), not a tmpfs.
. scripts/lib/broker.sh
scratch=$(scratch_on_target crash-sustained)
trap 'rm -rf "$scratch"' EXIT

# Bounded: per round the load (<= MAX_S), the read-back (<= 600 s in the
# test) and two broker starts.
limit=$((rounds * (max_s + 700)))
status=0
for set in $sets; do
    partitions=${set%%:*}
    shards=
    [ "$set" != "$partitions" ] && shards=${set#*:}
    echo "== $partitions partition(s)${shards:+ on SHARDS=$shards}, $rounds round(s), kill at ${min_s}-${max_s} s" >&2
    env TMPDIR="$scratch" CHRONIK_BROKER_BIN="$broker" CRASH_ROUNDS="$rounds" CRASH_MIN_S="$min_s" \
        CRASH_MAX_S="$max_s" CRASH_PARTITIONS="$partitions" ${shards:+CRASH_SHARDS="$shards"} \
        timeout --signal=TERM --kill-after=30 "$limit" \
        cargo test --quiet --release --test crash_sustained_test -- --ignored --nocapture --test-threads=1 ||
        status=1
done
if [ "$status" -eq 0 ]; then echo "crash-sustained: every round passed" >&2; else echo "crash-sustained: FAILED" >&2; fi
exit "$status"
