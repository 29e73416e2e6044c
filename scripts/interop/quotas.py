#!/usr/bin/env python3
"""Client quota interop against the real binary.

AlterClientQuotas sets producer_byte_rate=1,000,000 for user `slow` and
DescribeClientQuotas reads it back. No client installable here has these
two APIs (confluent-kafka, kafka-python, kcat and kafkajs lack them; Java's
Admin has them), so this script writes their v0 frames itself, byte by
byte from Kafka's schemas, on a PLAINTEXT listener. Then
`slow` produces at full speed for QUOTA_SECONDS (default 30) while `fast`,
with no quota, produces too: `slow` must be held to 1 MB/s +-10% with
throttle_time_ms reported (librdkafka's statistics), and `fast` must keep
at least 70% of the throughput it had alone just before. The quota
survives a restart.

usage: quotas.py BROKER_BINARY
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

from common import check, finish, recv_exactly, run_steps, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
QUOTA = 1_000_000
SECONDS = float(os.environ.get("QUOTA_SECONDS", "30"))
RECORD = b"q" * 10_000


def sasl(addr, user):
    return {"bootstrap.servers": addr, "security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user, "sasl.password": f"{user}-pw"}


def produce_for(addr, user, topic, seconds, result):
    """Produces RECORD as fast as librdkafka takes it for `seconds`;
    result gets acknowledged bytes, the acknowledged span and the largest
    throttle librdkafka saw."""
    from confluent_kafka import Producer
    throttles = []

    def stats(text):
        for broker in json.loads(text).get("brokers", {}).values():
            throttles.append(broker.get("throttle", {}).get("max", 0))

    acked = [0]
    first_last = [None, None]

    def delivered(err, msg):
        if err is None:
            acked[0] += len(msg.value())
            now = time.time()
            first_last[0] = first_last[0] or now
            first_last[1] = now

    producer = Producer(dict(sasl(addr, user), **{
        "acks": 1, "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.kbytes": 8192,
        "message.timeout.ms": 120000, "statistics.interval.ms": 1000, "stats_cb": stats}))
    start = time.time()
    while time.time() - start < seconds:
        try:
            producer.produce(topic, RECORD, on_delivery=delivered)
        except BufferError:
            producer.poll(0.01)
            continue
        producer.poll(0)
    # What was acknowledged while the clock ran; the queue left is dropped.
    counted = acked[0]
    producer.purge()
    producer.flush(10)
    result.update(bytes=counted, seconds=time.time() - start if first_last[0] is None else seconds,
                  throttle_max=max(throttles, default=0))


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def nullable(text):
    return struct.pack(">h", -1) if text is None else string(text)


def call(addr, api_key, body):
    """One v0 request with a v1 header; returns the response body."""
    host, port = addr.rsplit(":", 1)
    frame = struct.pack(">hhi", api_key, 0, 7) + string("quotas.py") + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exactly(sock, 4))[0]
        data = recv_exactly(sock, size)
    assert struct.unpack(">i", data[:4])[0] == 7, "correlation id"
    return data[4:]


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        value = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        text = self.data[self.at:self.at + n].decode()
        self.at += n
        return text


def alter_user_quota(addr, user, key, value, entity_type="user", remove=False):
    """AlterClientQuotas v0 (key 49): one entry; returns its error code."""
    body = struct.pack(">i", 1) + struct.pack(">i", 1) + string(entity_type) + nullable(user)
    body += struct.pack(">i", 1) + string(key) + struct.pack(">d?", value, remove) + struct.pack(">?", False)
    r = Reader(call(addr, 49, body))
    r.take(">i")  # throttle
    assert r.take(">i") == 1
    return r.take(">h")


def describe_user_quota(addr, user):
    """DescribeClientQuotas v0 (key 48), user exactly `user`, strict:
    {key: value} of the matching entry."""
    body = struct.pack(">i", 1) + string("user") + struct.pack(">b", 0) + nullable(user) + struct.pack(">?", True)
    r = Reader(call(addr, 48, body))
    r.take(">i")
    error = r.take(">h")
    r.string()
    values = {}
    for _ in range(max(r.take(">i"), 0)):
        for _ in range(r.take(">i")):
            r.string(), r.string()
        for _ in range(r.take(">i")):
            key = r.string()
            values[key] = r.take(">d")
    return error, values


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-quotas-")
    env = {"LISTENERS": "SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
           "SASL_BOOTSTRAP_USERS": "slow:slow-pw,fast:fast-pw,busy:busy-pw"}
    state = {}

    def start():
        state["proc"], state["log"], _ = start_broker(BINARY, data_dir, env)
        state["log"].seek(0)
        m = re.search(r"listeners=SASL_PLAINTEXT://(\S+?),PLAINTEXT://(\S+)", state["log"].read())
        state["addr"], state["plain"] = m.group(1), m.group(2)

    start()

    def set_quota():
        error = alter_user_quota(state["plain"], "slow", "producer_byte_rate", QUOTA)
        check("AlterClientQuotas sets producer_byte_rate=1e6 for user slow", error == 0, f"error {error}")
        error, values = describe_user_quota(state["plain"], "slow")
        check("DescribeClientQuotas reads it back", error == 0 and values == {"producer_byte_rate": QUOTA},
              f"{error} {values}")

    def throttle():
        alone = {}
        produce_for(state["addr"], "fast", "fast-alone", 8, alone)
        alone_rate = alone["bytes"] / 8
        print(f"fast alone: {alone_rate / 1e6:.1f} MB/s", flush=True)
        # The throttled producer runs in a process of its own: in a thread
        # of this one it would take the interpreter's lock from `fast`'s
        # produce loop, and `fast` would measure Python, not the broker.
        slow_process = subprocess.Popen([sys.executable, __file__, "--produce", state["addr"], "slow", "slow",
                                         str(SECONDS)], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        fast = {}
        produce_for(state["addr"], "fast", "fast-beside", 8, fast)
        out, _ = slow_process.communicate(timeout=SECONDS + 60)
        slow = json.loads(out.strip().splitlines()[-1])
        slow_rate = slow["bytes"] / SECONDS
        fast_rate = fast["bytes"] / 8
        print(f"slow: {slow['bytes']} bytes in {SECONDS:.0f} s = {slow_rate / 1e6:.3f} MB/s, "
              f"throttle max {slow['throttle_max']} ms; fast beside it: {fast_rate / 1e6:.1f} MB/s", flush=True)
        check(f"user slow is held to 1 MB/s +-10% over {SECONDS:.0f} s", 0.9 * QUOTA <= slow_rate <= 1.1 * QUOTA,
              f"{slow_rate / 1e6:.3f} MB/s")
        check("librdkafka reports the broker's throttle_time_ms", slow["throttle_max"] > 0, f"{slow['throttle_max']}")
        check("user fast, unthrottled, keeps at least 70% of its throughput alone", fast_rate >= 0.7 * alone_rate,
              f"{fast_rate / 1e6:.1f} vs {alone_rate / 1e6:.1f} MB/s")
        state["fast alone"] = alone_rate

    def request_percentage():
        """request_percentage=5 for user busy: its requests may use 5% of
        one thread's time; at full speed it gets far less through than
        the same producer without the quota."""
        error = alter_user_quota(state["plain"], "busy", "request_percentage", 5.0)
        check("AlterClientQuotas sets request_percentage=5 for user busy", error == 0, f"error {error}")
        busy = {}
        produce_for(state["addr"], "busy", "busy", 8, busy)
        rate = busy["bytes"] / 8
        print(f"busy (request_percentage=5): {rate / 1e6:.1f} MB/s", flush=True)
        alone = state.get("fast alone", 0)
        check("user busy is held well below an unthrottled producer (under half)", rate < 0.5 * alone,
              f"{rate / 1e6:.1f} vs {alone / 1e6:.1f} MB/s")

    def connection_rate():
        """connection_creation_rate=5 for 127.0.0.2: of 30 connections
        opened at once from that address, about 5 are served; 127.0.0.1 is
        not affected."""
        error = alter_user_quota(state["plain"], "127.0.0.2", "connection_creation_rate", 5.0, entity_type="ip")
        check("AlterClientQuotas sets connection_creation_rate=5 for ip 127.0.0.2", error == 0, f"error {error}")
        host, port = state["plain"].rsplit(":", 1)
        served = 0
        for _ in range(30):
            try:
                with socket.create_connection((host, int(port)), timeout=5, source_address=("127.0.0.2", 0)) as sock:
                    frame = struct.pack(">hhi", 18, 0, 1) + string("quotas.py")
                    sock.sendall(struct.pack(">i", len(frame)) + frame)
                    recv_exactly(sock, 4)
                    served += 1
            except (ConnectionError, OSError):
                pass
        check("of 30 connections from 127.0.0.2 at once, about 5 are served", 3 <= served <= 8, f"{served}")
        error, values = describe_user_quota(state["plain"], "slow")
        check("127.0.0.1 is still served meanwhile", error == 0, f"{error}")

    def restart():
        code = stop_broker(state["proc"])
        check("broker stops cleanly", code == 0, f"exit {code}")
        start()
        error, values = describe_user_quota(state["plain"], "slow")
        check("the quota survives a restart", values == {"producer_byte_rate": QUOTA}, f"{error} {values}")

    run_steps([("set quota", set_quota), ("throttle", throttle), ("request_percentage", request_percentage),
               ("connection_creation_rate", connection_rate), ("restart", restart)])
    finish("quotas", state["proc"], state["log"], data_dir)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        # quotas.py --produce ADDR USER TOPIC SECONDS: one producer, its
        # result as a JSON line.
        result = {}
        produce_for(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), result)
        print(json.dumps(result), flush=True)
    else:
        main()
