"""Turning user input (flags, a JSON object, an array, JSON Lines) into validated NewJobs, and storing
them for `queuectl enqueue`."""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, NoReturn

from queuectl_core.errors import ValidationError
from queuectl_core.jobs.ids import new_id
from queuectl_core.jobs.models import NewJob
from queuectl_core.jobs.timeutil import parse_time

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.models import Job

ALLOWED_KEYS: tuple[str, ...] = ("id", "command", "max_retries", "priority", "run_at", "delay", "timeout",
                                # -- scheduling --
                                "queue", "after", "unique_key", "retry_on", "no_retry_on")
# -- where a job runs and how it is found again -------------------------------------------------
CONTROL_KEYS = ("cwd", "env", "tags")
ALLOWED_KEYS += CONTROL_KEYS
TAG_RULE = "1-64 characters of letters, digits and ._:@+/-"
# Patterns, not compiled at import: re compiles (and caches) each on first use, and most enqueues use none.
_TAG_RE = r"[A-Za-z0-9._:@+/-]{1,64}\Z"
_ENV_NAME_RE = r"[A-Za-z_][A-Za-z0-9_]*\Z"
# -- end of the control keys
# -- limits: memory (bytes) and cpu_time (seconds); see queuectl_core.jobs.limits ----------------
LIMIT_KEYS = ("memory", "cpu_time")
ALLOWED_KEYS += LIMIT_KEYS
NEEDS_KEYS = ("needs",)  # -- needs: {"gpu": 1}, units of resources a worker or pool must give the job
ALLOWED_KEYS += NEEDS_KEYS
_ID_RE = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z"
_MAX_PRIORITY = 2**31 - 1
ID_RULE = "1-128 characters of letters, digits and ._:@+-, starting with a letter or digit"
_QUEUE_RE = r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}\Z"
QUEUE_RULE = "1-64 characters of letters, digits and ._:+-, starting with a letter or digit"


def is_queue_name(text: str) -> bool:
    return re.match(_QUEUE_RE, text) is not None and text.isascii()


def configured_no_retry(value: str) -> tuple[int, ...] | None:
    """The config's no_retry_exit_codes as a job's no_retry_on default."""
    if not value.strip():
        return None
    return parse_exit_codes("no_retry_exit_codes", value)


