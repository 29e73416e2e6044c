#!/usr/bin/env python3
"""Front-door interop: independent Kafka clients against the real binary.

Starts `chronik-ingest` on an ephemeral port with a scratch data directory,
then checks that each client bootstraps and reads metadata:
  - kcat (Debian's, librdkafka 2.0.x: the old ApiVersions parser),
  - confluent-kafka (its wheel bundles a current librdkafka),
  - kafka-python 3.x (opens with ApiVersions v4).
Prints one PASS/FAIL line per client and check, then "N passed, N failed";
exits non-zero on any failure. Every wait is bounded.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{(': ' + detail) if detail and not ok else ''}", flush=True)


def start_broker(data_dir):
    env = dict(os.environ, BIND_ADDRESS="127.0.0.1:0", STORAGE_PATH=data_dir, METRICS_ADDRESS="",
               SHARDS="2", RUST_LOG="info,chronik_ingest::server::connection=debug")
    log = open(os.path.join(data_dir, "broker.log"), "w+")
    proc = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        log.seek(0)
        m = re.search(r"chronik-ingest started listen=(\S+)", log.read())
        if m:
            return proc, log, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    log.seek(0)
    sys.exit(f"broker did not start:\n{log.read()}")


def kcat_metadata(addr):
    out = subprocess.run(["kcat", "-b", addr, "-L", "-m", "10"], capture_output=True, text=True, timeout=30)
    ok = out.returncode == 0 and " 1 brokers:" in out.stdout and f"broker 0 at {addr}" in out.stdout
    check("kcat -L lists 1 broker at the advertised address", ok, out.stdout + out.stderr)
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"librdkafka (\S+)", version)
    print(f"     (kcat links librdkafka {m.group(1) if m else '?'})")


def confluent_metadata(addr):
    import confluent_kafka
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": addr}).list_topics(timeout=10)
    brokers = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
    check(f"confluent-kafka (librdkafka {confluent_kafka.libversion()[0]}) metadata: 1 broker at {addr}",
          brokers == {0: addr}, repr(brokers))
    check("confluent-kafka sees a 22-character cluster id", md.cluster_id is not None and len(md.cluster_id) == 22,
          repr(md.cluster_id))


def kafka_python_metadata(addr, log):
    import kafka
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=addr, request_timeout_ms=10000)
    try:
        cluster = admin.describe_cluster()
        brokers = [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]]
        host, port = addr.rsplit(":", 1)
        check(f"kafka-python {kafka.__version__} bootstraps and reads metadata", brokers == [(0, host, int(port))],
              repr(cluster))
    finally:
        admin.close()
    log.seek(0)
    versions = set(re.findall(r"api=ApiVersions api_version=(\d+)", log.read()))
    check("kafka-python opened with ApiVersions v4 and was answered", "4" in versions, f"versions seen: {versions}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-")
    proc, log, addr = start_broker(data_dir)
    try:
        steps = [("kcat", lambda: kcat_metadata(addr)), ("confluent-kafka", lambda: confluent_metadata(addr)),
                 ("kafka-python", lambda: kafka_python_metadata(addr, log))]
        for client, step in steps:
            try:
                step()
            except Exception as e:  # a client error is a failed check, not a crash
                check(f"{client} metadata", False, repr(e))
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=35)
            check("broker exits 0 on SIGTERM", code == 0, f"exit {code}")
        except subprocess.TimeoutExpired:
            check("broker exits 0 on SIGTERM", False, "still running after 35 s")
    finally:
        if proc.poll() is None:
            proc.kill()
        log.seek(0)
        if not all(results):
            print(log.read())
        shutil.rmtree(data_dir, ignore_errors=True)
    passed = sum(results)
    print(f"interop: {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
