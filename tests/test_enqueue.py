"""`queuectl enqueue`: every input form, generated ids, all-or-nothing files, and rejected input."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Q


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The error contract: non-zero exit, exactly one ``Error:`` line on stderr, no traceback."""
    assert proc.returncode != 0, f"expected failure, got exit 0; stdout: {proc.stdout!r}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{proc.stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def ids_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return proc.stdout.split()


# -- the input forms ----------------------------------------------------------------------------
def test_flags_set_every_field(q: Q) -> None:
    proc = q.run("enqueue", "--id", "j1", "--cmd", "echo hi", "--max-retries", "5", "--priority", "-7",
                 "--run-at", "2030-01-10T10:35:00+02:00", "--timeout", "2.5")
    assert proc.stdout == "j1\n"
    job = q.job("j1")
    assert (job["command"], job["state"], job["attempts"]) == ("echo hi", "pending", 0)
    assert (job["max_retries"], job["priority"], job["timeout"]) == (5, -7, 2.5)
    # An offset is converted, not dropped: one UTC format everywhere.
    assert job["run_at"] == "2030-01-10T08:35:00.000Z"


def test_defaults_and_delay(q: Q) -> None:
    plain = ids_of(q.run("enqueue", "--cmd", "true"))[0]
    later = ids_of(q.run("enqueue", "--cmd", "true", "--delay", "3600"))[0]
    job = q.job(plain)
    assert (job["max_retries"], job["priority"], job["timeout"]) == (3, 0, None)
    assert job["run_at"] == job["created_at"]
    job = q.job(later)
    wait = (parse(job["run_at"]) - parse(job["created_at"])).total_seconds()
    assert abs(wait - 3600) < 1


def test_positional_json(q: Q) -> None:
    proc = q.run("enqueue", '{"id": "job1", "command": "sleep 2", "priority": 3, "delay": 60}')
    assert proc.stdout == "job1\n"
    job = q.job("job1")
    assert (job["command"], job["priority"]) == ("sleep 2", 3)
    assert parse(job["run_at"]) > parse(job["created_at"])


@pytest.mark.parametrize("form", ["object", "array", "jsonl"])
def test_file_forms(q: Q, tmp_path: Path, form: str) -> None:
    jobs = [{"id": "a", "command": "echo a"}, {"id": "b", "command": "echo b", "priority": 2},
            {"id": "c", "command": "echo c", "max_retries": 0}]
    if form == "object":
        jobs = jobs[:1]
        text = json.dumps(jobs[0], indent=2)  # a pretty-printed object spans lines: not JSON Lines
    elif form == "array":
        text = json.dumps(jobs, indent=2)
    else:
        text = "\n".join(json.dumps(j) for j in jobs[:2]) + "\n\n" + json.dumps(jobs[2]) + "\n"
    path = tmp_path / "jobs.json"
    path.write_text(text)
    proc = q.run("enqueue", "--file", str(path))
    assert ids_of(proc) == [j["id"] for j in jobs]
    stored = {j["id"]: j for j in q.json("list")}
    assert set(stored) == {j["id"] for j in jobs}
    for j in jobs:
        assert stored[j["id"]]["command"] == j["command"]
        assert stored[j["id"]]["priority"] == j.get("priority", 0)


def test_file_from_stdin(q: Q) -> None:
    lines = "".join(json.dumps({"command": f"echo {n}"}) + "\n" for n in range(3))
    ids = ids_of(q.run("enqueue", "--file", "-", input=lines))
    assert len(ids) == 3
    assert sorted(j["command"] for j in q.json("list")) == ["echo 0", "echo 1", "echo 2"]


def test_generated_ids_are_unique_and_sortable(q: Q) -> None:
    first = ids_of(q.run("enqueue", "--cmd", "true"))
    batch = ids_of(q.run("enqueue", "--file", "-",
                         input="".join(json.dumps({"command": f"echo {n}"}) + "\n" for n in range(50))))
    last = ids_of(q.run("enqueue", "--cmd", "true"))
    ids = first + batch + last
    assert len(set(ids)) == len(ids) == 52
    # Sortable: creation order (across processes, and within one batch) is id order.
    assert ids == sorted(ids)
    assert all(len(i) <= 26 for i in ids), "generated ids should be short"
    by_id = {j["id"]: j["command"] for j in q.json("list")}
    assert [by_id[i] for i in batch] == [f"echo {n}" for n in range(50)]


# -- all or nothing -----------------------------------------------------------------------------
@pytest.mark.parametrize("third, needle, form", [
    ({"id": "x3", "command": "echo 3", "priority": "high"}, "priority", "jsonl"),
    ({"id": "seed", "command": "echo 3"}, "seed", "array"),  # an id already in the queue
    ({"id": "x1", "command": "echo 3"}, "x1", "jsonl"),      # an id twice in one file
])
def test_file_is_all_or_nothing(q: Q, third: dict[str, Any], needle: str, form: str) -> None:
    q.run("enqueue", "--id", "seed", "--cmd", "echo seed")
    before = q.run("list", "--json").stdout
    jobs = [{"id": "x1", "command": "echo 1"}, {"id": "x2", "command": "echo 2"}, third,
            {"id": "x4", "command": "echo 4"}]
    text = json.dumps(jobs) if form == "array" else "".join(json.dumps(j) + "\n" for j in jobs)
    proc = q.run("enqueue", "--file", "-", input=text, check=False)
    assert_one_line_error(proc, needle)
    assert proc.stdout == ""
    assert q.run("list", "--json").stdout == before


