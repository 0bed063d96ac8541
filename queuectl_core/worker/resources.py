"""A worker's resources: what it declares (``--resources``, config ``worker.resources``, or the
GPUs ``nvidia-smi`` lists), and which named instances each of its running jobs holds.

Storage decides whether a job fits (its claim counts the units held by this worker's processing
jobs against what it declared, and pools against every worker's); the worker only picks *which*
instances a job gets, and tells the job in its environment: ``QUEUECTL_RESOURCE_<NAME>`` (the
instance ids, comma-separated, or the number of units of a count or a pool) and, for ``gpu``,
``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from queuectl_core.jobs.needs import is_count, parse_resources

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job

DETECT_SECONDS = 10.0  # nvidia-smi answers in well under a second; a hung driver must not hold a worker


def detect_gpus() -> dict[str, str]:
    """``{"gpu": "0,1"}`` from ``nvidia-smi`` when it is on PATH and answers; else nothing."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        done = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=DETECT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"queuectl: nvidia-smi failed ({exc}); declaring no gpu", file=sys.stderr, flush=True)
        return {}
    ids = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not all(i.isdigit() for i in ids):
        print(f"queuectl: nvidia-smi exited {done.returncode} ({done.stderr.strip()[:200] or done.stdout.strip()[:200]});"
              " declaring no gpu", file=sys.stderr, flush=True)
        return {}
    return {"gpu": ",".join(ids)} if ids else {}


def declared_resources(given: Sequence[str], configured: str) -> dict[str, str]:
    """What a worker declares: ``--resources`` values, else config ``worker.resources``, else the
    GPUs nvidia-smi lists. Raises ValidationError for a bad declaration."""
    if given:
        return parse_resources(list(given))
    if configured.strip():
        return parse_resources(configured)
    return detect_gpus()


def env_name(name: str) -> str:
    return "QUEUECTL_RESOURCE_" + name.upper()


class Resources:
    """This worker's declared resources, and the instances each running job holds."""

    def __init__(self, declared: dict[str, str]) -> None:
        self.declared = dict(declared)
        self._held: dict[str, dict[str, list[str]]] = {}  # job id -> {name: instance ids}

    def assign(self, job: Job) -> Job | None:
        """The job as it should run: its needs' instances picked and written into its env. None
        when this worker no longer has them free (a job it lost the lease of still runs here):
        the caller hands the job back."""
        if not job.needs:
            return job
        env: dict[str, str] = {}
        held: dict[str, list[str]] = {}
        for name, units in sorted(job.needs.items()):
            spec = self.declared.get(name)
            if spec is not None and not is_count(name, spec):
                busy = {i for h in self._held.values() for i in h.get(name, ())}
                free = [i for i in spec.split(",") if i not in busy]
                if len(free) < units:
                    return None
                held[name] = free[:units]
                env[env_name(name)] = ",".join(held[name])
                if name == "gpu":
                    env["CUDA_VISIBLE_DEVICES"] = env[env_name(name)]
            else:  # a count, or a pool: the number of units
                env[env_name(name)] = str(units)
        self._held[job.id] = held
        return replace(job, env={**job.env, **env})

    def release(self, job_id: str) -> None:
        self._held.pop(job_id, None)

    def in_use(self) -> dict[str, list[str]]:
        """{name: instance ids held by running jobs}."""
        out: dict[str, list[str]] = {}
        for held in self._held.values():
            for name, ids in held.items():
                out.setdefault(name, []).extend(ids)
        return out
