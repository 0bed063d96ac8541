"""The command notifier: a shell command run for each notification, as pueue's callback.

``notify.command`` turns it on; it runs through ``/bin/sh -c`` for each of
``notify.command_events`` (default ``dead``) with ``QUEUECTL_EVENT``, ``QUEUECTL_JOB_ID``,
``QUEUECTL_JOB_STATE``, ``QUEUECTL_EXIT_CODE`` (empty when there is none) and ``QUEUECTL_QUEUE`` in
its environment, in a background thread of the worker, in a session of its own, stopped after
``notify.command_timeout``. One try each: a command that fails (non-zero exit, timeout) is reported
and counted, not run again. Like a job, it never inherits queuectl's secret settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config, Setting
    from queuectl_core.jobs.notifications import Notification


def command_environment(notification: Notification) -> dict[str, str]:
    """The variables a notification command is given."""
    job = notification.job
    code = job.get("last_exit_code")
    return {"QUEUECTL_EVENT": notification.event, "QUEUECTL_JOB_ID": str(job.get("id", "")),
            "QUEUECTL_JOB_STATE": str(job.get("state", "")), "QUEUECTL_EXIT_CODE": "" if code is None else str(code),
            "QUEUECTL_QUEUE": str(job.get("queue", ""))}


class CommandNotifier:
    max_age = 0.0  # one try

    def __init__(self, command: str, events: frozenset[str], timeout: float, hidden: frozenset[str]) -> None:
        self.command = command
        self.events = events
        self.timeout = timeout
        self.hidden = hidden

    def deliver(self, notification: Notification) -> None:
        import os
        import subprocess

        env = {k: v for k, v in os.environ.items() if k not in self.hidden}
        env.update(command_environment(notification))
        # Its own session: a terminal's Ctrl+C meant for the worker does not reach it, and a
        # timeout stops everything it started.
        proc = subprocess.Popen(["/bin/sh", "-c", self.command], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            import signal

            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.communicate()
            raise RuntimeError(f"notify.command did not finish within {self.timeout:g}s; stopped") from None
        if proc.returncode != 0:
            tail = out.decode("utf-8", "replace").strip().splitlines()[-1:] if out else []
            raise RuntimeError(f"notify.command exited {proc.returncode}" + (f": {tail[0][:200]}" if tail else ""))


def _check_events(value: str) -> None:
    from queuectl_core.jobs.notify_events import parse_events

    parse_events(value)


def _open(config: Config) -> CommandNotifier | None:
    from queuectl_core.jobs.notify_events import parse_events

    command = config["notify.command"]
    if not command.strip():
        return None
    return CommandNotifier(command, parse_events(config["notify.command_events"]),
                           float(config["notify.command_timeout"]), config.secret_env_vars())


@hookimpl
def queuectl_register_notifiers(register: Callable[[str, Any], None]) -> None:
    register("command", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    from queuectl_core.framework.settings import Setting
    from queuectl_core.jobs.notify_events import NOTIFY_EVENTS

    register(Setting("notify.command", str, "",
                     "A shell command run for each notification, with QUEUECTL_EVENT, QUEUECTL_JOB_ID, "
                     "QUEUECTL_JOB_STATE, QUEUECTL_EXIT_CODE and QUEUECTL_QUEUE set; empty: none."))
    register(Setting("notify.command_events", str, "dead",
                     f"What notify.command is run for, comma-separated, among {', '.join(NOTIFY_EVENTS)}.",
                     validate=_check_events))
    register(Setting("notify.command_timeout", float, 60.0,
                     "How long notify.command may run before it is stopped (and counted failed).",
                     minimum=0.1, maximum=86_400, unit=1.0))
