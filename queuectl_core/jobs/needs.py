"""What a job needs (``--needs gpu=1``) and what a worker has (``--resources gpu=0,1``): parsing,
the stored form, and the rule for how many units a declaration gives.

A job's needs are ``{name: units}``; stored as one canonical text, ``"gpu=1,license=2"`` (names
sorted), so jobs with the same needs share one *need class* the claim looks up by index. A
worker's resources are ``{name: spec}``: ``"0,1"`` (named instances, two units) or ``"8"`` (a
count of eight units)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from queuectl_core.errors import ValidationError

NAME_RULE = "a letter or _ then letters, digits or _ (at most 32)"
_NAME_RE = r"[A-Za-z_][A-Za-z0-9_]{0,31}\Z"
_ID_RE = r"[A-Za-z0-9._:-]{1,64}\Z"
MAX_UNITS = 1_000_000


def is_name(text: str) -> bool:
    return re.match(_NAME_RE, text) is not None


def check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not is_name(name):
        raise ValidationError(f"{what}: {name!r} is not a resource name ({NAME_RULE})")
    return name


def _units(what: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_UNITS:
        raise ValidationError(f"{what} must be a positive whole number of units, got {value!r}")
    return value


def parse_needs(value: Any) -> dict[str, int]:
    """``needs`` as a JSON object ``{"gpu": 1}`` or flag text ``"gpu=1,license=2"``: validated.
    ``{}`` is no needs (what ``show --json`` prints for such a job, so it can be enqueued again)."""
    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            name, eq, n = part.partition("=")
            if not eq:
                raise ValidationError(f"'needs': {part!r} is not NAME=N (e.g. gpu=1)")
            if name.strip() in pairs:
                raise ValidationError(f"'needs': {name.strip()!r} is given twice")
            pairs[name.strip()] = n.strip()
        value = pairs
    if not isinstance(value, dict):
        raise ValidationError(f"'needs' must be an object of resource names to units, e.g. {{\"gpu\": 1}}, got {value!r}")
    return {check_name("'needs'", k): _units(f"'needs': {k}", v) for k, v in sorted(value.items())}


def needs_text(needs: Mapping[str, int]) -> str | None:
    """The stored form: ``"gpu=1,license=2"`` (sorted), or None for no needs."""
    return ",".join(f"{k}={needs[k]}" for k in sorted(needs)) if needs else None


def needs_from_text(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    return {k: int(v) for k, _, v in (p.partition("=") for p in text.split(","))}


def parse_resources(values: Any) -> dict[str, str]:
    """A worker's declaration: ``--resources`` values (each ``NAME=ID,ID...`` or ``NAME=N``), or
    config ``worker.resources`` (the same, separated by blanks or ``;``; or a table of names to a
    count or a list of ids). ``{name: spec}``, spec ``"0,1"`` (instances) or ``"8"`` (a count)."""
    if isinstance(values, dict):
        items = [(str(k), ",".join(str(i) for i in v) if isinstance(v, list) else str(v)) for k, v in values.items()]
    else:
        if isinstance(values, str):
            values = re.split(r"[\s;]+", values)
        items = []
        for item in values:
            item = str(item).strip()
            if not item:
                continue
            name, eq, spec = item.partition("=")
            if not eq or not spec.strip():
                raise ValidationError(f"resources: {item!r} is not NAME=N or NAME=ID,ID... (e.g. gpu=0,1 or cpu=8)")
            items.append((name.strip(), spec.strip()))
    out: dict[str, str] = {}
    for name, spec in items:
        check_name("resources", name)
        if name in out:
            raise ValidationError(f"resources: {name!r} is declared twice")
        ids = [i.strip() for i in spec.split(",") if i.strip()]
        if not ids or not all(re.match(_ID_RE, i) for i in ids):
            raise ValidationError(f"resources: {name}={spec!r}: give a count (cpu=8) or instance ids (gpu=0,1)")
        if len(ids) != len(set(ids)):
            raise ValidationError(f"resources: {name}={spec!r} names an instance twice")
        if len(ids) == 1 and name != "gpu" and ids[0].isdigit():
            _units(f"resources: {name}", ids[0])
        out[name] = ",".join(ids)
    return out


def is_count(name: str, spec: str) -> bool:
    """``cpu=8`` is a count; ``gpu=0,1`` and ``gpu=3`` (one GPU, instance 3) are instances: a
    lone number is a count for every name but ``gpu``, whose ids are what nvidia-smi numbers."""
    return "," not in spec and spec.isdigit() and name != "gpu"


def units_of(name: str, spec: str) -> int:
    """How many units a declaration gives: its count, or how many instances it names."""
    return int(spec) if is_count(name, spec) else len(spec.split(","))


def resources_text(resources: Mapping[str, str]) -> str:
    """``gpu=0,1 cpu=8``, for people."""
    return " ".join(f"{k}={v}" for k, v in sorted(resources.items())) or "-"


def format_needs(needs: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(needs.items()))


# -- what storage reports: pools and each live worker's resources, with what is in use -----------
@dataclass(frozen=True)
class PoolUsage:
    """A pool shared by every host: at most ``capacity`` units in use at once."""

    name: str
    capacity: int
    in_use: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "capacity": self.capacity, "in_use": self.in_use}


@dataclass(frozen=True)
class WorkerUsage:
    """A live worker's declared resources (``{name: spec}``) and the units its running jobs hold
    of each (pools' units are the pools')."""

    worker_id: str
    host: str
    declared: dict[str, str] = field(default_factory=dict, hash=False)
    in_use: dict[str, int] = field(default_factory=dict, hash=False)

    def units(self, name: str) -> int:
        spec = self.declared.get(name)
        return units_of(name, spec) if spec is not None else 0

    def free(self, name: str) -> int:
        return self.units(name) - self.in_use.get(name, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker_id, "host": self.host,
                "resources": {k: {"declared": v, "units": self.units(k), "in_use": self.in_use.get(k, 0)}
                              for k, v in sorted(self.declared.items())}}


@dataclass(frozen=True)
class ResourceUsage:
    """Every pool, and every live worker that declared resources."""

    pools: tuple[PoolUsage, ...] = ()
    workers: tuple[WorkerUsage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"pools": [p.to_dict() for p in self.pools], "workers": [w.to_dict() for w in self.workers]}


def refuse_unsupported(storage: object, jobs: Iterable[Any]) -> Iterator[Any]:
    """``jobs`` (NewJobs, or batches of them) as they come, refused with one line at the first job
    with needs when ``storage`` cannot keep them (no ``ResourceNeeds``): it would run it anywhere."""
    from queuectl_core.storage.capabilities import ResourceNeeds, WithFallbacks

    inner = storage.storage if isinstance(storage, WithFallbacks) else storage
    if isinstance(inner, ResourceNeeds):
        yield from jobs
        return
    for item in jobs:
        for job in (item if isinstance(item, (list, tuple)) else [item]):
            if getattr(job, "needs", None):
                raise ValidationError(f"job {job.id}: storage {type(inner).__name__} cannot hold jobs with"
                                      " 'needs' (it has no ResourceNeeds capability)")
        yield item
