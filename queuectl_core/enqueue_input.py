"""What `queuectl enqueue` turns its flags and arguments into, and how it stores them.

Shared by the click command (queuectl_core.cli) and the click-free fast path
(queuectl_core.fast_enqueue), so both build, validate and store a job the same way. Kept free of
click and of heavy imports: the fast path imports it on every `queuectl enqueue`.
"""

from __future__ import annotations

import os

from queuectl_core.errors import ValidationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from queuectl_core.interfaces import Storage
    from queuectl_core.models import Job, NewJob


def flag_job(job_id: str | None = None, command: str | None = None, max_retries: int | None = None,
             priority: int | None = None, delay: str | None = None, run_at: str | None = None,
             timeout: str | None = None, queue: str | None = None, unique_key: str | None = None,
             retry_on: str | None = None, no_retry_on: str | None = None, after: str | None = None) -> dict[str, Any]:
    """The job object the flags give (only the flags given), as a JSON job would hold it."""
    flags = {"id": job_id, "command": command, "max_retries": max_retries, "priority": priority,
             "delay": delay, "run_at": run_at, "timeout": timeout,
             # -- scheduling (spec §11) --
             "queue": queue, "unique_key": unique_key, "retry_on": retry_on, "no_retry_on": no_retry_on,
             "after": [a.strip() for a in after.split(",") if a.strip()] if after is not None else None}
    return {k: v for k, v in flags.items() if v is not None}


def with_control_defaults(objs: list[Any], cwd: str | None, env: tuple[str, ...],
                          tags: tuple[str, ...]) -> list[Any]:
    """§10: every job records where it was enqueued from (``--cwd`` overrides), and carries the
    ``--env`` and ``--tag`` given; a job object's own ``cwd``, ``env`` keys and ``tags`` win."""
    if cwd is None:
        try:
            where: str | None = os.getcwd()
        except OSError:  # the shell's directory was removed: the worker's own is all there is
            where = None
    else:
        where = os.path.abspath(os.path.expanduser(cwd))
        if not os.path.isdir(where):
            raise ValidationError(f"--cwd {cwd!r} is not a directory")
    extra: dict[str, str] = {}
    for item in env:
        key, eq, value = item.partition("=")
        if not eq:
            if key not in os.environ:
                raise ValidationError(f"--env {key}: {key} is not set in this shell (give --env {key}=VALUE)")
            value = os.environ[key]
        extra[key] = value
    out = []
    for obj in objs:
        if isinstance(obj, dict):
            obj = dict(obj)
            if "cwd" not in obj and where is not None:
                obj["cwd"] = where
            if extra:
                obj["env"] = {**extra, **obj["env"]} if isinstance(obj.get("env"), dict) else obj.get("env", extra)
            if tags:
                obj["tags"] = [*tags, *obj["tags"]] if isinstance(obj.get("tags"), list) else obj.get("tags", list(tags))
        out.append(obj)
    return out


def flag_times(flags: dict[str, Any]) -> dict[str, Any]:
    """Flags are typed by people: durations with units, and a --run-at without a zone is local
    time. Converted here to what a JSON job holds; jobspec then checks ranges as for JSON."""
    from queuectl_core.timeutil import format_time, parse_duration, parse_time

    parsers = {"delay": parse_duration, "timeout": parse_duration,
               "run_at": lambda text: format_time(parse_time(text, local_if_naive=True))}
    out: dict[str, Any] = {}
    for key, parse in parsers.items():
        if key in flags:
            try:
                out[key] = parse(flags[key])
            except ValueError as exc:
                raise ValidationError(f"{key!r}: {exc}") from None
    return out


def parse_job_argument(text: str) -> Any:
    """The positional JSON job; something that is plainly a shell command gets a hint to --cmd."""
    import json

    from queuectl_core import jobspec

    try:
        obj = jobspec.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] not in ("{", "[", '"'):
            suggest_cmd(text)
        raise ValidationError(f"invalid JSON job: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, (dict, list)):
        suggest_cmd(text)
    return obj


def suggest_cmd(text: str) -> NoReturn:
    import shlex

    from queuectl_core.jobspec import short

    try:
        text.encode("utf-8")
        quoted = shlex.quote(text)
    except UnicodeEncodeError:
        quoted = "'...'"
    if len(quoted) > 80:
        quoted = "'...'"
    raise ValidationError(f"{short(text)} is not a JSON job; to enqueue a shell command use: "
                          f"queuectl enqueue --cmd {quoted}")


def enqueue_with_fresh_ids(storage: Storage, jobs: list[NewJob], given_ids: set[Any]) -> list[Job]:
    """Enqueue; a clash on an id we generated (never one the user chose) draws a new id."""
    from dataclasses import replace

    from queuectl_core.errors import DuplicateJobError
    from queuectl_core.ids import new_id

    for _ in range(5):
        try:
            return storage.enqueue(jobs)
        except DuplicateJobError as exc:
            if exc.job_id in given_ids:
                raise
            jobs = [replace(j, id=new_id()) if j.id == exc.job_id else j for j in jobs]
    return storage.enqueue(jobs)


