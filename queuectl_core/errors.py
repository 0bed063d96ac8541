"""Exceptions core and plugins raise; the CLI turns every one into a single ``Error:`` line."""

from __future__ import annotations


class QueuectlError(Exception):
    """A failure a user should see as one clear line."""


class ConfigError(QueuectlError):
    pass


class ValidationError(QueuectlError):
    pass


class StorageError(QueuectlError):
    """The backend failed (unreachable, corrupt, locked for too long)."""


class DuplicateJobError(QueuectlError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class JobNotFoundError(QueuectlError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class UniqueKeyError(QueuectlError):
    """Another job holds the unique_key (pending, failed or processing)."""

    def __init__(self, key: str | None, holder: str | None) -> None:
        held = f"job {holder!r}" if holder else "another job"
        what = f"unique_key {key!r}" if key is not None else "its unique_key"
        super().__init__(f"{what} is held by {held} (pending, failed or processing)")
        self.key = key
        self.holder = holder


class RegistryError(QueuectlError):
    pass


class PluginError(QueuectlError):
    """A plugin failed (loading, a hook, a provider's factory, a command); the message names it."""
