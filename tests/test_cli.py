"""Inspecting and replaying: status, list, logs, the DLQ, plugins list, and the JSON outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import Q
from test_enqueue import assert_one_line_error

STATES = ["pending", "processing", "completed", "failed", "dead", "cancelled"]
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
JOB_FIELDS = {"id", "command", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
              "run_at", "timeout", "last_exit_code", "last_error", "log_path"}
TIME_FIELDS = ("created_at", "updated_at", "run_at")


def one_json_document(proc: Any) -> Any:
    """--json means exactly one JSON document on stdout: json.loads rejects anything extra."""
    return json.loads(proc.stdout)


def assert_job_shape(job: dict[str, Any]) -> None:
    assert JOB_FIELDS <= set(job), JOB_FIELDS - set(job)
    for key in TIME_FIELDS:
        assert TIME_RE.match(job[key]), (key, job[key])
    for key, value in job.items():
        # Any other time-like field uses the same format: one format everywhere.
        if key.endswith("_at") and value is not None:
            assert TIME_RE.match(value), (key, value)


def counter_command(tmp_path: Path, succeed_from: int) -> str:
    """A job that prints which attempt it is and fails until attempt ``succeed_from``."""
    counter = tmp_path / "attempts"
    return (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
            f"echo \"attempt $n out\"; echo \"attempt $n err\" >&2; [ $n -ge {succeed_from} ]")


def test_status_on_an_empty_queue(q: Q) -> None:
    data = one_json_document(q.run("status", "--json"))
    # The ready/scheduled split, the oldest ready job, queues and the jobs waiting on others.
    assert data["counts"] == {s: 0 for s in STATES} and data["workers"] == [] and data["queues"] == {}
    assert data["pending"] == {"ready": 0, "scheduled": 0, "waiting": 0} and data["oldest_ready_age_seconds"] is None
    text = q.run("status").stdout
    for state in STATES:
        assert re.search(rf"^{state}\s+0$", text, re.M), text
    assert one_json_document(q.run("list", "--json")) == []
    assert one_json_document(q.run("dlq", "list", "--json")) == []


def test_failing_job_reaches_the_dlq_and_replays(q: Q, tmp_path: Path) -> None:
    q.config("backoff_base", 0.01)
    q.run("enqueue", "--id", "flaky", "--cmd", counter_command(tmp_path, succeed_from=3), "--max-retries", "1")
    q.run("enqueue", "--id", "fine", "--cmd", "echo fine")

    assert_one_line_error(q.run("logs", "flaky", check=False), "flaky", "not run")

    q.run("worker", "start", "--burst", timeout=60)

    counts = one_json_document(q.run("status", "--json"))["counts"]
    assert counts == {"pending": 0, "processing": 0, "completed": 1, "failed": 0, "dead": 1,
                      "cancelled": 0}
    assert [j["id"] for j in q.json("list", "--state", "dead")] == ["flaky"]
    assert [j["id"] for j in q.json("list", "--state", "completed")] == ["fine"]
    assert q.json("list", "--state", "pending") == []

    dead = one_json_document(q.run("dlq", "list", "--json"))
    assert [j["id"] for j in dead] == ["flaky"]
    flaky = dead[0]
    assert_job_shape(flaky)
    assert (flaky["state"], flaky["attempts"], flaky["last_exit_code"]) == ("dead", 2, 1)
    assert flaky["last_error"]
    assert "flaky" in q.run("dlq", "list").stdout
    for job in q.json("list"):
        assert_job_shape(job)

    # logs: the last attempt's stdout and stderr, not the first one's.
    out = q.run("logs", "flaky").stdout
    assert "attempt 2 out" in out and "attempt 2 err" in out and "attempt 1" not in out
    assert q.run("logs", "fine").stdout == "fine\n"

    assert_one_line_error(q.run("dlq", "retry", "fine", check=False), "fine", "completed")
    assert_one_line_error(q.run("dlq", "retry", "ghost", check=False), "ghost")
    assert q.json("dlq", "list")[0]["id"] == "flaky"  # the failed retries changed nothing

    assert q.run("dlq", "retry", "flaky").stdout.strip() == "flaky"
    replayed = q.job("flaky")
    assert (replayed["state"], replayed["attempts"]) == ("pending", 0)
    assert_job_shape(replayed)

    # The seed's replayed jobs never ran (its run_at was written in another format): this must.
    q.run("worker", "start", "--burst", timeout=60)
    replayed = q.job("flaky")
    assert (replayed["state"], replayed["attempts"], replayed["last_exit_code"]) == ("completed", 1, 0)
    assert "attempt 3 out" in q.run("logs", "flaky").stdout
    assert q.json("dlq", "list") == []


def test_list_and_logs_errors(q: Q) -> None:
    q.run("enqueue", "--id", "a", "--cmd", "true")
    assert_one_line_error(q.run("list", "--state", "stuck", check=False), "stuck")
    assert_one_line_error(q.run("logs", "nope", check=False), "nope")
    assert_one_line_error(q.run("nonsense", check=False), "nonsense")
    text = q.run("list").stdout
    assert "a" in text.split() and "pending" in text.split()


def test_status_shows_live_workers(q: Q) -> None:
    proc = q.start_worker()
    workers = q.wait_for(lambda: q.json("status")["workers"], timeout=20, what="a live worker")
    assert len(workers) == 1
    w = workers[0]
    assert w["pid"] > 0 and w["id"] and w["hostname"]
    assert TIME_RE.match(w["started_at"])
    assert re.search(r"^workers\s+1$", q.run("status").stdout, re.M)  # the counts are aligned
    q.run("worker", "stop")
    assert proc.wait(timeout=20) == 0
    assert q.json("status")["workers"] == []


def test_worker_stop_without_workers(q: Q) -> None:
    assert q.run("worker", "stop").returncode == 0


BUNDLED = {
    "sqlite": ("storages", "sqlite", "queuectl_register_storages"),
    "subprocess": ("executors", "subprocess", "queuectl_register_executors"),
    "exponential": ("backoff_policies", "exponential", "queuectl_register_backoff_policies"),
}


def test_plugins_list(q: Q) -> None:
    plugins = {p["name"]: p for p in one_json_document(q.run("plugins", "list", "--json"))}
    for name, (kind, provided, hook) in BUNDLED.items():
        p = plugins[name]
        assert p["version"], name
        assert hook in p["hooks"], (name, p["hooks"])
        assert provided in p["provides"][kind], (name, p["provides"])
        assert p["module"].startswith("queuectl_plugins.")
    assert "sqlite.path" in plugins["sqlite"]["provides"]["settings"]
    assert "queuectl_job_event" in plugins["stdout"]["hooks"]
    text = q.run("plugins", "list").stdout
    for name in [*BUNDLED, "stdout"]:
        assert re.search(rf"^{name}\b", text, re.M), text


def test_disabled_plugin_is_not_listed(q: Q) -> None:
    proc = q.run("plugins", "list", "--json", env={"QUEUECTL_DISABLE_PLUGINS": "stdout"})
    names = {p["name"] for p in one_json_document(proc)}
    assert "stdout" not in names and "sqlite" in names
    text = q.run("plugins", "list", env={"QUEUECTL_DISABLE_PLUGINS": "stdout"}).stdout
    assert not re.search(r"^stdout\b", text, re.M)
    assert "disabled by QUEUECTL_DISABLE_PLUGINS: stdout" in text


def test_broken_pipe_is_quiet(q: Q) -> None:
    # `queuectl list --json | head -c 10` on a long list: no BrokenPipeError traceback.
    q.run("enqueue", "--file", "-", input="".join(json.dumps({"command": f"echo {n}"}) + "\n"
                                                   for n in range(2000)))
    pipeline = subprocess.run(
        f"{sys.executable} -m queuectl_core list --json | head -c 10", shell=True, capture_output=True,
        text=True, env=q.env, timeout=30,
    )
    assert "Traceback" not in pipeline.stderr and "BrokenPipe" not in pipeline.stderr


def test_a_command_runs_with_the_cyclic_collector_on(tmp_path: Path) -> None:
    """Start-up keeps the collector off while the plugins load and freezes what they made; the
    command itself (a worker that runs for weeks) runs with it on, or its cycles would never be freed."""
    code = ("import atexit, gc, sys\n"
            "from queuectl_core.cli.main import main\n"
            "atexit.register(lambda: print('collector on:', gc.isenabled(), 'start-up frozen:', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['queuectl', 'config', 'show']\n"
            "main()\n")
    import os

    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "QUEUECTL_HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "collector on: True start-up frozen: True"
