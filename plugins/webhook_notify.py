"""The webhook notifier: a signed JSON POST per notification, delivered at least once.

``notify.webhook.url`` turns it on. Each notification of ``notify.webhook.events`` (default
``dead``) is POSTed as ``{"id", "event", "at", "job"}``; with ``notify.webhook.secret`` set, the
``X-Queuectl-Signature: sha256=<hex>`` header is the HMAC-SHA256 of the body under it. Any 2xx
answer delivers it; anything else (an error status, a refused connection, a timeout) is a failed try,
retried from the storage's outbox until ``notify.webhook.max_age`` (see
:mod:`queuectl_core.worker.notify`). A receiver drops repeats by the ``id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config, Setting
    from queuectl_core.jobs.notifications import Notification

SIGNATURE_HEADER = "X-Queuectl-Signature"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``secret``."""
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POSTs each notification to one URL (the standard library's urllib: one request per try, a
    timeout on each, certificates checked by ``ssl.create_default_context()``)."""

    def __init__(self, url: str, events: frozenset[str], secret: str, max_age: float, timeout: float) -> None:
        self.url = url
        self.events = events
        self.secret = secret
        self.max_age = max_age
        self.timeout = timeout

    def deliver(self, notification: Notification) -> None:
        import ssl
        import urllib.error
        import urllib.request

        data = notification.body.encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "queuectl",
                   "X-Queuectl-Event": notification.event, "X-Queuectl-Delivery": notification.id}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, data)
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        context = ssl.create_default_context() if self.url.lower().startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                status = response.status
        except urllib.error.HTTPError as exc:  # urllib raises for 4xx and 5xx
            raise RuntimeError(f"{_where(self.url)} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(f"{_where(self.url)}: {reason}") from None
        if not 200 <= status < 300:  # a redirect urllib did not follow, or a 1xx
            raise RuntimeError(f"{_where(self.url)} answered {status}")


def _where(url: str) -> str:
    """The URL as messages name it: scheme, host and path, never a user:password or a query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _check_url(value: str) -> None:
    from urllib.parse import urlsplit

    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {_where(value) if parts.scheme else value!r}")


def _check_events(value: str) -> None:
    from queuectl_core.jobs.notify_events import parse_events

    parse_events(value)


def _open(config: Config) -> WebhookNotifier | None:
    from queuectl_core.jobs.notify_events import parse_events

    url = config["notify.webhook.url"]
    if not url:
        return None
    return WebhookNotifier(url, parse_events(config["notify.webhook.events"]), config["notify.webhook.secret"],
                           float(config["notify.webhook.max_age"]), float(config["notify.webhook.timeout"]))


@hookimpl
def queuectl_register_notifiers(register: Callable[[str, Any], None]) -> None:
    register("webhook", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    from queuectl_core.framework.settings import Setting
    from queuectl_core.jobs.notify_events import NOTIFY_EVENTS

    events = ", ".join(NOTIFY_EVENTS)
    register(Setting("notify.webhook.url", str, "",
                     "POST a JSON notification here (http:// or https://); empty: no webhook.", validate=_check_url))
    register(Setting("notify.webhook.events", str, "dead",
                     f"What the webhook is told, comma-separated, among {events}.", validate=_check_events))
    register(Setting("notify.webhook.secret", str, "",
                     "Sign each POST: X-Queuectl-Signature: sha256=<HMAC-SHA256 of the body> (empty: unsigned).",
                     secret=True))
    register(Setting("notify.webhook.max_age", float, 3600.0,
                     "Retry a notification the receiver did not take (2xx) for this long, then drop it.",
                     minimum=1, unit=1.0))
    register(Setting("notify.webhook.timeout", float, 10.0,
                     "How long one POST may take before it counts as failed (and is retried).",
                     minimum=0.1, maximum=600, unit=1.0))
