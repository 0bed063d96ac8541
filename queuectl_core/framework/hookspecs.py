"""The hooks a queuectl plugin can implement.

Every ``register_*`` hook receives a ``register`` callback rather than returning a value, so one
plugin can provide several things and core can add keyword arguments later without breaking it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from queuectl_core.framework.settings import Config, Setting
    from queuectl_core.interfaces import BackoffFactory, ExecutorFactory, StorageFactory
    from queuectl_core.jobs.models import JobEvent
    from queuectl_core.jobs.notifications import Notifier

hookspec = pluggy.HookspecMarker("queuectl")


@hookspec
def queuectl_register_storages(register: Callable[[str, StorageFactory], None]) -> None:
    """Register named storage backends; the ``storage`` config key picks one.

    Called for every plugin. ``register(name, factory)``: ``factory(config)`` returns an object
    satisfying :class:`queuectl_core.interfaces.Storage`. Two providers of one name is an error.

    :param register: call once per backend you provide.
    """


@hookspec
def queuectl_register_executors(register: Callable[[str, ExecutorFactory], None]) -> None:
    """Register named executors (what runs a job's command); the ``executor`` config key picks one.

    Called for every plugin. ``factory(config)`` returns a :class:`queuectl_core.interfaces.Executor`.

    :param register: call once per executor you provide.
    """


@hookspec
def queuectl_register_backoff_policies(register: Callable[[str, BackoffFactory], None]) -> None:
    """Register named retry-delay policies; the ``backoff`` config key picks one.

    Called for every plugin. ``factory(config)`` returns a :class:`queuectl_core.interfaces.BackoffPolicy`.

    :param register: call once per policy you provide.
    """


@hookspec
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    """Declare the config keys a plugin reads: name, type, default, help, validation.

    Called for every plugin. ``config set`` rejects keys nobody registered and values a
    :class:`queuectl_core.framework.settings.Setting` does not accept. Prefix keys with the plugin's name
    (``sqlite.path``) so two plugins cannot collide.

    :param register: call once per key, with a ``Setting``.
    """


@hookspec
def queuectl_register_commands(cli: click.Group) -> None:
    """Add commands to the ``queuectl`` CLI.

    Called for every plugin at start-up, so keep the module light: import what a command needs
    inside the command.

    :param cli: the top-level click group; use ``@cli.command()`` or ``cli.add_command``.
    """


@hookspec
def queuectl_job_event(event: JobEvent) -> None:
    """Receive every job and worker event: enqueued, claimed, completed, failed, dead, retried,
    released, lease lost, worker started/stopping/stopped.

    Called for every plugin, each on its own: one implementation raising is reported on stderr and
    never stops the others, nor the worker. Runs inside the worker's loop, so return quickly.

    :param event: a frozen :class:`queuectl_core.jobs.models.JobEvent`.
    """


@hookspec
def queuectl_register_notifiers(register: Callable[[str, Callable[[Config], Notifier | None]], None]) -> None:
    """Register named notifiers: told of ``completed``, ``failed``, ``dead``, ``cancelled`` and
    ``queue_empty``, delivered at least once from the storage's outbox by a background thread of
    each worker.

    Called for every plugin, once per worker. ``register(name, factory)``: ``factory(config)``
    returns a :class:`queuectl_core.jobs.notifications.Notifier`, or None when the notifier is not
    configured (it is then off). The name labels ``queuectl_notifications_total{notifier}``. Two
    notifiers of one name is an error.

    :param register: call once per notifier you provide.
    """
