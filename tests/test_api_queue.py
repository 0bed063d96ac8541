"""`from queuectl import Queue`: a program enqueues as `queuectl enqueue` does (the same checks,
defaults, messages and `enqueued` events), each program a real `python -c` process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from process_helpers import install_plugin

RECORDER = ("from queuectl_core.api import hookimpl\n"
            "@hookimpl\n"
            "def queuectl_job_event(event):\n"
            "    if event.kind != 'enqueued':\n"
            "        return\n"
            "    with open({log!r}, 'a') as fh:\n"
            "        fh.write(f'{{event.kind}} {{event.job.id}} {{event.job.state}} {{event.job.max_retries}}'\n"
            "                 f' {{event.config.home.name}}\\n')\n")


def py(q: Any, code: str, check: bool = True, env: dict[str, str] | None = None,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**q.env, **(env or {})}, cwd=cwd, timeout=60, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"python exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def test_a_program_enqueues_and_a_worker_runs_the_job(qb: Any, tmp_path: Path) -> None:
    where = tmp_path / "app"
    where.mkdir()
    out = py(qb, """
        from datetime import timedelta
        from queuectl import Queue

        with Queue() as queue:
            job = queue.enqueue("echo ran in $PWD with $GREETING > out.txt", id="p1", priority=3,
                                tags=("py", "demo"), env={"GREETING": "hello"}, timeout=timedelta(minutes=1),
                                max_retries=0)
            print(job.id, job.state, job.priority, ",".join(job.tags), job.timeout, job.cwd)
            again = queue.get("p1")
            print(again.command, queue.get("nope"), queue.get("not an id!"))
            words = queue.enqueue(["sh", "-c", "echo $0", "my words"], id="p2")
            print(words.command)
    """, cwd=where).stdout.splitlines()
    assert out == [f"p1 pending 3 py,demo 60.0 {where}",
                   "echo ran in $PWD with $GREETING > out.txt None None",
                   "sh -c 'echo $0' 'my words'"]
    qb.run("worker", "start", "--burst", timeout=120)
    assert qb.job("p1")["state"] == "completed" and qb.job("p2")["state"] == "completed"
    # Defaults as the CLI's: the program's working directory, the config's max_retries.
    assert (where / "out.txt").read_text() == f"ran in {where} with hello\n"
    assert qb.job("p2")["max_retries"] == 3 and qb.job("p2")["cwd"] == str(where)
    assert qb.run("logs", "p2").stdout == "my words\n"


@pytest.mark.parametrize("options, as_json", [
    ({"priorty": 1}, '{"command": "true", "priorty": 1}'),
    ({"priority": "high"}, '{"command": "true", "priority": "high"}'),
    ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"},
     '{"command": "true", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}'),
    ({"run_at": "2030-01-01T00:00:00"}, '{"command": "true", "run_at": "2030-01-01T00:00:00"}'),
    ({"tags": ["no spaces allowed"]}, '{"command": "true", "tags": ["no spaces allowed"]}'),
    ({"retry_on": [1], "no_retry_on": [2]}, '{"command": "true", "retry_on": [1], "no_retry_on": [2]}'),
], ids=["unknown key", "type", "delay and run_at", "run_at without zone", "tag", "retry rules"])
def test_a_refused_job_raises_with_the_message_the_cli_prints(q: Any, options: dict[str, Any], as_json: str) -> None:
    cli = q.run("enqueue", as_json, check=False)
    assert cli.returncode == 1 and cli.stderr.startswith("Error: ")
    message = cli.stderr.removeprefix("Error: ").rstrip("\n")
    out = py(q, f"""
        from queuectl import Queue, QueuectlError, ValidationError

        try:
            Queue().enqueue("true", **{options!r})
        except ValidationError as exc:
            assert isinstance(exc, QueuectlError)
            print(exc)
    """).stdout
    assert out == message + "\n"
    assert not (q.home / "queue.db").exists(), "a refused job created the queue"


def test_conflicts_raise_their_own_errors(q: Any) -> None:
    q.run("enqueue", "--id", "taken", "--unique-key", "nightly", "--cmd", "true")
    cli_dup = q.run("enqueue", "--id", "taken", "--cmd", "true", check=False).stderr
    cli_key = q.run("enqueue", "--unique-key", "nightly", "--cmd", "true", check=False).stderr
    out = py(q, """
        from queuectl import DuplicateJobError, Queue, QueuectlError, UniqueKeyError

        queue = Queue()
        for options, error in (({"id": "taken"}, DuplicateJobError), ({"unique_key": "nightly"}, UniqueKeyError)):
            try:
                queue.enqueue("true", **options)
            except error as exc:
                assert isinstance(exc, QueuectlError)
                print(exc)
        queue.close()
        try:
            queue.get("taken")
        except ValueError as exc:
            print(exc)
    """).stdout.splitlines()
    assert out == [cli_dup.removeprefix("Error: ").strip(), cli_key.removeprefix("Error: ").strip(),
                   "this Queue is closed"]
    assert [j["id"] for j in q.json("list")] == ["taken"]


def test_enqueued_events_reach_notification_plugins_as_from_the_cli(q: Any, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    site = install_plugin(tmp_path / "site", "recorder", RECORDER.format(log=str(log)))
    env = {"PYTHONPATH": str(site)}
    q.config("max_retries", 7)
    q.run("enqueue", "--id", "from-cli", "--cmd", "true", env=env)
    py(q, """
        from queuectl import Queue

        with Queue() as queue:
            queue.enqueue("true", id="from-py")
            queue.enqueue_many([{"command": "true", "id": "b1"}, {"command": "true", "id": "b2", "after": ["b1"]}])
    """, env=env)
    assert log.read_text().splitlines() == ["enqueued from-cli pending 7 home", "enqueued from-py pending 7 home",
                                            "enqueued b1 pending 7 home", "enqueued b2 pending 7 home"]
    # A refused batch enqueues nothing and announces nothing; its message is `enqueue --file`'s for an array.
    batch = [{"command": "true", "id": "c1"}, {"command": "true", "id": "c2", "priority": "x"}]
    cli = q.run("enqueue", "--file", "-", input=json.dumps(batch), check=False).stderr.removeprefix("Error: ").strip()
    out = py(q, f"""
        from queuectl import Queue, ValidationError

        try:
            Queue().enqueue_many({batch!r})
        except ValidationError as exc:
            print(exc)
    """, env=env).stdout.strip()
    assert out == cli == "job 2: 'priority' must be an integer, got 'x'"
    assert len(log.read_text().splitlines()) == 4
    assert sorted(j["id"] for j in q.json("list")) == ["b1", "b2", "from-cli", "from-py"]


def test_queue_home_names_another_queue(q: Any, tmp_path: Path) -> None:
    """Queue(home=...) uses that directory's config and queue, whatever QUEUECTL_HOME says."""
    other = tmp_path / "elsewhere"
    q.config("max_retries", 1)
    out = py(q, f"""
        from queuectl import Queue

        with Queue(home={str(q.home)!r}) as queue:
            job = queue.enqueue("true", id="homed")
            print(queue.home, job.max_retries)
        with Queue() as queue:
            print(queue.home, queue.get("homed"))
    """, env={"QUEUECTL_HOME": str(other)}).stdout.splitlines()
    assert out == [f"{q.home} 1", f"{other} None"]
    assert q.job("homed")["max_retries"] == 1
    assert not other.exists(), "a read of an empty queue created its home"
