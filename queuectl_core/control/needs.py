"""Why a job with needs waits: what `show` (and the dashboard) say of a pending job no worker takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.needs import ResourceUsage


def why_waiting(storage: Any, job: Job) -> str | None:
    """One line for a runnable job with needs that no live worker (or pool) can give it now, e.g.
    ``needs gpu=2; no live worker has gpu=2 (workers: host-a gpu=0)``, or ``pool license full 3/3``;
    None when it has none, is not runnable, or something could take it now."""
    from queuectl_core.jobs import lifecycle
    from queuectl_core.storage.capabilities import with_fallbacks

    if not job.needs or job.state not in lifecycle.RUNNABLE_STATES:
        return None
    return reasons(job.needs, with_fallbacks(storage).resource_usage())


def reasons(needs: dict[str, int], usage: ResourceUsage) -> str | None:
    from queuectl_core.jobs.needs import resources_text

    pools = {p.name: p for p in usage.pools}
    said: list[str] = []
    local = {k: v for k, v in needs.items() if k not in pools}
    for name, units in sorted(needs.items()):
        pool = pools.get(name)
        if pool is None:
            continue
        if units > pool.capacity:
            said.append(f"pool {name} has {pool.capacity} units, the job needs {units}")
        elif pool.in_use + units > pool.capacity:
            said.append(f"pool {name} full {pool.in_use}/{pool.capacity}")
    if local:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(local.items()))
        able = [w for w in usage.workers if all(w.units(k) >= v for k, v in local.items())]
        if not usage.workers:
            said.append(f"needs {wanted}; no live worker declares resources")
        elif not able:
            shown = ", ".join(f"{w.host} {resources_text(w.declared)}" for w in usage.workers[:5])
            more = f" and {len(usage.workers) - 5} more" if len(usage.workers) > 5 else ""
            said.append(f"needs {wanted}; no live worker has {wanted} (workers: {shown}{more})")
        elif not any(all(w.free(k) >= v for k, v in local.items()) for w in able):
            busy = ", ".join(f"{w.host} " + " ".join(f"{k} {w.in_use.get(k, 0)}/{w.units(k)}" for k in sorted(local))
                             for w in able[:5])
            said.append(f"needs {wanted}; in use on every worker that has it ({busy})")
    return "; ".join(said) or None