def parse_exit_codes(key: str, value: Any) -> tuple[int, ...]:
    """Exit codes as a JSON list of integers or as ``"1,75"`` text (flags, config): 0-255, sorted."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValidationError(f"{key!r} must be exit codes separated by commas, e.g. 1,75; got {short(value)}") from None
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{key!r} must be a non-empty list of exit codes, got {short(value)}")
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise ValidationError(f"{key!r}: exit codes are integers from 0 to 255, got {short(code)}")
    return tuple(sorted(set(value)))


def is_job_id(text: str) -> bool:
    """Whether text can be a job id at all (every stored id is one): ASCII, so always encodable."""
    return re.match(_ID_RE, text) is not None and text.isascii()


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
    import json  # here, as in the two below: a job given by flags (`enqueue --cmd`) needs no JSON

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


def _scheduling(obj: dict[str, Any], default_no_retry: tuple[int, ...] | None) -> dict[str, Any]:
    """The scheduling keys of one job object, validated (their NewJob fields)."""
    out: dict[str, Any] = {}
    queue = obj.get("queue")
    if queue is not None:
        if not isinstance(queue, str) or not is_queue_name(queue):
            raise ValidationError(f"'queue' must be {QUEUE_RULE}; got {short(queue)}")
        out["queue"] = queue
    after = obj.get("after")
    if after is not None:
        if isinstance(after, str):
            after = [after]
        if not isinstance(after, list):
            raise ValidationError(f"'after' must be a list of job ids, got {short(after)}")
        for parent in after:
            if not isinstance(parent, str) or not is_job_id(parent):
                raise ValidationError(f"'after': {short(parent)} is not a job id")
        out["after"] = tuple(dict.fromkeys(after))
    key = obj.get("unique_key")
    if key is not None:
        if not isinstance(key, str) or not key.strip() or len(key) > 256 or "\x00" in key:
            raise ValidationError(f"'unique_key' must be a non-empty string of at most 256 characters, got {short(key)}")
        out["unique_key"] = utf8_text("unique_key", key)
    if obj.get("retry_on") is not None and obj.get("no_retry_on") is not None:
        raise ValidationError("give 'retry_on' or 'no_retry_on', not both")
    if obj.get("retry_on") is not None:
        out["retry_on"] = parse_exit_codes("retry_on", obj["retry_on"])
    elif obj.get("no_retry_on") is not None:
        out["no_retry_on"] = parse_exit_codes("no_retry_on", obj["no_retry_on"])
    elif default_no_retry:
        out["no_retry_on"] = default_no_retry  # config no_retry_exit_codes, fixed at enqueue like max_retries
    return out


def validate(obj: Any, default_max_retries: int, default_no_retry: tuple[int, ...] | None = None) -> NewJob:
    """One job object to a NewJob, or ValidationError naming the offending key."""
    return NewJob(*job_fields(obj, default_max_retries, default_no_retry))


# The order of job_fields()'s values: NewJob's fields (a test keeps them equal).
JOB_FIELDS: tuple[str, ...] = ("id", "command", "max_retries", "priority", "run_at", "delay", "timeout", "queue",
                               "after", "unique_key", "retry_on", "no_retry_on", "cwd", "env", "tags", "memory", "cpu_time")
JOB_FIELDS += ("needs",)  # -- needs
_ALLOWED = frozenset(ALLOWED_KEYS)
# What `list --json` and `show --json` print besides the keys above: ignored by enqueue, so a
# printed job (its id changed or removed) can be enqueued again as it is.
READ_ONLY_KEYS = frozenset(("state", "attempts", "created_at", "updated_at", "last_exit_code", "last_error",
                            "log_path", "output_tail", "worker_id", "host", "lease_expires_at", "waiting",
                            "cancel_requested", "last_duration", "last_attempt", "orphaned", "waits_on",
                            "last_cpu_seconds", "last_max_rss_bytes",
                            "waiting_reason"))  # -- needs: show --json's why it waits
READ_ONLY_KEYS |= {"limits"}  # -- limits: show --json's limits in force, and where each comes from --


def job_fields(obj: Any, default_max_retries: int, default_no_retry: tuple[int, ...] | None = None,
               next_id: Callable[[], str] = new_id) -> tuple[Any, ...]:
    """:func:`validate`'s checks, returning NewJob's field values in order (``JOB_FIELDS``), for
    ``enqueue --file``, which builds its NewJobs positionally and draws the ids it generates a
    batch at a time (``next_id``)."""
    if not isinstance(obj, dict):
        raise ValidationError(f"a job must be a JSON object, got {type(obj).__name__}")
    if not _ALLOWED.issuperset(obj):
        unknown = [k for k in obj if k not in ALLOWED_KEYS and k not in READ_ONLY_KEYS]
        if unknown:
            raise ValidationError(f"unknown key {short(unknown[0])} (allowed: {', '.join(ALLOWED_KEYS)})")
    get = obj.get  # (one bound method: this runs once per line of a million-line file)
    command = get("command")
    if "command" not in obj:
        raise ValidationError("'command' is required")
    if not isinstance(command, str) or not command.strip():
        raise ValidationError("'command' must be a non-empty string")
    if "\x00" in command:
        raise ValidationError("'command' must not contain NUL bytes")
    if not command.isascii():  # (ASCII is UTF-8: a flag read, not an encode)
        utf8_text("command", command)
    job_id = get("id")
    if job_id is None:
        job_id = next_id()
    elif not isinstance(job_id, str) or not is_job_id(job_id):
        raise ValidationError(f"'id' must be {ID_RULE}; got {short(job_id)}")
    max_retries = get("max_retries")
    max_retries = default_max_retries if max_retries is None else _int("max_retries", max_retries, 0)
    priority = get("priority")
    priority = 0 if priority is None else _int("priority", priority)
    run_at = get("run_at")
    if run_at is not None:
        if not isinstance(run_at, str):
            raise ValidationError(f"'run_at' must be an ISO 8601 time string, got {short(run_at)}")
        try:
            run_at = parse_time(run_at)
        except ValueError as exc:
            raise ValidationError(f"'run_at': {exc}") from None
    delay = get("delay")
    delay = None if delay is None else _seconds("delay", delay)
    if run_at is not None and delay is not None:
        raise ValidationError("give 'run_at' or 'delay', not both")
    timeout = get("timeout")
    if timeout is not None:
        timeout = _seconds("timeout", timeout)
        if timeout == 0:
            raise ValidationError("'timeout' must be > 0")
    sched = _scheduling(obj, default_no_retry) if default_no_retry or not _SCHEDULING_KEYS.isdisjoint(obj) else {}
    control = control_fields(obj) if not _CONTROL_KEYS.isdisjoint(obj) else {}
    limits = _limit_fields(obj) if not _LIMIT_KEYS.isdisjoint(obj) else (None, None)
    needs = get("needs")  # -- needs
    needs = {} if needs is None else _needs(needs)
    return (job_id, command, max_retries, priority, run_at, delay, timeout, sched.get("queue", "default"),
            sched.get("after", ()), sched.get("unique_key"), sched.get("retry_on"), sched.get("no_retry_on"),
            control.get("cwd"), control.get("env", {}), control.get("tags", ()), *limits, needs)


_LIMIT_KEYS = frozenset(LIMIT_KEYS)


def _limit_fields(obj: dict[str, Any]) -> tuple[int | None, float | None]:
    from queuectl_core.jobs.limits import limit_fields

    return limit_fields(obj)


def _needs(value: Any) -> dict[str, int]:
    from queuectl_core.jobs.needs import parse_needs

    return parse_needs(value)


_SCHEDULING_KEYS = frozenset(("queue", "after", "unique_key", "retry_on", "no_retry_on"))
_CONTROL_KEYS = frozenset(CONTROL_KEYS)


def is_tag(text: str) -> bool:
    return re.match(_TAG_RE, text) is not None


def control_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The control keys (where it runs, its env, its tags) of a job object, validated: ``cwd`` an absolute directory path (it need not
    exist yet: a missing one fails the attempt, with the reason), ``env`` an object of strings,
    ``tags`` a list of tag names."""
    out: dict[str, Any] = {}
    cwd = obj.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\x00" in cwd:
            raise ValidationError(f"'cwd' must be an absolute directory path, got {short(cwd)}")
        out["cwd"] = cwd if cwd.isascii() else utf8_text("cwd", cwd)
    env = obj.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise ValidationError(f"'env' must be an object of strings, got {short(env)}")
        for key, value in env.items():
            if not re.match(_ENV_NAME_RE, key):
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
    import json

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


