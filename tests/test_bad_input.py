"""Bad input, tried as a fuzzer would: every case is one ``Error:`` line on stderr, a non-zero
exit, no traceback, and neither the queue (dumped whole) nor config.toml changes. Cases that reach
storage run against SQLite and PostgreSQL.

Arguments holding lone surrogates reach the process as the invalid UTF-8 bytes they stand for
(subprocess encodes argv with surrogateescape), exactly as a shell's ``$'\\xff'`` would.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Q

from queuectl_plugins.postgres_testing import temporary_postgres_database

HUGE = "9" * 5000
DEEP = "[" * 100_000


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    needle: str = ""  # a word the error line must contain
    env: dict[str, str] = field(default_factory=dict)
    storage: bool = True  # reaches storage: run on every backend

    @property
    def id(self) -> str:
        text = " ".join(self.args) + "".join(f" {k}={v}" for k, v in self.env.items())
        return text[:60].encode("ascii", "backslashreplace").decode()


def _c(*args: str, needle: str = "", env: dict[str, str] | None = None, storage: bool = True) -> Case:
    return Case(tuple(args), needle, env or {}, storage)


CASES = [
    # -- from the issue
    _c("enqueue", DEEP, needle="nested too deeply"),
    _c("enqueue", "--file", "{dir}/deep.json", needle="nested too deeply"),
    _c("enqueue", f'{{"command": "x", "priority": {HUGE}}}', needle="digits"),
    _c("enqueue", "--file", "{dir}/huge.json", needle="digits"),
    _c("enqueue", "--cmd", "echo \udcff", needle="'command' is not valid UTF-8"),
    _c("enqueue", '{"command": "echo \\ud800"}', needle="'command' is not valid UTF-8"),
    _c("enqueue", "--file", "{dir}/surrogate3.jsonl", needle="line 3: 'command'"),
    _c("enqueue", "--file", "{dir}/latin1.json", needle="not UTF-8"),
    _c("logs", "\udcff", needle="not a job id"),
    _c("dlq", "retry", "dead\udcff", needle="not a job id"),
    _c("config", "set", "sqlite.path", "/tmp/q\udcff.db", needle="sqlite.path"),
    _c("list", "--limit", "99999999999999999999", needle="--limit"),
    _c("enqueue", "--file", "/proc/self/mem", needle="cannot read"),
    _c("status", env={"QUEUECTL_HOME": "~nosuchuser/q"}, needle="QUEUECTL_HOME"),
    _c("status", env={"QUEUECTL_SQLITE_PATH": "~nosuchuser/q.db"}, needle="~nosuchuser"),
    _c("status", env={"QUEUECTL_SUBPROCESS_LOG_DIR": "~nosuchuser/logs"}, needle="~nosuchuser"),
    _c("config", "set", "sqlite.path", "~nosuchuser/q.db", needle="no such user"),
    _c("config", "set", "subprocess.log_dir", "~nosuchuser/logs", needle="no such user"),
    _c("config", "set", "sqlite.path", "", needle="empty"),
    _c("config", "set", "lease_seconds", "1e-9", needle=">= 1"),
    _c("status", env={"QUEUECTL_LEASE_SECONDS": "1e-9"}, needle="QUEUECTL_LEASE_SECONDS"),
    # -- numbers: huge, NaN, inf, negative zero, fractions where integers belong
    _c("enqueue", "--cmd", "x", "--priority", HUGE, needle="--priority"),
    _c("enqueue", "--cmd", "x", "--max-retries", HUGE, needle="--max-retries"),
    _c("enqueue", "--cmd", "x", "--priority", "1.5", needle="--priority"),
    _c("enqueue", "--cmd", "x", "--delay", "nan", needle="delay"),
    _c("enqueue", "--cmd", "x", "--delay", "inf", needle="delay"),
    _c("enqueue", "--cmd", "x", "--delay", "1e400", needle="delay"),
    _c("enqueue", "--cmd", "x", "--delay", "-0", needle="delay"),
    _c("enqueue", "--cmd", "x", "--delay", "", needle="delay"),
    _c("enqueue", "--cmd", "x", "--delay", "11000d", needle="delay"),
    _c("enqueue", "--cmd", "x", "--timeout", "0", needle="timeout"),
    _c("enqueue", "--cmd", "x", "--timeout", "5 minutes", needle="timeout"),
    _c("enqueue", "--cmd", "x", "--run-at", "", needle="--run-at"),
    _c("enqueue", "--cmd", "x", "--run-at", "9999-12-31T23:59:59-14:00", needle="--run-at"),
    _c("enqueue", '{"command": "x", "timeout": 1e400}', needle="timeout"),
    _c("enqueue", '{"command": "x", "delay": NaN}', needle="delay"),
    _c("enqueue", '{"command": "x", "priority": -0.0}', needle="priority"),
    _c("enqueue", '{"command": "x", "max_retries": %s}' % ("9" * 4000), needle="max_retries"),
    _c("config", "set", "backoff_base", "nan", needle="backoff_base"),
    _c("config", "set", "backoff_base", "inf", needle="backoff_base"),
    _c("config", "set", "backoff_base", "-0", needle="backoff_base"),
    _c("config", "set", "backoff_base", "1e400", needle="backoff_base"),
    _c("config", "set", "max_retries", HUGE, needle="max_retries"),
    _c("config", "set", "poll_interval_ms", "0", needle="poll_interval_ms"),
    _c("config", "set", "poll_interval_ms", "0.5ms", needle="poll_interval_ms"),
    _c("config", "set", "lease_seconds", "-1m", needle="lease_seconds"),
    _c("worker", "start", "--count", HUGE, needle="--count"),
    _c("worker", "start", "--count", "0", needle="--count"),
    # -- strings: empty, NUL, too long, not JSON, unknown names
    _c("enqueue", "", needle="not a JSON job"),
    _c("enqueue", "echo hi", needle="--cmd 'echo hi'"),
    _c("enqueue", "--cmd", "", needle="command"),
    _c("enqueue", "--id", "", "--cmd", "x", needle="'id'"),
    _c("enqueue", "--id", "a" * 200, "--cmd", "x", needle="'id'"),
    _c("enqueue", '{"command": "a\\u0000b"}', needle="NUL"),
    _c("enqueue", '{"command": "x", "id": "\\ud800"}', needle="'id'"),
    _c("enqueue", '{"command": "x", "%s": 1}' % ("k" * 10_000), needle="unknown key"),
    _c("enqueue", "--cmd", "x", "--id", "seed1", needle="already exists"),
    _c("config", "set", "storage", "", needle="storage"),
    _c("config", "set", "lease_secs", "5", needle="did you mean 'lease_seconds'"),
    _c("config", "set", "no.such.key\udcff", "1", needle="unknown config key"),
    _c("list", "--state", "bogus", needle="--state"),
    _c("logs", "nosuchjob", needle="nosuchjob"),
    _c("dlq", "retry", "nosuchjob", needle="nosuchjob"),
    _c("dlq", "retry", "seed1", needle="seed1"),
    # -- files: directories, empty, missing
    _c("enqueue", "--file", "{dir}", needle="--file"),
    _c("enqueue", "--file", "{dir}/empty.json", needle="no jobs"),
    _c("enqueue", "--file", "{dir}/missing.json", needle="--file"),
    _c("enqueue", "--file", "{dir}/huge.jsonl", needle="digits"),
]


def _write_inputs(d: Path) -> None:
    d.mkdir(exist_ok=True)
    (d / "deep.json").write_text(DEEP)
    (d / "huge.json").write_text(f'{{"command": "x", "priority": {HUGE}}}')
    (d / "huge.jsonl").write_text(f'{{"command": "x"}}\n{{"command": "y", "priority": {HUGE}}}\n')
    (d / "surrogate3.jsonl").write_text('{"command": "a"}\n{"command": "b"}\n{"command": "echo \\udc00"}\n')
    (d / "latin1.json").write_bytes(b'{"command": "echo caf\xe9"}')
    (d / "empty.json").write_text("  \n")


def _sqlite_dump(home: Path) -> list[str]:
    conn = sqlite3.connect(home / "queue.db")
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _pg_dump(dsn: str) -> dict[str, list[Any]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'queuectl' ORDER BY 1")]
        assert tables, "no queuectl tables to compare"
        return {t: conn.execute(f'SELECT * FROM queuectl."{t}" ORDER BY 1').fetchall() for t in tables}


class Seeded:
    def __init__(self, q: Q, backend: str, dsn: str | None, inputs: Path) -> None:
        self.q, self.backend, self.dsn, self.inputs = q, backend, dsn, inputs

    def dump(self) -> Any:
        return _pg_dump(self.dsn) if self.dsn else _sqlite_dump(self.q.home)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request: Any, tmp_path_factory: Any) -> Iterator[Seeded]:
    base = tmp_path_factory.mktemp(f"bad-{request.param}")
    home = base / "home"
    home.mkdir()
    q = Q(home)
    inputs = base / "in"
    _write_inputs(inputs)
    with _maybe_pg(request.param) as dsn:
        if dsn:
            q.config("storage", "postgres")
            q.config("postgres.dsn", dsn)
        q.config("poll_interval_ms", 50)
        q.run("enqueue", "--id", "seed1", "--cmd", "echo seeded", "--priority", "3")
        q.run("enqueue", "--id", "dead1", "--cmd", "echo to the dlq; false", "--max-retries", "0")
        q.run("worker", "start", "--burst")
        q.run("enqueue", "--id", "later", "--cmd", "true", "--delay", "3600")
        yield Seeded(q, request.param, dsn, inputs)
        q.cleanup()


class _maybe_pg:
    def __init__(self, backend: str) -> None:
        self.cm = temporary_postgres_database() if backend == "postgres" else None

    def __enter__(self) -> str | None:
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc: Any) -> None:
        if self.cm:
            self.cm.__exit__(*exc)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(seeded: Seeded, case: Case) -> None:
    if seeded.backend != "sqlite" and not case.storage:
        pytest.skip("does not reach storage")
    q = seeded.q
    config_before = (q.home / "config.toml").read_bytes()
    db_before = seeded.dump()
    args = [a.replace("{dir}", str(seeded.inputs)) for a in case.args]
    proc = q.run(*args, check=False, env=case.env)
    assert proc.returncode != 0, f"exit 0; stdout: {proc.stdout[:300]!r}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[:2000]
    assert len(lines[0]) < 800, lines[0]  # quoted input is cut short, not echoed whole
    assert case.needle in lines[0], lines[0]
    assert proc.stdout == ""
    assert (q.home / "config.toml").read_bytes() == config_before
    assert seeded.dump() == db_before


@pytest.mark.parametrize("key, value", [("sqlite.path", "~nosuchuser/q.db"), ("sqlite.path", ""),
                                        ("subprocess.log_dir", "~nosuchuser/logs")])
def test_a_bad_path_in_config_toml_is_one_error_line(q: Q, key: str, value: str) -> None:
    section, name = key.split(".")
    (q.home / "config.toml").write_text(f'[{section}]\n{name} = "{value}"\n')
    for args in (("status",), ("list",), ("enqueue", "--cmd", "true")):
        proc = q.run(*args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert key in proc.stderr
