"""Queues, dependencies and schedules with real `queuectl` processes, on SQLite and PostgreSQL: queues with concurrency limits
and pauses, --after with its cancel cascade, schedules ticking exactly once across workers,
unique keys under 8 concurrent enqueuers, exit-code retry rules, and --burst with all of these."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from conftest import QUEUECTL


def _stop(procs: list[subprocess.Popen[str]], timeout: float = 30) -> list[tuple[str, str]]:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    return [proc.communicate(timeout=timeout) for proc in procs]


def _intervals(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lines 'queue start end' written by the jobs themselves."""
    out: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        queue, start, end = line.split()
        out.setdefault(queue, []).append((float(start), float(end)))
    return out


def test_concurrency_one_queue_never_overlaps_while_another_runs_in_parallel(qb: Any, tmp_path: Path) -> None:
    log = tmp_path / "times"
    qb.run("queue", "set", "serial", "--concurrency", "1")
    jobs = []
    for i in range(6):
        for queue in ("serial", "wide"):
            cmd = (f"s=$(date +%s.%N); sleep 0.3; echo {queue} $s $(date +%s.%N) >> {log}")
            jobs.append({"id": f"{queue}{i}", "command": cmd, "queue": queue})
    qb.run("enqueue", "--file", "-", input="\n".join(json.dumps(j) for j in jobs))
    workers = [qb.start_worker("--count", "2", "--burst"), qb.start_worker("--count", "2", "--burst")]
    for w in workers:
        w.communicate(timeout=60)
        assert w.returncode == 0
    assert qb.counts()["completed"] == 12
    spans = _intervals(log)
    serial = sorted(spans["serial"])
    assert len(serial) == 6
    for (_, end), (start, _) in zip(serial, serial[1:]):
        assert start >= end, f"two jobs of a concurrency-1 queue overlapped: {serial}"
    # the other queue ran beside it: some 'wide' job overlapped some 'serial' one
    assert any(ws < se and ss < we for ws, we in spans["wide"] for ss, se in serial)
    listed = {q["name"]: q for q in qb.json("queue", "list")}
    assert listed["serial"]["concurrency"] == 1 and listed["serial"]["counts"]["completed"] == 6


def test_paused_queue_waits_and_burst_does_not_wait_for_it(qb: Any) -> None:
    qb.run("enqueue", "--id", "held", "--cmd", "true", "--queue", "later")
    qb.run("enqueue", "--id", "now", "--cmd", "true")
    qb.run("queue", "pause", "later")
    proc = qb.run("worker", "start", "--burst", timeout=30)
    assert "now" in proc.stdout and "held" not in proc.stdout
    assert qb.job("held")["state"] == "pending"
    assert qb.json("queue", "list")[1]["paused"] is True
    qb.run("queue", "resume", "--all")
    qb.run("worker", "start", "--burst", "--queue", "later", timeout=30)
    assert qb.job("held")["state"] == "completed"


def test_worker_claims_only_from_its_queues(qb: Any) -> None:
    qb.run("enqueue", "--id", "a", "--cmd", "true", "--queue", "a")
    qb.run("enqueue", "--id", "b", "--cmd", "true", "--queue", "b")
    qb.run("enqueue", "--id", "c", "--cmd", "true", "--queue", "c")
    qb.run("worker", "start", "--burst", "--queue", "a,c", timeout=30)
    assert [qb.job(i)["state"] for i in "abc"] == ["completed", "pending", "completed"]


def test_dependencies_order_and_cancel_cascade(qb: Any, tmp_path: Path) -> None:
    order = tmp_path / "order"
    qb.run("enqueue", "--id", "first", "--cmd", f"sleep 0.3; echo first >> {order}", "--priority", "-5")
    qb.run("enqueue", "--id", "second", "--cmd", f"echo second >> {order}", "--after", "first", "--priority", "9")
    qb.run("enqueue", "--id", "bad", "--cmd", "exit 1", "--max-retries", "0")
    qb.run("enqueue", "--id", "child", "--cmd", "true", "--after", "bad,first")
    qb.run("enqueue", "--id", "grandchild", "--cmd", "true", "--after", "child")
    listed = {j["id"]: j for j in qb.json("list")}
    assert listed["grandchild"]["after"] == ["child"]
    assert "waits on child" in qb.run("logs", "grandchild", check=False).stderr
    bad = qb.run("enqueue", "--file", "-", check=False,
                 input='{"id": "x", "command": "true"}\n{"id": "y", "command": "true", "after": ["x", "ghost"]}\n')
    assert bad.returncode != 0 and "ghost" in bad.stderr and bad.stderr.count("\n") == 1
    assert "x" not in {j["id"] for j in qb.json("list")}  # all or nothing
    workers = [qb.start_worker("--count", "2", "--burst")]
    workers[0].communicate(timeout=60)
    assert order.read_text().split() == ["first", "second"]
    child, grandchild = qb.job("child"), qb.job("grandchild")
    assert child["state"] == "cancelled" and "bad" in child["last_error"] and "dead" in child["last_error"]
    assert grandchild["state"] == "cancelled" and "child" in grandchild["last_error"]


