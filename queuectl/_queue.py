"""``queuectl.Queue``: enqueue and look up jobs from a program, with the CLI's checks and events."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from types import TracebackType

    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job


class Queue:
    """The queue in ``home`` (default: ``QUEUECTL_HOME``, else the per-user directory), with its
    ``config.toml`` and storage, as every ``queuectl`` command finds them.

    The storage is opened on first use; :meth:`close` (or leaving a ``with`` block) closes it. One
    ``Queue`` belongs to one thread: give each thread its own.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        from queuectl_core.framework.app import App

        self._app: App | None = App(None if home is None else Path(os.path.expanduser(os.fspath(home))))

    @property
    def home(self) -> Path:
        """The queue's directory (``config.toml``, and by default the SQLite database and the logs)."""
        return self._open().home

    def enqueue(self, command: str | Sequence[str], **options: Any) -> Job:
        """Enqueue one job and return it as stored (``job.id``, ``job.state``, ...).

        ``command`` is a shell command line (as ``--cmd``), or a list of words, each quoted for the
        shell (as the words after ``enqueue --``). ``options`` are the other keys of the JSON job
        object ``enqueue --file`` takes: ``id``, ``priority``, ``queue``, ``after``, ``delay`` or
        ``run_at``, ``timeout``, ``max_retries``, ``env``, ``cwd``, ``tags``, ``unique_key``,
        ``retry_on``, ``no_retry_on``, ``memory`` (bytes, or a SIZE such as ``"512M"``), ``cpu_time``
        (seconds, or a duration such as ``"10m"``). Python values are taken as the JSON ones: a tuple as a list,
        a ``timedelta`` as seconds, an aware ``datetime`` as an ISO 8601 time, a ``Path`` as text.
        Defaults are the CLI's: the config's ``max_retries`` and ``no_retry_exit_codes``, and this
        process's working directory as ``cwd``.

        Raises ``ValidationError`` (a ``QueuectlError``) with the one-line message ``queuectl
        enqueue`` prints, ``DuplicateJobError`` for an id that exists, ``UniqueKeyError`` for a held
        ``unique_key``, ``StorageError`` when the storage cannot be reached. Nothing is enqueued then.
        """
        return self._submit([{"command": _command(command), **options}])[0]

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue job objects (each with ``command``, as a line of ``enqueue --file``) in one
        transaction, all or none, and return them in order. A job's ``after`` may name an earlier
        one of the batch. A refused job raises as :meth:`enqueue` does, its message starting
        ``job N:`` as ``enqueue --file`` says it for a JSON array."""
        objs = []
        for obj in jobs:
            obj = dict(obj) if isinstance(obj, Mapping) else obj  # anything else: refused, as in a file
            if isinstance(obj, dict) and "command" in obj:
                obj["command"] = _command(obj["command"])
            objs.append(obj)
        return self._submit(objs)

    def get(self, job_id: str) -> Job | None:
        """The job with this id (a whole id, not a prefix), or None."""
        from queuectl_core.intake.jobspec import is_job_id

        if not isinstance(job_id, str) or not is_job_id(job_id):
            return None  # no job can have it
        return self._open().backend.get(job_id)

    def close(self) -> None:
        """Close the storage connection; the Queue cannot be used after."""
        if self._app is not None:
            self._app.close()
            self._app = None

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _open(self) -> App:
        if self._app is None:
            raise ValueError("this Queue is closed")
        return self._app

    def _submit(self, objs: list[Any]) -> list[Job]:
        from queuectl_core.intake.submit import submit

        return submit(self._open(), [_as_json(obj) for obj in objs], local_cwd=True)


def _command(command: Any) -> Any:
    """A list of words as the shell command that runs them (``enqueue -- WORDS``); else as given."""
    if isinstance(command, (list, tuple)) and command and all(isinstance(w, str) for w in command):
        import shlex

        return shlex.join(command)
    return command


def _as_json(obj: Any) -> Any:
    """Python values as the JSON job object holds them; what is left is judged by jobspec."""
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if isinstance(value, (tuple, set, frozenset)):
            value = list(value)
            if isinstance(obj[key], (set, frozenset)):
                try:
                    value.sort()  # a set has no order: tags and exit codes sorted, for repeatable jobs
                except TypeError:
                    pass  # mixed types: jobspec refuses them
        elif isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, datetime):
            value = value.isoformat()  # one without a zone is refused, as in JSON
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        out[key] = value
    return out
