"""Exponential backoff: retry k waits ``backoff_base ** k`` seconds, with an optional cap and jitter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl
from queuectl_core.framework.settings import Setting

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config
    from queuectl_core.jobs.models import Job


class ExponentialBackoff:
    def __init__(self, base: float, max_delay: float, jitter: float) -> None:
        self.base = base
        self.max_delay = max_delay
        self.jitter = jitter

    def delay(self, attempt: int, job: Job) -> float:
        try:
            seconds = float(self.base ** attempt)
        except OverflowError:
            seconds = float("inf")
        if self.max_delay > 0:
            seconds = min(seconds, self.max_delay)
        seconds = min(seconds, 10 * 365 * 86400.0)  # keep run_at representable
        if self.jitter > 0:
            import random

            seconds *= 1 + random.uniform(-self.jitter, self.jitter)
        return seconds


def _make(config: Config) -> ExponentialBackoff:
    return ExponentialBackoff(config["backoff_base"], config["exponential.max_delay"], config["exponential.jitter"])


@hookimpl
def queuectl_register_backoff_policies(register: Callable[[str, Any], None]) -> None:
    register("exponential", _make)


def _fraction(value: float) -> None:
    if value >= 1:
        raise ValueError("must be below 1 (a fraction of the delay)")


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("exponential.max_delay", float, 0.0, "Cap on one retry delay in seconds; 0 means no cap.",
                     minimum=0))
    register(Setting("exponential.jitter", float, 0.0,
                     "Spread each delay by up to this fraction either way (0.1 = ±10%); 0 means exact.",
                     minimum=0, validate=_fraction))
