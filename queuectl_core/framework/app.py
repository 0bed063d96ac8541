"""Wires configuration to the chosen providers: one place that opens storage, executor, backoff."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from queuectl_core.framework.plugins import make_provider, registries, set_config
from queuectl_core.framework.settings import Config, ensure_private_dir, home, read_file_values, validate_file_values

if TYPE_CHECKING:
    from pathlib import Path

    from queuectl_core.interfaces import BackoffPolicy, Executor, Storage
    from queuectl_core.storage.capabilities import FullStorage


class App:
    """One command's view of the queue. Storage is opened on first use and closed by ``close``."""

    def __init__(self, home_dir: Path | None = None) -> None:
        # home_dir: a queue other than QUEUECTL_HOME's (``queuectl.Queue(home=...)``).
        self.home = home() if home_dir is None else home_dir
        # Not created here: what first writes there creates it (0700), `config set`, the SQLite
        # storage's first write that changes the queue (not its opening, nor a refused write), or
        # the executor's first log, so a command that only reads, is refused, or changes nothing
        # leaves nothing on disk (PostgreSQL's schema is created on connect all the same). One that
        # exists is checked and tightened now (one stat when already so).
        if self.home.exists() or self.home.is_symlink():
            ensure_private_dir(self.home)
        self.registries = registries()
        values = read_file_values(self.home)
        validate_file_values(values, self.registries.settings, self.home / "config.toml")
        self.config = Config(self.home, self.registries.settings, values)
        for key, setting in self.registries.settings.items():
            if setting.env_var in self.config.env:
                self.config.get(key)  # a bad QUEUECTL_* value fails every command, not just its reader
        self._backend: Storage | None = None
        self._storage: FullStorage | None = None
        set_config(self.config)
        global _current
        _current = self

    @property
    def backend(self) -> Storage:
        """The configured storage as its plugin made it, opened on first use: for a caller that
        needs only the Storage protocol's required methods (`enqueue` of a few jobs), which then
        neither imports nor detects the optional capabilities (~0.9 ms of such a command)."""
        if self._backend is None:
            self._backend = make_provider(self.registries.storages, self.config["storage"], self.config)
        return self._backend

    @property
    def storage(self) -> FullStorage:
        """:attr:`backend` with every optional capability, the backend's own or core's fallback."""
        if self._storage is None:
            from queuectl_core.storage.capabilities import with_fallbacks

            self._storage = with_fallbacks(self.backend)
        return self._storage

    @cached_property
    def executor(self) -> Executor:
        return make_provider(self.registries.executors, self.config["executor"], self.config)

    @cached_property
    def backoff(self) -> BackoffPolicy:
        return make_provider(self.registries.backoffs, self.config["backoff"], self.config)

    def close(self) -> None:
        self._storage = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None


_current: App | None = None


def current_app() -> App:
    """The App of the running command (the one the CLI opened), or a new one.

    A plugin's command uses it for the configured storage: ``current_app().storage``.
    """
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        if ctx.obj is None:  # as the core commands do: opened once, closed when the command ends
            ctx.obj = App()
            ctx.call_on_close(ctx.obj.close)
        if isinstance(ctx.obj, App):
            return ctx.obj
    return _current if _current is not None else App()
