"""Shared by the interop suites: start the real broker binary on an
ephemeral port with a scratch data directory, record PASS/FAIL checks, stop
the broker and print the closing "N passed, N failed" line."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
import sys
import time

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    suffix = f": {detail}" if detail and not ok else ""
    print(f"{'PASS' if ok else 'FAIL'} {name}{suffix}", flush=True)
    return ok


def run_steps(steps):
    """Runs each (name, step) in turn; a client exception is a failed check
    for that step, not the end of the suite."""
    for name, step in steps:
        try:
            step()
        except Exception as e:
            check(f"{name}: no client error", False, repr(e))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(metrics_addr):
    """{family: summed value} of the broker's /metrics."""
    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10).read().decode()
    sums = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            pass
    return sums


def recv_exactly(sock, n):
    """n bytes from `sock`; ConnectionError if the broker closes first."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        out += chunk
    return out


def start_broker(binary, data_dir, extra_env=None):
    """Starts the broker; returns (process, log file, "host:port")."""
    env = dict(os.environ, BIND_ADDRESS="127.0.0.1:0", STORAGE_PATH=data_dir, METRICS_ADDRESS="",
               SHARDS="2", RUST_LOG="info")
    env.update(extra_env or {})
    log = open(os.path.join(data_dir, f"broker-{time.time_ns()}.log"), "w+")
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=log)
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


def stop_broker(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=35)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def finish(suite, proc, log, data_dir):
    """Stops the broker (checking it exits 0), prints the tally, exits."""
    code = stop_broker(proc)
    check("broker exits 0 on SIGTERM", code == 0, f"exit {code}")
    if not all(results):
        log.seek(0)
        print(log.read()[-20000:])
    shutil.rmtree(data_dir, ignore_errors=True)
    passed = sum(results)
    print(f"{suite}: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


def run_kafkajs(script, args, node_modules):
    """Runs a kafkajs script (one JSON step per line on stdout) from this
    directory and records each step as a check."""
    if not node_modules:
        check("kafkajs: node_modules with kafkajs given", False, "pass NODE_MODULES_DIR")
        return
    env = dict(os.environ, NODE_PATH=os.path.abspath(node_modules))
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(["node", os.path.join(here, script), *args], env=env, capture_output=True, text=True,
                         timeout=120)
    steps = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not steps:
        check("kafkajs: ran", False, out.stdout[-2000:] + out.stderr[-2000:])
    for step in steps:
        check(f"kafkajs: {step['step']}", step["ok"], step.get("detail", ""))


def start_moto(bucket):
    """moto's S3 server on 127.0.0.1 with `bucket`; returns (process, the
    AWS_* environment that points a broker at it)."""
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
            req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
            urllib.request.urlopen(req, timeout=2)
            return proc, env
        except Exception:
            time.sleep(0.2)
    proc.kill()
    sys.exit("moto_server did not start")


def stop_moto(moto):
    moto.kill()
    moto.wait()
