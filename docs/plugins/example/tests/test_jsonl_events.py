"""The plugin as a user has it: installed, found through its entry point, driven by the real CLI."""

import json

from click.testing import CliRunner

from queuectl_core.cli.main import cli


def test_events_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEUECTL_HOME", str(tmp_path))
    runner = CliRunner()
    for args in (["enqueue", "--id", "one", "--cmd", "echo one"], ["worker", "start", "--burst"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["enqueued", "worker_started", "claimed", "completed",
                                                "worker_stopped"]
    assert lines[3]["job"]["id"] == "one" and lines[3]["exit_code"] == 0


def test_the_path_is_a_config_key(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEUECTL_HOME", str(tmp_path / "home"))
    elsewhere = tmp_path / "logs" / "queue-events.jsonl"
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "jsonl_events.path", str(elsewhere)]).exit_code == 0
    assert runner.invoke(cli, ["enqueue", "--id", "two", "--cmd", "true"]).exit_code == 0
    assert json.loads(elsewhere.read_text())["kind"] == "enqueued"
