#!/usr/bin/env python3
"""Front-door compatibility with independent clients (issue 12, items 5, 7,
8, 10), against the real binary with REQUEST_TIMEOUT_SECS=5 and a metrics
endpoint:

- the first scrape, before any request, has chronik_request_errors; a
  Metadata for an unknown or invalid topic (kcat -L) increments it;
- kcat producing to an invalid name (`bad name!`, 250 characters, `..`)
  fails at once with "Invalid topic" and creates nothing in the data dir;
  a valid name is still auto-created;
- confluent-kafka's init_transactions() succeeds; idempotent producing works
  (kcat and confluent-kafka);
- a JoinGroup held 60 s (12 x REQUEST_TIMEOUT_SECS) by a slow
  member completes on its connection: two confluent-kafka consumers, the
  first stops polling so it rejoins late, the second (rebalance timeout
  120 s) waits for it; no request timeout, no disconnect;
- a Fetch long-poll of 8 s (more than REQUEST_TIMEOUT_SECS) waits its
  max_wait (kafka-python's fetch-latency-max) without a disconnect.

PASS/FAIL per step; every wait is bounded.

usage: compat_conn.py BROKER_BINARY
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from common import check, finish, run_steps, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
REQUEST_TIMEOUT_SECS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text, name, *labels):
    """Sum of the samples of `name` whose labels include every `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def first_scrape(metrics_port):
    # /ready: every shard is up (and has created its series).
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=10):
                break
        except OSError:
            time.sleep(0.05)
    text = scrape(metrics_port)
    shards = set(re.findall(r'^chronik_request_errors_total\{[^}]*shard="(\d+)"', text, re.M))
    check("first scrape (no request yet) has chronik_request_errors for every shard", shards == {"0", "1"},
          f"shards {shards}")


def metadata_errors_counted(addr, metrics_port):
    before = samples(scrape(metrics_port), "chronik_request_errors_total", 'api="Metadata"')
    for topic in ["no-such-topic-here", "bad name!"]:
        subprocess.run(["kcat", "-b", addr, "-L", "-t", topic, "-X", "allow.auto.create.topics=false"],
                       capture_output=True, text=True, timeout=30)
    text = scrape(metrics_port)
    after = samples(text, "chronik_request_errors_total", 'api="Metadata"')
    invalid = samples(text, "chronik_request_errors_total", 'api="Metadata"', 'error="InvalidTopicException"')
    check("Metadata for unknown and invalid topics increments chronik_request_errors", after >= before + 2 and
          invalid >= 1, f"before {before}, after {after}, invalid {invalid}")


def invalid_topics(addr, data_dir):
    for label, name in [("'bad name!'", "bad name!"), ("a 250-character name", "t" * 250), ("'..'", "..")]:
        started = time.time()
        out = subprocess.run(["kcat", "-b", addr, "-P", "-t", name], input="x\n", capture_output=True, text=True,
                             timeout=60)
        took = time.time() - started
        check(f"kcat producing to {label} fails with Invalid topic ({took:.2f} s)",
              out.returncode != 0 and "Invalid topic" in out.stderr and took < 5, f"rc {out.returncode} "
              f"after {took:.1f} s: {out.stderr[-500:]}")
        created = [d for d in os.listdir(data_dir) if d.startswith(name[:200])]
        check(f"no directory created for {label}", not created, f"{created}")
    out = subprocess.run(["kcat", "-b", addr, "-P", "-t", "valid.name_1-x"], input="x\n", capture_output=True,
                         text=True, timeout=60)
    check("kcat producing to a valid new name auto-creates it",
          out.returncode == 0 and os.path.isdir(os.path.join(data_dir, "valid.name_1-x-0")), out.stderr[-500:])


def transactions(addr):
    from confluent_kafka import Producer
    # Transactions themselves: scripts/interop/transactions.py.
    producer = Producer({"bootstrap.servers": addr, "transactional.id": "compat-txn"})
    started = time.time()
    producer.init_transactions(30)
    check("confluent-kafka init_transactions succeeds", True, f"{time.time() - started:.2f} s")

    idempotent = Producer({"bootstrap.servers": addr, "enable.idempotence": True})
    delivered = []
    for i in range(100):
        idempotent.produce("idempotent", f"m{i}".encode(), on_delivery=lambda err, msg: delivered.append(err))
    left = idempotent.flush(30)
    check("confluent-kafka idempotent producer still works", left == 0 and len(delivered) == 100 and
          not any(delivered), f"{left} left, errors {[e for e in delivered if e][:3]}")
    out = subprocess.run(["kcat", "-b", addr, "-P", "-t", "idempotent", "-X", "enable.idempotence=true"],
                         input="a\nb\n", capture_output=True, text=True, timeout=60)
    check("kcat idempotent producer still works", out.returncode == 0, out.stderr[-500:])


def held_join_group(addr, metrics_port, log):
    """Member 1 joins and stops polling; member 2 (rebalance timeout 120 s)
    joins and is held until member 1 polls again, `hold` seconds later:
    the issue's 60 s, twelve times REQUEST_TIMEOUT_SECS (5 here) and twice
    the default 30 s."""
    from confluent_kafka import Consumer
    hold = 60
    topic, group = "held-join", "held-join-group"
    subprocess.run(["kcat", "-b", addr, "-P", "-t", topic], input="x\n", capture_output=True, text=True, timeout=30)
    disconnects = []

    def member(name):
        return Consumer({"bootstrap.servers": addr, "group.id": group, "session.timeout.ms": 30000,
                         "max.poll.interval.ms": 120000, "auto.offset.reset": "earliest",
                         "error_cb": lambda err: disconnects.append((name, err))})

    first = member("first")
    assigned = threading.Event()
    first.subscribe([topic], on_assign=lambda c, p: assigned.set())
    deadline = time.time() + 30
    while not assigned.is_set() and time.time() < deadline:
        first.poll(0.2)
    check("first member joined", assigned.is_set())
    timeouts_before = samples(scrape(metrics_port), "chronik_request_timeouts_total")

    second = member("second")
    second_assigned = []
    second.subscribe([topic], on_assign=lambda c, p: second_assigned.append(time.time()))
    stop = threading.Event()

    def poll_second():
        while not stop.is_set() and not second_assigned:
            second.poll(0.2)

    joined_at = time.time()
    poller = threading.Thread(target=poll_second)
    poller.start()
    time.sleep(hold)  # the first member does not poll: it cannot rejoin yet
    deadline = time.time() + 20
    while not second_assigned and time.time() < deadline:
        first.poll(0.2)
    stop.set()
    poller.join(timeout=10)
    waited = second_assigned[0] - joined_at if second_assigned else None
    check(f"second member's JoinGroup, held past REQUEST_TIMEOUT_SECS, completed "
          f"({waited and round(waited, 1)} s)", waited is not None and waited > REQUEST_TIMEOUT_SECS + 3,
          f"waited {waited}")
    timeouts = samples(scrape(metrics_port), "chronik_request_timeouts_total") - timeouts_before
    log.seek(0)
    closed = [line for line in log.read().splitlines() if "not answered within REQUEST_TIMEOUT_SECS" in line]
    check("on the same connection: no request timeout, no disconnect", timeouts == 0 and not closed and
          not disconnects, f"timeouts {timeouts}, {closed[-1:]}, client errors {disconnects[:3]}")
    second.close()
    first.close()


def long_fetch(addr, metrics_port):
    from kafka import KafkaConsumer, TopicPartition
    subprocess.run(["kcat", "-b", addr, "-P", "-t", "long-poll"], input="x\n", capture_output=True, text=True, timeout=30)
    timeouts_before = samples(scrape(metrics_port), "chronik_request_timeouts_total")
    consumer = KafkaConsumer(bootstrap_servers=addr, fetch_max_wait_ms=8000, request_timeout_ms=30000,
                             enable_auto_commit=False)
    tp = TopicPartition("long-poll", 0)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    deadline = time.time() + 20
    while time.time() < deadline:
        consumer.poll(timeout_ms=1000)
    latency = consumer.metrics().get("consumer-fetch-manager-metrics", {}).get("fetch-latency-max")
    consumer.close()
    timeouts = samples(scrape(metrics_port), "chronik_request_timeouts_total") - timeouts_before
    check(f"a Fetch with max_wait_ms 8000 > REQUEST_TIMEOUT_SECS waits it out (max latency {latency} ms)",
          latency is not None and 7500 <= latency < 12000 and timeouts == 0, f"latency {latency}, timeouts {timeouts}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-compat-conn-")
    metrics_port = free_port()
    proc, log, addr = start_broker(BINARY, data_dir, {
        "METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "REQUEST_TIMEOUT_SECS": str(REQUEST_TIMEOUT_SECS),
        "GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    })
    run_steps([
        ("first scrape", lambda: first_scrape(metrics_port)),
        ("Metadata errors", lambda: metadata_errors_counted(addr, metrics_port)),
        ("invalid topics", lambda: invalid_topics(addr, data_dir)),
        ("transactions", lambda: transactions(addr)),
        ("held JoinGroup", lambda: held_join_group(addr, metrics_port, log)),
        ("long Fetch", lambda: long_fetch(addr, metrics_port)),
    ])
    finish("interop compat-conn", proc, log, data_dir)


if __name__ == "__main__":
    main()
