"""The dashboard as a person sees it: Debian's Chromium, headless, driven by Playwright.

Playwright drives the system browser (``executable_path``); it never downloads one. Without a
browser these tests skip, except when ``CI`` is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_dashboard import Dash, _seed, free_port

CHROMIUM = os.environ.get("QUEUECTL_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (its own --user-data-dir) for each test."""
    yield from _browser(tmp_path)


def _browser(tmp_path: Path, **options: Any) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _unavailable(f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, **options)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def started(q: Any) -> Iterator[Any]:
    running: list[Dash] = []

    def start(**kw: Any) -> Dash:
        d = Dash(q, **kw)
        running.append(d)
        return d

    yield start
    for d in running:
        d.close()


def test_the_chart_labels_its_hour_by_the_clock_just_after_midnight(q: Any, started: Any, tmp_path: Path) -> None:
    """In a time zone where it is now just past midnight, the chart's first minute (an hour ago) is
    yesterday's: its label is still the time of day, not a date cut short ("2026-")."""
    import re
    from datetime import UTC, datetime

    from playwright.sync_api import expect

    hour = datetime.now(UTC).hour
    offset = -hour if hour <= 12 else 24 - hour  # local = UTC + offset: between 00:00 and 01:00
    zone = "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # the Etc/ names count the other way
    d = started()
    for context in _browser(tmp_path, timezone_id=zone):
        page = context.new_page()
        page.goto(d.base + "/")
        expect(page.locator("#tp-chart svg g.minute")).to_have_count(60)
        first = page.locator("#tp-chart .x span").first.inner_text()
        assert re.fullmatch(r"\d\d:\d\d", first), first
        assert page.evaluate("new Date().getHours()") == 0
        hint = page.locator("#tp-chart g.minute title").first.text_content() or ""
        assert re.match(r"\d\d:\d\d · ", hint), hint


def test_page_shows_updates_and_acts(q: Any, started: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _seed(q)  # ok1 completed, bad1 dead, later pending (delayed)
    d = started()
    page = browser.new_page()
    page.goto(d.base + "/")
    for job_id in ("ok1", "bad1", "later"):
        expect(page.locator(f'#jobs tr[data-id="{job_id}"]')).to_be_visible()
    expect(page.locator('[data-state="dead"] .n')).to_have_text("1")
    expect(page.locator('[data-state="completed"] .n')).to_have_text("1")
    expect(page.locator('#jobs tr[data-id="bad1"] .state')).to_have_text("dead")

    # A job enqueued from the terminal appears without a reload, within 2 s.
    q.run("enqueue", "--id", "fresh", "--cmd", "true", "--delay", "1h")
    started_at = time.monotonic()
    expect(page.locator('#jobs tr[data-id="fresh"]')).to_be_visible(timeout=5000)
    assert time.monotonic() - started_at < 2.5
    expect(page.locator('[data-state="pending"] .n')).to_have_text("2")

    # Cancel and retry by clicking; the database says so.
    page.locator('#jobs tr[data-id="later"] button[data-action="cancel"]').click()
    q.wait_state("later", "cancelled", timeout=10)
    expect(page.locator('#jobs tr[data-id="later"] .state')).to_have_text("cancelled")
    page.locator('#jobs tr[data-id="bad1"] button[data-action="retry"]').click()
    q.wait_state("bad1", "pending", timeout=10)
    assert q.job("bad1")["attempts"] == 0
    expect(page.locator('#jobs tr[data-id="bad1"] .state')).to_have_text("pending")
    page.screenshot(path=str(tmp_path / "dashboard-1280x900.png"))

    # Filters: dead shows none now; the state card toggles the filter.
    page.select_option("#f-state", "cancelled")
    expect(page.locator("#jobs tr")).to_have_count(1)
    expect(page.locator('#jobs tr[data-id="later"]')).to_be_visible()
    page.locator('[data-state="cancelled"]').click()
    expect(page.locator("#jobs tr")).to_have_count(4)

    # Running jobs: the worker list shows the newest claim of a worker with --slots and "+N more"
    # for the others; the detail follows the job's log.
    for job_id in ("z1", "z2"):
        q.run("enqueue", "--id", job_id, "--cmd", "sleep 30")
    q.start_worker("--slots", "3")
    expect(page.locator("#workers")).to_contain_text("+1 more", timeout=10000)
    q.run("enqueue", "--id", "talker", "--cmd", "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done")
    expect(page.locator("#workers a")).to_have_text("talker", timeout=10000)
    expect(page.locator("#workers")).to_contain_text("+2 more")
    page.screenshot(path=str(tmp_path / "dashboard-workers.png"))
    page.locator('#jobs tr[data-id="talker"]').click()
    expect(page.locator("#d-log")).to_contain_text("line 2", timeout=10000)
    expect(page.locator("#d-log-note")).to_contain_text("live")
    expect(page.locator("#d-log")).to_contain_text("line 5", timeout=10000)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)


class _Evil(BaseHTTPRequestHandler):
    """Another site the person visits while the dashboard is open: it tries to act on the queue."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = f"""<!doctype html><body>
<form id="f" method="POST" action="{self.target}/api/jobs/bad1/retry"></form>
<script>
fetch("{self.target}/api/jobs/later/cancel", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: "x"}}).catch(() => {{}}).finally(() => {{
  document.title = "sent"; document.getElementById("f").submit(); }});
