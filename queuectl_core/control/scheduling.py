"""Queues and schedules, as functions the CLI, plugins and a web UI call alike.

Schedules are evaluated here and only here: the cron library (cronsim) is imported when a cron
expression is checked or evaluated, never on CLI start-up for other commands. Every tick time is
computed from data stored with the schedule (its expression, zone, creation time) and the
storage's clock, so every worker on every host computes the same tick; the storage then enqueues
it exactly once (``Storage.enqueue_tick``: a compare-and-set on the schedule's last tick, and the
job id ``NAME@<tick>`` as a primary key).
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from queuectl_core.errors import ValidationError

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.models import Job, NewJob
    from queuectl_core.jobs.records import QueueInfo, Schedule

NAME_RULE = "1-64 characters of letters, digits and ._:+-, starting with a letter or digit"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}\Z")
MIN_EVERY_SECONDS = 1.0
# Job options a schedule carries (everything but what makes each tick's job its own).
# Stored in the schedule's job JSON as enqueue takes them: a new key needs no schema change.
SCHEDULE_JOB_KEYS = ("command", "max_retries", "priority", "timeout", "queue", "unique_key", "retry_on",
                     "no_retry_on", "cwd", "env", "tags")


# -- queues ----------------------------------------------------------------------------------
def check_queue_name(name: str) -> str:
    from queuectl_core.intake.jobspec import QUEUE_RULE, is_queue_name, short

    if not is_queue_name(name):
        raise ValidationError(f"{short(name)} is not a queue name (names are {QUEUE_RULE})")
    return name


def list_queues(storage: Storage) -> list[QueueInfo]:
    return storage.queues()


def set_concurrency(storage: Storage, name: str, concurrency: int) -> None:
    if concurrency < 0:
        raise ValidationError("concurrency must be >= 0 (0 means unlimited)")
    storage.set_queue(check_queue_name(name), concurrency=concurrency)


def set_paused(storage: Storage, names: list[str], paused: bool, every: bool = False) -> list[str]:
    """Pause or resume the named queues (created if new, so a queue can be paused before its
    first job), or with ``every`` each queue that exists now. Returns the names acted on."""
    if every:
        if names:
            raise ValidationError("give queue names or --all, not both")
        return storage.set_all_paused(paused)
    if not names:
        raise ValidationError("give at least one queue name, or --all")
    for name in names:
        check_queue_name(name)
    for name in names:
        storage.set_queue(name, paused=paused)
    return names


# -- schedules -------------------------------------------------------------------------------
def check_schedule_name(name: str) -> str:
    from queuectl_core.intake.jobspec import short

    if not (_NAME_RE.match(name) and name.isascii()):
        raise ValidationError(f"{short(name)} is not a schedule name (names are {NAME_RULE})")
    return name


def local_zone_name() -> str:
    """The machine's time zone as an IANA name, stored with a schedule so every host reads its
    cron expression in the same zone. TZ, then /etc/timezone, then /etc/localtime's link; UTC
    when none names a zone."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            candidates.append(fh.read().strip())
    except OSError:
        pass
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            candidates.append(link.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name and _zone(name, quiet=True) is not None:
            return name
    return "UTC"


def _zone(name: str, quiet: bool = False) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if quiet:
            return None
        raise ValidationError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)") from None


def check_cron(expr: str, tz: str) -> None:
    from cronsim import CronSim, CronSimError

    if len(expr.split()) != 5:
        raise ValidationError(f"--cron takes 5 fields (minute hour day-of-month month day-of-week), got {expr!r}")
    try:
        next(CronSim(expr, datetime.now(_zone(tz))))
    except (CronSimError, StopIteration) as exc:
        raise ValidationError(f"bad cron expression {expr!r}: {exc}") from None


def make_schedule(name: str, job: dict[str, Any], *, cron: str | None = None, every: float | None = None,
                  tz: str | None = None, default_max_retries: int = 3) -> Schedule:
    """A validated schedule: a name, exactly one of cron/every, a zone for cron, valid job options."""
    from queuectl_core.intake import jobspec
    from queuectl_core.jobs.records import Schedule

    check_schedule_name(name)
    if (cron is None) == (every is None):
        raise ValidationError("give --cron or --every (one of them)")
    unknown = [k for k in job if k not in SCHEDULE_JOB_KEYS]
    if unknown:
        raise ValidationError(f"a schedule's job cannot have {unknown[0]!r} (allowed: {', '.join(SCHEDULE_JOB_KEYS)})")
    jobspec.validate(dict(job), default_max_retries)  # the same rules as any job's
    if every is not None:
        if not math.isfinite(every) or every < MIN_EVERY_SECONDS:
            raise ValidationError(f"--every must be at least {MIN_EVERY_SECONDS:g} second")
        if tz is not None:
            raise ValidationError("--tz applies to --cron only")
        return Schedule(name=name, job=dict(job), every=float(every))
    assert cron is not None
    zone = tz or local_zone_name()
    _zone(zone)
    check_cron(cron, zone)
    return Schedule(name=name, job=dict(job), cron=" ".join(cron.split()), tz=zone)


