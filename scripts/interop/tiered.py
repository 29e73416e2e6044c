"""Tiered storage against the real binary, with confluent-kafka and kcat:
closed segments go to object storage (a local directory through file://,
and an S3 server: moto in server mode on 127.0.0.1), the local disk keeps
local.retention.bytes plus a segment, every record reads back from offset 0
byte-identical (most of them from the bucket), offsets_for_times finds
records in remote segments, and a second broker with an empty data
directory serves the whole tiered history.

Also: kill -9 during uploads (crash, CRASH_ROUNDS rounds), the S3
server stopped under produce (outage, OUTAGE_SECONDS), and a fetch's
remote reading bounded by its limits and its max_wait_ms, with the tiered
metrics scraped (limits), and aborted transactions kept aborted in the
remote history (transactions).

usage: tiered.py BROKER_BINARY [file|s3|crash|outage|limits|transactions ...]   (default: all)
RECORDS (default 2,000,000) sets the records produced by file and s3."""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                  ResourceType)

from common import check, free_port, recv_exactly, results, scrape, start_broker, start_moto, stop_broker, stop_moto

RECORDS = int(os.environ.get("RECORDS", "2000000"))
SEGMENT = 16 << 20
LOCAL_CAP = 64 << 20
# Recent enough that retention.ms (7 days) keeps every record.
BASE_TS = int(time.time() * 1000) - 3_600_000
TOPIC = "tiered"
# Longer than the default, so still every record kept.
RETENTION_CHANGED = "691200000"


def value(i):
    head = f"{i:012d}".encode()
    return head + bytes([i % 251]) * (1024 - len(head))


def stop_and_report(name, proc, log):
    """Stops the broker (it must exit 0); on any failure so far, shows its log."""
    code = stop_broker(proc)
    check(f"{name}: broker exits 0", code == 0, f"exit {code}")
    if not all(results):
        log.seek(0)
        print(log.read()[-6000:])


def local_log_bytes(data_dir):
    total = 0
    for root, _, files in os.walk(data_dir):
        if os.path.basename(root).startswith(TOPIC + "-"):
            for f in files:
                if f.endswith(".log"):
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except FileNotFoundError:
                        pass  # local retention removed it since the listing
    return total


