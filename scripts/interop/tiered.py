"""Tiered storage against the real binary, with confluent-kafka and kcat:
closed segments go to object storage (a local directory through file://,
and an S3 server: moto in server mode on 127.0.0.1), the local disk keeps
local.retention.bytes plus a segment, every record reads back from offset 0
byte-identical (most of them from the bucket), offsets_for_times finds
records in remote segments, and a second broker with an empty data
directory serves the whole tiered history.

usage: tiered.py BROKER_BINARY [file|s3 ...]   (default: both)
RECORDS (default 2,000,000) sets the records produced."""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, results, start_broker, stop_broker

RECORDS = int(os.environ.get("RECORDS", "2000000"))
SEGMENT = 16 << 20
LOCAL_CAP = 64 << 20
# Recent enough that retention.ms (7 days) keeps every record.
BASE_TS = int(time.time() * 1000) - 3_600_000
TOPIC = "tiered"


def value(i):
    head = f"{i:012d}".encode()
    return head + bytes([i % 251]) * (1024 - len(head))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    """moto's S3 server on 127.0.0.1 with bucket `tiering`; returns (process, env)."""
    port = free_port()
    moto = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
    }
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            import urllib.request
            req = urllib.request.Request(f"http://127.0.0.1:{port}/tiering", method="PUT")
            urllib.request.urlopen(req, timeout=2)
            return proc, env
        except Exception:
            time.sleep(0.2)
    proc.kill()
    sys.exit("moto_server did not start")


def local_log_bytes(data_dir):
    total = 0
    for root, _, files in os.walk(data_dir):
        if os.path.basename(root).startswith(TOPIC + "-"):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".log"))
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


def consume_all(addr, upto):
    """Reads offsets 0..upto from partition 0: (all identical, first bad offset or None)."""
    c = Consumer({"bootstrap.servers": addr, "group.id": f"tiered-{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    expect = 0
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
        moto, s3_env = start_moto()
        env.update(s3_env)
        env["OBJECT_STORE_URL"] = "s3://tiering/cluster-a"
    else:
        env["OBJECT_STORE_URL"] = "file://" + os.path.join(work, "bucket")
    first = os.path.join(work, "first")
    os.makedirs(first)
    proc, log, addr = start_broker(binary, first, env)
    try:
        admin = AdminClient({"bootstrap.servers": addr})
        topic = NewTopic(TOPIC, 1, 1, config={
            "remote.storage.enable": "true", "segment.bytes": str(SEGMENT),
            "local.retention.bytes": str(LOCAL_CAP)})
        admin.create_topics([topic])[TOPIC].result(30)
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
    finally:
        code = stop_broker(proc)
        check(f"{backend}: broker exits 0 on SIGTERM", code == 0, f"exit {code}")
        if not all(results):
            log.seek(0)
            print(log.read()[-8000:])
    second = os.path.join(work, "second")
    os.makedirs(second)
    proc, log, addr = start_broker(binary, second, env)
    try:
        lo, hi = high_watermark(addr)
        check(f"{backend}: a broker with an empty data directory takes the topic back from the bucket",
              lo == 0 and hi > RECORDS // 2, f"{lo}..{hi}")
        ok, detail = consume_all(addr, hi)
        check(f"{backend}: it serves the whole tiered history byte-identical", ok, detail)
    finally:
        code = stop_broker(proc)
        check(f"{backend}: second broker exits 0", code == 0, f"exit {code}")
        if not all(results):
            log.seek(0)
            print(log.read()[-8000:])
    if moto:
        moto.kill()
        moto.wait()
    shutil.rmtree(work, ignore_errors=True)


def main():
    binary = sys.argv[1]
    for backend in sys.argv[2:] or ["file", "s3"]:
        run(backend, binary)
    passed = sum(results)
    print(f"tiered: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