def add_schedule(storage: Storage, schedule: Schedule) -> None:
    storage.add_schedule(schedule)


def remove_schedule(storage: Storage, name: str) -> None:
    if not storage.remove_schedule(check_schedule_name(name)):
        raise ValidationError(f"no schedule named {name!r}")


def set_schedule_paused(storage: Storage, name: str, paused: bool) -> None:
    if not storage.set_schedule_paused(check_schedule_name(name), paused):
        raise ValidationError(f"no schedule named {name!r}")


def schedule_rows(storage: Storage) -> list[dict[str, Any]]:
    """Every schedule as a JSON object, with its next tick (what `schedule list` and a web UI show)."""
    from queuectl_core.jobs.models import masked_env
    from queuectl_core.jobs.timeutil import format_time

    now = storage.now()
    out = []
    for s in storage.schedules():
        try:
            upcoming = format_time(next_tick(s, now))
        except ValidationError:
            upcoming = None
        job = dict(s.job)
        if isinstance(job.get("env"), dict):
            job["env"] = masked_env(job["env"])  # as a job's env is shown
        out.append({"name": s.name, "cron": s.cron, "every": s.every, "tz": s.tz, "paused": s.paused,
                    "job": job, "created_at": format_time(s.created_at), "last_tick": format_time(s.last_tick),
                    "next_tick": upcoming})
    return out


def _cron_before(schedule: Schedule, moment: datetime) -> datetime:
    """The latest cron time at or before ``moment``, read in the schedule's zone (DST as cron
    does it: a time skipped by spring-forward runs at the jump, a repeated hour runs once)."""
    from cronsim import CronSim

    assert schedule.cron is not None
    local = moment.astimezone(_zone(schedule.tz or "UTC")) + timedelta(microseconds=1)
    return next(CronSim(schedule.cron, local, reverse=True)).astimezone(moment.tzinfo)


def _cron_after(schedule: Schedule, moment: datetime) -> datetime:
    from cronsim import CronSim

    assert schedule.cron is not None
    local = moment.astimezone(_zone(schedule.tz or "UTC"))
    return next(CronSim(schedule.cron, local)).astimezone(moment.tzinfo)


def due_tick(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest tick at or before ``now`` not yet enqueued (after the schedule was made and
    after its last tick), or None. Ticks missed while no worker ran collapse into this one."""
    start = schedule.created_at or now
    if schedule.every is not None:
        k = math.floor((now - start).total_seconds() / schedule.every)
        if k < 1:
            return None
        tick = start + timedelta(seconds=k * schedule.every)
        tick = tick.replace(microsecond=tick.microsecond // 1000 * 1000)  # stored to the millisecond
    else:
        tick = _cron_before(schedule, now)
        if tick <= start:
            return None
    if schedule.last_tick is not None and tick <= schedule.last_tick:
        return None
    return tick


def next_tick(schedule: Schedule, now: datetime) -> datetime | None:
    """When the schedule next fires (None while paused)."""
    if schedule.paused:
        return None
    start = schedule.created_at or now
    if schedule.every is not None:
        k = max(1, math.floor((now - start).total_seconds() / schedule.every) + 1)
        return start + timedelta(seconds=k * schedule.every)
    return _cron_after(schedule, max(now, start))


def tick_job(schedule: Schedule, tick: datetime, default_max_retries: int) -> NewJob:
    from dataclasses import replace

    from queuectl_core.intake import jobspec
    from queuectl_core.jobs.timeutil import format_time

    job = jobspec.validate(dict(schedule.job), default_max_retries)
    return replace(job, id=f"{schedule.name}@{format_time(tick)}")


def run_due(storage: Storage, default_max_retries: int) -> tuple[list[Job], datetime | None]:
    """Enqueue every schedule's due tick (each exactly once across all workers); returns the jobs
    this call enqueued and when the next tick of any schedule is due (an idle worker's timer)."""
    schedules = storage.schedules()
    if not schedules:
        return [], None
    now = storage.now()
    enqueued: list[Job] = []
    soonest: datetime | None = None
    for schedule in schedules:
        if schedule.paused:
            continue
        try:
            tick = due_tick(schedule, now)
            if tick is not None:
                job = storage.enqueue_tick(schedule.name, tick, tick_job(schedule, tick, default_max_retries))
                if job is not None:
                    enqueued.append(job)
            upcoming = next_tick(schedule, now)
        except ValidationError:
            continue  # a schedule made invalid (say, its zone removed): `schedule list` shows it
        if upcoming is not None and (soonest is None or upcoming < soonest):
            soonest = upcoming
    return enqueued, soonest


__all__ = [
    "MIN_EVERY_SECONDS", "SCHEDULE_JOB_KEYS", "add_schedule", "check_queue_name", "due_tick", "list_queues",
    "local_zone_name", "make_schedule", "next_tick", "remove_schedule", "run_due", "set_concurrency", "set_paused",
    "schedule_rows", "set_schedule_paused", "tick_job",
]
