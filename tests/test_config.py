"""`queuectl config`: validated keys, atomic writes, where each value comes from, broken files."""

from __future__ import annotations

import json
import tomllib
from typing import Iterator

import pytest
from conftest import Q
from test_enqueue import assert_one_line_error


def settings(q: Q, env: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    return json.loads(q.run("config", "show", "--json", env=env).stdout)["settings"]


def test_dash_and_underscore_are_one_key(q: Q) -> None:
    out = q.run("config", "set", "max-retries", "5").stdout
    assert out.strip() == "max_retries = 5"
    q.run("config", "set", "max_retries", "6")
    data = tomllib.loads((q.home / "config.toml").read_text())
    assert data["max_retries"] == 6
    assert "max-retries" not in data
    assert settings(q)["max_retries"]["value"] == 6


def test_config_values_take_effect(q: Q) -> None:
    q.config("max_retries", 1)
    q.run("enqueue", "--id", "from-file", "--cmd", "true")
    q.run("enqueue", "--id", "from-env", "--cmd", "true", env={"QUEUECTL_MAX_RETRIES": "0"})
    q.run("enqueue", "--id", "explicit", "--cmd", "true", "--max-retries", "4")
    jobs = {j["id"]: j["max_retries"] for j in q.json("list")}
    assert jobs == {"from-file": 1, "from-env": 0, "explicit": 4}


def test_show_reports_value_default_and_source(q: Q) -> None:
    # The fixture set poll_interval_ms in config.toml; max_retries is untouched.
    s = settings(q)
    assert s["max_retries"] == {**s["max_retries"], "value": 3, "default": 3, "source": "default"}
    assert s["poll_interval_ms"]["value"] == 50
    assert s["poll_interval_ms"]["default"] == 500
    assert s["poll_interval_ms"]["source"] == "config.toml"
    for key in ("max_retries", "backoff_base", "poll_interval_ms", "lease_seconds", "storage", "executor",
                "backoff", "sqlite.path"):
        assert key in s, key
    q.config("max_retries", 5)
    s = settings(q, env={"QUEUECTL_MAX_RETRIES": "9"})
    assert (s["max_retries"]["value"], s["max_retries"]["source"]) == (9, "env QUEUECTL_MAX_RETRIES")
    # The human form says the same, one line per key.
    text = q.run("config", "show", env={"QUEUECTL_MAX_RETRIES": "9"}).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("max_retries "))
    assert "9" in line and "default 3" in line and "QUEUECTL_MAX_RETRIES" in line


def test_env_override_is_noted_by_set(q: Q) -> None:
    proc = q.run("config", "set", "max_retries", "2", env={"QUEUECTL_MAX_RETRIES": "7"})
    assert "QUEUECTL_MAX_RETRIES" in proc.stderr  # the user would otherwise wonder why 2 has no effect


def test_bad_env_value_is_one_line_naming_the_variable(q: Q) -> None:
    proc = q.run("enqueue", "--cmd", "true", env={"QUEUECTL_MAX_RETRIES": "lots"}, check=False)
    assert_one_line_error(proc, "QUEUECTL_MAX_RETRIES")
    assert q.json("list") == []


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Q]:
    home = tmp_path_factory.mktemp("home")
    helper = Q(home)
    helper.config("max_retries", 4)
    helper.config("backoff_base", 1.5)
    yield helper
    helper.cleanup()


BAD_SETS = [
    (["retries", "3"], "retries"),
    (["sqlite.nonsense", "1"], "sqlite.nonsense"),
    (["max_retries", "-1"], "max_retries"),
    (["max_retries", "1.5"], "max_retries"),
    (["max_retries", "many"], "max_retries"),
    (["max_retries", "true"], "max_retries"),
    (["backoff_base", "0"], "backoff_base"),
    (["backoff_base", "-2"], "backoff_base"),
    (["backoff_base", "nan"], "backoff_base"),
    (["poll_interval_ms", "0"], "poll_interval_ms"),
    (["lease_seconds", "soon"], "lease_seconds"),
    (["storage", "redis"], "redis"),
    (["executor", "docker"], "docker"),
    (["backoff", "linear"], "linear"),
    (["logs.max_bytes", "64Q"], "not a size"),
    (["logs.max_bytes", "0.5K"], ">= 1024"),
]


