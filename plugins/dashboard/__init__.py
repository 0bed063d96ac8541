"""``queuectl dashboard``: a web page and Prometheus metrics for the queue.

Built only on the public plugin API (``queuectl_core.api``), like a third party's plugin. Every
``queuectl`` command imports this module, so it imports nothing heavy: Starlette, uvicorn and
prometheus-client (the ``web`` extra) are imported when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

# Start-up: only the marker here. queuectl_core.api brings the models, the lifecycle and the
# actions (about 5 ms that `queuectl --help` would pay); the hooks import it when they run.
from queuectl_core import hookimpl

WEB_EXTRA = "pip install 'queuectl[web]'"


@hookimpl
def queuectl_register_settings(register: Any) -> None:
    from queuectl_core.api import Setting

    register(Setting("dashboard.host", str, "127.0.0.1",
                     "Address the dashboard listens on; any but loopback needs dashboard.token."))
    register(Setting("dashboard.port", int, 8777, "TCP port of the dashboard.", minimum=1, maximum=65535))
    register(Setting("dashboard.token", str, "",
                     "Bearer token every dashboard request must carry (required off loopback).", secret=True))


@hookimpl
def queuectl_register_commands(cli: click.Group) -> None:
    @cli.command("dashboard")
    @click.option("--host", help="Address to listen on (default: config dashboard.host, 127.0.0.1).")
    @click.option("--port", type=click.IntRange(1, 65535), help="TCP port (default: config dashboard.port, 8777).")
    @click.option("--token", help="Require this bearer token on every request (default: config dashboard.token).")
    def dashboard(host: str | None, port: int | None, token: str | None) -> None:
        """Serve the web dashboard and /metrics until Ctrl+C."""
        from queuectl_core.api import QueuectlError, current_app

        try:
            from . import server
        except ImportError as exc:
            raise QueuectlError(f"the dashboard needs the web extra ({exc.name} is missing): {WEB_EXTRA}") from None
        app = current_app()
        config = app.config
        server.serve(app, host=host or config["dashboard.host"], port=port or config["dashboard.port"],
                     token=token if token is not None else config["dashboard.token"])
