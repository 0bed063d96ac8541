"""Turning user input (flags, a JSON object, an array, JSON Lines) into validated NewJobs."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

from queuectl_core.errors import ValidationError
from queuectl_core.ids import new_id
from queuectl_core.models import NewJob
from queuectl_core.timeutil import parse_time

ALLOWED_KEYS = ("id", "command", "max_retries", "priority", "run_at", "delay", "timeout")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")
_MAX_PRIORITY = 2**31 - 1


def _int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{key!r} must be >= {minimum}, got {value!r}")
    if abs(value) > _MAX_PRIORITY:
        raise ValidationError(f"{key!r} is out of range: {value!r}")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{key!r} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > 10 * 365 * 86400:
        raise ValidationError(f"{key!r} must be between 0 and ten years in seconds, got {value!r}")
    return float(value)


def validate(obj: Any, default_max_retries: int) -> NewJob:
    """One job object to a NewJob, or ValidationError naming the offending key."""
    if not isinstance(obj, dict):
        raise ValidationError(f"a job must be a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in ALLOWED_KEYS]
    if unknown:
        raise ValidationError(f"unknown key {unknown[0]!r} (allowed: {', '.join(ALLOWED_KEYS)})")
    command = obj.get("command")
    if "command" not in obj:
        raise ValidationError("'command' is required")
    if not isinstance(command, str) or not command.strip():
        raise ValidationError("'command' must be a non-empty string")
    if "\x00" in command:
        raise ValidationError("'command' must not contain NUL bytes")
    job_id = obj.get("id")
    if job_id is None:
        job_id = new_id()
    elif not isinstance(job_id, str) or not _ID_RE.match(job_id):
        raise ValidationError(
            f"'id' must be 1-128 characters of letters, digits and ._:@+-, starting with a letter or digit; "
            f"got {job_id!r}"
        )
    max_retries = default_max_retries if obj.get("max_retries") is None else _int("max_retries", obj["max_retries"], 0)
    priority = 0 if obj.get("priority") is None else _int("priority", obj["priority"])
    run_at = None
    if obj.get("run_at") is not None:
        if not isinstance(obj["run_at"], str):
            raise ValidationError(f"'run_at' must be an ISO 8601 time string, got {obj['run_at']!r}")
        try:
            run_at = parse_time(obj["run_at"])
        except ValueError as exc:
            raise ValidationError(f"'run_at': {exc}") from None
    delay = None if obj.get("delay") is None else _seconds("delay", obj["delay"])
    if run_at is not None and delay is not None:
        raise ValidationError("give 'run_at' or 'delay', not both")
    timeout = None
    if obj.get("timeout") is not None:
        timeout = _seconds("timeout", obj["timeout"])
        if timeout == 0:
            raise ValidationError("'timeout' must be > 0")
    return NewJob(id=job_id, command=command, max_retries=max_retries, priority=priority,
                  run_at=run_at, delay=delay, timeout=timeout)


def parse_documents(text: str) -> list[Any]:
    """One JSON object, an array of them, or JSON Lines."""
    stripped = text.strip()
    if not stripped:
        raise ValidationError("no jobs in input")
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError as whole_error:
        objs = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if lineno == 1 and not objs:
                    raise ValidationError(f"invalid JSON: {whole_error.msg} (line {whole_error.lineno} column {whole_error.colno})") from None
                raise ValidationError(f"invalid JSON on line {lineno}: {exc.msg} (column {exc.colno})") from None
        return objs
    if isinstance(doc, list):
        if not doc:
            raise ValidationError("no jobs in input (empty array)")
        return doc
    return [doc]


def validate_all(objs: Iterable[Any], default_max_retries: int) -> list[NewJob]:
    """All valid or ValidationError naming which job (1-based) and key; ids unique in the batch."""
    jobs: list[NewJob] = []
    seen: set[str] = set()
    objs = list(objs)
    for n, obj in enumerate(objs, 1):
        try:
            job = validate(obj, default_max_retries)
        except ValidationError as exc:
            raise ValidationError(f"job {n}: {exc}" if len(objs) > 1 else str(exc)) from None
        if job.id in seen:
            raise ValidationError(f"job {n}: duplicate id {job.id!r} in the input")
        seen.add(job.id)
        jobs.append(job)
    return jobs
