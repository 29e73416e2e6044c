"""Shared by the cluster suites: a local cluster of real processes on
127.0.0.1 (etcd, N brokers in cluster mode, and moto's S3 server for the
WAL and segments; CLUSTER_STORE=file uses a file:// directory instead), in
a scratch directory, with bounded waits."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import free_port, results, start_broker, start_moto, stop_moto

TTL_MS = int(os.environ.get("CLUSTER_LEASE_TTL_MS", "3000"))


def start_etcd(scratch, client=None, peer=None):
    """etcd on the given (else free) ports; returns (process, client URL)."""
    client, peer = client or free_port(), peer or free_port()
    url = f"http://127.0.0.1:{client}"
    log = open(os.path.join(scratch, "etcd.log"), "a")
    proc = subprocess.Popen(
        ["etcd", "--data-dir", os.path.join(scratch, "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            proc.ports = (client, peer)
            return proc, url
        except Exception:
            time.sleep(0.1)
    proc.kill()
    sys.exit("etcd did not start")


def leaders(addr, topic):
    """{partition: leader node} as the broker at addr reports them (kcat)."""
    out = subprocess.run(["kcat", "-b", addr, "-L", "-J", "-t", topic], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return {}
    found = {}
    for t in json.loads(out.stdout).get("topics", []):
        for p in t.get("partitions", []):
            found[p["partition"]] = p.get("leader", -1)
    return found


def read_all(bootstrap, topic, partitions, timeout=300):
    """Every partition of `topic` read whole (confluent-kafka):
    ({value: (partition, offset)}, how many values were seen twice)."""
    from confluent_kafka import Consumer, TopicPartition

    def consumer():
        return Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})

    def ends():
        # Right after a failover a client may hold a stale view of the
        # topic: a new one asks again, for a bounded time.
        deadline = time.time() + 60
        while True:
            asking = consumer()
            try:
                return {p: asking.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in range(partitions)}
            except Exception as e:
                if time.time() > deadline:
                    md = subprocess.run(["kcat", "-b", bootstrap, "-L", "-t", topic], capture_output=True,
                                        text=True, timeout=30)
                    raise RuntimeError(f"watermarks of {topic}: {e}; kcat -L: {md.stdout} {md.stderr}")
                time.sleep(0.5)
            finally:
                asking.close()
    high = ends()
    reading = consumer()
    reading.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen, twice = {}, 0
    positions = {p: 0 for p in range(partitions)}
    deadline = time.time() + timeout
    while time.time() < deadline and any(positions[p] < high[p] for p in high):
        msg = reading.poll(1.0)
        if msg is None or msg.error():
            continue
        value = msg.value().decode()
        twice += value in seen
        seen[value] = (msg.partition(), msg.offset())
        positions[msg.partition()] = msg.offset() + 1
    reading.close()
    return seen, twice


def wait_for(predicate, timeout):
    """(last value, whether it became true) within `timeout` seconds."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = predicate()
        if value:
            return value, True
        time.sleep(0.2)
    return value, False


def _etcd_range(url, prefix, **extra):
    import base64
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode(), **extra}).encode()
    return json.loads(urllib.request.urlopen(f"{url}/v3/kv/range", body, timeout=10).read())


def etcd_count(url, prefix):
    """How many etcd keys start with `prefix` (etcd's JSON gateway)."""
    return int(_etcd_range(url, prefix, count_only=True).get("count", 0))


def etcd_prefix(url, prefix):
    """{key: value} of every etcd key that starts with `prefix`."""
    import base64
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in _etcd_range(url, prefix).get("kvs", [])}