def test_unique_key_eight_concurrent_enqueuers_exactly_one_wins(qb: Any) -> None:
    qb.run("status")  # create and migrate the store first: the race is about the key, not the schema
    procs = [subprocess.Popen([*QUEUECTL, "enqueue", "--cmd", "true", "--unique-key", "nightly", "--id", f"e{n}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=qb.env)
             for n in range(8)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    winners = [out.strip() for code, out, _ in results if code == 0]
    losers = [err for code, _, err in results if code != 0]
    assert len(winners) == 1 and len(losers) == 7
    assert all(f"held by job '{winners[0]}'" in err and err.startswith("Error:") for err in losers)
    assert [j["id"] for j in qb.json("list")] == winners
    qb.run("worker", "start", "--burst", timeout=30)
    qb.run("enqueue", "--cmd", "true", "--unique-key", "nightly")  # free once the holder finished


def test_retry_rules(qb: Any) -> None:
    qb.config("backoff_base", 0.01)
    qb.config("no_retry_exit_codes", "64")
    qb.run("enqueue", "--id", "usage", "--cmd", "exit 2", "--no-retry-on", "2", "--max-retries", "3")
    qb.run("enqueue", "--id", "only1", "--cmd", "exit 3", "--retry-on", "1,75", "--max-retries", "3")
    qb.run("enqueue", "--id", "flaky", "--cmd", "exit 75", "--retry-on", "1,75", "--max-retries", "2")
    qb.run("enqueue", "--id", "default", "--cmd", "exit 64", "--max-retries", "3")
    qb.run("enqueue", "--id", "normal", "--cmd", "exit 5", "--max-retries", "1")
    qb.run("worker", "start", "--burst", timeout=60)
    jobs = {j["id"]: j for j in qb.json("list")}
    assert {k: (v["state"], v["attempts"]) for k, v in jobs.items()} == {
        "usage": ("dead", 1), "only1": ("dead", 1), "flaky": ("dead", 3), "default": ("dead", 1), "normal": ("dead", 2)}
    assert "no_retry_on" in jobs["usage"]["last_error"] and "retry_on" in jobs["only1"]["last_error"]
    assert jobs["default"]["no_retry_on"] == [64] and jobs["usage"]["no_retry_on"] == [2]
    bad = qb.run("enqueue", "--cmd", "true", "--retry-on", "1", "--no-retry-on", "2", check=False)
    assert bad.returncode != 0 and bad.stderr.startswith("Error:")


def test_schedule_ticks_exactly_once_with_several_workers(qb: Any) -> None:
    qb.run("schedule", "add", "tick", "--every", "1s", "--cmd", "true", "--queue", "cron")
    qb.run("schedule", "add", "never", "--cron", "0 0 1 1 *", "--cmd", "true", "--tz", "Europe/Berlin")
    workers = [qb.start_worker("--count", "2"), qb.start_worker("--count", "2")]
    time.sleep(4.6)
    _stop(workers)
    ids = sorted(j["id"] for j in qb.json("list"))
    assert all(i.startswith("tick@") for i in ids)
    assert 3 <= len(ids) <= 5, ids
    from datetime import datetime

    ticks = [datetime.fromisoformat(i.split("@", 1)[1].replace("Z", "+00:00")) for i in ids]
    gaps = {round((b - a).total_seconds(), 3) for a, b in zip(ticks, ticks[1:])}
    assert gaps == {1.0}, ids  # consecutive ticks, none twice, none skipped while workers ran
    rows = {s["name"]: s for s in qb.json("schedule", "list")}
    assert rows["tick"]["last_tick"] == ids[-1].split("@", 1)[1]
    assert rows["never"]["next_tick"].endswith("T23:00:00.000Z")  # Jan 1st 00:00 in Berlin is 23:00 UTC


def test_schedule_after_downtime_enqueues_only_the_latest_missed_tick(qb: Any) -> None:
    qb.run("schedule", "add", "every", "--every", "1s", "--cmd", "true")
    time.sleep(3.5)  # three ticks missed with no worker running
    worker = qb.start_worker()
    qb.wait_for(lambda: qb.json("list"), timeout=10, what="a tick")
    time.sleep(0.3)
    _stop([worker])
    ids = [j["id"] for j in qb.json("list")]
    assert len(ids) in (1, 2), ids  # the latest missed tick, and perhaps the next one
    qb.run("schedule", "pause", "every")
    paused = qb.json("schedule", "list")[0]
    assert paused["paused"] is True and paused["next_tick"] is None
    qb.run("schedule", "remove", "every")
    assert qb.json("schedule", "list") == []
    bad = qb.run("schedule", "remove", "every", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error:")


def test_schedule_and_queue_commands_refuse_bad_input(q: Any) -> None:
    for args in (["schedule", "add", "x", "--cmd", "true"],
                 ["schedule", "add", "x", "--cron", "* * *", "--cmd", "true"],
                 ["schedule", "add", "x", "--cron", "61 * * * *", "--cmd", "true"],
                 ["schedule", "add", "x", "--cron", "* * * * *", "--tz", "Mars/Olympus", "--cmd", "true"],
                 ["schedule", "add", "x", "--every", "0.1s", "--cmd", "true"],
                 ["schedule", "add", "bad@name", "--every", "5s", "--cmd", "true"],
                 ["queue", "set", "q", "--concurrency", "-1"],
                 ["queue", "pause"],
                 ["queue", "pause", "a", "--all"],
                 ["enqueue", "--cmd", "true", "--queue", "bad queue"],
                 ["enqueue", "--cmd", "true", "--retry-on", "x"]):
        proc = q.run(*args, check=False)
        assert proc.returncode != 0, args
        assert proc.stderr.startswith("Error:") and proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert q.json("schedule", "list") == [] and q.json("queue", "list") == []


def test_cron_library_is_not_imported_by_other_commands(q: Any) -> None:
    code = ("import sys, runpy; sys.argv = ['queuectl', 'enqueue', '--cmd', 'true'];\n"
            "from queuectl_core.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('cronsim' in sys.modules, 'queuectl_core.control.scheduling' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([QUEUECTL[0], "-c", code], capture_output=True, text=True, env=q.env, timeout=30)
    assert proc.stderr.strip().splitlines()[-1] == "False False"


def test_cron_ticks_are_read_in_the_zone_with_dst_handled_as_cron_does() -> None:
    from datetime import datetime, timedelta

    from queuectl_core.control.scheduling import due_tick, next_tick
    from queuectl_core.jobs.records import Schedule

    utc = UTC
    created = datetime(2026, 10, 20, tzinfo=utc)
    daily = Schedule(name="d", job={"command": "true"}, cron="30 2 * * *", tz="Europe/Berlin", created_at=created)
    # autumn: 02:30 happens twice in Berlin on 2026-10-25; cron runs it once (the first, CEST)
    first = next_tick(daily, datetime(2026, 10, 24, 12, tzinfo=utc))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=utc)
    after_first = next_tick(daily, first + timedelta(seconds=1))
    assert after_first == datetime(2026, 10, 26, 1, 30, tzinfo=utc)  # the next day, CET
    # spring: 02:30 does not exist on 2026-03-29; it runs at the jump (03:00 CEST = 01:00 UTC)
    spring = Schedule(name="s", job={"command": "true"}, cron="30 2 * * *", tz="Europe/Berlin",
                      created_at=datetime(2026, 3, 1, tzinfo=utc))
    assert next_tick(spring, datetime(2026, 3, 28, 12, tzinfo=utc)) == datetime(2026, 3, 29, 1, 0, tzinfo=utc)
    # after downtime only the latest missed tick is due, and never one already enqueued
    now = datetime(2026, 10, 30, 12, tzinfo=utc)
    latest = datetime(2026, 10, 30, 1, 30, tzinfo=utc)
    assert due_tick(daily, now) == latest
    from dataclasses import replace

    assert due_tick(replace(daily, last_tick=latest), now) is None
    every = Schedule(name="e", job={"command": "true"}, every=2.5, created_at=created)
    assert due_tick(every, created + timedelta(seconds=2)) is None  # the first tick is one interval in
    assert due_tick(every, created + timedelta(seconds=11)) == created + timedelta(seconds=10)
