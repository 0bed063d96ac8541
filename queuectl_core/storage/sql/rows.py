"""A job's row: the columns, and the conversions between a Job and its stored form."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.jobs.models import NewJob

JOB_COLUMNS: tuple[str, ...] = ("id", "command", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
               "run_at", "timeout", "last_exit_code", "last_error", "log_path", "output_tail", "worker_id",
               "lease_token", "lease_expires_at", "cancel_requested",
               "queue", "waiting", "unique_key", "retry_on", "no_retry_on")
# Where a job runs, its tags, how long its last attempt took (columns added by a later migration).
CONTROL_COLUMNS = ("cwd", "env", "tags", "last_duration")
JOB_COLUMNS += CONTROL_COLUMNS
CONTROL_AT = JOB_COLUMNS.index(CONTROL_COLUMNS[0])
# -- history: the number of its latest attempt (never reused), and the host that claimed it last --
HISTORY_COLUMNS = ("last_attempt", "host")
JOB_COLUMNS += HISTORY_COLUMNS
HISTORY_AT = JOB_COLUMNS.index(HISTORY_COLUMNS[0])
# -- accounting: what the last finished attempt used (CPU seconds, peak resident bytes) --
ACCOUNTING_COLUMNS = ("last_cpu_seconds", "last_max_rss_bytes")
JOB_COLUMNS += ACCOUNTING_COLUMNS
# -- limits: the job's own memory (bytes) and CPU time (seconds); see queuectl_core.storage.sql.limits --
LIMIT_COLUMNS = ("memory", "cpu_time")
JOB_COLUMNS += LIMIT_COLUMNS
LIMITS_AT = JOB_COLUMNS.index(LIMIT_COLUMNS[0])
# -- needs: what the job must be given to run, as queuectl_core.jobs.needs stores it ("gpu=1") --
NEEDS_COLUMNS = ("needs",)
JOB_COLUMNS += NEEDS_COLUMNS
NEEDS_AT = JOB_COLUMNS.index("needs")
COLS = ", ".join(JOB_COLUMNS)
QUEUE_COL = JOB_COLUMNS.index("queue")


def codes_out(codes: Sequence[int] | None) -> str | None:
    """Exit codes as stored: ``"1,75"``."""
    return ",".join(str(c) for c in codes) if codes is not None else None


def columns(rows: Sequence[Sequence[Any]]) -> tuple[int, list[tuple[bool, Any]]]:
    """A batch of rows by column, each either (True, the value every row has) or (False, the
    values): what the enqueue spool pickles (a batch of one shape is its ids and commands)."""
    n = len(rows)
    if not n:
        return 0, [(True, None)] * len(JOB_COLUMNS)
    return n, [(True, c[0]) if c.count(c[0]) == n else (False, c) for c in zip(*rows)]


def tags_in(text: str | None) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t) if text else ()


def codes_in(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(c) for c in text.split(",")) if text else None


# -- cwd, env and tags between NewJob/Job and their stored form ----------------------------------
def control_values(job: NewJob) -> dict[str, Any]:
    """A NewJob's cwd, env and tags as stored: env as JSON text, tags as ",a,b," (so one LIKE finds a tag)."""
    import json

    return {"cwd": job.cwd, "env": json.dumps(job.env, sort_keys=True) if job.env else None,
            "tags": "," + ",".join(job.tags) + "," if job.tags else None}


def json_loads(text: str) -> Any:
    import json  # here: a job without env (`enqueue --cmd true`) never needs json (~1 ms to import)

    return json.loads(text)


def control_fields(row: Sequence[Any], at: int) -> dict[str, Any]:
    cwd, env, tags, duration, last_attempt, host, cpu, rss = row[at:at + 8]
    return {"cwd": cwd, "env": json_loads(env) if env else {}, "tags": tuple(t for t in (tags or "").split(",") if t),
            "last_duration": duration, "last_attempt": last_attempt or 0, "host": host,
            "last_cpu_seconds": cpu, "last_max_rss_bytes": rss}


def limit_fields(row: Sequence[Any]) -> dict[str, Any]:
    """A row's limits; a row a backend's insert built without them (a job given none) has none."""
    if len(row) <= LIMITS_AT:
        return {}
    return {"memory": row[LIMITS_AT], "cpu_time": seconds_in(row[LIMITS_AT + 1])}


def seconds_in(value: Any) -> float | None:
    return float(value) if value is not None else None  # SQLite gives a whole REAL back as an int
