"""Wires configuration to the chosen providers: one place that opens storage, executor, backoff."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from queuectl_core.plugins import registries
from queuectl_core.settings import Config, ensure_private_dir, home, read_file_values, validate_file_values

if TYPE_CHECKING:
    from queuectl_core.interfaces import BackoffPolicy, Executor, Storage


class App:
    """One command's view of the queue. Storage is opened on first use and closed by ``close``."""

    def __init__(self) -> None:
        self.home = home()
        ensure_private_dir(self.home)  # 0700, created or tightened; one stat when already so
        self.registries = registries()
        values = read_file_values(self.home)
        validate_file_values(values, self.registries.settings, self.home / "config.toml")
        self.config = Config(self.home, self.registries.settings, values)
        for key, setting in self.registries.settings.items():
            if setting.env_var in self.config.env:
                self.config.get(key)  # a bad QUEUECTL_* value fails every command, not just its reader
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            provider = self.registries.storages.get(self.config["storage"])
            self._storage = provider.factory(self.config)
        return self._storage

    @cached_property
    def executor(self) -> Executor:
        return self.registries.executors.get(self.config["executor"]).factory(self.config)

    @cached_property
    def backoff(self) -> BackoffPolicy:
        return self.registries.backoffs.get(self.config["backoff"]).factory(self.config)

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None
