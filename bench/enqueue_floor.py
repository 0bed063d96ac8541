"""How fast can one enqueue process be? W1's ladder of floors, timed interleaved in one run.

W1's target is a share of `python -c 'import sqlite3'`. This prints, for the same Python, the rungs
between that floor and `queuectl enqueue`:

1. `python -c pass`: the interpreter alone;
2. `python -c 'import sqlite3'`: W1's floor;
3. a hand-written enqueue: what a console script's wrapper imports (`re`), then sqlite3 and json,
   one INSERT into a WAL database, one commit: no validation, no plugins, no events, no config;
   like queuectl's enqueue it ends with ``os._exit`` (no interpreter teardown), as do 4, 5 and 6;
4. the same hand-written enqueue, but the row comes from the ``NewJob`` that the plugin API hands a
   storage (queuectl_core.models: frozen dataclasses), built from the arguments: the least any
   enqueue that goes through a storage plugin costs (``inspect`` deferred as queuectl's enqueue
   defers it, on Python 3.11: bench.DEFER_INSPECT);
5. rung 4, its row inserted into queuectl's own jobs table (the database rung 7 writes): what
   queuectl's schema (indexes, triggers) adds; the rest of the distance to 7 is queuectl's code;
6. the standard library queuectl's enqueue path cannot do without (bench.ENQUEUE_STDLIB), imported
   alone (``inspect`` deferred likewise);
7. `queuectl enqueue --cmd true` itself (warm start-up index).

    python bench/enqueue_floor.py [--runs 40] [--queuectl PATH]

Run it from a plain (not editable) install; QUEUECTL_HOME is a throw-away directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from queuectl_core.bench import DEFER_INSPECT, ENQUEUE_STDLIB

MINIMAL = """
import re
import sys
import json, os, sqlite3, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, command TEXT, state TEXT, created_at REAL, spec TEXT)")
job_id = os.urandom(8).hex()
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO jobs VALUES (?, ?, 'pending', ?, ?)", (job_id, sys.argv[2], time.time(), json.dumps({"command": sys.argv[2]})))
db.execute("COMMIT")
sys.stdout.write(job_id + "\\n")
sys.stdout.flush()
db.close()
os._exit(0)  # as queuectl's enqueue ends: the database closed, without the interpreter's teardown
"""

# Rung 4: MINIMAL, with the row taken from the plugin API's model of a new job.
WITH_MODELS = MINIMAL.replace(
    "job_id = os.urandom(8).hex()",
    DEFER_INSPECT + "\nfrom queuectl_core.models import NewJob\n"
    "job = NewJob(id=os.urandom(8).hex(), command=sys.argv[2], max_retries=3)\n"
    "job_id = job.id",
)

# Rung 5: rung 4, its row inserted into queuectl's own jobs table (the database `queuectl enqueue`
# writes in this run): the indexes and triggers the million-job targets need, and the schema the
# first statement of every connection parses. Everything queuectl adds beyond it is its own code.
WITH_SCHEMA = WITH_MODELS.replace(
    """db.execute("INSERT INTO jobs VALUES (?, ?, 'pending', ?, ?)", (job_id, sys.argv[2], time.time(), json.dumps({"command": sys.argv[2]})))""",
    "now = int(time.time() * 1000)\n"
    """db.execute("INSERT INTO jobs (id, command, state, max_retries, created_at, updated_at, run_at) VALUES """
    """(?, ?, 'pending', ?, ?, ?, ?)", (job_id, job.command, job.max_retries, now, now, now))""",
)
assert WITH_SCHEMA != WITH_MODELS


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--queuectl", default=shutil.which("queuectl") or "queuectl")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="queuectl-floor-") as tmp:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}, "QUEUECTL_HOME": tmp}
        script = os.path.join(tmp, "minimal.py")
        with open(script, "w") as fh:
            fh.write(MINIMAL)
        with_models = os.path.join(tmp, "with_models.py")
        with open(with_models, "w") as fh:
            fh.write(WITH_MODELS)
        with_schema = os.path.join(tmp, "with_schema.py")
        with open(with_schema, "w") as fh:
            fh.write(WITH_SCHEMA)
        _timed([args.queuectl, "enqueue", "--cmd", "true"], env)  # creates queuectl's database for rung 5
        rungs = {
            "python -c pass": [python, "-c", "pass"],
            "python -c 'import sqlite3' (W1's floor)": [python, "-c", "import sqlite3"],
            "a hand-written enqueue (re, sqlite3, json, one INSERT)": [python, script, os.path.join(tmp, "m.db"), "true"],
            "the same, its row from a queuectl NewJob (models)": [python, with_models, os.path.join(tmp, "n.db"), "true"],
            "the same, into queuectl's own jobs table (its indexes, triggers)": [
                python, with_schema, os.path.join(tmp, "queue.db"), "true"],
            f"import {', '.join(ENQUEUE_STDLIB)}": [python, "-c", DEFER_INSPECT + "import os, "
                                                      + ", ".join(ENQUEUE_STDLIB) + "; os._exit(0)"],
            "queuectl enqueue --cmd true": [args.queuectl, "enqueue", "--cmd", "true"],
        }
        for cmd in rungs.values():  # warm: page cache, the start-up index, the database files
            _timed(cmd, env)
            _timed(cmd, env)
        samples: dict[str, list[float]] = {name: [] for name in rungs}
        for _ in range(args.runs):
            for name, cmd in rungs.items():
                samples[name].append(_timed(cmd, env))
    floor = statistics.median(samples["python -c 'import sqlite3' (W1's floor)"])
    print(f"{args.runs} runs each, interleaved; median ms, and W1's ratio (floor / this)")
    for name, values in samples.items():
        ms = statistics.median(values)
        print(f"  {ms:6.1f} ms  {floor / ms:4.2f}  {name}")
    print(f"W1's target (0.6 of the floor) is {floor / 0.6:.1f} ms a process.")


if __name__ == "__main__":
    main()
