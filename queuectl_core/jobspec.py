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

ALLOWED_KEYS: tuple[str, ...] = ("id", "command", "max_retries", "priority", "run_at", "delay", "timeout")
# -- §10: where a job runs and how it is found again -------------------------------------------------
CONTROL_KEYS = ("cwd", "env", "tags")
ALLOWED_KEYS += CONTROL_KEYS
TAG_RULE = "1-64 characters of letters, digits and ._:@+/-"
_TAG_RE = re.compile(r"[A-Za-z0-9._:@+/-]{1,64}\Z")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# -- end §10
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")
_MAX_PRIORITY = 2**31 - 1
ID_RULE = "1-128 characters of letters, digits and ._:@+-, starting with a letter or digit"


def is_job_id(text: str) -> bool:
    """Whether text can be a job id at all (every stored id is one): ASCII, so always encodable."""
    return _ID_RE.match(text) is not None and text.isascii()


def short(value: Any, limit: int = 60) -> str:
    """repr() cut to one readable length: error lines quote input, which may be megabytes."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return "<an integer too long to show>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def loads(text: str) -> Any:
    """json.loads, with every way it can fail as a ValidationError (JSONDecodeError carries the
    position; nesting too deep and numbers too long to convert raise other exceptions)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValidationError("invalid JSON: nested too deeply") from None
    except ValueError:  # an integer beyond Python's int-string conversion limit
        raise ValidationError("invalid JSON: a number has too many digits") from None


def utf8_text(key: str, value: str) -> str:
    """Commands and ids are stored and shown as UTF-8 text: a lone surrogate (from an argument
    with invalid UTF-8 bytes, or a JSON ``\\ud800`` escape) is refused, naming the key."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        what = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"lone surrogate U+{ord(bad):04X}"
        raise ValidationError(f"{key!r} is not valid UTF-8 text ({what} at character {exc.start})") from None
    return value


def _int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{key!r} must be an integer, got {short(value)}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{key!r} must be >= {minimum}, got {short(value)}")
    if abs(value) > _MAX_PRIORITY:
        raise ValidationError(f"{key!r} is out of range (at most {_MAX_PRIORITY}): {short(value)}")
    return value


def _seconds(key: str, value: Any) -> float:
    # JSON keeps its types: a number of seconds (durations with units are for people, on flags).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{key!r} must be a number of seconds, got {short(value)}")
    if not math.isfinite(value) or value < 0 or value > 10 * 365 * 86400:
        raise ValidationError(f"{key!r} must be between 0 and ten years in seconds, got {short(value)}")
    return float(value)


def validate(obj: Any, default_max_retries: int) -> NewJob:
    """One job object to a NewJob, or ValidationError naming the offending key."""
    if not isinstance(obj, dict):
        raise ValidationError(f"a job must be a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in ALLOWED_KEYS]
    if unknown:
        raise ValidationError(f"unknown key {short(unknown[0])} (allowed: {', '.join(ALLOWED_KEYS)})")
    command = obj.get("command")
    if "command" not in obj:
        raise ValidationError("'command' is required")
    if not isinstance(command, str) or not command.strip():
        raise ValidationError("'command' must be a non-empty string")
    if "\x00" in command:
        raise ValidationError("'command' must not contain NUL bytes")
    utf8_text("command", command)
    job_id = obj.get("id")
    if job_id is None:
        job_id = new_id()
    elif not isinstance(job_id, str) or not is_job_id(job_id):
        raise ValidationError(f"'id' must be {ID_RULE}; got {short(job_id)}")
    max_retries = default_max_retries if obj.get("max_retries") is None else _int("max_retries", obj["max_retries"], 0)
    priority = 0 if obj.get("priority") is None else _int("priority", obj["priority"])
    run_at = None
    if obj.get("run_at") is not None:
        if not isinstance(obj["run_at"], str):
            raise ValidationError(f"'run_at' must be an ISO 8601 time string, got {short(obj['run_at'])}")
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
                  run_at=run_at, delay=delay, timeout=timeout, **control_fields(obj))


def is_tag(text: str) -> bool:
    return _TAG_RE.match(text) is not None


def control_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The §10 keys of a job object, validated: ``cwd`` an absolute directory path (it need not
    exist yet: a missing one fails the attempt, with the reason), ``env`` an object of strings,
    ``tags`` a list of tag names."""
    out: dict[str, Any] = {}
    cwd = obj.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\x00" in cwd:
            raise ValidationError(f"'cwd' must be an absolute directory path, got {short(cwd)}")
        out["cwd"] = utf8_text("cwd", cwd)
    env = obj.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise ValidationError(f"'env' must be an object of strings, got {short(env)}")
        for key, value in env.items():
            if not _ENV_NAME_RE.match(key):
                raise ValidationError(f"'env': {short(key)} is not a variable name (letters, digits, _)")
            if not isinstance(value, str) or "\x00" in value:
                raise ValidationError(f"'env': the value of {key} must be a string without NUL bytes")
            utf8_text(f"env.{key}", value)
        out["env"] = dict(env)
    tags = obj.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValidationError(f"'tags' must be a list of strings, got {short(tags)}")
        for tag in tags:
            if not is_tag(tag):
                raise ValidationError(f"'tags': {short(tag)} is not a tag ({TAG_RULE})")
        out["tags"] = tuple(dict.fromkeys(tags))
    return out


def parse_documents(text: str) -> list[Any]:
    """One JSON object, an array of them, or JSON Lines."""
    stripped = text.strip()
    if not stripped:
        raise ValidationError("no jobs in input")
    try:
        doc = loads(stripped)
    except json.JSONDecodeError as whole_error:
        objs = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                objs.append(loads(line))
            except ValidationError as exc:
                raise ValidationError(f"line {lineno}: {exc}") from None
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
