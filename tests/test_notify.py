"""Notifications (webhook, command, desktop): real worker processes, a real HTTP receiver in a
thread, both storage backends. What a user relies on: every notification arrives (at least once,
exactly once when nothing crashes), signed; a receiver that fails or starts late still gets it; a
dead receiver never slows the queue; the command notifier's environment; one ``queue_empty`` per
emptied queue; the counts on /metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from process_helpers import enqueue_many


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 500 to the first ``fail`` POSTs, 200 after; keeps
    every POST it answered 200 as (headers, body)."""

    def __init__(self, port: int | None = None, fail: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.fail = fail
        self.failed = 0
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    refuse = receiver.failed < receiver.fail
                    if refuse:
                        receiver.failed += 1
                    else:
                        receiver.got.append((dict(self.headers), data))
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def docs(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.got]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def stop_worker(proc: Any, timeout: float = 30) -> str:
    """SIGTERM a worker; it exits 0 within ``timeout``; its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def test_webhook_delivers_each_notification_once_signed_from_two_workers(qb: Any, receiver: Any) -> None:
    r = receiver().start()
    qb.config("notify.webhook.url", r.url)
    qb.config("notify.webhook.events", "completed,dead")
    ok = [f"ok{i}" for i in range(6)]
    enqueue_many(qb, ok, "true")
    qb.run("enqueue", "--id", "bad", "--max-retries", "0", "--cmd", "exit 7")
    # The secret from the worker's environment: it signs, and no job sees it.
    qb.run("enqueue", "--id", "peek", "--max-retries", "0", "--cmd", "test -z \"$QUEUECTL_NOTIFY_WEBHOOK_SECRET\"")
    secret = {"QUEUECTL_NOTIFY_WEBHOOK_SECRET": "s3cret-value"}
    workers = [qb.start_worker(env=secret) for _ in range(2)]
    qb.wait_for(lambda: len(r.docs()) >= 8, timeout=30, what="8 notifications")
    time.sleep(1.5)  # a repeat would come within a poll or two
    for w in workers:
        stop_worker(w)
    docs = r.docs()
    assert len(docs) == 8 and len({d["id"] for d in docs}) == 8, docs
    assert {d["job"]["id"]: d["event"] for d in docs} == {**{i: "completed" for i in ok}, "bad": "dead",
                                                          "peek": "completed"}
    bad = next(d for d in docs if d["job"]["id"] == "bad")
    assert bad["job"]["state"] == "dead" and bad["job"]["last_exit_code"] == 7
    assert set(bad) == {"id", "event", "at", "job"} and bad["at"].endswith("Z")
    # The job as show --json gives it, less what show adds from elsewhere: the attempts, and the
    # limits in force (the job's own `memory` and `cpu_time` are in the job) and why it waits.
    assert set(qb.json("show", "bad")) <= set(bad["job"]) | {"attempts", "limits", "waiting_reason"}
    for headers, body in r.got:
        expected = "sha256=" + hmac.new(b"s3cret-value", body, hashlib.sha256).hexdigest()
        assert headers["X-Queuectl-Signature"] == expected
        assert headers["Content-Type"] == "application/json"
    # The secret is masked where config is shown.
    qb.config("notify.webhook.secret", "another-secret")
    shown = qb.run("config", "show").stdout
    assert "another-secret" not in shown and "notify.webhook.secret" in shown


def test_webhook_answering_500_three_times_still_gets_it(qb: Any, receiver: Any) -> None:
    r = receiver(fail=3).start()
    qb.config("notify.webhook.url", r.url)
    qb.run("enqueue", "--id", "doomed", "--max-retries", "0", "--cmd", "false")
    worker = qb.start_worker()
    qb.wait_for(lambda: r.docs(), timeout=30, what="the delivery after three 500s")
    err = stop_worker(worker)
    assert r.failed == 3
    assert [(d["event"], d["job"]["id"]) for d in r.docs()] == [("dead", "doomed")]
    assert "notifier 'webhook' failed (dead), retrying in" in err and "answered 500" in err


def test_webhook_receiver_that_starts_late_still_gets_it(qb: Any, receiver: Any) -> None:
    r = receiver()  # not listening yet: connections are refused
    qb.config("notify.webhook.url", r.url)
    qb.run("enqueue", "--id", "doomed", "--max-retries", "0", "--cmd", "false")
    worker = qb.start_worker()
    qb.wait_state("doomed", "dead")
    time.sleep(1.0)  # a try or two refused
    r.start()
    qb.wait_for(lambda: r.docs(), timeout=30, what="the delivery once the receiver listens")
    stop_worker(worker)
    assert [d["job"]["id"] for d in r.docs()] == ["doomed"]


def test_a_dead_receiver_never_slows_the_queue(qb: Any) -> None:
    # Accepts connections (the kernel's backlog) and never answers: every try waits its timeout.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        qb.config("notify.webhook.url", f"http://127.0.0.1:{hole.getsockname()[1]}/hook")
        qb.config("notify.webhook.events", "completed")
        qb.config("notify.webhook.timeout", "3s")
        worker = qb.start_worker()
        qb.wait_for(lambda: qb.json("status")["workers"], timeout=30, what="the worker")
        ids = [f"j{i}" for i in range(20)]
        started = time.monotonic()
        enqueue_many(qb, ids, "true")
        qb.wait_for(lambda: qb.counts()["completed"] == 20, timeout=30, what="20 jobs")
        took = time.monotonic() - started
        # Twenty deliveries would take a minute here; the jobs do not wait for any of them.
        assert took < 10, f"20 jobs took {took:.1f}s"
        stopped = time.monotonic()
        stop_worker(worker)
        assert time.monotonic() - stopped < 15  # a stuck try holds a stop at most CLOSE_SECONDS (5 s)
    finally:
        hole.close()


def test_command_notifier_environment_and_one_queue_empty_per_queue(q: Any, tmp_path: Path) -> None:
    log = tmp_path / "notified.log"
    q.config("notify.command", f'echo "$QUEUECTL_EVENT $QUEUECTL_JOB_ID $QUEUECTL_JOB_STATE '
                               f'$QUEUECTL_EXIT_CODE $QUEUECTL_QUEUE" >> {log}')
    q.config("notify.command_events", "completed,dead,queue_empty")
    for i in range(6):
        q.run("enqueue", "--id", f"a{i}", "--queue", "alpha", "--cmd", "sleep 0.2")
    q.run("enqueue", "--id", "b0", "--queue", "beta", "--cmd", "sleep 0.3")
    q.run("enqueue", "--id", "b1", "--queue", "beta", "--max-retries", "0", "--cmd", "sleep 0.3; exit 4")
    workers = [q.start_worker("--burst") for _ in range(2)]
    for w in workers:
        w.communicate(timeout=60)
        assert w.returncode == 0
    lines = sorted(log.read_text().splitlines())
    # One per emptied queue, naming the job whose end emptied it (either worker's last one).
    empty = [ln.split() for ln in lines if ln.startswith("queue_empty")]
    assert sorted(e[-1] for e in empty) == ["alpha", "beta"], lines
    for e in empty:
        assert e[1][0] == e[-1][0] and e[2] in ("completed", "dead"), lines
    assert [ln for ln in lines if not ln.startswith("queue_empty")] == sorted(
        [f"completed a{i} completed 0 alpha" for i in range(6)] + ["completed b0 completed 0 beta",
                                                                   "dead b1 dead 4 beta"])


def test_a_job_cancelled_by_the_cli_is_notified_by_the_next_worker(q: Any, tmp_path: Path) -> None:
    log = tmp_path / "notified.log"
    # Like a job, the command never sees queuectl's secret settings.
    q.config("notify.command", f'echo "$QUEUECTL_EVENT $QUEUECTL_JOB_ID $QUEUECTL_JOB_STATE'
                               f' ${{QUEUECTL_NOTIFY_WEBHOOK_SECRET:-hidden}}" >> {log}')
    q.config("notify.command_events", "cancelled,queue_empty")
    q.run("enqueue", "--id", "later", "--delay", "1h", "--cmd", "true")
    q.run("cancel", "later")  # no worker runs: the rows wait in the outbox
    assert not log.exists()
    q.run("worker", "start", "--burst", env={"QUEUECTL_NOTIFY_WEBHOOK_SECRET": "s3cret"})
    assert sorted(log.read_text().splitlines()) == ["cancelled later cancelled hidden",
                                                    "queue_empty later cancelled hidden"]


def test_notifications_are_counted_on_metrics(q: Any, dash: Any, receiver: Any, tmp_path: Path) -> None:
    r = receiver(fail=1).start()
    q.config("notify.webhook.url", r.url)
    q.config("notify.command", "exit 1")
    q.config("notify.command_events", "dead")
    q.run("enqueue", "--id", "doomed", "--max-retries", "0", "--cmd", "false")
    worker = q.start_worker()
    q.wait_for(lambda: r.docs(), timeout=30, what="the delivery")
    err = stop_worker(worker)
    assert "notify.command exited 1" in err
    text = dash().get("/metrics")
    assert "# TYPE queuectl_notifications_total counter" in text
    assert 'queuectl_notifications_total{notifier="webhook",outcome="delivered"} 1.0' in text
    assert 'queuectl_notifications_total{notifier="webhook",outcome="failed"} 1.0' in text
    assert 'queuectl_notifications_total{notifier="command",outcome="failed"} 1.0' in text


def test_a_receiver_down_past_max_age_drops_the_notification_and_says_so(q: Any) -> None:
    q.config("notify.webhook.url", f"http://127.0.0.1:{free_port()}/hook")
    q.config("notify.webhook.max_age", "1s")
    q.run("enqueue", "--id", "doomed", "--max-retries", "0", "--cmd", "false")
    worker = q.start_worker()
    q.wait_state("doomed", "dead")
    q.wait_for(lambda: q.json("status")["counts"]["dead"] and _dropped(q), timeout=30, what="the drop")
    err = stop_worker(worker)
    assert "notifier 'webhook' dropped the dead notification" in err and "max_age" in err


def _dropped(q: Any) -> bool:
    """Whether the outbox's one row has been settled as expired (read as the dashboard would)."""
    from queuectl_core.framework.app import App

    app = App(q.home)
    try:
        return app.storage.notification_counts().get(("webhook", "expired"), 0) == 1
    finally:
        app.close()


def test_bad_notify_settings_are_refused(q: Any) -> None:
    for key, value, says in (("notify.webhook.url", "ftp://x/y", "http:// or https://"),
                             ("notify.webhook.events", "dead,explode", "unknown event 'explode'"),
                             ("notify.command_events", "finished", "choose among completed, failed"),
                             ("notify.webhook.max_age", "soon", "notify.webhook.max_age")):
        result = q.run("config", "set", key, value, check=False)
        assert result.returncode == 1 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert q.run("config", "set", "notify.webhook.max_age", "90m").stdout.strip() == "notify.webhook.max_age = 1h30m"


# -- the migration: from the schema just before the outbox's ------------------------------------
def _check_outbox_added(storage: Any) -> None:
    from queuectl_core.jobs.notifications import OutboxEntry

    assert storage.get("old") is not None and str(storage.get("old").state) == "dead"  # type: ignore[union-attr]
    assert storage.notification_counts() == {}
    assert storage.outbox_add([OutboxEntry("webhook", "n1", "dead", "{}")]) == ["n1"]
    [item] = storage.outbox_claim("w", ["webhook"], 30, 10)
    assert storage.outbox_settle(item, "delivered", None)
    assert storage.notification_counts() == {("webhook", "delivered"): 1}


def test_sqlite_outbox_migration(tmp_path: Path) -> None:
    import sqlite3

    from test_migrations import sqlite_schema_at

    from queuectl_plugins.sqlite_storage import _OUTBOX, MIGRATIONS, SCHEMA_VERSION, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, MIGRATIONS.index(_OUTBOX))  # the release before the outbox
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, last_exit_code, queue) VALUES ('old', 'false', 'dead', 1, 0, 0, 1, 2, 1, 1, 'default')")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        _check_outbox_added(storage)
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        storage.close()


def test_postgres_outbox_migration() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import MIGRATIONS, PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    mine = next(i for i, sql in enumerate(MIGRATIONS) if "CREATE TABLE {s}.outbox" in sql)
    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, mine)  # the release before the outbox
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, attempts, max_retries, last_exit_code)"
                         " VALUES ('old', 'false', 'dead', 1, 0, 1)")
        storage = PostgresStorage(dsn)
        try:
            _check_outbox_added(storage)
        finally:
            storage.close()
