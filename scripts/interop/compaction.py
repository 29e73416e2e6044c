#!/usr/bin/env python3
"""Compacted topics against the real binary, with confluent-kafka and kcat.

- confluent-kafka feeds a compacted topic UPDATES updates over KEYS keys,
  then a tombstone for each of TOMBSTONES keys; after the cleaner runs (and
  delete.retention.ms has passed), a consumer from offset 0 sees the latest
  value of every live key, no deleted key, offsets strictly increasing, and
  the partition's size on disk is within 2x of its live data; kcat reads
  the same; the metrics show the cleaner's work;
- librdkafka's produce_batch of keyless records to a compacted topic gets
  INVALID_RECORD for each message;
- a restart reads the same cleaned log.

- kill -9 while the cleaner works, CRASH_ROUNDS (10) times: every key's
  latest acknowledged value survives, no offset appears twice (part
  "crash").
- transactions in a compacted topic: aborted records and the markers of
  transactions with no record left are cleaned away; read_committed,
  read_uncommitted and kcat read every key's latest committed value (part
  "transactions").

usage: compaction.py BROKER_BINARY [crash|transactions]
UPDATES (default 1,000,000), KEYS (10,000), TOMBSTONES (1,000) set the load.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, finish, free_port, scrape, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
UPDATES = int(os.environ.get("UPDATES", "1000000"))
KEYS = int(os.environ.get("KEYS", "10000"))
TOMBSTONES = int(os.environ.get("TOMBSTONES", "1000"))
TOPIC = "compacted"
VALUE_BYTES = 100


def value(i):
    return f"v{i:09d}".encode().ljust(VALUE_BYTES, b".")


def key(k):
    return f"key-{k:06d}".encode()


def partition_bytes(data_dir):
    """Bytes of the partition's segments. The cleaner renames and removes
    segments while this runs, so a file listed may be gone when measured."""
    path = os.path.join(data_dir, f"{TOPIC}-0")
    total = 0
    for f in os.listdir(path):
        if f.endswith(".log"):
            try:
                total += os.path.getsize(os.path.join(path, f))
            except FileNotFoundError:
                pass
    return total


def produce(addr):
    """The updates, the tombstones, then two more updates of every live
    key (so the tombstones sit in closed segments the cleaner may clean).
    Returns {key: latest value} of the live keys."""
    p = Producer({"bootstrap.servers": addr, "linger.ms": 20, "batch.size": 65536,
                  "queue.buffering.max.messages": 1000000, "enable.idempotence": True})
    failed = []
    latest = {}

    def send(k, v):
        while True:
            try:
                p.produce(TOPIC, key=key(k), value=v, partition=0,
                          on_delivery=lambda err, _m: err and failed.append(err))
                return
            except BufferError:
                p.poll(0.05)

    for i in range(UPDATES):
        send(i % KEYS, value(i))
        latest[i % KEYS] = value(i)
        if i % 50000 == 0:
            p.poll(0)
    for k in range(TOMBSTONES):
        send(k, None)
        latest.pop(k, None)
    for n, k in enumerate(list(range(TOMBSTONES, KEYS)) * 2):
        send(k, value(UPDATES + n))
        latest[k] = value(UPDATES + n)
    left = p.flush(120)
    return latest, left == 0 and not failed, f"{left} unflushed, errors {failed[:3]}"


def read_all(addr, topic=TOPIC, isolation="read_uncommitted"):
    """(offset, key, value) of every record from offset 0 to the end."""
    c = Consumer({"bootstrap.servers": addr, "group.id": f"compaction-{time.time_ns()}", "isolation.level": isolation,
                  "enable.auto.commit": False, "enable.partition.eof": True, "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, 0, 0)])
    out, deadline = [], time.time() + 180
    while time.time() < deadline:
        eof = False
        for m in c.consume(10000, 1.0):
            if m.error():
                eof = eof or m.error().code() == KafkaError._PARTITION_EOF
                continue
            out.append((m.offset(), m.key(), m.value()))
        if eof:
            break
    c.close()
    return out


def verify(records, latest, label):
    offsets = [o for o, _, _ in records]
    check(f"{label}: offsets strictly increase", all(a < b for a, b in zip(offsets, offsets[1:])))
    seen = {}
    for _, k, v in records:
        if v is None:
            seen.pop(k, None)
        else:
            seen[k] = v
    want = {key(k): v for k, v in latest.items()}
    missing = [k for k in want if seen.get(k) != want[k]]
    check(f"{label}: the latest value of every one of the {len(want)} live keys", not missing,
          f"{len(missing)} wrong or missing, e.g. {missing[:3]}")
    deleted = {key(k) for k in range(TOMBSTONES)}
    ghosts = sum(1 for _, k, _ in records if k in deleted)
    check(f"{label}: no record of the {TOMBSTONES} deleted keys (tombstones gone after delete.retention.ms)",
          ghosts == 0, f"{ghosts} records of deleted keys")
    return seen


def kcat_values(addr):
    out = subprocess.run(["kcat", "-C", "-b", addr, "-t", TOPIC, "-p", "0", "-o", "beginning", "-e", "-q",
                          "-f", "%o %k %S\n"], capture_output=True, timeout=300)
    return out.stdout.decode(errors="replace").splitlines()


def main():
    work = tempfile.mkdtemp(prefix="compaction-", dir=os.environ.get("TMPDIR"))
    metrics_addr = f"127.0.0.1:{free_port()}"
    env = {"LOG_CLEANER_BACKOFF_MS": "200", "METRICS_ADDRESS": metrics_addr}
    proc, log, addr = start_broker(BINARY, work, env)
    admin = AdminClient({"bootstrap.servers": addr})
    config = {"cleanup.policy": "compact", "segment.bytes": str(256 << 10), "min.cleanable.dirty.ratio": "0.1",
              "delete.retention.ms": "1000", "min.compaction.lag.ms": "0"}
    for f in admin.create_topics([NewTopic(TOPIC, 1, 1, config=config), NewTopic("keyless", 1, 1, config=config)]).values():
        f.result(30)
    del admin

    # Keyless records: refused, each one, as Kafka does.
    p = Producer({"bootstrap.servers": addr, "linger.ms": 50})
    errors = []
    queued = p.produce_batch("keyless", [{"value": f"no key {i}".encode()} for i in range(10)],
                             on_delivery=lambda err, _m: errors.append(err))
    p.flush(30)
    del p
    codes = {e.code() if e else None for e in errors}
    check("produce_batch of 10 keyless records to a compacted topic: INVALID_RECORD for each",
          queued == 10 and len(errors) == 10 and codes == {KafkaError.INVALID_RECORD}, f"{queued} queued, {codes}")

    started = time.time()
    latest, ok, detail = produce(addr)
    took = time.time() - started
    total = UPDATES + TOMBSTONES + 2 * (KEYS - TOMBSTONES)
    check(f"{total:,} records ({UPDATES:,} updates over {KEYS:,} keys, {TOMBSTONES:,} tombstones) acknowledged "
          f"({total / took:,.0f}/s)", ok, detail)
    before = partition_bytes(work)
    live = sum(len(key(k)) + len(v) for k, v in latest.items())
    # Cleaned, and cleaned again once the tombstones' delete.retention.ms has passed.
    deadline = time.time() + 240
    while time.time() < deadline and (partition_bytes(work) > 2 * live or time.time() - started < 5):
        time.sleep(1)
    # One more round of the cleaner: tombstones go once they have expired.
    time.sleep(3)
    after = partition_bytes(work)
    records = read_all(addr)
    verify(records, latest, "confluent-kafka from offset 0")
    # Record overhead on disk (batch headers, varints) is counted as Kafka's would be.
    stored = sum(len(k) + len(v) for _, k, v in records if v is not None)
    check(f"the partition shrank from {before / 2**20:.1f} MiB to {after / 2**20:.2f} MiB on disk, within 2x of "
          f"its {live / 2**20:.2f} MiB of live keys and values", after <= 2 * live and stored <= 2 * live,
          f"consumers read {stored} bytes of keys and values")
    kcat = kcat_values(addr)
    check(f"kcat reads the same {len(records):,} records", len(kcat) == len(records)
          and all(line.split(" ")[0] == str(o) for line, (o, _, _) in zip(kcat, records)),
          f"{len(kcat)} lines")
    sums = scrape(metrics_addr)
    runs, written = sums.get("chronik_cleaner_runs_total", 0), sums.get("chronik_cleaner_written_bytes_total", 0)
    check(f"/metrics: {runs:.0f} cleaner runs, {written / 2**20:.1f} MiB written, the topic's cleanable bytes and "
          "dirty ratio", runs >= 1 and "chronik_log_dirty_ratio" in sums and "chronik_log_cleanable_bytes" in sums,
          f"{sorted(k for k in sums if 'clean' in k or 'dirty' in k)}")
    code = stop_broker(proc)
    check("broker exits 0", code == 0, f"exit {code}")
    proc, log, addr = start_broker(BINARY, work, env)
    again = read_all(addr)
    check("after a restart the cleaned log reads the same", again == records, f"{len(again)} of {len(records)}")
    finish("compaction", proc, log, work)


def run_crash(rounds):
    """kill -9 while the cleaner works, `rounds` times at different points:
    each restart finishes or discards the interrupted swap, every key's
    latest acknowledged value is there, and no offset appears twice."""
    import random
    work = tempfile.mkdtemp(prefix="compaction-crash-", dir=os.environ.get("TMPDIR"))
    # A slow cleaner (I/O paced), so a kill lands inside a cleaning.
    env = {"LOG_CLEANER_BACKOFF_MS": "100", "LOG_CLEANER_IO_MAX_BYTES_PER_SECOND": str(4 << 20)}
    proc, log, addr = start_broker(BINARY, work, env)
    admin = AdminClient({"bootstrap.servers": addr})
    config = {"cleanup.policy": "compact", "segment.bytes": str(256 << 10), "min.cleanable.dirty.ratio": "0.01",
              "min.compaction.lag.ms": "0"}
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=config)])[TOPIC].result(30)
    del admin
    keys, latest, n, rng, interrupted_rounds = 3000, {}, 0, random.Random(19), 0
    ok = True
    for r in range(rounds):
        p = Producer({"bootstrap.servers": addr, "linger.ms": 5, "batch.size": 65536, "acks": "all",
                      "enable.idempotence": True})
        acked = {}

        def delivered(err, m):
            if err is None:
                acked[m.key()] = (m.offset(), m.value())
        for _ in range(30000):
            k = rng.randrange(keys)
            while True:
                try:
                    p.produce(TOPIC, key=key(k), value=value(n), partition=0, on_delivery=delivered)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
        p.flush(60)
        del p
        for k, (offset, v) in acked.items():
            if k not in latest or latest[k][0] < offset:
                latest[k] = (offset, v)
        # Somewhere inside the cleaning this produce made due.
        time.sleep(rng.uniform(0.2, 4.0))
        proc.kill()
        proc.wait()
        log.seek(0)
        cleanings = log.read().count(" cleaned ")
        proc, log, addr = start_broker(BINARY, work, env)
        log.seek(0)
        found = re.search(r"a cleaning was interrupted by a stop.*?swaps_finished=(\d+) rewrites_discarded=(\d+)",
                          log.read())
        interrupted = (f"the restart finished {found.group(1)} swap(s) and discarded {found.group(2)} "
                       "half-written rewrite(s)") if found else "no cleaning was in flight"
        records = read_all(addr)
        offsets = [o for o, _, _ in records]
        seen = {}
        for o, k, v in records:
            seen[k] = (o, v)
        lost = [k for k, want in latest.items() if seen.get(k) != want]
        increasing = all(a < b for a, b in zip(offsets, offsets[1:]))
        if lost or not increasing:
            ok = False
            check(f"crash round {r + 1}: no latest value lost, no offset twice", False,
                  f"{len(lost)} keys lost, increasing {increasing}")
            break
        print(f"round {r + 1}: killed after {cleanings} cleanings in that run; {interrupted}; "
              f"{len(records)} records, {len(seen)} keys, all latest values there", flush=True)
        interrupted_rounds += bool(found)
    check(f"kill -9 during cleaning, {rounds} rounds ({interrupted_rounds} of them interrupting a cleaning): every "
          "key's latest acknowledged value survives and no offset appears twice", ok)
    finish("compaction-crash", proc, log, work)


def control_batches(data_dir, topic):
    """Base offsets of the control batches (transaction markers) in the
    partition's segment files, read as Kafka's record batch format."""
    import struct
    path = os.path.join(data_dir, f"{topic}-0")
    found = []
    for name in sorted(f for f in os.listdir(path) if f.endswith(".log")):
        try:
            with open(os.path.join(path, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # the cleaner swapped it meanwhile
        at = 0
        while at + 61 <= len(data):
            base, length = struct.unpack(">qi", data[at:at + 12])
            if length <= 0:
                break
            attributes = struct.unpack(">h", data[at + 21:at + 23])[0]
            if attributes & 0x20:
                found.append(base)
            at += 12 + length
    return found


def run_transactions():
    """Transactions in a compacted topic: aborted records go at the first
    cleaning, and markers once their transaction has no record left (and
    delete.retention.ms has passed); read_committed and read_uncommitted
    consumers and kcat read every key's latest committed value."""
    work = tempfile.mkdtemp(prefix="compaction-txn-", dir=os.environ.get("TMPDIR"))
    topic = "txn-compacted"
    metrics_addr = f"127.0.0.1:{free_port()}"
    proc, log, addr = start_broker(BINARY, work, {"LOG_CLEANER_BACKOFF_MS": "200", "METRICS_ADDRESS": metrics_addr})
    admin = AdminClient({"bootstrap.servers": addr})
    # A marker outlives its transaction's last record by delete.retention.ms,
    # so all 20 are still on disk when counted after the transactions.
    config = {"cleanup.policy": "compact", "segment.bytes": str(16 << 10), "min.cleanable.dirty.ratio": "0.01",
              "delete.retention.ms": "3000", "min.compaction.lag.ms": "0"}
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    del admin
    keys, transactions = 50, 20
    p = Producer({"bootstrap.servers": addr, "transactional.id": "compaction-txn", "linger.ms": 5})
    p.init_transactions(30)
    latest = {}
    for t in range(transactions):
        p.begin_transaction()
        for k in range(keys):
            p.produce(topic, key=f"t-{k}".encode(), value=f"txn{t}-{k}".encode(), partition=0)
        # Sent before the end: librdkafka drops what an abort finds unsent.
        p.flush(30)
        if t % 2 == 0:
            p.commit_transaction(30)
            latest.update({f"t-{k}".encode(): f"txn{t}-{k}".encode() for k in range(keys)})
        else:
            p.abort_transaction(30)
    del p
    markers_before = control_batches(work, topic)
    # Newer plain values for half the keys, and enough other records to
    # close the segments the transactions are in (small batches: a batch
    # larger than segment.bytes goes whole into one segment).
    p = Producer({"bootstrap.servers": addr, "linger.ms": 5, "batch.size": 4096, "enable.idempotence": True})
    for k in range(keys // 2):
        p.produce(topic, key=f"t-{k}".encode(), value=f"plain-{k}".encode(), partition=0)
        latest[f"t-{k}".encode()] = f"plain-{k}".encode()
    for i in range(2000):
        k = f"f-{i % 100}".encode()
        v = f"filler-{i}".encode().ljust(200, b".")
        p.produce(topic, key=k, value=v, partition=0)
        latest[k] = v
    p.flush(30)
    del p
    # Only the last committed transaction still has records (t-25..t-49):
    # its marker is the one left.
    # (Read twice alike: a listing taken mid-swap misses a segment.)
    deadline, markers_after = time.time() + 90, None
    while time.time() < deadline:
        first = control_batches(work, topic)
        time.sleep(0.5)
        markers_after = control_batches(work, topic)
        if len(markers_after) == 1 and first == markers_after:
            break
    check(f"{transactions} transactions' markers ({len(markers_before)} on disk) cleaned down to the one whose "
          "transaction still has records", len(markers_before) == transactions and len(markers_after) == 1,
          f"{markers_before} -> {markers_after}")
    import urllib.request
    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10).read().decode()
    internal = [line for line in text.splitlines()
                if line.startswith("chronik_log_size_bytes") and 'topic="__transaction_state"' in line]
    check("/metrics: the transaction-state partitions' size, as an internal compacted topic", bool(internal),
          "no chronik_log_size_bytes series for __transaction_state")
    def consume_latest(addr, isolation):
        """Every key's last value read from offset 0, and whether offsets
        strictly increase and no aborted record was seen."""
        records = read_all(addr, topic, isolation)
        offsets = [o for o, _, _ in records]
        seen = {k: v for _, k, v in records}
        aborted = sum(1 for _, _, v in records
                      if any(v.startswith(f"txn{t}-".encode()) for t in range(1, transactions, 2)))
        wrong = sum(1 for k in latest if seen.get(k) != latest[k])
        ok = seen == latest and aborted == 0 and all(a < b for a, b in zip(offsets, offsets[1:]))
        return ok, f"{wrong} keys wrong, {aborted} aborted records"

    for isolation in ["read_committed", "read_uncommitted"]:
        ok, detail = consume_latest(addr, isolation)
        check(f"{isolation} from offset 0: every key's latest committed value, no aborted record, offsets "
              "strictly increasing", ok, detail)
    out = subprocess.run(["kcat", "-C", "-b", addr, "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
                          "-X", "isolation.level=read_committed", "-f", "%k=%s\n"], capture_output=True, timeout=60)
    kcat = {}
    for line in out.stdout.decode(errors="replace").splitlines():
        k, _, v = line.partition("=")
        kcat[k.encode()] = v.encode()
    check("kcat (read_committed) reads the same latest values", kcat == latest,
          f"{sum(1 for k in latest if kcat.get(k) != latest[k])} keys differ")
    # The aborted transactions whose markers went are forgotten durably: a
    # consumer told of one would skip the producer's later batches.
    proc.kill()
    proc.wait()
    proc, log, addr = start_broker(BINARY, work, {"LOG_CLEANER_BACKOFF_MS": "200"})
    ok, detail = consume_latest(addr, "read_committed")
    check("after kill -9 and a restart, read_committed still reads every key's latest committed value", ok, detail)
    finish("compaction-transactions", proc, log, work)


if __name__ == "__main__":
    if sys.argv[2:] == ["crash"]:
        run_crash(int(os.environ.get("CRASH_ROUNDS", "10")))
    elif sys.argv[2:] == ["transactions"]:
        run_transactions()
    else:
        main()
