"""`queuectl dashboard`: its JSON API, /metrics, tokens and CSRF, on SQLite and PostgreSQL.

Every test runs the real command as a process and talks HTTP to it; the browser tests are in
test_dashboard_browser.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import QUEUECTL

httpx = pytest.importorskip("httpx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dash:
    """A running `queuectl dashboard` and an HTTP client for it."""

    def __init__(self, q: Any, *args: str, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.port = free_port()
        self.base = f"http://{host}:{self.port}"
        extra = ["--token", token] if token else []
        self.proc = subprocess.Popen([*QUEUECTL, "dashboard", "--host", host, "--port", str(self.port), *extra, *args],
                                     env=q.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        q.procs.append(self.proc)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited {self.proc.returncode}: {self.proc.communicate()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the dashboard did not start")
            time.sleep(0.05)

    def get(self, path: str, **kw: Any) -> Any:
        r = self.http.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json() if r.headers["content-type"].startswith("application/json") else r.text

    def session(self) -> tuple[Any, str]:
        """A browser-like session: the page sets the CSRF cookie and shows its token."""
        client = httpx.Client(base_url=self.base, headers=dict(self.http.headers), timeout=10)
        page = client.get("/")
        assert page.status_code == 200
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        return client, token

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def _seed(q: Any) -> None:
    q.run("enqueue", "--id", "ok1", "--cmd", "echo one")
    q.run("enqueue", "--id", "bad1", "--cmd", "echo broken >&2; exit 3", "--max-retries", "1")
    q.config("backoff_base", 0.01)
    q.run("worker", "start", "--burst")
    q.run("enqueue", "--id", "later", "--cmd", "true", "--delay", "1h")


def _api_round_trip(q: Any, d: Dash) -> None:
    """What the page relies on, through the JSON API, checked against the CLI's own view."""
    o = d.get("/api/overview")
    assert o["counts"] == q.counts()
    assert o["counts"]["completed"] == 1 and o["counts"]["dead"] == 1 and o["counts"]["pending"] == 1
    assert [x["name"] for x in o["queues"]] == ["default"] and o["queues"][0]["counts"]["dead"] == 1
    assert o["workers"] == [] and o["schedules"] == []

    page = d.get("/api/jobs", params={"limit": 2})
    assert [j["id"] for j in page["jobs"]] == ["later", "bad1"] and page["next"] == "bad1"
    page = d.get("/api/jobs", params={"limit": 2, "before": page["next"]})
    assert [j["id"] for j in page["jobs"]] == ["ok1"] and page["next"] is None
    assert [j["id"] for j in d.get("/api/jobs", params={"state": "dead"})["jobs"]] == ["bad1"]
    assert d.get("/api/jobs", params={"queue": "nope"})["jobs"] == []
    assert len(d.get("/api/jobs", params={"queue": "default"})["jobs"]) == 3
    assert d.http.get("/api/jobs", params={"state": "bogus"}).status_code == 409

    detail = d.get("/api/jobs/bad1")
    assert detail["attempts"] == 2 and detail["last_error"] == "exit 3"
    assert [a["attempt"] for a in detail["attempt_logs"]] == [1, 2]
    log = d.get("/api/jobs/bad1/log")
    assert log["attempt"] == 2 and "broken" in log["text"] and not log["running"]
    assert "broken" in d.get("/api/jobs/bad1/log", params={"attempt": 1})["text"]
    assert d.http.get("/api/jobs/nope").status_code == 404

    # Actions, from a browser-like session holding the CSRF token.
    client, csrf = d.session()
    r = client.post("/api/jobs/bad1/retry", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert q.job("bad1")["state"] == "pending" and q.job("bad1")["attempts"] == 0
    assert client.post("/api/jobs/later/cancel", headers={"X-CSRF-Token": csrf}).json()["state"] == "cancelled"
    assert q.job("later")["state"] == "cancelled"
    assert client.post("/api/jobs/ok1/restart", headers={"X-CSRF-Token": csrf}).json()["state"] == "pending"
    refused = client.post("/api/jobs/ok1/retry", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 409 and "not in the DLQ" in refused.json()["error"]
    client.close()


def _queues_tags_schedules(q: Any, d: Dash) -> None:
    """Control and scheduling through the page's API: the CLI's queues, tags and schedules, and pausing a
    queue from the page is what `queue pause` does (`queue list` says so)."""
    q.run("enqueue", "--id", "t1", "--cmd", "true", "--queue", "emails", "--tag", "nightly", "--delay", "1h")
    q.run("enqueue", "--id", "t2", "--cmd", "true", "--queue", "emails", "--delay", "1h")
    q.run("enqueue", "--id", "t3", "--cmd", "true", "--tag", "nightly", "--tag", "other", "--delay", "1h")
    assert [j["id"] for j in d.get("/api/jobs", params={"tag": "nightly"})["jobs"]] == ["t3", "t1"]
    assert [j["id"] for j in d.get("/api/jobs", params={"tag": "other"})["jobs"]] == ["t3"]
    assert d.get("/api/jobs", params={"tag": "nope"})["jobs"] == []
    assert [j["id"] for j in d.get("/api/jobs", params={"queue": "emails"})["jobs"]] == ["t2", "t1"]
    assert [j["id"] for j in d.get("/api/jobs", params={"queue": "emails", "tag": "nightly"})["jobs"]] == ["t1"]
    assert d.get("/api/jobs/t3")["tags"] == ["nightly", "other"]

    def paused() -> dict[str, bool]:
        return {x["name"]: x["paused"] for x in q.json("queue", "list")}

    q.run("queue", "set", "emails", "--concurrency", "2")
    queues = {x["name"]: x for x in d.get("/api/overview")["queues"]}
    assert set(queues) == {"default", "emails"}
    assert queues["emails"]["counts"]["pending"] == 2 and queues["emails"]["concurrency"] == 2
    client, csrf = d.session()
    assert client.post("/api/queues/emails/pause", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert paused() == {"default": False, "emails": True}
    assert {x["name"]: x["paused"] for x in d.get("/api/overview")["queues"]}["emails"] is True
    assert client.post("/api/queues/emails/resume", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert paused() == {"default": False, "emails": False}
    # A queue can be paused before its first job, as with `queue pause`; a bad name changes nothing.
    assert client.post("/api/queues/later-q/pause", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert paused()["later-q"] is True
    bad = client.post("/api/queues/%20bad%20name/pause", headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 409 and "not a queue name" in bad.json()["error"]
    assert set(paused()) == {"default", "emails", "later-q"}
    client.close()

    q.run("schedule", "add", "backup", "--every", "1h", "--cmd", "echo backup")
    q.run("schedule", "add", "report", "--cron", "0 6 * * *", "--tz", "UTC", "--cmd", "echo report")
    want = {s["name"]: s["next_tick"] for s in q.json("schedule", "list")}
    got = {s["name"]: s for s in d.get("/api/overview")["schedules"]}
    assert {n: s["next_tick"] for n, s in got.items()} == want and all(want.values())
    assert got["report"]["cron"] == "0 6 * * *" and got["backup"]["job"]["command"] == "echo backup"


def test_api_on_sqlite(q: Any, dash: Any) -> None:
    _seed(q)
    d = dash()
    _api_round_trip(q, d)
    _queues_tags_schedules(q, d)


def test_api_on_postgres_shows_workers_of_every_host(q: Any, dash: Any) -> None:
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database() as dsn:
        # A password in the DSN (trust auth ignores it) must never reach a page or a response.
        secret_dsn = dsn.replace("postgres@", "postgres:hunter2-secret@") if "postgres@" in dsn else dsn
        q.config("storage", "postgres")
        q.config("postgres.dsn", secret_dsn)
        _seed(q)
        d = dash()
        _api_round_trip(q, d)
        _queues_tags_schedules(q, d)

        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:  # a worker on another machine
            conn.execute("INSERT INTO queuectl.workers (id, hostname, pid, started_at, last_seen, current_job)"
                         " VALUES ('worker-42', 'far-away-host', 42, now(), now(), NULL)")
        hosts = {w["hostname"] for w in d.get("/api/overview")["workers"]}
        assert "far-away-host" in hosts
        assert "queuectl_workers 1.0" in d.get("/metrics")
        for path in ("/", "/api/overview", "/api/jobs", "/api/jobs/ok1", "/metrics", "/static/app.js"):
            assert "hunter2" not in d.http.get(path).text, path
        d.close()


def test_metrics(q: Any, dash: Any) -> None:
    _seed(q)
    d = dash()
    text = d.get("/metrics")
    assert 'queuectl_jobs{queue="default",state="dead"} 1.0' in text
    assert 'queuectl_jobs{queue="default",state="completed"} 1.0' in text
    assert "# TYPE queuectl_workers gauge" in text and "queuectl_workers 0.0" in text
    assert "# TYPE queuectl_job_attempts_total counter" in text
    assert 'queuectl_job_attempts_total{outcome="completed"} 1.0' in text
    assert 'queuectl_job_attempts_total{outcome="failed"} 2.0' in text
    # The delayed job is not ready: nothing has waited yet.
    assert 'queuectl_oldest_ready_job_age_seconds{queue="default"} 0.0' in text
    # A second queue: its own job counts and its own oldest-ready age; pausing shows.
    q.run("enqueue", "--id", "ready", "--cmd", "true", "--queue", "emails")
    time.sleep(1.1)
    text = d.get("/metrics")
    assert 'queuectl_jobs{queue="emails",state="pending"} 1.0' in text
    assert 'queuectl_jobs{queue="default",state="pending"} 1.0' in text
    assert 'queuectl_jobs{queue="emails",state="dead"} 0.0' in text
    ages = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("queuectl_oldest_ready_job_age_seconds{")}
    assert ages["emails"] >= 1.0 and ages["default"] == 0.0
    assert 'queuectl_queue_paused{queue="emails"} 0.0' in text
    # A paused queue's jobs are not ready to run: no age, and the paused gauge says why.
    q.run("queue", "pause", "emails")
    text = d.get("/metrics")
    assert 'queuectl_oldest_ready_job_age_seconds{queue="emails"} 0.0' in text
    assert 'queuectl_queue_paused{queue="emails"} 1.0' in text
    assert 'queuectl_queue_paused{queue="default"} 0.0' in text

    # Restarting a job resets its stored attempts; the exported counter still never goes down.
    client, csrf = d.session()
    assert client.post("/api/jobs/bad1/retry", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert 'queuectl_job_attempts_total{outcome="failed"} 2.0' in d.get("/metrics")
    client.close()


def test_forged_cross_site_posts_change_nothing(q: Any, dash: Any) -> None:
    _seed(q)
    d = dash()
    client, csrf = d.session()
    forged = [
        # A form on another site: no CSRF header, the browser says cross-site.
        dict(headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
        # Even with the victim's cookie and a guessed token.
        dict(headers={"X-CSRF-Token": "guess", "Sec-Fetch-Site": "same-origin"}),
        # The right token cannot be sent from another origin.
        dict(headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}),
        dict(headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}),
    ]
    for kw in forged:
        r = client.post("/api/jobs/bad1/retry", **kw)
        assert r.status_code == 403, (kw, r.status_code)
    # No cookie at all (a fresh client): refused too.
    assert httpx.post(d.base + "/api/jobs/bad1/retry", headers={"X-CSRF-Token": csrf}).status_code == 403
    assert httpx.post(d.base + "/api/queues/default/pause").status_code == 403
    assert q.job("bad1")["state"] == "dead"
    # The page's own request goes through.
    ok = client.post("/api/jobs/bad1/retry", headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin",
                                                    "Origin": d.base})
    assert ok.status_code == 200 and q.job("bad1")["state"] == "pending"
    client.close()


def test_loopback_refuses_other_host_names(q: Any, dash: Any) -> None:
    """Without a token, only loopback names are served: a DNS-rebinding page gets nothing."""
    d = dash()
    assert d.http.get("/api/overview").status_code == 200
    assert d.http.get("/api/overview", headers={"Host": "evil.example:8777"}).status_code == 401


def test_token_is_required_for_every_request(q: Any, dash: Any) -> None:
    _seed(q)
    d = dash(token="s3cret-token")
    anon = httpx.Client(base_url=d.base, timeout=10)
    for path in ("/", "/api/overview", "/api/jobs", "/api/jobs/ok1", "/api/jobs/ok1/log", "/metrics",
                 "/static/app.js"):
        assert anon.get(path).status_code == 401, path
        assert anon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert anon.post("/api/jobs/bad1/retry").status_code == 401
    # Prometheus' way: the bearer header (and a program with it needs no CSRF token).
    assert "queuectl_jobs" in d.get("/metrics")
    assert d.http.post("/api/jobs/bad1/retry").status_code == 200
    # A person's way: ?token= on the page URL, then kept in an HttpOnly cookie, out of the URL.
    r = anon.get("/?token=s3cret-token")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "queuectl_token=s3cret-token" in cookie and "httponly" in cookie.lower()
    assert anon.get("/").status_code == 200 and anon.get("/api/overview").status_code == 200
    assert "s3cret-token" not in anon.get("/").text
    anon.close()


def test_off_loopback_needs_a_token(q: Any, dash: Any) -> None:
    proc = q.run("dashboard", "--host", "0.0.0.0", "--port", str(free_port()), check=False, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: the dashboard listens on 0.0.0.0") and proc.stderr.count("\n") == 1
    assert "--token" in proc.stderr
    d = dash(host="0.0.0.0", token="tok")  # with one, it starts; and every request needs it
    assert httpx.get(f"http://127.0.0.1:{d.port}/api/overview").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{d.port}/api/overview", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_settings_and_the_missing_extra(q: Any, tmp_path: Any) -> None:
    q.config("dashboard.port", 9999)
    assert q.run("config", "set", "dashboard.port", "70000", check=False).returncode != 0
    q.config("dashboard.token", "very-secret")
    assert "very-secret" not in q.run("config", "show").stdout
    # Without the web extra: one line saying what to install. A module named starlette that
    # fails to import stands in for the missing package.
    fake = tmp_path / "nostarlette"
    fake.mkdir()
    (fake / "starlette").mkdir()
    (fake / "starlette" / "__init__.py").write_text("raise ImportError('no', name='starlette')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), *sys.path])}
    proc = q.run("dashboard", check=False, env=env, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("Error: the dashboard needs the web extra (starlette is missing): "
                                   "pip install 'queuectl[web]'")


def test_importing_the_plugin_loads_no_web_library() -> None:
    """Every queuectl command imports every plugin: the dashboard's must cost nothing."""
    code = ("import sys, queuectl_plugins.dashboard\n"
            "heavy = [m for m in ('starlette', 'uvicorn', 'prometheus_client', 'anyio') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_keyset_paging_over_many_jobs(q: Any, dash: Any) -> None:
    """Deep pages cost what the first does: walk 3,000 jobs 200 at a time, each once."""
    lines = "\n".join(f'{{"id": "j{i:05d}", "command": "true"}}' for i in range(3000))
    q.run("enqueue", "--file", "-", input=lines)
    d = dash()
    seen: list[str] = []
    cursor = None
    while True:
        page = d.get("/api/jobs", params={"limit": 200, **({"before": cursor} if cursor else {})})
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"j{i:05d}" for i in reversed(range(3000))]
    assert len(d.get("/api/jobs", params={"limit": 100000})["jobs"]) == 200  # capped


def _throughput(q: Any, dash: Any) -> None:
    """Attempts finished per minute over the last hour, from the stored attempts: ok1's one run
    completed, bad1's two failed (a real worker ran them); the same after a restart."""
    from datetime import datetime, timedelta

    _seed(q)
    for _ in range(2):  # a dashboard started afresh knows as much: nothing is counted in memory
        d = dash()
        t = d.get("/api/throughput")
        minutes = t["minutes"]
        assert len(minutes) == 60
        at = [datetime.fromisoformat(m["at"].replace("Z", "+00:00")) for m in minutes]
        assert all(b - a == timedelta(minutes=1) for a, b in zip(at, at[1:]))
        assert all(a.second == 0 and a.microsecond == 0 for a in at)
        now = datetime.fromisoformat(t["now"].replace("Z", "+00:00"))
        assert at[-1] <= now < at[-1] + timedelta(minutes=1)  # the current minute last
        assert (sum(m["completed"] for m in minutes), sum(m["failed"] for m in minutes)) == (1, 2)
        assert (t["completed"], t["failed"]) == (1, 2)
        # Each in the minute it finished: the minutes of the attempts `show --json` lists.
        shown = {(a["finished_at"][:16], "completed" if a["exit_code"] == 0 and not a["error"] else "failed")
                 for job_id in ("ok1", "bad1") for a in q.json("show", job_id)["attempts"]}
        assert shown == {(m["at"][:16], k) for m in minutes for k in ("completed", "failed") if m[k]}
        d.close()


def test_throughput_on_sqlite(q: Any, dash: Any) -> None:
    _throughput(q, dash)


def test_throughput_on_postgres(q: Any, dash: Any) -> None:
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database() as dsn:
        q.config("storage", "postgres")
        q.config("postgres.dsn", dsn)
        _throughput(q, dash)


def test_job_view_is_what_show_shows(q: Any, dash: Any) -> None:
    q.config("backoff_base", 0.01)
    q.run("enqueue", "--id", "flaky", "--cmd", "exit 2", "--max-retries", "1", "--tag", "deploy", "--env",
          "API_TOKEN=s3cret", "--env", "MODE=fast", "--cwd", "/tmp", "--timeout", "30", "--unique-key", "u1")
    q.run("worker", "start", "--burst")
    d = dash()
    job = d.get("/api/jobs/flaky")
    shown = q.json("show", "flaky")
    assert [{k: v for k, v in a.items() if k != "log_path"} for a in shown["attempts"]] == job["history"]
    assert [a["attempt"] for a in job["history"]] == [1, 2]
    assert job["env"] == {"API_TOKEN": "***", "MODE": "fast"} and "s3cret" not in d.http.get("/api/jobs/flaky").text
    assert job["why"] == "dead (in the DLQ): exit 2"
    assert job["retry_rules"] == "1 retry (2 runs at most, 2 so far)"
    assert (job["cwd"], job["unique_key"], job["timeout"], job["after"], job["orphaned"]) == ("/tmp", "u1", 30, [],
                                                                                              False)


def _histograms(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The accounting histograms' samples of a scrape: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("queuectl_job_duration_seconds", "queuectl_job_max_rss_bytes"):
            assert family.type == "histogram"
            for s in family.samples:
                # A bucket's bound as Python writes the float (the exposition may write 6.7108864e+07).
                labels = {k: str(float(v)) if k == "le" and v != "+Inf" else v for k, v in s.labels.items()}
                out[s.name, tuple(sorted(labels.items()))] = s.value
    return out


def test_accounting_in_the_api_and_metrics(qb: Any, dash: Any) -> None:
    import shlex

    q = qb
    q.run("enqueue", "--id", "before", "--cmd", "true")
    q.run("worker", "start", "--burst")
    d = dash()
    assert _histograms(d.get("/metrics")) == {}  # what finished before it started is not counted
    allocate = shlex.quote(sys.executable) + " -c " + shlex.quote(
        "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])")
    q.run("enqueue", "--id", "mem", "--queue", "big", "--cmd", allocate)
    q.run("enqueue", "--id", "bad", "--max-retries", "0", "--cmd", "sleep 0.2; exit 3")
    q.run("enqueue", "--id", "ok", "--cmd", "true")
    q.run("worker", "start", "--burst", timeout=120)

    # The JSON API: the jobs table's took and memory, the job view's attempts.
    jobs = {j["id"]: j for j in d.get("/api/jobs")["jobs"]}
    assert jobs["mem"]["last_max_rss_bytes"] >= 150 * 1024 * 1024 and jobs["mem"]["last_duration"] > 0
    [attempt] = d.get("/api/jobs/mem")["history"]
    assert attempt["max_rss_bytes"] == jobs["mem"]["last_max_rss_bytes"] and attempt["cpu_seconds"] > 0
    assert d.get("/api/jobs/bad")["history"][0]["exit_code"] == 3

    h = _histograms(d.get("/metrics"))
    count = "queuectl_job_duration_seconds_count"
    assert h[count, (("outcome", "completed"), ("queue", "big"))] == 1
    assert h[count, (("outcome", "completed"), ("queue", "default"))] == 1  # ok; not `before`
    assert h[count, (("outcome", "failed"), ("queue", "default"))] == 1
    bucket = "queuectl_job_duration_seconds_bucket"
    assert h[bucket, (("le", "0.1"), ("outcome", "failed"), ("queue", "default"))] == 0  # it slept 0.2 s
    assert h[bucket, (("le", "+Inf"), ("outcome", "failed"), ("queue", "default"))] == 1
    assert h["queuectl_job_duration_seconds_sum", (("outcome", "failed"), ("queue", "default"))] >= 0.2
    rss = "queuectl_job_max_rss_bytes_bucket"
    assert h[rss, (("le", str(float(64 * 1024 * 1024))), ("queue", "big"))] == 0
    assert h[rss, (("le", str(float(256 * 1024 * 1024))), ("queue", "big"))] == 1
    assert h["queuectl_job_max_rss_bytes_sum", (("queue", "big"),)] >= 150 * 1024 * 1024
    assert ("queuectl_job_max_rss_bytes_count", (("queue", "default"),)) not in h  # too small to measure

    # Counted once, however often scraped; removing jobs (as retention does) lowers nothing.
    q.run("remove", "mem", "bad", "ok")
    assert _histograms(d.get("/metrics")) == h
    # A dashboard started now counts from now; the first still counts what it saw.
    assert _histograms(dash().get("/metrics")) == {}
    q.run("enqueue", "--id", "more", "--cmd", "true")
    q.run("worker", "start", "--burst")
    assert _histograms(d.get("/metrics"))[count, (("outcome", "completed"), ("queue", "default"))] == 2
