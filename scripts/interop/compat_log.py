#!/usr/bin/env python3
"""Interop: log-side compatibility (issue 12) with independent clients.

Starts `chronik-ingest` on an ephemeral port with a scratch data directory:
  - confluent-kafka's AdminClient.list_offsets (ListOffsets v7+): a batch of
    4 records with out-of-order timestamps (one batch, uncompressed and
    zstd) answers OffsetSpec.for_timestamp and OffsetSpec.max_timestamp()
    with the record's offset and timestamp, as Kafka 3.8+ does;
  - topic compression.type: confluent-kafka produces uncompressed and gzip
    batches to a zstd topic, which stores them zstd (the segment file's
    batch attributes say so) and kcat reads back identical; `producer`
    keeps the producer's codec, `uncompressed` decompresses lz4;
  - message.timestamp.after.max.ms (Kafka 4.x default: one hour): a record
    two hours ahead is refused with INVALID_TIMESTAMP.
Prints one PASS/FAIL line per check, then "N passed, N failed".
"""
import os
import struct
import subprocess
import sys
import tempfile
import time

from common import check, finish, run_steps, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def stored_batches(data_dir, topic):
    """(record count, codec name) of each batch in partition 0's first segment."""
    path = os.path.join(data_dir, f"{topic}-0", f"{0:020}.log")
    with open(path, "rb") as f:
        data = f.read()
    out, at = [], 0
    while at + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, at + 8)
        if length == 0:
            break  # the zero padding after the last batch (O_DIRECT writes whole blocks)
        (attributes,) = struct.unpack_from(">h", data, at + 21)
        (count,) = struct.unpack_from(">i", data, at + 57)
        out.append((count, CODECS.get(attributes & 7, "?")))
        at += 12 + length
    return out


def create(addr, topic, configs=None, partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": addr})
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config=configs or {})], operation_timeout=10)
    futures[topic].result(timeout=15)


def list_offsets_by_record(addr, data_dir):
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    admin = AdminClient({"bootstrap.servers": addr})
    base = int(time.time() * 1000) - 60_000
    for codec in ("none", "zstd"):
        topic = f"times-{codec}"
        create(addr, topic)
        producer = Producer({"bootstrap.servers": addr, "linger.ms": 5000, "compression.type": codec})
        # The partition's leader known first, so the four records wait in
        # one partition queue for the same linger and go as one batch.
        producer.list_topics(topic, timeout=10)
        for i, delta in enumerate((100, 400, 200, 400)):
            producer.produce(topic, key=f"k{i}", value="v" * 300, timestamp=base + delta)
        left = producer.flush(30)
        batches = stored_batches(data_dir, topic)
        check(f"{codec}: the 4 records are stored as one {codec} batch", left == 0 and batches == [(4, codec)],
              f"{left} unflushed; batches {batches}")
        tp = TopicPartition(topic, 0)

        def ask(spec):
            info = admin.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15)
            return info.offset, info.timestamp

        got = ask(OffsetSpec.for_timestamp(base + 150))
        check(f"{codec}: list_offsets for_timestamp(base+150) -> (1, base+400)", got == (1, base + 400),
              f"got {got}")
        got = ask(OffsetSpec.for_timestamp(base + 50))
        check(f"{codec}: list_offsets for_timestamp(base+50) -> (0, base+100)", got == (0, base + 100),
              f"got {got}")
        got = ask(OffsetSpec.max_timestamp())
        check(f"{codec}: list_offsets max_timestamp() -> earliest record with the max (1, base+400)",
              got == (1, base + 400), f"got {got}")
        got = ask(OffsetSpec.for_timestamp(base + 401))
        check(f"{codec}: list_offsets for_timestamp past every record -> offset -1", got[0] == -1, f"got {got}")