def validate_all(objs: Iterable[Any], default_max_retries: int,
                 default_no_retry: tuple[int, ...] | None = None) -> list[NewJob]:
    """All valid or ValidationError naming which job (1-based) and key; ids unique in the batch.
    A job's ``after`` may name a job earlier in the batch, never itself or a later one."""
    jobs: list[NewJob] = []
    seen: set[str] = set()
    keys: dict[str, str] = {}
    objs = list(objs)
    position: dict[str, int] = {}  # id -> its 1-based place in the input (ids are checked again by validate)
    for n, obj in enumerate(objs, 1):
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            position.setdefault(obj["id"], n)
    for n, obj in enumerate(objs, 1):
        try:
            job = validate(obj, default_max_retries, default_no_retry)
        except ValidationError as exc:
            raise ValidationError(f"job {n}: {exc}" if len(objs) > 1 else str(exc)) from None
        if job.id in seen:
            raise ValidationError(f"job {n}: duplicate id {job.id!r} in the input")
        # -- scheduling --
        for parent in job.after:
            if position.get(parent, 0) >= n:
                raise ValidationError(f"job {n}: 'after' names {parent!r}, which is not earlier in the input")
        if job.unique_key is not None:
            if job.unique_key in keys:
                raise ValidationError(f"job {n}: unique_key {job.unique_key!r} is also held by {keys[job.unique_key]!r}"
                                      " in the input")
            keys[job.unique_key] = job.id
        seen.add(job.id)
        jobs.append(job)
    return jobs


