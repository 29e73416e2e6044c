#!/usr/bin/env bash
# Issue 14's acceptance figures (sustained ingest), measured on this machine
# with librdkafka's own rdkafka_performance (scripts/lib/rdkafka-performance.sh)
# against release brokers on ephemeral ports with scratch data directories
# on the filesystem target/ is on (the filesystem being measured). Prints a
# Markdown report (also written to $OUT) with every figure and one
# PASS/FAIL line per acceptance item; exits 1 if any item fails.
#
# Steps (ONLY selects a comma-separated subset; all by default):
#   limit    O_DIRECT dd write of SIZE_MB, and rdkafka_performance against
#            librdkafka's mock cluster (same records, acks=1); best of ROUNDS
#   acks1    SIZE_MB of 1 KiB records, acks=1, one partition, fresh broker
#            and data dir per round, sync before; best of ROUNDS
#   acksall  the same with acks=all
#            (both also give the slow-request item: Produce requests over
#            51.2 ms in the broker's chronik_request_duration_seconds)
#   parts4   the same acks=1 load spread over 4 partitions on SHARDS=2
#   burst    BURST_MB, acks=1, one partition, BURSTS times: the spread
#   consume  the acks=1 data (last acks1 round, or one run of its own) read
#            hot, then cold after dropping the page cache; against the
#            client's fetch ceiling (examples/fetch_ceiling.rs: the same
#            records in memory behind a minimal Kafka endpoint that only
#            copies prepared batches, the same consume; librdkafka's mock
#            cluster keeps only 5 MB per partition) and O_DIRECT dd reads
#            of the partition's segment files; cold and dd in turn, ROUNDS
#            times, best of each
#   fsync    16 KiB / 1 MiB write + fdatasync, 1/2/4 threads (report only)
#
#   scripts/bench-sustained.sh
#   SIZE_MB=512 BURST_MB=128 ROUNDS=1 BURSTS=2 ONLY=limit,acks1 scripts/bench-sustained.sh
# SIZE_MB (6144), BURST_MB (1024), ROUNDS (3), BURSTS (5), DD_BS_MB (4),
# STEP_LIMIT (seconds any one client run or dd may take, 1800),
# OUT (target/bench-sustained.md), BROKER_BIN (another broker build).
# Runs write SIZE_MB each; every data dir is removed as soon as its run is
# done. Needs root for the cold read (drop_caches); without it that item
# is FAIL-unmeasured.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

size_mb=${SIZE_MB:-6144}
burst_mb=${BURST_MB:-1024}
rounds=${ROUNDS:-3}
bursts=${BURSTS:-5}
dd_bs_mb=${DD_BS_MB:-4}
step_limit=${STEP_LIMIT:-1800}
only=${ONLY:-limit,acks1,acksall,parts4,burst,consume,fsync}
out=${OUT:-target/bench-sustained.md}
records=$((size_mb * 1024))
burst_records=$((burst_mb * 1024))

say() { echo "[bench-sustained $(date +%T)] $*" >&2; }
for step in ${only//,/ }; do
    case $step in
    limit | acks1 | acksall | parts4 | burst | consume | fsync) ;;
    *) echo "ONLY: unknown step '$step' (limit,acks1,acksall,parts4,burst,consume,fsync)" >&2; exit 2 ;;
    esac
done
want() { [[ ",$only," == *",$1,"* ]]; }
# calc EXPR [DECIMALS]: floating-point arithmetic on figures we produced.
calc() { awk "BEGIN { printf \"%.${2:-0}f\", ($1) }"; }
best() { printf '%s\n' "$@" | sort -g | tail -1; }
# fmt N: 1234567 -> 1,234,567
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

if [ -z "${BROKER_BIN:-}" ]; then
    say "building the release broker"
    cargo build --quiet --release --bin chronik-ingest