def confluent_produce(addr, topic, lines, codec):
    """Produces `key:value` lines in `codec`. (Debian's kcat, librdkafka
    2.0, sends gzip/snappy/lz4 uncompressed to a broker without Produce
    v0-v2, as it does to Kafka 4.0: a current librdkafka compresses.)"""
    from confluent_kafka import Producer
    errors = []
    producer = Producer({"bootstrap.servers": addr, "linger.ms": 50, "compression.type": codec})
    for line in lines.splitlines():
        key, value = line.split(":", 1)
        producer.produce(topic, key=key, value=value, on_delivery=lambda e, m: e and errors.append(e))
    left = producer.flush(30)
    return left == 0 and not errors, f"{left} unflushed; {errors[:3]}"


def kcat_read(addr, topic):
    out = subprocess.run(["kcat", "-b", addr, "-C", "-t", topic, "-e", "-q", "-f", "%k:%s\n"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout, out.stderr


def compression_type(addr, data_dir):
    lines = "".join(f"key-{i:05d}:value-{i:05d} {'abc' * (i % 50)}\n" for i in range(5000))
    cases = [("zstd-from-none", "zstd", "none", "zstd"), ("zstd-from-gzip", "zstd", "gzip", "zstd"),
             ("keep-gzip", "producer", "gzip", "gzip"), ("plain-from-lz4", "uncompressed", "lz4", "none"),
             # The broker's own snappy (xerial framing), lz4 (frame) and gzip
             # output, read by kcat's librdkafka.
             ("snappy-from-none", "snappy", "none", "snappy"), ("lz4-from-gzip", "lz4", "gzip", "lz4"),
             ("gzip-from-snappy", "gzip", "snappy", "gzip")]
    for topic, topic_codec, sent, stored in cases:
        create(addr, topic, {"compression.type": topic_codec})
        ok, err = confluent_produce(addr, topic, lines, sent)
        check(f"confluent-kafka produces {sent} batches to a compression.type={topic_codec} topic", ok, err)
        batches = stored_batches(data_dir, topic)
        codecs = sorted({c for _, c in batches})
        # What the client sent, for the record: the topic's codec must be
        # the only one stored whatever it was.
        # librdkafka sends a batch uncompressed when the codec would not
        # make it smaller (a lone short record sent early), so with
        # compression.type=producer such batches are kept as they came.
        allowed = [stored] if topic_codec != "producer" else sorted({stored, "none"})
        kept = codecs == [stored] or (stored in codecs and set(codecs) <= set(allowed))
        check(f"{topic}: {sum(n for n, _ in batches)} records in {len(batches)} batches stored as {stored}",
              kept and sum(n for n, _ in batches) == 5000, f"batches {batches[:5]}...")
        back, err = kcat_read(addr, topic)
        check(f"{topic}: kcat -C -e reads keys and values back identical", back == lines,
              f"{len(back.splitlines())} lines back; {err[-500:]}")


def timestamp_window(addr):
    from confluent_kafka import KafkaError, Producer
    create(addr, "ts-window")
    errors = []
    producer = Producer({"bootstrap.servers": addr, "linger.ms": 0})
    now = int(time.time() * 1000)
    producer.produce("ts-window", value="late", timestamp=now - 30 * 86_400_000,
                     on_delivery=lambda e, m: errors.append(e))
    # Separate batches: Kafka refuses a batch as a whole.
    producer.flush(30)
    producer.produce("ts-window", value="ahead", timestamp=now + 2 * 3_600_000,
                     on_delivery=lambda e, m: errors.append(e))
    producer.flush(30)
    codes = [e.code() if e else None for e in errors]
    check("a record 30 days old is accepted, one 2 hours ahead gets INVALID_TIMESTAMP",
          codes == [None, KafkaError.INVALID_TIMESTAMP], f"delivery errors {errors}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-compat-log-")
    proc, log, addr = start_broker(BINARY, data_dir, {"SHARDS": "2"})
    run_steps([
        ("list_offsets", lambda: list_offsets_by_record(addr, data_dir)),
        ("compression.type", lambda: compression_type(addr, data_dir)),
        ("timestamp window", lambda: timestamp_window(addr)),
    ])
    finish("compat_log", proc, log, data_dir)


if __name__ == "__main__":
    main()