def produce(addr, count):
    p = Producer({"bootstrap.servers": addr, "linger.ms": 20, "batch.size": 1000000, "acks": "all",
                  "enable.idempotence": True, "queue.buffering.max.messages": 500000})
    failed = []
    for i in range(count):
        while True:
            try:
                p.produce(TOPIC, value=value(i), partition=0, timestamp=BASE_TS + i,
                          on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(120)
    del p
    return left == 0 and not failed, f"{left} unflushed, errors {failed[:3]}"


def consume_all(addr, upto, start=0):
    """Reads offsets start..upto from partition 0: (all identical, first bad offset or None)."""
    c = Consumer({"bootstrap.servers": addr, "group.id": f"tiered-{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(TOPIC, 0, start)])
    expect = start
    deadline = time.time() + 300
    bad = None
    while expect < upto and time.time() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error():
                raise KafkaException(m.error())
            if m.offset() != expect or m.value() != value(expect) or m.timestamp()[1] != BASE_TS + expect:
                bad = bad if bad is not None else m.offset()
            expect = m.offset() + 1
    c.close()
    return expect >= upto and bad is None, f"read to {expect} of {upto}, first bad {bad}"


def kcat_digest(addr, count):
    out = subprocess.run(["kcat", "-C", "-b", addr, "-t", TOPIC, "-p", "0", "-o", "beginning", "-c", str(count),
                          "-e", "-q", "-f", "%o %s\n"], capture_output=True, timeout=300)
    return hashlib.sha256(out.stdout).hexdigest()


def expected_digest(count):
    h = hashlib.sha256()
    for i in range(count):
        h.update(f"{i} ".encode() + value(i) + b"\n")
    return h.hexdigest()


def high_watermark(addr):
    c = Consumer({"bootstrap.servers": addr, "group.id": "hw"})
    lo, hi = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
    c.close()
    return lo, hi


def run(backend, binary):
    work = tempfile.mkdtemp(prefix=f"tiered-{backend}-", dir=os.environ.get("TMPDIR"))
    moto = None
    env = {"LOG_RETENTION_CHECK_INTERVAL_SECS": "1"}
    if backend == "s3":
        moto, s3_env = start_moto("tiering")
        env.update(s3_env)
        env["OBJECT_STORE_URL"] = "s3://tiering/cluster-a"
    else:
        env["OBJECT_STORE_URL"] = "file://" + os.path.join(work, "bucket")
    first = os.path.join(work, "first")
    os.makedirs(first)
    proc, log, addr = start_broker(binary, first, env)
    try:
        create_topic(addr, segment_bytes=SEGMENT, local_retention_bytes=LOCAL_CAP)
        started = time.time()
        peak = [0]
        watching = [True]

        def watch():
            while watching[0]:
                peak[0] = max(peak[0], local_log_bytes(first))
                time.sleep(0.2)
        watcher = threading.Thread(target=watch)
        watcher.start()
        ok, detail = produce(addr, RECORDS)
        took = time.time() - started
        watching[0] = False
        watcher.join()
        check(f"{backend}: {RECORDS} records of 1 KiB acknowledged ({RECORDS / took:,.0f}/s)", ok, detail)
        deadline = time.time() + 180
        while time.time() < deadline and local_log_bytes(first) > LOCAL_CAP + SEGMENT:
            time.sleep(0.5)
        size = local_log_bytes(first)
        check(f"{backend}: local segments under local.retention.bytes plus a segment once uploads caught up "
              f"({size >> 20} MiB; {time.time() - started - took:.1f} s after the last ack; "
              f"peak while producing {peak[0] >> 20} MiB)", size <= LOCAL_CAP + SEGMENT, f"{size} bytes")
        lo, hi = high_watermark(addr)
        check(f"{backend}: log start stays 0 with history in the bucket", lo == 0 and hi == RECORDS, f"{lo}..{hi}")
        ok, detail = consume_all(addr, RECORDS)
        check(f"{backend}: confluent-kafka reads every record from offset 0 byte-identical", ok, detail)
        check(f"{backend}: kcat reads the same records", kcat_digest(addr, RECORDS) == expected_digest(RECORDS))
        c = Consumer({"bootstrap.servers": addr, "group.id": "times"})
        for k in (1000, RECORDS // 3):
            found = c.offsets_for_times([TopicPartition(TOPIC, 0, BASE_TS + k)], timeout=20)[0].offset
            check(f"{backend}: offsets_for_times finds offset {k} in a remote segment", found == k, f"got {found}")
        c.close()
        if backend == "file":
            # DeleteRecords into the remote history: both starts move, the
            # remote segments wholly below go from the bucket.
            cut = RECORDS // 4
            bucket = os.path.join(work, "bucket")
            logs_before = sum(f.endswith(".log") for _, _, fs in os.walk(bucket) for f in fs)
            admin = AdminClient({"bootstrap.servers": addr})
            done = admin.delete_records([TopicPartition(TOPIC, 0, cut)])
            low = list(done.values())[0].result(30).low_watermark
            del admin
            logs_after = sum(f.endswith(".log") for _, _, fs in os.walk(bucket) for f in fs)
            lo, _ = high_watermark(addr)
            check(f"{backend}: DeleteRecords to {cut} moves the log start into the remote history "
                  f"(remote segments {logs_before} -> {logs_after})",
                  low == cut and lo == cut and logs_after < logs_before, f"low {low}, start {lo}")
        # A config changed after the catalog entry went up is in the bucket
        # too: the rebuilt broker below must show it.
        admin = AdminClient({"bootstrap.servers": addr})
        change = ConfigResource(ResourceType.TOPIC, TOPIC, incremental_configs=[
            ConfigEntry("retention.ms", RETENTION_CHANGED, incremental_operation=AlterConfigOpType.SET)])
        list(admin.incremental_alter_configs([change]).values())[0].result(30)
        del admin
        time.sleep(3)  # a retention pass (every second here) rewrites the entry
    finally:
        stop_and_report(backend, proc, log)
    second = os.path.join(work, "second")
    os.makedirs(second)
    proc, log, addr = start_broker(binary, second, env)
    try:
        lo, hi = high_watermark(addr)
        start = RECORDS // 4 if backend == "file" else 0
        check(f"{backend}: a broker with an empty data directory takes the topic back from the bucket",
              lo == start and hi > RECORDS // 2, f"{lo}..{hi}")
        admin = AdminClient({"bootstrap.servers": addr})
        described = list(admin.describe_configs([ConfigResource(ResourceType.TOPIC, TOPIC)]).values())[0].result(30)
        del admin
        retention = described["retention.ms"].value
        check(f"{backend}: it has the topic's configs as last changed (retention.ms {retention})",
              retention == RETENTION_CHANGED and described["remote.storage.enable"].value == "true")
        ok, detail = consume_all(addr, hi, start)
        check(f"{backend}: it serves the whole tiered history byte-identical", ok, detail)
    finally:
        stop_and_report(f"{backend} (second broker)", proc, log)
    if moto:
        stop_moto(moto)
    shutil.rmtree(work, ignore_errors=True)


def s3_client(env):
    import boto3
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def s3_keys(env, prefix):
    """Every object key under `prefix` in the moto bucket."""
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket="tiering", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_get(env, key):
    return s3_client(env).get_object(Bucket="tiering", Key=key)["Body"].read()


class Feeder:
    """Produces records value(seq) acks=all in a thread until stopped,
    at most `rate` records/s; remembers (offset, seq) of each acked one
    and the errors the broker answered."""

    def __init__(self, addr, first_seq, rate=None):
        self.acked, self.errors, self.seq, self.rate = [], [], first_seq, rate
        self.first = first_seq
        self.running = True
        self.p = Producer({"bootstrap.servers": addr, "linger.ms": 5, "acks": "all", "retries": 0,
                           "enable.idempotence": False, "message.timeout.ms": 30000,
                           "socket.timeout.ms": 5000})
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()

    def delivered(self, seq):
        def report(err, msg):
            if err:
                self.errors.append(err)
            else:
                self.acked.append((msg.offset(), seq))
        return report

    def loop(self):
        started = time.time()
        while self.running:
            if self.rate and self.seq - self.first >= self.rate * (time.time() - started):
                self.p.poll(0.01)
                continue
            try:
                self.p.produce(TOPIC, value=value(self.seq), partition=0, on_delivery=self.delivered(self.seq))
                self.seq += 1
            except BufferError:
                self.p.poll(0.05)
            self.p.poll(0)

    def stop(self, flush=10):
        self.running = False
        self.thread.join()
        self.p.flush(flush)
        # Gone now, not whenever the collector gets to it: left alive it
        # goes on reconnecting to brokers that have stopped.
        self.p = None


def create_topic(addr, **configs):
    """The tiered topic; the admin client goes with this call (left alive,
    it would go on reconnecting to a stopped broker)."""
    admin = AdminClient({"bootstrap.servers": addr})
    base = {"remote.storage.enable": "true"}
    base.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=base)])[TOPIC].result(30)


def wait_uploaded(data_dir, limit, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline and local_log_bytes(data_dir) > limit:
        time.sleep(0.5)
    return local_log_bytes(data_dir)


def read_back(addr, acked):
    """Every acked (offset, seq) reads back with value(seq)."""
    want = dict(acked)
    if not want:
        return True, "nothing acked"
    top = max(want) + 1
    c = Consumer({"bootstrap.servers": addr, "group.id": f"check-{time.time_ns()}", "enable.auto.commit": False,
                  "check.crcs": True})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    seen, wrong, deadline = 0, [], time.time() + 300
    while seen < top and time.time() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error():
                c.close()
                return False, f"consumer error {m.error()}"
            seq = want.get(m.offset())
            if seq is not None and m.value() != value(seq):
                wrong.append(m.offset())
            seen = m.offset() + 1
    c.close()
    return seen >= top and not wrong, f"read to {seen} of {top}; wrong values at {wrong[:5]}"


def run_crash(binary, rounds=5):
    """kill -9 while segments upload: afterwards every acked record reads
    back, and the bucket holds each segment once, all named in the
    manifest, with no gap or overlap."""
    work = tempfile.mkdtemp(prefix="tiered-crash-", dir=os.environ.get("TMPDIR"))
    moto, env = start_moto("tiering")
    env.update(OBJECT_STORE_URL="s3://tiering/crash", LOG_RETENTION_CHECK_INTERVAL_SECS="1")
    data = os.path.join(work, "data")
    os.makedirs(data)
    acked, seq, rng = [], 0, random.Random(int(os.environ.get("SEED", time.time_ns())))
    for r in range(rounds):
        proc, log, addr = start_broker(binary, data, env)
        if r == 0:
            create_topic(addr, segment_bytes=4 << 20, local_retention_bytes=8 << 20)
        # Bounded, so the read-back through the S3 server stays short.
        feeder = Feeder(addr, seq, rate=40000)
        time.sleep(rng.uniform(2.0, 5.0))
        proc.kill()
        proc.wait()
        feeder.stop(flush=5)
        seq = feeder.seq
        acked += feeder.acked
        log.seek(0)
        uploaded = log.read().count("segment uploaded")
        print(f"crash round {r + 1}: killed with {len(feeder.acked)} acked, {uploaded} segments uploaded", flush=True)
    proc, log, addr = start_broker(binary, data, env)
    try:
        size = wait_uploaded(data, (8 << 20) + (4 << 20) * 2)
        ok, detail = read_back(addr, acked)
        check(f"crash: after {rounds} kill -9 rounds during uploads every acked record reads back "
              f"({len(acked)} acked)", ok, detail)
        keys = s3_keys(env, "crash/topics/")
        manifests = [k for k in keys if k.endswith("manifest.json")]
        manifest = json.loads(s3_get(env, manifests[0])) if len(manifests) == 1 else {"segments": []}
        segments = manifest["segments"]
        contiguous = all(a["next_offset"] == b["base_offset"] for a, b in zip(segments, segments[1:]))
        named = {f"{s['base_offset']:020d}-{s['leader_epoch']}.log" for s in segments}
        logs = [k.rsplit("/", 1)[1] for k in keys if k.endswith(".log")]
        check(f"crash: the manifest names {len(segments)} segments from offset 0 with no gap or overlap",
              segments and segments[0]["base_offset"] == 0 and contiguous, json.dumps(segments)[:500])
        check("crash: no remote segment duplicated or missing (every .log object named once in the manifest)",
              sorted(logs) == sorted(named) and len(logs) == len(set(logs)),
              f"objects {len(logs)}, named {len(named)}, local bytes {size}")
    finally:
        stop_and_report("crash", proc, log)
    stop_moto(moto)
    shutil.rmtree(work, ignore_errors=True)


def run_outage(binary, seconds):
    """The S3 server stopped (SIGSTOP: requests hang, as behind a network
    partition) for `seconds` under produce: produce goes on, uploads resume
    when it returns, nothing is lost; with TIERING_LOCAL_CAP_MB, produce
    is refused with KAFKA_STORAGE_ERROR only once the cap is reached."""
    work = tempfile.mkdtemp(prefix="tiered-outage-", dir=os.environ.get("TMPDIR"))
    moto, env = start_moto("tiering")
    cap_mb = 48
    env.update(OBJECT_STORE_URL="s3://tiering/outage", LOG_RETENTION_CHECK_INTERVAL_SECS="1",
               TIERING_LOCAL_CAP_MB=str(cap_mb))
    data = os.path.join(work, "data")
    os.makedirs(data)
    proc, log, addr = start_broker(binary, data, env)
    try:
        create_topic(addr, segment_bytes=4 << 20, local_retention_bytes=8 << 20)
        # 30 MiB over the outage: under the cap.
        rate = int(30 * 1024 / seconds)
        feeder = Feeder(addr, 0, rate=rate)
        time.sleep(2)
        os.kill(moto.pid, signal.SIGSTOP)
        time.sleep(seconds)
        stopped_bytes = local_log_bytes(data)
        os.kill(moto.pid, signal.SIGCONT)
        feeder.stop(flush=30)
        check(f"outage: produce goes on while the S3 server is stopped for {seconds} s "
              f"({len(feeder.acked)} acked, local {stopped_bytes >> 20} MiB)",
              not feeder.errors and len(feeder.acked) == feeder.seq, f"errors {feeder.errors[:3]}")
        size = wait_uploaded(data, (8 << 20) + (4 << 20), seconds=240)
        check(f"outage: uploads resume when it returns (local segments back to {size >> 20} MiB)",
              size <= (8 << 20) + (4 << 20), f"{size} bytes")
        ok, detail = read_back(addr, feeder.acked)
        check("outage: nothing is lost", ok, detail)
        # Past the cap: stop the server again and produce without a rate.
        os.kill(moto.pid, signal.SIGSTOP)
        flood = Feeder(addr, feeder.seq)
        deadline = time.time() + 120
        while time.time() < deadline and not flood.errors:
            time.sleep(0.2)
        peak = local_log_bytes(data)
        flood.stop(flush=10)
        os.kill(moto.pid, signal.SIGCONT)
        codes = {e.name() for e in flood.errors}
        check(f"outage: KAFKA_STORAGE_ERROR once local segments reach TIERING_LOCAL_CAP_MB={cap_mb} "
              f"(refused at {peak >> 20} MiB)",
              codes == {"KAFKA_STORAGE_ERROR"} and peak >= (cap_mb << 20) - (4 << 20), f"{codes}, {peak} bytes")
        ok, detail = read_back(addr, flood.acked)
        check("outage: what was acknowledged before the cap reads back", ok, detail)
        wait_uploaded(data, (8 << 20) + (4 << 20), seconds=240)
        _, end = high_watermark(addr)
    finally:
        stop_and_report("outage", proc, log)
    # A restart while the store is down (gone: connections refused) starts
    # with the local topics, and takes produce.
    stop_moto(moto)
    proc, log, addr = start_broker(binary, data, env)
    try:
        _, hi = high_watermark(addr)
        check(f"outage: a restart with the S3 server gone starts with its topics (high watermark {hi})",
              hi == end, f"{hi} != {end}")
        p = Producer({"bootstrap.servers": addr, "acks": "all", "enable.idempotence": True})
        errors = []
        for i in range(100):
            p.produce(TOPIC, value=value(i), partition=0, on_delivery=lambda err, _m: err and errors.append(err))
        left = p.flush(30)
        del p
        check("outage: and takes produce", left == 0 and not errors, f"{left} unflushed, {errors[:3]}")
    finally:
        stop_and_report("outage (restarted)", proc, log)
    # An empty data directory is a rebuild: with the bucket unreachable it
    # must not come up as an empty broker.
    fresh = os.path.join(work, "fresh")
    os.makedirs(fresh)
    run_env = dict(os.environ, BIND_ADDRESS="127.0.0.1:0", STORAGE_PATH=fresh, METRICS_ADDRESS="", **env)
    try:
        out = subprocess.run([binary], env=run_env, capture_output=True, timeout=120)
        code, said = out.returncode, out.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        code, said = None, "still running after 120 s"
    check("outage: a broker with an empty data directory and the bucket unreachable refuses to start, "
          "naming OBJECT_STORE_URL", code not in (0, None) and "OBJECT_STORE_URL" in said, f"exit {code}: {said[-300:]}")
    shutil.rmtree(work, ignore_errors=True)


def raw_fetch(addr, wanted, max_wait_ms, max_bytes):
    """One Fetch v4 of `wanted` [(topic, partition, offset, partition_max_bytes)],
    encoded here so that its limits are exactly these. Returns
    ({(topic, partition): (error_code, record bytes)}, seconds to the answer)."""
    topics = []
    for topic, partition, offset, limit in wanted:
        if not topics or topics[-1][0] != topic:
            topics.append((topic, []))
        topics[-1][1].append(struct.pack(">iqi", partition, offset, limit))

    def string(text):
        return struct.pack(">h", len(text)) + text.encode()
    body = struct.pack(">hhi", 1, 4, 7) + string("tiered-limits")
    body += struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + struct.pack(">i", len(topics))
    for topic, parts in topics:
        body += string(topic) + struct.pack(">i", len(parts)) + b"".join(parts)
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        started = time.time()
        sock.sendall(struct.pack(">i", len(body)) + body)
        size, = struct.unpack(">i", recv_exactly(sock, 4))
        answer = recv_exactly(sock, size)
        took = time.time() - started
    at = 8  # correlation id, throttle time
    got = {}

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, answer, at)
        at += struct.calcsize(fmt)
        return values
    for _ in range(take(">i")[0]):
        n, = take(">h")
        topic = answer[at:at + n].decode()
        at += n
        for _ in range(take(">i")[0]):
            partition, error = take(">ih")
            take(">qq")
            aborted, = take(">i")
            at += max(aborted, 0) * 16
            length, = take(">i")
            at += max(length, 0)
            got[(topic, partition)] = (error, max(length, 0))
    return got, took


def run_limits(binary):
    """Kafka counts each remote partition of a fetch at its own limit
    against the request's max_bytes (KAFKA-19462): past that, a remote
    partition is answered empty this time. A remote read that hangs (the S3
    server stopped) answers empty at max_wait_ms and does not hold back the
    request's other partitions. The tiered metrics show the traffic."""
    work = tempfile.mkdtemp(prefix="tiered-limits-", dir=os.environ.get("TMPDIR"))
    moto, env = start_moto("tiering")
    metrics_addr = f"127.0.0.1:{free_port()}"
    env.update(OBJECT_STORE_URL="s3://tiering/limits", LOG_RETENTION_CHECK_INTERVAL_SECS="1",
               METRICS_ADDRESS=metrics_addr)
    data = os.path.join(work, "data")
    os.makedirs(data)
    proc, log, addr = start_broker(binary, data, env)
    per_partition = 6000
    try:
        admin = AdminClient({"bootstrap.servers": addr})
        tiered = {"remote.storage.enable": "true", "segment.bytes": str(1 << 20),
                  "local.retention.bytes": str(1 << 20)}
        for f in admin.create_topics([NewTopic("wide", 3, 1, config=tiered), NewTopic("hot", 1, 1)]).values():
            f.result(30)
        del admin
        p = Producer({"bootstrap.servers": addr, "linger.ms": 20, "acks": "all"})
        for i in range(per_partition):
            for partition in range(3):
                p.produce("wide", value=value(i), partition=partition)
            if i < 100:
                p.produce("hot", value=value(i), partition=0)
            if i % 1000 == 0:
                p.poll(0)
        left = p.flush(60)
        del p
        check("limits: 3 tiered partitions of 6 MiB and a local one produced", left == 0, f"{left} unflushed")
        # Offset 0 is remote once every partition's first segment left the disk.
        firsts = [os.path.join(data, f"wide-{n}", "00000000000000000000.log") for n in range(3)]
        deadline = time.time() + 120
        while time.time() < deadline and any(os.path.exists(f) for f in firsts):
            time.sleep(0.5)
        check("limits: the first segments are remote only", not any(os.path.exists(f) for f in firsts),
              f"{[os.path.exists(f) for f in firsts]}")
        wide = [("wide", n, 0, 1 << 20) for n in range(3)]
        # The answer alone would look the same if all three were read and
        # two trimmed: the broker's count of remote bytes read tells.
        before = scrape(metrics_addr).get("chronik_tiered_remote_read_bytes_total", 0)
        got, _ = raw_fetch(addr, wide, 5000, 1 << 20)
        read = scrape(metrics_addr).get("chronik_tiered_remote_read_bytes_total", 0) - before
        sizes = [got.get(("wide", n), (-1, 0)) for n in range(3)]
        check(f"limits: a fetch of 1 MiB reads one remote partition of three "
              f"(bytes {[b for _, b in sizes]}, {read:.0f} read from the bucket)",
              sizes[0][0] == 0 and sizes[0][1] > 0 and all(s == (0, 0) for s in sizes[1:])
              and read == sizes[0][1], f"{sizes}")
        got, _ = raw_fetch(addr, wide, 5000, 3 << 20)
        sizes = [got.get(("wide", n), (-1, 0)) for n in range(3)]
        check(f"limits: a fetch of 3 MiB reads all three (bytes {[b for _, b in sizes]})",
              all(e == 0 and b > 0 for e, b in sizes), f"{sizes}")
        # Offset 3000 of wide-1: a segment no read touched, so not cached.
        os.kill(moto.pid, signal.SIGSTOP)
        try:
            got, took = raw_fetch(addr, [("wide", 1, 3000, 1 << 20), ("hot", 0, 0, 1 << 20)], 500, 8 << 20)
        finally:
            os.kill(moto.pid, signal.SIGCONT)
        check(f"limits: with the S3 server stopped, a fetch of a remote and a local partition with "
              f"max_wait_ms 500 answers in {took:.2f} s with the local records",
              took < 2.5 and got.get(("hot", 0), (-1, 0))[1] > 0 and got.get(("wide", 1)) == (0, 0), f"{got}")
        time.sleep(2)
        got, _ = raw_fetch(addr, [("wide", 1, 3000, 1 << 20)], 5000, 8 << 20)
        check("limits: the same remote read answers once the server is back",
              got.get(("wide", 1), (-1, 0))[0] == 0 and got[("wide", 1)][1] > 0, f"{got}")
        sums = scrape(metrics_addr)
        wanted = ["chronik_tiered_uploaded_bytes_total", "chronik_tiered_uploaded_segments_total",
                  "chronik_tiered_remote_read_bytes_total", "chronik_tiered_remote_chunks_fetched_total"]
        check(f"limits: /metrics counts uploads and remote reads "
              f"({', '.join(f'{w}={sums.get(w, 0):.0f}' for w in wanted)})",
              all(sums.get(w, 0) > 0 for w in wanted) and "chronik_tiered_upload_lag_offsets" in sums,
              f"{sorted(k for k in sums if k.startswith('chronik_tiered'))}")
    finally:
        stop_and_report("limits", proc, log)
    stop_moto(moto)
    shutil.rmtree(work, ignore_errors=True)


def read_txn_topic(addr, topic, isolation):
    """Every value of partition 0 from offset 0 at `isolation`, in order,
    up to the partition's end (the stable offset for read_committed)."""
    c = Consumer({"bootstrap.servers": addr, "group.id": f"tiered-txn-{time.time_ns()}",
                  "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    values, deadline, at_end = [], time.time() + 120, False
    while not at_end and time.time() < deadline:
        for m in c.consume(1000, 1.0):
            if not m.error():
                values.append(m.value())
            elif m.error().code() == KafkaError._PARTITION_EOF:
                at_end = True
    c.close()
    return values


def run_transactions(binary):
    """Aborted transactions stay aborted once their segments are remote
    only: a read_committed consumer reading the history from the bucket
    gets exactly the committed records (Kafka uploads each segment's
    .txnindex for this), on the broker that uploaded them and on a broker
    rebuilt from the bucket with an empty data directory."""
    work = tempfile.mkdtemp(prefix="tiered-txn-", dir=os.environ.get("TMPDIR"))
    bucket = os.path.join(work, "bucket")
    os.makedirs(bucket)
    env = {"OBJECT_STORE_URL": f"file://{bucket}", "LOG_RETENTION_CHECK_INTERVAL_SECS": "1"}
    data = os.path.join(work, "data")
    os.makedirs(data)
    topic = "tiered-txn"
    proc, log, addr = start_broker(binary, data, env)
    per_txn, outcomes = 1500, [True, False, True, False, False, True, True, False, True, True]
    committed = []
    try:
        admin = AdminClient({"bootstrap.servers": addr})
        config = {"remote.storage.enable": "true", "segment.bytes": str(1 << 20),
                  "local.retention.bytes": str(1 << 20)}
        admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
        del admin
        p = Producer({"bootstrap.servers": addr, "transactional.id": "tiered-txn", "linger.ms": 20})
        p.init_transactions(30)
        for n, commit in enumerate(outcomes):
            p.begin_transaction()
            batch = [f"txn{n:02d}-{i:05d}".encode().ljust(1024, b".") for i in range(per_txn)]
            for v in batch:
                while True:
                    try:
                        p.produce(topic, value=v, partition=0)
                        break
                    except BufferError:
                        p.poll(0.05)
            if commit:
                p.commit_transaction(60)
                committed.extend(batch)
            else:
                p.flush(60)
                p.abort_transaction(60)
        del p
        check(f"transactions: {len(outcomes)} transactions of {per_txn} x 1 KiB on a tiered topic "
              f"({outcomes.count(False)} aborted)", True)
        first = os.path.join(data, f"{topic}-0", "00000000000000000000.log")
        deadline = time.time() + 120
        while time.time() < deadline and os.path.exists(first):
            time.sleep(0.5)
        check("transactions: the first segments are remote only", not os.path.exists(first))
        got = read_txn_topic(addr, topic, "read_committed")
        check(f"transactions: read_committed from offset 0 gets exactly the {len(committed)} committed "
              "records, in order, most of them from the bucket", got == committed,
              f"got {len(got)}, first difference at {next((i for i, (a, b) in enumerate(zip(got, committed)) if a != b), None)}")
        got = read_txn_topic(addr, topic, "read_uncommitted")
        check(f"transactions: read_uncommitted gets all {per_txn * len(outcomes)}", len(got) == per_txn * len(outcomes),
              f"got {len(got)}")
    finally:
        stop_and_report("transactions", proc, log)
    # A broker with an empty data directory takes the history from the bucket.
    fresh = os.path.join(work, "fresh")
    os.makedirs(fresh)
    proc, log, addr = start_broker(binary, fresh, env)
    try:
        # It has what was uploaded (never the active segment). A
        # transaction whose marker was in the part not uploaded has no
        # coordinator any more: it is aborted, so the stable offset reaches
        # the end, and read_committed gets whole committed transactions.
        def ends(isolation):
            c = Consumer({"bootstrap.servers": addr, "group.id": "ends", "isolation.level": isolation})
            _, end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            c.close()
            return end
        hw, lso, deadline = 0, -1, time.time() + 60
        while time.time() < deadline and lso != hw:
            time.sleep(1)
            # The abort marker moves the end by one: both read again.
            lso, hw = ends("read_committed"), ends("read_uncommitted")
        check(f"transactions: on the rebuilt broker a transaction no coordinator holds is aborted: "
              f"the stable offset reaches the end ({lso} of {hw})", lso == hw and hw > 0)
        got = read_txn_topic(addr, topic, "read_committed")
        check(f"transactions: and read_committed gets whole committed transactions only "
              f"({len(got)} records of the {len(committed)} committed)",
              len(got) >= per_txn and len(got) % per_txn == 0 and got == committed[:len(got)], f"got {len(got)}")
    finally:
        stop_and_report("transactions (rebuilt)", proc, log)
    shutil.rmtree(work, ignore_errors=True)


def main():
    binary = sys.argv[1]
    for part in sys.argv[2:] or ["file", "s3", "crash", "outage", "limits", "transactions"]:
        if part == "limits":
            run_limits(binary)
        elif part == "transactions":
            run_transactions(binary)
        elif part == "crash":
            run_crash(binary, int(os.environ.get("CRASH_ROUNDS", "5")))
        elif part == "outage":
            run_outage(binary, int(os.environ.get("OUTAGE_SECONDS", "60")))
        else:
            run(part, binary)
    passed = sum(results)
    print(f"tiered: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