fi
broker_bin=${BROKER_BIN:-target/release/chronik-ingest}
[ -x "$broker_bin" ] || { echo "no broker binary at $broker_bin" >&2; exit 2; }
. scripts/lib/broker.sh
. scripts/lib/rdkafka-performance.sh
say "building rdkafka_performance"
build_rdkafka_performance
if want consume; then
    cargo build --quiet --release --example fetch_ceiling
fi

# Scratch on target/'s filesystem: /tmp may be a tmpfs or another disk.
scratch=$(scratch_on_target bench-sustained)
fs_desc="$(df -h --output=source,fstype,target "$scratch" | tail -1 | tr -s ' ')"

pid=
mock_pid=
cleanup() {
    stop_broker 10 || true
    if [ -n "$mock_pid" ]; then
        kill -TERM "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every client run is bounded: the library calls "$rdkafka_performance".
real_rdkafka_performance=$(realpath "$rdkafka_performance")
rdkafka_performance=$scratch/rdkafka_performance
printf '#!/bin/sh\nexec timeout -k 10 %s %s "$@"\n' "$step_limit" "$real_rdkafka_performance" >"$rdkafka_performance"
chmod +x "$rdkafka_performance"

report=$scratch/report.md
verdicts=$scratch/verdicts.md
: >"$report"
: >"$verdicts"
# md LINE: appends to the report (consume_step writes to its own section,
# placed after the acks=1 section it interrupts).
md() { printf '%s\n' "$*" >>"${md_file:-$report}"; }
consume_md=$scratch/consume.md
: >"$consume_md"
fails=0
# verdict PASS|FAIL|SKIP ITEM TEXT
verdict() {
    printf -- '- **%s** %s: %s\n' "$1" "$2" "$3" >>"$verdicts"
    if [ "$1" = FAIL ]; then fails=$((fails + 1)); fi
    say "$1 $2: $3"
}

bounded_sync() { timeout 600 sync; }
drop_caches() {
    bounded_sync
    { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null
}

# --- a fresh broker with metrics on a fresh data dir ----------------------
run_no=0
# fresh_broker ENV...: sync, then a broker on a new data dir; sets data_dir,
# blog, addr, maddr (metrics), pid.
fresh_broker() {
    run_no=$((run_no + 1))
    data_dir=$scratch/run$run_no
    blog=$scratch/run$run_no.log
    bounded_sync
    BROKER_BIN=$broker_bin start_broker "$blog" "$data_dir/store" METRICS_ADDRESS=127.0.0.1:0 "$@" ||
        { echo "broker did not start" >&2; exit 1; }
    maddr=$(broker_metrics_addr "$blog") || { echo "broker metrics address not logged" >&2; exit 1; }
}
# done_run: stops the broker and removes its data at once (GBs per run).
done_run() {
    stop_broker 60
    rm -rf "$data_dir"
}
# produce_slow: "requests slow" for Produce over every shard: all requests
# and those above the 51.2 ms bucket (buckets are 50 us x 2^k). "- -" when
# the scrape or the bucket is missing.
produce_slow() {
    curl -s --max-time 10 "http://$maddr/metrics" | awk '
        /^chronik_request_duration_seconds_bucket\{/ && /api="Produce"/ {
            if (match($0, /le="[^"]*"/)) {
                le = substr($0, RSTART + 4, RLENGTH - 5)
                if (le != "+Inf" && le + 0 > 0.0511 && le + 0 < 0.0513) { fast += $NF; found = 1 }
            }
        }
        /^chronik_request_duration_seconds_count\{/ && /api="Produce"/ { n += $NF }
        END { if (!found) print "- -"; else printf "%d %d\n", n, n - fast }' || echo "- -"
}
# produce RECORDS ACKS TOPIC [ARGS...]: records/s, 0 if the run failed.
produce() {
    local n=$1 acks=$2 topic=$3 rate
    shift 3
    rate=$(rdkafka_produce_rate "$n" 1024 "$acks" -b "$addr" -t "$topic" "$@") || rate=0
    echo "$rate"
}
mbps() { calc "$1 * 1024 / 1000000" 0; } # records/s of 1 KiB -> MB/s

slow_runs=() # "label|requests slow" of the runs the slow-request item counts
# slow_cells "REQUESTS SLOW": the three table cells count | slow | fraction.
slow_cells() {
    local n=${1% *} s=${1#* }
    if [ "$n" = - ] || [ "$n" -eq 0 ]; then
        echo "- | - | -"
    else
        echo "$(fmt "$n") | $(fmt "$s") | $(calc "100 * $s / $n" 3)%"
    fi
}

md "# Sustained ingest (issue 14), $(date -u '+%Y-%m-%d %H:%M UTC')"
md ""
md "Broker: \`$broker_bin\` ($(git rev-parse --short HEAD 2>/dev/null || echo '?')); client: librdkafka rdkafka_performance"
md "(linger.ms=5, batch.size=1000000, one producer). Data on: $fs_desc. SIZE_MB=$size_mb"
md "($(fmt "$records") x 1 KiB), BURST_MB=$burst_mb, ROUNDS=$rounds, BURSTS=$bursts. MB = 10^6 bytes of record"
md "values; records/s of 1 KiB = MB/s x 10^6 / 1024."
md ""

# --- 1. the limit ---------------------------------------------------------
limit_rps=
if want limit; then
    md "## Limit"
    md ""
    dd_rates=()
    for r in $(seq 1 "$rounds"); do
        say "limit: O_DIRECT dd write ${size_mb} MB, round $r"
        bounded_sync
        line=$(timeout "$step_limit" dd if=/dev/zero of="$scratch/dd.bin" bs="${dd_bs_mb}M" \
            count=$((size_mb / dd_bs_mb)) oflag=direct conv=fsync 2>&1 | grep copied || true)
        rm -f "$scratch/dd.bin"
        bps=$(echo "$line" | awk '{ for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1) } END { if (s > 0) printf "%.0f", $1 / s; else print 0 }')
        dd_rates+=("$bps")
        say "  dd: $(calc "$bps / 1e6") MB/s"
    done
    mock_rates=()
    for r in $(seq 1 "$rounds"); do
        say "limit: rdkafka_performance against the mock cluster, round $r"
        rate=$(rdkafka_produce_rate "$records" 1024 1 -X test.mock.num.brokers=1 -t sustained) || rate=0
        mock_rates+=("$rate")
        say "  mock: $rate records/s"
    done
    dd_best=$(best "${dd_rates[@]}")
    mock_best=$(best "${mock_rates[@]}")
    dd_rps=$(calc "$dd_best / 1024")
    if [ "$dd_rps" -lt "$mock_best" ]; then limit_rps=$dd_rps; limit_by="O_DIRECT dd"; else limit_rps=$mock_best; limit_by="mock cluster"; fi
    md "| reference | runs (MB/s) | best MB/s | best records/s of 1 KiB |"
    md "|---|---|---:|---:|"
    md "| O_DIRECT dd write, bs=${dd_bs_mb}M, ${size_mb} MiB, conv=fsync | $(for x in "${dd_rates[@]}"; do printf '%s ' "$(calc "$x / 1e6")"; done)| $(calc "$dd_best / 1e6") | $(fmt "$dd_rps") |"
    md "| rdkafka_performance vs mock cluster (1 broker, acks=1) | $(for x in "${mock_rates[@]}"; do printf '%s ' "$(mbps "$x")"; done)| $(mbps "$mock_best") | $(fmt "$mock_best") |"
    md ""
    md "Limit: **$(fmt "$limit_rps") records/s ($(mbps "$limit_rps") MB/s)**, set by the $limit_by."
    md ""
    if [ "$mock_best" -eq 0 ] || [ "$dd_best" -eq 0 ]; then
        verdict FAIL "limit" "a reference run failed (dd ${dd_rates[*]}, mock ${mock_rates[*]})"
        limit_rps=
    fi
fi

# --- consume (runs on the data of the acks=1 run) -------------------------
consume_step() {
    local hot cold odirect_rps ceiling bytes t0 t1 secs mock_out cold_runs dd_runs md_file=$consume_md
    md "## Consume ($(fmt "$records") x 1 KiB, one partition, rdkafka_performance -C)"
    md ""
    say "consume: hot, from the broker that just took the records"
    hot=$(rdkafka_consume_rate "$records" -b "$addr" -t sustained) || hot=0
    say "  hot: $hot records/s"
    stop_broker 60
    cold=
    if drop_caches; then
        # The virtual disk's pace swings by a quarter within a minute, so
        # the two are measured in turn, ROUNDS times, best of each.
        local colds=() dds=() r
        for r in $(seq 1 "$rounds"); do
            drop_caches || true
            say "consume: cold, round $r of $rounds (page cache dropped, broker restarted)"
            BROKER_BIN=$broker_bin start_broker "$blog.cold" "$data_dir/store" ||
                { echo "broker did not restart" >&2; exit 1; }
            cold=$(rdkafka_consume_rate "$records" -b "$addr" -t sustained) || cold=0
            say "  cold: $cold records/s"
            colds+=("$cold")
            stop_broker 60
            say "consume: O_DIRECT dd read of the partition's segment files, round $r of $rounds"
            drop_caches || true
            bytes=0
            t0=$(date +%s.%N)
            for f in "$data_dir"/store/sustained-0/*.log; do
                timeout "$step_limit" dd if="$f" of=/dev/null bs="${dd_bs_mb}M" iflag=direct status=none
                bytes=$((bytes + $(stat -c %s "$f")))
            done
            t1=$(date +%s.%N)
            secs=$(calc "$t1 - $t0" 3)
            dds+=("$(calc "$bytes / $secs / 1024")")
            say "  O_DIRECT read: $(calc "$bytes / $secs / 1e6") MB/s"
        done
        cold=$(best "${colds[@]}")
        odirect_rps=$(best "${dds[@]}")
        cold_runs="${colds[*]}"
        dd_runs="${dds[*]}"
    else
        say "consume: /proc/sys/vm/drop_caches is not writable: cold read not measured"
    fi
    rm -rf "$data_dir"

    say "consume: the client's fetch ceiling (the same records served from memory)"
    mock_out=$scratch/mock.addr
    mkfifo "$scratch/mock.stdin"
    target/release/examples/fetch_ceiling --topic sustained --records "$records" --size 1024 \
        --timeout-s "$step_limit" <"$scratch/mock.stdin" >"$mock_out" 2>"$scratch/mock.log" &
    mock_pid=$!
    exec 9>"$scratch/mock.stdin"
    for _ in $(seq 1 $((step_limit * 10))); do
        [ -s "$mock_out" ] && break
        kill -0 "$mock_pid" 2>/dev/null || break
        sleep 0.1
    done
    ceiling=0
    if [ -s "$mock_out" ]; then
        ceiling=$(rdkafka_consume_rate "$records" -b "$(head -1 "$mock_out")" -t sustained) || ceiling=0
    else
        cat "$scratch/mock.log" >&2
    fi
    exec 9>&-
    wait "$mock_pid" 2>/dev/null || true
    mock_pid=
    say "  fetch ceiling: $ceiling records/s"

    md "| read | records/s | MB/s | reference | ratio |"
    md "|---|---:|---:|---|---:|"
    md "| client fetch ceiling (examples/fetch_ceiling.rs: same records from memory, batches of 1000) | $(fmt "$ceiling") | $(mbps "$ceiling") | | |"
    md "| hot (right after the produce, same broker) | $(fmt "$hot") | $(mbps "$hot") | fetch ceiling | $( [ "$ceiling" -gt 0 ] && calc "$hot / $ceiling" 2 || echo -) |"
    if [ -n "$cold" ]; then
        md "| O_DIRECT dd read of the segment files, bs=${dd_bs_mb}M, best of $rounds ($dd_runs) | $(fmt "$odirect_rps") | $(mbps "$odirect_rps") | | |"
        md "| cold (caches dropped, broker restarted), best of $rounds ($cold_runs) | $(fmt "$cold") | $(mbps "$cold") | O_DIRECT read | $(calc "$cold / $odirect_rps" 2) |"
    else
        md "| cold | not measured: /proc/sys/vm/drop_caches not writable | | | |"
    fi
    md ""
    if [ "$ceiling" -gt 0 ] && [ "$hot" -ge "$(calc "0.85 * $ceiling")" ]; then
        verdict PASS "consume hot >= 85% of the fetch ceiling" "$(fmt "$hot") vs $(fmt "$ceiling") records/s ($(calc "100 * $hot / $ceiling")%)"
    else
        verdict FAIL "consume hot >= 85% of the fetch ceiling" "$(fmt "$hot") vs $(fmt "$ceiling") records/s$( [ "$ceiling" -gt 0 ] && echo " ($(calc "100 * $hot / $ceiling")%)")"
    fi
    if [ -z "$cold" ]; then
        verdict FAIL "consume cold >= 85% of O_DIRECT read" "unmeasured: cannot drop the page cache here"
    elif [ "$cold" -ge "$(calc "0.85 * $odirect_rps")" ]; then
        verdict PASS "consume cold >= 85% of O_DIRECT read" "$(fmt "$cold") vs $(fmt "$odirect_rps") records/s ($(calc "100 * $cold / $odirect_rps")%)"
    else
        verdict FAIL "consume cold >= 85% of O_DIRECT read" "$(fmt "$cold") vs $(fmt "$odirect_rps") records/s ($(calc "100 * $cold / $odirect_rps")%)"
    fi
}

# --- 2/3. one partition, acks=1 and acks=all ------------------------------
best_acks1=
sustained() { # sustained ACKS LABEL KEEP_LAST_FOR_CONSUME
    local acks=$1 label=$2 keep=$3 rates=() r rate slow
    md "## One partition, $label ($(fmt "$records") x 1 KiB, fresh broker and data dir each run)"
    md ""
    md "| run | records/s | MB/s | Produce requests | > 51.2 ms | fraction |"
    md "|---|---:|---:|---:|---:|---:|"
    for r in $(seq 1 "$rounds"); do
        say "$label: round $r of $rounds"
        fresh_broker NUM_PARTITIONS=1
        rate=$(produce "$records" "$acks" sustained -p 0)
        slow=$(produce_slow)
        rates+=("$rate")
        slow_runs+=("$label #$r|$slow")
        say "  $rate records/s; Produce requests, slow: $slow"
        md "| $r | $(fmt "$rate") | $(mbps "$rate") | $(slow_cells "$slow") |"
        if [ "$keep" = yes ] && [ "$r" -eq "$rounds" ] && [ "$rate" -gt 0 ]; then
            consume_step
            did_consume=yes
        else
            done_run
        fi
    done
    md ""
    sustained_best=$(best "${rates[@]}")
    md "Best: **$(fmt "$sustained_best") records/s ($(mbps "$sustained_best") MB/s)**$( [ -n "$limit_rps" ] && echo ", $(calc "100 * $sustained_best / $limit_rps")% of the limit")."
    md ""
}

did_consume=
if want acks1; then
    sustained 1 "acks=1" "$(want consume && echo yes || echo no)"
    best_acks1=$sustained_best
    if [ -z "$limit_rps" ]; then
        verdict SKIP "acks=1 >= 85% of the limit" "no limit measured (ONLY has no 'limit')"
    elif [ "$best_acks1" -ge "$(calc "0.85 * $limit_rps")" ]; then
        verdict PASS "acks=1 >= 85% of the limit" "$(fmt "$best_acks1") vs $(fmt "$limit_rps") records/s ($(calc "100 * $best_acks1 / $limit_rps")%)"
    else
        verdict FAIL "acks=1 >= 85% of the limit" "$(fmt "$best_acks1") vs $(fmt "$limit_rps") records/s ($(calc "100 * $best_acks1 / $limit_rps")%)"
    fi
fi
if want consume && [ -z "$did_consume" ]; then
    say "consume: one acks=1 run of its own to read back"
    fresh_broker NUM_PARTITIONS=1
    rate=$(produce "$records" 1 sustained -p 0)
    say "  $rate records/s"
    if [ "$rate" -gt 0 ]; then consume_step; else done_run; verdict FAIL "consume" "the produce run failed"; fi
fi
cat "$consume_md" >>"$report"
if want acksall; then
    sustained -1 "acks=all" no
    if [ -z "$limit_rps" ]; then
        verdict SKIP "acks=all >= 60% of the limit" "no limit measured (ONLY has no 'limit')"
    elif [ "$sustained_best" -ge "$(calc "0.60 * $limit_rps")" ]; then
        verdict PASS "acks=all >= 60% of the limit" "$(fmt "$sustained_best") vs $(fmt "$limit_rps") records/s ($(calc "100 * $sustained_best / $limit_rps")%)"
    else
        verdict FAIL "acks=all >= 60% of the limit" "$(fmt "$sustained_best") vs $(fmt "$limit_rps") records/s ($(calc "100 * $sustained_best / $limit_rps")%)"
    fi
fi
if [ ${#slow_runs[@]} -gt 0 ]; then
    bad=
    detail=
    for entry in "${slow_runs[@]}"; do
        label=${entry%%|*}
        counts=${entry#*|}
        n=${counts% *}
        s=${counts#* }
        if [ "$n" = - ] || [ "$n" -eq 0 ]; then
            bad=yes
            detail+="$label: no histogram; "
        else
            detail+="$label: $s/$n; "
            # fewer than 0.1%: s / n < 0.001
            if [ "$((s * 1000))" -ge "$n" ]; then bad=yes; fi
        fi
    done
    if [ -z "$bad" ]; then
        verdict PASS "Produce requests > 51.2 ms < 0.1% in every run" "${detail%; }"
    else
        verdict FAIL "Produce requests > 51.2 ms < 0.1% in every run" "${detail%; }"
    fi
fi

# --- 4. four partitions on two shards -------------------------------------
if want parts4; then
    md "## 4 partitions on SHARDS=2, acks=1 ($(fmt "$records") x 1 KiB; rdkafka_performance without -p: librdkafka's sticky partitioner)"
    md ""
    md "| run | records/s | MB/s | Produce requests | > 51.2 ms | fraction | bytes per partition (MB) |"
    md "|---|---:|---:|---:|---:|---:|---|"
    rates=()
    for r in $(seq 1 "$rounds"); do
        say "4 partitions: round $r of $rounds"
        fresh_broker NUM_PARTITIONS=4 SHARDS=2
        rate=$(produce "$records" 1 parts4)
        slow=$(produce_slow)
        spread=$(for p in 0 1 2 3; do
            printf '%s ' "$(du -sb "$data_dir/store/parts4-$p" 2>/dev/null | awk '{printf "%.0f", $1 / 1e6}')"
        done)
        rates+=("$rate")
        say "  $rate records/s; partitions (MB): $spread"
        md "| $r | $(fmt "$rate") | $(mbps "$rate") | $(slow_cells "$slow") | $spread|"
        done_run
    done
    best4=$(best "${rates[@]}")
    md ""
    md "Best: **$(fmt "$best4") records/s ($(mbps "$best4") MB/s)**$( [ -n "$best_acks1" ] && echo ", $(calc "100 * $best4 / $best_acks1")% of one partition")."
    md ""
    if [ -z "$best_acks1" ]; then
        verdict SKIP "4 partitions >= 90% of one partition" "no one-partition figure (ONLY has no 'acks1')"
    elif [ "$best4" -ge "$(calc "0.90 * $best_acks1")" ]; then
        verdict PASS "4 partitions >= 90% of one partition" "$(fmt "$best4") vs $(fmt "$best_acks1") records/s ($(calc "100 * $best4 / $best_acks1")%)"
    else
        verdict FAIL "4 partitions >= 90% of one partition" "$(fmt "$best4") vs $(fmt "$best_acks1") records/s ($(calc "100 * $best4 / $best_acks1")%)"
    fi
fi

# --- 5. the same burst, BURSTS times --------------------------------------
if want burst; then
    md "## Burst: $(fmt "$burst_records") x 1 KiB, acks=1, one partition, $bursts times (fresh broker, sync before)"
    md ""
    rates=()
    for r in $(seq 1 "$bursts"); do
        say "burst: run $r of $bursts"
        fresh_broker NUM_PARTITIONS=1
        rate=$(produce "$burst_records" 1 burst -p 0)
        rates+=("$rate")
        say "  $rate records/s"
        done_run
    done
    hi=$(best "${rates[@]}")
    lo=$(printf '%s\n' "${rates[@]}" | sort -g | head -1)
    if [ "$hi" -gt 0 ]; then
        spread_pct=$(calc "100 * ($hi - $lo) / $hi" 1)
    else
        spread_pct=100
    fi
    md "Runs (records/s): $(for x in "${rates[@]}"; do printf '%s, ' "$(fmt "$x")"; done | sed 's/, $//'); spread (max-min)/max = **${spread_pct}%**."
    md ""
    if [ "$lo" -gt 0 ] && awk "BEGIN { exit !($spread_pct < 15) }"; then
        verdict PASS "burst spread < 15%" "${spread_pct}% over $bursts runs ($(fmt "$lo")-$(fmt "$hi") records/s)"
    else
        verdict FAIL "burst spread < 15%" "${spread_pct}% over $bursts runs ($(fmt "$lo")-$(fmt "$hi") records/s)"
    fi
fi

# --- 7. fdatasync cost (report only) --------------------------------------
if want fsync; then
    say "fsync: write + fdatasync, 2 s per case"
    md "## fdatasync of freshly written data (report only; 2 s per case, each thread its own file)"
    md ""
    md "| write size | threads | syncs/s (total) | ms per sync (per thread) | MB/s |"
    md "|---|---:|---:|---:|---:|"
    for size in 16384 1048576; do
        for threads in 1 2 4; do
            syncs=$(timeout 60 python3 - "$size" "$threads" "$scratch" <<'PY'
import os, sys, threading, time
size, threads, where = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
buf = os.urandom(size)
counts = [0] * threads
def work(i):
    path = os.path.join(where, f"sync{i}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    off, end = 0, time.monotonic() + 2.0
    while time.monotonic() < end:
        os.pwrite(fd, buf, off)
        off += size
        os.fdatasync(fd)
        counts[i] += 1
    os.close(fd)
    os.unlink(path)
ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(counts) / 2.0)
PY
            ) || syncs=0
            md "| $((size / 1024)) KiB | $threads | $(calc "$syncs") | $( [ "$(calc "$syncs")" -gt 0 ] && calc "1000 * $threads / $syncs" 2 || echo -) | $(calc "$syncs * $size / 1e6") |"
        done
    done
    md ""
fi

{
    cat "$report"
    echo "## Acceptance"
    echo ""
    cat "$verdicts"
    echo ""
    if [ "$fails" -eq 0 ]; then echo "All measured items pass."; else echo "$fails item(s) fail."; fi
} | tee "$out"
say "report written to $out"
[ "$fails" -eq 0 ]