class Cluster:
    """etcd plus brokers 1..n; a context manager that stops everything."""

    def __init__(self, binary, n, extra_env=None):
        self.binary = binary
        self.n = n
        self.extra_env = extra_env or {}
        self.ttl = TTL_MS / 1000
        self.brokers = {}
        self.addrs = {}
        self.metrics = {}

    def __enter__(self):
        self.scratch = tempfile.mkdtemp(prefix="chronik-cluster-")
        self.etcd, self.etcd_url = start_etcd(self.scratch)
        self.moto = None
        if os.environ.get("CLUSTER_STORE", "moto") == "moto":
            self.moto, s3_env = start_moto("chronik")
            self.extra_env = {**s3_env, **self.extra_env}
            self.store_url = "s3://chronik/cluster"
        else:
            store = os.path.join(self.scratch, "store")
            os.makedirs(store)
            self.store_url = f"file://{store}"
        for node in range(1, self.n + 1):
            self.start(node)
        self.wait_members(self.n)
        return self

    def wait_members(self, count):
        """Waits until every running broker's Metadata lists `count`."""
        def all_see():
            for node in self.running():
                out = subprocess.run(["kcat", "-b", self.addrs[node], "-L", "-J"], capture_output=True, text=True,
                                     timeout=30)
                if out.returncode != 0 or len(json.loads(out.stdout).get("brokers", [])) != count:
                    return False
            return True
        return wait_for(all_see, 20)[1]

    def start(self, node):
        """Starts broker `node` (again: same data directory and port)."""
        data = os.path.join(self.scratch, f"broker-{node}")
        os.makedirs(data, exist_ok=True)
        env = {"ETCD_ENDPOINTS": self.etcd_url, "NODE_ID": str(node), "OBJECT_STORE_URL": self.store_url,
               "CLUSTER_LEASE_TTL_MS": str(TTL_MS), "SHARDS": "1", "NUM_PARTITIONS": "12",
               "GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}
        if node in self.addrs:
            env["BIND_ADDRESS"] = self.addrs[node]
        self.metrics.setdefault(node, f"127.0.0.1:{free_port()}")
        env["METRICS_ADDRESS"] = self.metrics[node]
        env.update(self.extra_env)
        proc, log, addr = start_broker(self.binary, data, env)
        self.brokers[node] = (proc, log)
        self.addrs[node] = addr
        return addr

    def objects(self, prefix):
        """Keys of the objects under `prefix` in the cluster's store."""
        if self.moto is None:
            root = self.store_url[len("file://"):]
            found = set()
            for dirpath, _, files in os.walk(os.path.join(root, prefix)):
                found.update(os.path.relpath(os.path.join(dirpath, f), root) for f in files)
            return found
        import boto3
        s3 = boto3.client("s3", endpoint_url=self.extra_env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        found = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="chronik", Prefix=f"cluster/{prefix}"):
            found.update(o["Key"][len("cluster/"):] for o in page.get("Contents", []))
        return found

    def bootstrap(self):
        """Every running broker, as bootstrap.servers."""
        return ",".join(self.addrs[n] for n in self.running())

    def stop_etcd(self):
        self.etcd.terminate()
        self.etcd.wait(10)

    def restart_etcd(self):
        """etcd again, on its ports and data directory."""
        self.etcd, _ = start_etcd(self.scratch, *self.etcd.ports)

    def kill(self, node, sig=signal.SIGKILL):
        proc = self.brokers[node][0]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                proc.wait(35)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.returncode

    def running(self):
        return [n for n, (p, _) in self.brokers.items() if p.poll() is None]

    def wait_led(self, topic, partitions, among=None, timeout=None):
        """Waits until every partition has a leader (among `among`, if
        given) as a running broker reports; returns the leaders."""
        among = set(among or range(1, self.n + 1))
        ask = self.addrs[min(n for n in self.running())]

        def led():
            now = leaders(ask, topic)
            if len(now) == partitions and all(v in among for v in now.values()):
                return now
            return None
        value, _ = wait_for(led, timeout or self.ttl + 15)
        return value

    def __exit__(self, *exc):
        for node, (proc, _) in self.brokers.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(35)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.etcd.terminate()
        try:
            self.etcd.wait(10)
        except subprocess.TimeoutExpired:
            self.etcd.kill()
        if self.moto:
            stop_moto(self.moto)
        if not all(results):
            for node, (_, log) in self.brokers.items():
                log.seek(0)
                print(f"--- broker {node} log (tail) ---")
                print(log.read()[-8000:])
        shutil.rmtree(self.scratch, ignore_errors=True)
        return False
