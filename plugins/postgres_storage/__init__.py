"""The ``postgres`` storage: workers on any number of machines share one queue.

This module is what every command loads: the plugin's hooks and its settings. The storage itself
(:mod:`.store`, with psycopg and the SQL layer) is imported when a command opens it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config, Setting

    from .store import PostgresStorage

# A schema name: a plain identifier. A pattern, not compiled here: only PostgreSQL commands use it.
IDENT_RE = r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z"


def _open(config: Config) -> PostgresStorage:
    from .store import PostgresStorage

    return PostgresStorage(config["postgres.dsn"], config["postgres.schema"], config["postgres.connect_timeout"])


def _validate_schema(value: str) -> None:
    if not re.match(IDENT_RE, value):
        raise ValueError("must be a plain identifier (letters, digits, underscores; not starting with a digit)")


def _validate_dsn(value: str) -> None:
    """Refuse, at `config set`, a DSN libpq cannot parse; the message never quotes it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return  # cannot check without the driver; opening the storage says what is missing
    from .store import _dsn_secrets

    if value and _dsn_secrets(value) is None:
        raise ValueError("cannot be parsed as a PostgreSQL connection string (postgresql://user:password@host/db"
                         " or key=value pairs; percent-encode special characters in the password)")


@hookimpl
def queuectl_register_storages(register: Callable[[str, Any], None]) -> None:
    register("postgres", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    from queuectl_core.framework.settings import Setting

    register(Setting("postgres.dsn", str, "",
                     "PostgreSQL connection string (postgresql://user:password@host/db); empty uses libpq's "
                     "PG* environment variables.", secret=True, validate=_validate_dsn))
    register(Setting("postgres.schema", str, "queuectl",
                     "The schema holding the queue's tables; queues in different schemas are independent.",
                     validate=_validate_schema))
    register(Setting("postgres.connect_timeout", int, 5,
                     "Seconds to wait for a connection before reporting the database unreachable.", minimum=1))
