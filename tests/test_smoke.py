from __future__ import annotations


def test_enqueue_then_burst_drains_and_logs(q):
    q.run("enqueue", "--id", "hello", "--cmd", "echo hi there")
    q.run("worker", "start", "--burst")
    assert q.job("hello")["state"] == "completed"
    assert q.run("logs", "hello").stdout == "hi there\n"
