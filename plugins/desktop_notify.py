"""The desktop notifier: ``notify-send`` on the worker's machine, when ``notify.desktop`` is true.

Told of ``notify.desktop_events`` (default ``dead`` and ``queue_empty``); one try each. Where
``notify-send`` is not installed the notifier stays off, saying so once when a worker starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config, Setting
    from queuectl_core.jobs.notifications import Notification

TIMEOUT_SECONDS = 10.0


def summary(notification: Notification) -> tuple[str, str]:
    """The notification's title and text."""
    job = notification.job
    if notification.event == "queue_empty":
        return f"queuectl: queue {job.get('queue', 'default')} is empty", f"last job: {job.get('id', '')}"
    text = str(job.get("command", ""))
    if notification.event in ("failed", "dead") and job.get("last_error"):
        text += f"\n{job['last_error']}"
    return f"queuectl: job {job.get('id', '')} {notification.event}", text[:500]


class DesktopNotifier:
    max_age = 0.0  # one try

    def __init__(self, program: str, events: frozenset[str]) -> None:
        self.program = program
        self.events = events

    def deliver(self, notification: Notification) -> None:
        import subprocess

        title, text = summary(notification)
        urgency = "critical" if notification.event == "dead" else "normal"
        done = subprocess.run([self.program, "--app-name=queuectl", f"--urgency={urgency}", "--", title, text],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_SECONDS,
                              start_new_session=True, check=False)
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip()[:200]
            raise RuntimeError(f"notify-send exited {done.returncode}" + (f": {why}" if why else ""))


def _check_events(value: str) -> None:
    from queuectl_core.jobs.notify_events import parse_events

    parse_events(value)


def _open(config: Config) -> DesktopNotifier | None:
    import shutil

    from queuectl_core.errors import ConfigError
    from queuectl_core.jobs.notify_events import parse_events

    if not config["notify.desktop"]:
        return None
    program = shutil.which("notify-send")
    if program is None:
        raise ConfigError("notify.desktop is true but notify-send is not installed (Debian: apt install libnotify-bin)")
    return DesktopNotifier(program, parse_events(config["notify.desktop_events"]))


@hookimpl
def queuectl_register_notifiers(register: Callable[[str, Any], None]) -> None:
    register("desktop", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    from queuectl_core.framework.settings import Setting
    from queuectl_core.jobs.notify_events import NOTIFY_EVENTS

    register(Setting("notify.desktop", bool, False,
                     "Show a desktop notification (notify-send) on the worker's machine."))
    register(Setting("notify.desktop_events", str, "dead,queue_empty",
                     f"What the desktop is told, comma-separated, among {', '.join(NOTIFY_EVENTS)}.",
                     validate=_check_events))
