"""The signals a worker answers, in one place.

SIGINT, SIGTERM and SIGHUP (a closed terminal) ask a worker to stop: the first gracefully (finish
the running job), the second at once. A supervisor forwards what it receives as SIGUSR1 (graceful)
and SIGUSR2 (at once) rather than as the same signal: when a whole process group or cgroup is
signalled (systemd's default KillMode, `kill -- -PGID`), a worker receives the original and the
forwarded copy, and two copies of one request must not count as two requests.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
GRACEFUL = signal.SIGUSR1
IMMEDIATE = signal.SIGUSR2
# Blocked (held pending, never lost) from `worker start` until the worker's handlers exist.
HANDLED = STOP_SIGNALS | {GRACEFUL, IMMEDIATE}


@contextmanager
def held() -> Iterator[None]:
    """Hold the handled signals pending (never lost) inside the block; the previous mask is back
    on leaving it. A child forked inside that never leaves the block (it ``os._exit``s) keeps them
    held until it unblocks them itself, once its own handlers exist."""
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
