#!/usr/bin/env python3
"""A real Prometheus server scrapes the broker: start the broker (2 shards)
with a metrics endpoint, drive some traffic with kcat, check the exposition
with `promtool check metrics`, start Prometheus (Debian's package) scraping
it every second, and query the samples back through Prometheus's HTTP API.
PASS/FAIL per step; every wait is bounded.

usage: prometheus.py BROKER_BINARY
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import check, finish, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, accept="*/*"):
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-prometheus-")
    metrics_port = free_port()
    proc, log, addr = start_broker(BINARY, data_dir, {"METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"})
    prometheus = None
    try:
        target = f"127.0.0.1:{metrics_port}"
        deadline = time.time() + 20
        while time.time() < deadline and get(f"http://{target}/ready")[0] != 200:
            time.sleep(0.05)
        subprocess.run(["kcat", "-b", addr, "-P", "-t", "scraped"], input="a\nb\nc\n", text=True, timeout=30,
                       capture_output=True)
        subprocess.run(["kcat", "-b", addr, "-C", "-t", "scraped", "-e", "-q"], timeout=30, capture_output=True)

        here = os.path.dirname(os.path.abspath(__file__))
        example = os.path.join(here, "..", "..", "config", "prometheus.yml")
        checked = subprocess.run(["promtool", "check", "config", example], capture_output=True, text=True, timeout=30)
        check("promtool check config accepts config/prometheus.yml", checked.returncode == 0,
              checked.stdout + checked.stderr)
        status, content_type, text = get(f"http://{target}/metrics")
        promtool = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True,
                                  timeout=30)
        check("promtool check metrics accepts the exposition", promtool.returncode == 0,
              promtool.stdout + promtool.stderr)
        status, content_type, _ = get(f"http://{target}/metrics", "application/openmetrics-text;version=1.0.0")
        check("/metrics answers OpenMetrics to a client that asks for it",
              status == 200 and content_type.startswith("application/openmetrics-text"), content_type)

        web_port = free_port()
        config = os.path.join(data_dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: chronik\n"
                    f"    static_configs:\n      - targets: ['{target}']\n")
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data_dir}/tsdb",
             f"--web.listen-address=127.0.0.1:{web_port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(data_dir, "prometheus.log"), "w"))
        shards, up = set(), False
        deadline = time.time() + 60
        while time.time() < deadline and not (up and shards >= {"0", "1"}):
            time.sleep(1)
            try:
                _, _, body = get(f"http://127.0.0.1:{web_port}/api/v1/query?query=up")
                up = any(r["value"][1] == "1" for r in json.loads(body)["data"]["result"])
                _, _, body = get(f"http://127.0.0.1:{web_port}/api/v1/query?query=chronik_connections_total")
                shards = {r["metric"].get("shard") for r in json.loads(body)["data"]["result"]}
            except Exception:
                continue
        check("Prometheus scrapes the broker (up == 1)", up)
        check("Prometheus has chronik_connections_total for shards 0 and 1", shards >= {"0", "1"}, str(shards))
        _, _, body = get(f"http://127.0.0.1:{web_port}/api/v1/query?query=sum(chronik_produce_records_total)")
        result = json.loads(body)["data"]["result"]
        produced = float(result[0]["value"][1]) if result else 0
        check("Prometheus query sum(chronik_produce_records_total) == 3", produced == 3, body)
    except Exception as e:  # a failure is a FAIL line, not a crash
        check("prometheus suite ran", False, repr(e))
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
    finish("prometheus", proc, log, data_dir)


if __name__ == "__main__":
    main()
