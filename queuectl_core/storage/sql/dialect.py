"""What differs between SQL databases (:class:`Dialect`), and the small helpers every statement uses."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

CHUNK = 500  # ids per IN list (SQLite's bound-variable limit, and sane statement sizes)


class Dialect:
    """What differs between SQL databases, and nothing else.

    Statements are written with ``:name`` parameters; ``paramstyle`` "named" keeps them (sqlite3),
    "pyformat" rewrites them to ``%(name)s`` (psycopg). ``now`` is the SQL expression for the
    storage clock in stored time units (it may use the ``:now`` parameter, which every statement
    receives from ``clock_param()``), and ``after(p)`` is that clock plus ``:p`` seconds.
    ``to_db``/``from_db`` convert an aware datetime to and from the stored form.
    """

    # A plain class, not a dataclass: every storage plugin module imports this one at start-up,
    # and generating a 12-field dataclass costs `queuectl --help` about 2 ms.
    __slots__ = ("paramstyle", "now", "after", "to_db", "from_db", "clock_param", "skip_locked", "materialized",
                 "ready_index", "due_index", "true", "for_update", "for_share", "lateral", "writable_cte",
                 "epoch_minute")

    def __init__(self, *, paramstyle: str, now: str, after: Callable[[str], str], to_db: Callable[[datetime], Any],
                 from_db: Callable[[Any], datetime], clock_param: Callable[[], Any], skip_locked: str = "",
                 materialized: str = "", ready_index: str = "", due_index: str = "", true: str = "TRUE",
                 for_update: str = "", for_share: str = "", lateral: bool = False, writable_cte: bool = False,
                 epoch_minute: Callable[[str], str] | None = None) -> None:
        self.paramstyle = paramstyle
        self.now = now
        self.after = after
        self.to_db = to_db
        self.from_db = from_db
        self.clock_param = clock_param
        self.skip_locked = skip_locked  # " FOR UPDATE SKIP LOCKED" where the database has it
        self.materialized = materialized  # "MATERIALIZED" where a CTE could otherwise be inlined
        self.ready_index = ready_index  # an index hint for the claim (SQLite's INDEXED BY)
        self.due_index = due_index
        self.true = true
        # Row locks where transactions run concurrently (PostgreSQL); empty where every write
        # transaction is serialised already (SQLite's BEGIN IMMEDIATE).
        self.for_update = for_update
        self.for_share = for_share
        self.lateral = lateral  # CROSS JOIN LATERAL for the per-queue claim walk
        # UPDATE ... RETURNING inside WITH (PostgreSQL): where each statement is a network round
        # trip, a claim reads its queue's limit, and a completion releases the jobs waiting on it,
        # in the same statement.
        self.writable_cte = writable_cte
        # The whole minutes since 1970-01-01 UTC of a stored time column, as an integer (what a
        # count per minute groups by). Default: a column stored as epoch milliseconds.
        self.epoch_minute = epoch_minute or (lambda col: f"({col} / 60000)")

    def sql(self, text: str) -> str:
        if self.paramstyle != "pyformat":
            return text
        return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", r"%(\1)s", text)



def in_list(names: dict[str, Any]) -> str:
    """``:k0, :k1, ...`` for the parameters :func:`named` made."""
    return ", ".join(":" + n for n in names)


def named(prefix: str, values: Sequence[Any]) -> dict[str, Any]:
    """Named parameters for an IN list: {"k0": v0, ...}."""
    return {f"{prefix}{i}": v for i, v in enumerate(values)}


def quoted(states: Sequence[Any]) -> str:
    """States as an SQL list of literals: ``'pending', 'failed'`` (the lifecycle's groups are
    written into statements this way, so a partial index's predicate matches them)."""
    return ", ".join(f"'{s}'" for s in states)