</script></body>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_forged_cross_site_post_changes_nothing(q: Any, started: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    _seed(q)
    d = started()
    page = browser.new_page()
    page.goto(d.base + "/")  # the person has the dashboard open: its cookies are in the browser
    expect(page.locator('#jobs tr[data-id="bad1"]')).to_be_visible()

    _Evil.target = d.base
    evil = ThreadingHTTPServer(("127.0.0.1", free_port()), _Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        attacker = browser.new_page()
        attacker.goto(f"http://localhost:{evil.server_address[1]}/")
        attacker.wait_for_url(d.base + "/api/jobs/bad1/retry", timeout=10000)  # the form went off
        assert "cross-site" in attacker.content()
    finally:
        evil.shutdown()
    time.sleep(0.3)
    assert q.job("bad1")["state"] == "dead"
    assert q.job("later")["state"] == "pending"


def test_token_in_the_page_url_becomes_a_cookie(q: Any, started: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    _seed(q)
    d = started(token="browser-token")
    page = browser.new_page()
    response = page.goto(d.base + "/")
    assert response is not None and response.status == 401
    page.goto(d.base + "/?token=browser-token")
    assert page.url == d.base + "/"  # the token left the address bar
    expect(page.locator('#jobs tr[data-id="bad1"]')).to_be_visible()
    page.locator('#jobs tr[data-id="bad1"] button[data-action="retry"]').click()
    q.wait_state("bad1", "pending", timeout=10)
    cookie = next(c for c in browser.cookies() if c["name"] == "queuectl_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("browser-token") == -1


def test_queues_pause_resume_and_schedules_on_the_page(q: Any, started: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    q.run("enqueue", "--id", "e1", "--cmd", "true", "--queue", "emails", "--tag", "nightly", "--delay", "1h")
    q.run("enqueue", "--id", "d1", "--cmd", "true", "--delay", "1h")
    q.run("schedule", "add", "backup", "--every", "1h", "--cmd", "echo backup")
    d = started()
    page = browser.new_page()
    page.goto(d.base + "/")

    def paused(name: str) -> bool:
        return {x["name"]: x["paused"] for x in q.json("queue", "list")}[name]

    def wait_paused(name: str, want: bool) -> None:
        deadline = time.monotonic() + 10
        while paused(name) != want:
            assert time.monotonic() < deadline, f"{name} paused is not {want}"
            time.sleep(0.1)

    row = page.locator('#queues tr[data-queue="emails"]')
    row.locator('button[data-action="pause"]').click()
    wait_paused("emails", True)
    assert not paused("default")
    expect(row.locator(".paused")).to_be_visible()
    row.locator('button[data-action="resume"]').click()
    wait_paused("emails", False)
    expect(row.locator('button[data-action="pause"]')).to_be_visible()
    expect(row.locator(".paused")).to_have_count(0)

    # A schedule added from the terminal appears, with its next run an hour away.
    expect(page.locator('#schedules tr[data-schedule="backup"] .next')).to_contain_text("in 59m")
    q.run("schedule", "add", "report", "--cron", "0 6 * * *", "--tz", "UTC", "--cmd", "echo report")
    expect(page.locator('#schedules tr[data-schedule="report"]')).to_contain_text("0 6 * * *", timeout=5000)
    expect(page.locator('#schedules tr[data-schedule="report"] .next')).to_contain_text("in ")

    # The tag filter shows only the tagged job.
    page.fill("#f-tag", "nightly")
    expect(page.locator("#jobs tr")).to_have_count(1)
    expect(page.locator('#jobs tr[data-id="e1"]')).to_be_visible()


def test_throughput_chart_and_job_view_attempts(q: Any, started: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _seed(q)  # ok1 completed (one attempt), bad1 dead after two failed attempts
    d = started()
    page = browser.new_page()
    page.goto(d.base + "/#bad1")
    # The chart: 60 minutes, the bars of this minute, the totals beside it.
    expect(page.locator("#tp-chart svg g.minute")).to_have_count(60)
    expect(page.locator("#tp-ok")).to_have_text("1")
    expect(page.locator("#tp-bad")).to_have_text("2")
    expect(page.locator("#tp-chart rect.ok")).to_have_count(1)
    assert page.locator("#tp-chart rect.bad").count() >= 1
    box = page.locator("#tp-chart svg").bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] >= 80
    # The job view: what show shows, one row per attempt.
    expect(page.locator('#d-fields dd[data-field="state"]')).to_have_text("dead (in the DLQ): exit 3")
    expect(page.locator('#d-fields dd[data-field="retries"]')).to_contain_text("1 retry (2 runs at most")
    rows = page.locator("#d-history tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td").nth(0)).to_have_text("1")
    expect(rows.nth(1).locator("td.end")).to_contain_text("exit 3")
    expect(rows.nth(1).locator("td").nth(6)).to_contain_text("worker-")
    rows.nth(0).click()  # an attempt's row shows its log
    expect(page.locator("#d-log-note")).to_contain_text("attempt 1")
    expect(page.locator("#d-log")).to_contain_text("broken")
    page.screenshot(path=str(tmp_path / "dashboard-throughput.png"))