@pytest.mark.parametrize("args, needle", BAD_SETS, ids=[" ".join(a) for a, _ in BAD_SETS])
def test_bad_set_is_rejected_and_file_untouched(configured: Q, args: list[str], needle: str) -> None:
    path = configured.home / "config.toml"
    before = path.read_bytes()
    proc = configured.run("config", "set", *args, check=False)
    assert_one_line_error(proc, needle)
    assert path.read_bytes() == before


def test_a_size_in_bytes_may_be_typed_with_a_unit(q: Q) -> None:
    q.run("config", "set", "logs.max_bytes", "64K")
    q.run("config", "set", "subprocess.max_log_bytes", "1.5M")
    data = tomllib.loads((q.home / "config.toml").read_text())
    assert data["logs"]["max_bytes"] == 65536 and data["subprocess"]["max_log_bytes"] == 1572864


def test_set_writes_atomically_and_leaves_no_temp_files(q: Q) -> None:
    path = q.home / "config.toml"
    inode = path.stat().st_ino
    q.config("max_retries", 2)
    # A new inode means the file was replaced by rename, never rewritten in place where a crash
    # or a concurrent reader could see half a file. (Checked after one write: a second one may
    # reuse the inode the first one freed.)
    assert path.stat().st_ino != inode
    q.config("sqlite.synchronous", "FULL")
    assert sorted(p.name for p in q.home.iterdir()) == ["config.toml"]
    data = tomllib.loads(path.read_text())
    assert data["max_retries"] == 2 and data["sqlite"]["synchronous"] == "FULL"
    assert data["poll_interval_ms"] == 50  # earlier keys survive a set of another key


CORRUPT_COMMANDS = [
    ["status"], ["status", "--json"], ["list"], ["enqueue", "--cmd", "true"], ["config", "show"],
    ["config", "set", "max_retries", "1"], ["plugins", "list"], ["worker", "start", "--burst"],
    ["worker", "stop"], ["dlq", "list"], ["dlq", "retry", "x"], ["logs", "x"],
]


def test_corrupt_config_fails_every_command_with_one_line(q: Q) -> None:
    path = q.home / "config.toml"
    broken = b"max_retries = [oops\n"
    path.write_bytes(broken)
    for args in CORRUPT_COMMANDS:
        proc = q.run(*args, check=False, timeout=20)
        assert_one_line_error(proc, "config.toml")
        assert proc.stdout == "", args
    # Nothing "repaired" it behind the user's back, and no queue appeared.
    assert path.read_bytes() == broken
    assert sorted(p.name for p in q.home.iterdir()) == ["config.toml"]


def test_invalid_value_in_config_file_is_reported(q: Q) -> None:
    path = q.home / "config.toml"
    path.write_text('max_retries = "three"\n')
    proc = q.run("status", check=False)
    assert_one_line_error(proc, "config.toml", "max_retries")
    path.write_text('storage = "nowhere"\n')
    assert_one_line_error(q.run("status", check=False), "nowhere")


def test_secrets_are_masked_in_show(q: Q) -> None:
    if "postgres.dsn" not in settings(q):
        pytest.skip("the postgres plugin (which has the one secret key) is not installed")
    q.config("postgres.dsn", "postgresql://app:hunter2@db.example/queue")
    shown = q.run("config", "show").stdout + q.run("config", "show", "--json").stdout
    assert "hunter2" not in shown
    assert "postgresql://app:****@db.example/queue" in shown  # the rest stays readable for debugging
