"""`POST /api/jobs`: enqueue through the dashboard, only with its token, with `enqueue`'s checks,
defaults, messages and events; against the real `queuectl dashboard` process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from process_helpers import install_plugin

httpx = pytest.importorskip("httpx")

TOKEN = "s3cret-token"
RECORDER = ("from queuectl_core.api import hookimpl\n"
            "@hookimpl\n"
            "def queuectl_job_event(event):\n"
            "    if event.kind == 'enqueued':\n"
            "        with open({log!r}, 'a') as fh:\n"
            "            fh.write(f'{{event.kind}} {{event.job.id}}\\n')\n")


def _listed(q: Any, job_id: str) -> dict[str, Any]:
    job = q.job(job_id)
    job.pop("log_path")  # the dashboard never sends a log path
    return job


def test_enqueue_with_the_token(qb: Any, dash: Any, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    qb.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "recorder", RECORDER.format(log=str(log))))
    d = dash(token=TOKEN)
    r = d.http.post("/api/jobs", json={"id": "web1", "command": "echo from the web", "priority": 4,
                                       "tags": ["web"], "env": {"WHO": "web"}})
    assert r.status_code == 201, r.text
    assert r.json() == _listed(qb, "web1")
    assert r.json()["state"] == "pending" and r.json()["cwd"] is None  # runs in the worker's directory
    assert r.json()["max_retries"] == 3  # the config's default, as for `queuectl enqueue`
    # A list: all or none, in one transaction, `after` naming an earlier job of it.
    r = d.http.post("/api/jobs", json=[{"id": "a", "command": "true"}, {"id": "b", "command": "true", "after": ["a"]}])
    assert r.status_code == 201, r.text
    assert [j["id"] for j in r.json()] == ["a", "b"] and r.json()[1]["after"] == ["a"]
    assert r.json() == [_listed(qb, "a"), _listed(qb, "b")]
    assert log.read_text().splitlines() == ["enqueued web1", "enqueued a", "enqueued b"]
    qb.run("worker", "start", "--burst", timeout=120)
    assert qb.run("logs", "web1").stdout == "from the web\n"
    assert {j["id"]: j["state"] for j in qb.json("list")} == {"web1": "completed", "a": "completed", "b": "completed"}


@pytest.mark.parametrize("body", [
    {"command": "true", "priorty": 1},
    {"command": "true", "priority": "high"},
    {"command": "true", "delay": 5, "run_at": "2030-01-01T00:00:00Z"},
    {"id": "bad id!", "command": "true"},
    {"comand": "true"},
], ids=["unknown key", "type", "delay and run_at", "id", "no command"])
def test_a_bad_job_is_400_with_the_cli_message(q: Any, dash: Any, body: dict[str, Any]) -> None:
    d = dash(token=TOKEN)
    cli = q.run("enqueue", json.dumps(body), check=False)
    assert cli.returncode == 1
    r = d.http.post("/api/jobs", json=body)
    assert r.status_code == 400 and r.json() == {"error": cli.stderr.removeprefix("Error: ").rstrip("\n")}
    assert q.json("list") == []


def test_bad_bodies_and_conflicts(q: Any, dash: Any) -> None:
    d = dash(token=TOKEN)
    r = d.http.post("/api/jobs", content=b'{"command": ')
    assert r.status_code == 400 and r.json()["error"].startswith("invalid JSON")
    assert d.http.post("/api/jobs", content=b"\xff\xfe").status_code == 400
    assert d.http.post("/api/jobs", content=b"").json() == {"error": "no jobs in input"}
    r = d.http.post("/api/jobs", json=[{"id": "x1", "command": "true"}, {"id": "x2", "command": 5}])
    assert r.status_code == 400 and r.json() == {"error": "job 2: 'command' must be a non-empty string"}
    assert q.json("list") == []  # all or none
    assert d.http.post("/api/jobs", json={"id": "once", "command": "true", "unique_key": "k"}).status_code == 201
    dup = d.http.post("/api/jobs", json={"id": "once", "command": "true"})
    assert dup.status_code == 409 and dup.json() == {"error": "a job with id 'once' already exists"}
    held = d.http.post("/api/jobs", json={"command": "true", "unique_key": "k"})
    assert held.status_code == 409 and "is held by job 'once'" in held.json()["error"]
    assert [j["id"] for j in q.json("list")] == ["once"]


def test_refused_without_a_configured_token_even_on_loopback(q: Any, dash: Any) -> None:
    d = dash()  # no token: the page works on loopback, enqueueing does not
    job = {"id": "nope", "command": "touch /tmp/never"}
    for r in (d.http.post("/api/jobs", json=job),
              d.http.post("/api/jobs", json=job, headers={"Authorization": f"Bearer {TOKEN}"})):
        assert r.status_code == 403 and "start the dashboard with --token" in r.json()["error"]
    client, csrf = d.session()  # the page's own session, with its CSRF token: refused too
    r = client.post("/api/jobs", json=job, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin",
                                                     "Origin": d.base})
    assert r.status_code == 403 and "--token" in r.json()["error"]
    client.close()
    assert q.json("list") == [] and not (q.home / "queue.db").exists()


def test_with_a_token_every_other_way_is_refused(q: Any, dash: Any) -> None:
    d = dash(token=TOKEN)
    job = {"id": "nope", "command": "true"}
    anon = httpx.Client(base_url=d.base, timeout=10)
    assert anon.post("/api/jobs", json=job).status_code == 401  # loopback, no token
    assert anon.post("/api/jobs", json=job, headers={"Authorization": "Bearer wrong"}).status_code == 401
    # The token in the URL authenticates a page, not a program's POST: it needs the CSRF token too.
    assert anon.post(f"/api/jobs?token={TOKEN}", json=job).status_code == 403
    # A browser holding the token cookie: only from the page itself (CSRF token, same origin).
    assert anon.get(f"/?token={TOKEN}").status_code == 303
    page = anon.get("/")
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    for headers in ({}, {"X-CSRF-Token": "guess"}, {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
                    {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}):
        assert anon.post("/api/jobs", json=job, headers=headers).status_code == 403, headers
    assert q.json("list") == []
    ok = anon.post("/api/jobs", json=job, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin",
                                                   "Origin": d.base})
    assert ok.status_code == 201 and [j["id"] for j in q.json("list")] == ["nope"]
    anon.close()
