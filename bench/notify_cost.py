"""What notifications cost a worker: N `true` jobs drained by one worker on SQLite with no
notifier, with a webhook told of every `completed` (a local receiver answering 200), and with a
webhook whose receiver accepts connections and never answers (every try waits its 10 s timeout).

Prints, per case and round: enqueued -> all completed, how long `worker stop` (SIGTERM) took, and
for the healthy receiver how long after each job's `updated_at` its POST arrived (median, max).

    python bench/notify_cost.py [--jobs 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUEUECTL = [sys.executable, "-m", "queuectl_core"]


def run(env: dict[str, str], *args: str, input: str | None = None) -> str:
    return subprocess.run([*QUEUECTL, *args], env=env, input=input, capture_output=True, text=True,
                          check=True).stdout


def case(mode: str, jobs: int) -> tuple[float, float, list[float]]:
    home = tempfile.mkdtemp()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}, "QUEUECTL_HOME": home}
    run(env, "config", "set", "poll_interval_ms", "50")
    got: list[tuple[float, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((time.time(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server, hole = None, None
    if mode == "healthy":
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
    if mode == "dead":
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(jobs)
        port = hole.getsockname()[1]
    if mode != "none":
        run(env, "config", "set", "notify.webhook.url", f"http://127.0.0.1:{port}/hook")
        run(env, "config", "set", "notify.webhook.events", "completed")
    worker = subprocess.Popen([*QUEUECTL, "worker", "start"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    while not json.loads(run(env, "status", "--json"))["workers"]:
        time.sleep(0.05)
    lines = "".join(json.dumps({"id": f"j{i}", "command": "true"}) + "\n" for i in range(jobs))
    started = time.monotonic()
    run(env, "enqueue", "--file", "-", input=lines)
    while json.loads(run(env, "status", "--json"))["counts"]["completed"] < jobs:
        time.sleep(0.02)
    took = time.monotonic() - started
    latency: list[float] = []
    if mode == "healthy":
        while len(got) < jobs:
            time.sleep(0.05)
        latency = [t - datetime.fromisoformat(d["job"]["updated_at"].replace("Z", "+00:00")).timestamp()
                   for t, d in got]
    stopping = time.monotonic()
    worker.terminate()
    worker.wait()
    stop = time.monotonic() - stopping
    if server is not None:
        server.shutdown()
    if hole is not None:
        hole.close()
    return took, stop, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for n in range(args.rounds):
        for mode in ("none", "healthy", "dead"):
            took, stop, latency = case(mode, args.jobs)
            extra = (f"; POST after the job's end: median {statistics.median(latency) * 1000:.0f} ms,"
                     f" max {max(latency) * 1000:.0f} ms" if latency else "")
            print(f"round {n + 1} {mode:8s}: {args.jobs} jobs enqueued -> completed {took:.2f} s;"
                  f" worker stop {stop:.2f} s{extra}", flush=True)


if __name__ == "__main__":
    main()