# -- what `queuectl enqueue` turns its flags and arguments into, and how it stores them -------------
def flag_job(job_id: str | None = None, command: str | None = None, max_retries: int | None = None,
             priority: int | None = None, delay: str | None = None, run_at: str | None = None,
             timeout: str | None = None, queue: str | None = None, unique_key: str | None = None,
             retry_on: str | None = None, no_retry_on: str | None = None, after: str | None = None,
             memory: str | None = None, cpu_time: str | None = None, needs: str | None = None) -> dict[str, Any]:
    """The job object the flags give (only the flags given), as a JSON job would hold it."""
    flags = {"id": job_id, "command": command, "max_retries": max_retries, "priority": priority,
             "delay": delay, "run_at": run_at, "timeout": timeout,
             "queue": queue, "unique_key": unique_key, "retry_on": retry_on, "no_retry_on": no_retry_on,
             "after": [a.strip() for a in after.split(",") if a.strip()] if after is not None else None,
             "memory": memory, "cpu_time": cpu_time,
             "needs": needs}  # -- needs: "gpu=1,license=2", checked as the JSON key is
    return {k: v for k, v in flags.items() if v is not None}


def with_control_defaults(objs: list[Any], cwd: str | None, env: tuple[str, ...],
                          tags: tuple[str, ...]) -> list[Any]:
    """Every job records where it was enqueued from (``--cwd`` overrides), and carries the
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
    from queuectl_core.jobs.timeutil import format_time, parse_duration, parse_time

    parsers = {"delay": parse_duration, "timeout": parse_duration,
               "run_at": lambda text: format_time(parse_time(text, local_if_naive=True))}
    out: dict[str, Any] = {}
    from queuectl_core.jobs.limits import parse_size

    parsers.update({"memory": parse_size, "cpu_time": parse_duration})  # -- limits --
    for key, parse in parsers.items():
        if key in flags:
            try:
                out[key] = parse(flags[key])
            except ValueError as exc:
                raise ValidationError(f"--{key.replace('_', '-')}: {exc}") from None  # a flag, as typed
    return out


def parse_job_argument(text: str) -> Any:
    """The positional JSON job; something that is plainly a shell command gets a hint to --cmd."""
    import json

    try:
        obj = loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] not in ("{", "[", '"'):
            suggest_cmd(text)
        raise ValidationError(f"invalid JSON job: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, (dict, list)):
        suggest_cmd(text)
    return obj


def suggest_cmd(text: str) -> NoReturn:
    import shlex

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
    from queuectl_core.jobs.ids import new_id

    if any(j.needs for j in jobs):  # -- needs: only a storage that keeps them
        from queuectl_core.jobs.needs import refuse_unsupported

        jobs = list(refuse_unsupported(storage, jobs))
    for _ in range(5):
        try:
            return storage.enqueue(jobs)
        except DuplicateJobError as exc:
            if exc.job_id in given_ids:
                raise
            jobs = [replace(j, id=new_id()) if j.id == exc.job_id else j for j in jobs]
    return storage.enqueue(jobs)


