"""``worker start --count N``: N worker processes under one foreground supervisor.

With one worker the supervisor is the worker. With more, the workers are forked into a process
group of their own, so a terminal's Ctrl+C reaches only the supervisor, which forwards each
SIGINT/SIGTERM/SIGHUP to every worker as SIGUSR1 (the first: graceful) or SIGUSR2 (later ones: at
once), so a worker that also received the original signal does not count it twice (signals.py).
Each worker dies with the supervisor (it watches a pipe only the supervisor holds open), and its
janitor then takes its jobs down, so a SIGKILLed supervisor leaves nothing running unsupervised.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

from queuectl_core.worker.signals import GRACEFUL, HANDLED, IMMEDIATE, STOP_SIGNALS, held

# A crashed worker's place is always refilled (an OOM killer may take workers again and again; a
# place given up would stay lost until someone noticed), after a delay that doubles with each crash
# in a row, up to RESTART_CAP, so a worker that cannot start does not spin. A worker that stayed up for
# STABLE_AFTER seconds has its count reset.
RESTART_FIRST = 0.5
RESTART_CAP = 30.0
STABLE_AFTER = 60.0
# Blocked (held pending, never lost) until a handler is ready for them: the worker unblocks them
# once its own handlers are installed (Worker._install_signals).


def _die_with_supervisor(alive_r: int, alive_w: int) -> None:
    """In a worker: be SIGKILLed as soon as the supervisor is gone, however it ended. Only the
    supervisor keeps ``alive_w`` open and never writes to it, so reading ``alive_r`` ends (EOF)
    exactly when the supervisor's process ends, SIGKILL included; the kernel closes it then."""
    os.close(alive_w)

    def watch() -> None:
        try:
            while os.read(alive_r, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="queuectl-supervisor-watch", daemon=True).start()


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def supervise(count: int, run_one: Callable[[], int]) -> int:
    # A Ctrl+C during start-up is held until someone can honour it gracefully, rather than
    # raising KeyboardInterrupt half-way through opening the worker.
    with held():
        return run_one() if count == 1 else _supervise(count, run_one)


def _supervise(count: int, run_one: Callable[[], int]) -> int:
    alive_r, alive_w = os.pipe()  # open in this process for as long as it lives (_die_with_supervisor)
    children: dict[int, int] = {}  # pid -> place
    pgid = 0
    signals = 0

    def spawn(place: int) -> None:
        nonlocal pgid
        # Fork with the stop signals blocked: in the child, a forwarded signal must not run the
        # supervisor's inherited `forward` (it would signal the siblings again and be lost for
        # this worker), nor kill it before its handlers exist; it stays pending until the worker
        # unblocks it. In the parent it waits until the child is in `children`.
        with held():
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for sig in HANDLED:
                        signal.signal(sig, signal.SIG_DFL)
                    _die_with_supervisor(alive_r, alive_w)
                    code = run_one()
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException as exc:
                    print(f"queuectl: worker crashed: {exc!r}", file=sys.stderr, flush=True)
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            try:
                os.setpgid(pid, pgid or pid)
            except OSError:
                pass
            pgid = pgid or pid
            children[pid] = place

    def forward(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        request = GRACEFUL if signals == 1 else IMMEDIATE
        for pid in list(children):
            try:
                os.kill(pid, request)
            except ProcessLookupError:
                pass

    # Handlers first, so a signal arriving while workers start is still forwarded.
    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    for place in range(count):
        spawn(place)
    # Every worker exists: a signal that arrived meanwhile is now forwarded to all of them.
    # (Unblock rather than restore: the caller may have blocked them itself, as `worker start` does.)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    worst = 0
    started: dict[int, float] = {place: time.monotonic() for place in range(count)}
    crashes: dict[int, int] = {}  # place -> crashes in a row
    due: dict[int, float] = {}  # place -> when to respawn it
    while children or (due and not signals):
        if signals:
            due.clear()  # stopping: a crashed place is not refilled
        now = time.monotonic()
        for place in [s for s, t in due.items() if t <= now]:
            del due[place]
            started[place] = now
            spawn(place)
        try:
            if due:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    time.sleep(min(0.1, max(0.0, min(due.values()) - time.monotonic())))
                    continue
            else:
                pid, status = os.wait()
        except ChildProcessError:
            if not due:
                break
            time.sleep(0.1)
            continue
        if pid not in children:
            continue
        place = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == 0 or signals:
            worst = max(worst, 0 if code == 0 else 1)
            continue
        # A crashed worker (never a job's failure: those are recorded) is replaced, always.
        now = time.monotonic()
        if now - started.get(place, now) >= STABLE_AFTER:
            crashes[place] = 0
        delay = 0.0 if not crashes.get(place) else min(RESTART_CAP, RESTART_FIRST * 2 ** (crashes[place] - 1))
        crashes[place] = crashes.get(place, 0) + 1
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
        print(f"queuectl: worker {pid} ({place + 1} of {count}) {how}; restarting in {delay:g}s",
              file=sys.stderr, flush=True)
        due[place] = now + delay
    return worst
