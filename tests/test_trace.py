from __future__ import annotations


def test_trace_plugins_names_each_hook_call(q):
    q.run("enqueue", "--id", "t1", "--cmd", "true")
    out = q.run("worker", "start", "--burst", env={"QUEUECTL_TRACE_PLUGINS": "1"})
    assert "queuectl trace: queuectl_register_storages -> sqlite" in out.stderr
    assert "queuectl trace: queuectl_job_event -> stdout" in out.stderr
    quiet = q.run("status")
    assert "queuectl trace" not in quiet.stderr