def test_duplicate_id_fails_and_keeps_the_original(q: Q) -> None:
    q.run("enqueue", "--id", "job1", "--cmd", "echo original", "--priority", "4")
    before = q.run("list", "--json").stdout
    # The seed printed an error for this and exited 0; scripts must be able to see it failed.
    proc = q.run("enqueue", "--id", "job1", "--cmd", "echo impostor", check=False)
    assert_one_line_error(proc, "job1", "already exists")
    proc = q.run("enqueue", '{"id": "job1", "command": "echo impostor"}', check=False)
    assert_one_line_error(proc, "job1")
    assert q.run("list", "--json").stdout == before


# -- rejected input -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Q]:
    """One queue shared by the rejection cases: none of them may change it, so sharing is safe,
    and one comparison at the end (rather than a `list` process per case) proves it."""
    home = tmp_path_factory.mktemp("home")
    helper = Q(home)
    helper.run("enqueue", "--id", "seed", "--cmd", "echo seed")
    before = helper.run("list", "--json").stdout
    yield helper
    assert helper.run("list", "--json").stdout == before, "a rejected enqueue changed the queue"
    helper.cleanup()


BAD_JSON = [
    ('{"command": "x"', "JSON"),
    ('{"command": "x"} {"command": "y"}', "JSON"),
    ('["not", "an object"]', "object"),
    ('{}', "command"),
    ('{"id": "j"}', "command"),
    ('{"command": ""}', "command"),
    ('{"command": "   "}', "command"),
    ('{"command": 5}', "command"),
    ('{"command": "x", "retries": 3}', "retries"),
    ('{"command": "x", "max_retries": true}', "max_retries"),
    ('{"command": "x", "max_retries": -1}', "max_retries"),
    ('{"command": "x", "max_retries": 1.5}', "max_retries"),
    ('{"command": "x", "max_retries": "3"}', "max_retries"),
    ('{"command": "x", "priority": false}', "priority"),
    ('{"command": "x", "priority": 1e3}', "priority"),
    ('{"command": "x", "timeout": "5"}', "timeout"),
    ('{"command": "x", "timeout": 0}', "timeout"),
    ('{"command": "x", "timeout": true}', "timeout"),
    ('{"command": "x", "delay": -1}', "delay"),
    ('{"command": "x", "delay": NaN}', "delay"),
    ('{"command": "x", "run_at": "tomorrow"}', "run_at"),
    ('{"command": "x", "run_at": "2026-13-01T00:00:00Z"}', "run_at"),
    ('{"command": "x", "run_at": "2026-01-10T10:35:00"}', "run_at"),  # no zone: not guessed
    ('{"command": "x", "run_at": 1767000000}', "run_at"),
    ('{"command": "x", "run_at": "2026-01-10T10:35:00Z", "delay": 5}', "run_at"),
    ('{"command": "x", "id": ""}', "id"),
    ('{"command": "x", "id": 7}', "id"),
    ('{"command": "x", "id": "has space"}', "id"),
]


@pytest.mark.parametrize("text, key", BAD_JSON, ids=[t for t, _ in BAD_JSON])
def test_bad_job_json_is_rejected(seeded: Q, text: str, key: str) -> None:
    proc = seeded.run("enqueue", text, check=False)
    assert_one_line_error(proc, key)
    assert proc.stdout == ""


BAD_FLAGS = [
    (["--cmd", ""], "command"),
    (["--id", "j9", "--max-retries", "2"], "--cmd"),
    (["--cmd", "x", "--max-retries", "-1"], "--max-retries"),
    (["--cmd", "x", "--max-retries", "abc"], "--max-retries"),
    (["--cmd", "x", "--max-retries", "2.5"], "--max-retries"),
    (["--cmd", "x", "--priority", "high"], "--priority"),
    (["--cmd", "x", "--timeout", "-3"], "timeout"),
    (["--cmd", "x", "--run-at", "next week"], "--run-at"),
    (["--cmd", "x", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z"], "--run-at"),
    (["--cmd", "x", '{"command": "y"}'], "only one"),
    ([], "--cmd"),
]


@pytest.mark.parametrize("args, needle", BAD_FLAGS, ids=[" ".join(a) or "nothing" for a, _ in BAD_FLAGS])
def test_bad_flags_are_rejected(seeded: Q, args: list[str], needle: str) -> None:
    proc = seeded.run("enqueue", *args, check=False)
    assert_one_line_error(proc, needle)
    assert proc.stdout == ""


BAD_FILES = [
    (b"", "no jobs"),
    (b"[]", "no jobs"),
    (b"   \n\n", "no jobs"),
    (b'{"command": "a"}\n{"command": "b"\n', "line 2"),
    (b'[{"command": "a"}, 5]', "job 2"),
    (b"\xff\xfe{}", "UTF-8"),
]


@pytest.mark.parametrize("data, needle", BAD_FILES, ids=[repr(d) for d, _ in BAD_FILES])
def test_bad_files_are_rejected(seeded: Q, tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "jobs.json"
    path.write_bytes(data)
    proc = seeded.run("enqueue", "--file", str(path), check=False)
    assert_one_line_error(proc, needle)
    assert proc.stdout == ""


def test_missing_file_is_one_line(seeded: Q, tmp_path: Path) -> None:
    proc = seeded.run("enqueue", "--file", str(tmp_path / "nope.jsonl"), check=False)
    assert_one_line_error(proc, "nope.jsonl")


def test_times_before_year_1000_print_in_the_one_format_and_read_back(q: Any) -> None:
    """One time format everywhere, so what `list --json` prints is accepted as input."""
    q.run("enqueue", '{"id": "old", "command": "true", "run_at": "0001-01-01T00:00:00Z"}')
    shown = q.job("old")["run_at"]
    assert shown == "0001-01-01T00:00:00.000Z"
    q.run("enqueue", "--id", "again", "--cmd", "true", "--run-at", shown)
    assert q.job("again")["run_at"] == shown
