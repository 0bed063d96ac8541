"""A light PostgreSQL driver for the CLI's enqueue: libpq through ctypes, in psycopg's shape.

Why hand-written: ``import psycopg`` costs ~95–130 ms on the 2-vCPU test machine (its package
``__init__`` pulls in asyncio, ssl, logging, importlib.metadata and every type adapter), which is
most of a one-job ``queuectl enqueue`` on PostgreSQL. ``ctypes`` plus loading libpq costs ~8 ms.
Measured with ``python -X importtime`` and ``farm-bench`` (docs/operations.md, Performance).

It is the subset of psycopg 3's API that :class:`queuectl_plugins.postgres_storage.PostgresStorage`
uses, so the storage's own code — its SQL, migrations check, batch insert, NOTIFY wake-up, error
mapping and password masking — runs unchanged on it (``PostgresStorage(..., driver=...)``): there
is no second copy of any statement. Parameters and results travel in libpq's text format; result
columns are converted by type OID to what psycopg returns for them.

Only short-lived CLI processes use it (the fast path of ``queuectl enqueue``); workers, which stay
up and LISTEN, keep psycopg. :func:`lite_storage` raises ImportError when no libpq can be loaded,
and the caller then takes the ordinary path.
"""

from __future__ import annotations

import ctypes
import os
import sys
from datetime import date, datetime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)
if TYPE_CHECKING:
    from typing import Any, Iterator, Sequence

    from queuectl_core.settings import Config

    from .postgres_storage import PostgresStorage

# libpq's enums (libpq-fe.h)
_CONNECTION_OK = 0
_CONNECTION_BAD = 1
_PGRES_EMPTY_QUERY, _PGRES_COMMAND_OK, _PGRES_TUPLES_OK = 0, 1, 2
_PG_DIAG_SQLSTATE = ord("C")
_PG_DIAG_MESSAGE_PRIMARY = ord("M")
_PG_DIAG_MESSAGE_DETAIL = ord("D")

# Type OIDs: what each parameter is sent as, and how a result column is read back.
_BOOL, _INT8, _INT2, _INT4, _OID, _FLOAT4, _FLOAT8 = 16, 20, 21, 23, 26, 700, 701
_DATE, _TIMESTAMP, _TIMESTAMPTZ, _NUMERIC = 1082, 1114, 1184, 1700


class Error(Exception):
    """psycopg.Error's counterpart; ``str()`` is the server's message."""


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


class _Errors:
    """psycopg.errors' counterpart: the SQLSTATEs the storage tells apart."""

    class UniqueViolation(DatabaseError):
        pass

    class UndefinedTable(DatabaseError):
        pass

    class InvalidSchemaName(DatabaseError):
        pass


errors = _Errors
_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "23505": _Errors.UniqueViolation, "42P01": _Errors.UndefinedTable, "3F000": _Errors.InvalidSchemaName,
}

_lib: Any = None


def _candidates() -> Iterator[str]:
    # The libpq psycopg[binary] ships first: it loads in ~5 ms, where the system's libpq.so.5 (24
    # shared libraries: Kerberos, LDAP, ...) takes ~25 ms on the test machine. Then the system's.
    # Never ctypes.util.find_library: it runs ldconfig (a fork and ~10 ms).
    for entry in sys.path:
        libs = os.path.join(entry or ".", "psycopg_binary.libs")
        try:
            names = sorted(os.listdir(libs))
        except OSError:
            continue
        for name in names:
            if name.startswith("libpq") and ".so" in name:
                yield os.path.join(libs, name)
    yield "libpq.so.5"
    yield "libpq.5.dylib"


def _load() -> Any:
    global _lib
    if _lib is not None:
        return _lib
    lib = None
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate)
            break
        except OSError:
            continue
    if lib is None:
        raise ImportError("no libpq to load (install libpq5 or psycopg[binary])")
    p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, restype, argtypes in (
        ("PQconnectdbParams", p, [ctypes.POINTER(c), ctypes.POINTER(c), i]),
        ("PQstatus", i, [p]),
        ("PQerrorMessage", c, [p]),
        ("PQparameterStatus", c, [p, c]),
        ("PQfinish", None, [p]),
        ("PQexec", p, [p, c]),
        ("PQexecParams", p, [p, c, i, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(c), p, p, i]),
        ("PQresultStatus", i, [p]),
        ("PQresultErrorField", c, [p, i]),
        ("PQresultErrorMessage", c, [p]),
        ("PQntuples", i, [p]),
        ("PQnfields", i, [p]),
        ("PQftype", ctypes.c_uint, [p, i]),
        ("PQgetvalue", p, [p, i, i]),
        ("PQgetlength", i, [p, i, i]),
        ("PQgetisnull", i, [p, i, i]),
        ("PQclear", None, [p]),
        ("PQconninfoParse", p, [c, ctypes.POINTER(p)]),
        ("PQconninfoFree", None, [p]),
        ("PQfreemem", None, [p]),
    ):
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


def _decode(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace").strip() if raw else ""


# -- conninfo ---------------------------------------------------------------------------------
class _ConninfoOption(ctypes.Structure):
    _fields_ = [("keyword", ctypes.c_char_p), ("envvar", ctypes.c_char_p), ("compiled", ctypes.c_char_p),
                ("val", ctypes.c_char_p), ("label", ctypes.c_char_p), ("dispchar", ctypes.c_char_p),
                ("dispsize", ctypes.c_int)]


class conninfo:  # noqa: N801 - psycopg.conninfo's counterpart, used as a namespace
    @staticmethod
    def conninfo_to_dict(dsn: str) -> dict[str, str]:
        """The DSN's keywords, as libpq parses them; Error when it cannot (its message is never
        shown: it may quote the password)."""
        lib = _load()
        err = ctypes.c_void_p()
        options = lib.PQconninfoParse(dsn.encode(), ctypes.byref(err))
        if not options:
            if err.value:
                lib.PQfreemem(err)
            raise Error("cannot parse the connection string")
        try:
            out: dict[str, str] = {}
            array = ctypes.cast(options, ctypes.POINTER(_ConninfoOption))
            k = 0
            while array[k].keyword is not None:
                if array[k].val is not None:
                    out[array[k].keyword.decode()] = array[k].val.decode("utf-8", "replace")
                k += 1
            return out
        finally:
            lib.PQconninfoFree(options)


# -- parameters and results ---------------------------------------------------------------------
def _placeholders(sql: str) -> tuple[bytes, list[str | int]]:
    """psycopg's ``%s`` / ``%(name)s`` / ``%%`` as libpq's ``$n``: the statement and, for each
    ``$n``, the dict key or the position it reads."""
    out: list[str] = []
    order: list[str | int] = []
    named: dict[str, int] = {}
    position = 0
    start = 0
    while True:
        k = sql.find("%", start)
        if k < 0:
            out.append(sql[start:])
            break
        out.append(sql[start:k])
        nxt = sql[k + 1:k + 2]
        if nxt == "%":
            out.append("%")
            start = k + 2
        elif nxt == "s":
            order.append(position)
            position += 1
            out.append(f"${len(order)}")
            start = k + 2
        elif nxt == "(":
            end = sql.index(")s", k)
            name = sql[k + 2:end]
            if name not in named:
                order.append(name)
                named[name] = len(order)
            out.append(f"${named[name]}")
            start = end + 2
        else:
            raise InterfaceError(f"unsupported placeholder in {sql[k:k + 8]!r}")
    return "".join(out).encode(), order


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = _text(value)[1]
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: Any) -> tuple[int, str]:
    """(type OID or 0 to let the server infer it, text form), as psycopg types its parameters."""
    if isinstance(value, bool):
        return _BOOL, "t" if value else "f"
    if isinstance(value, int):
        return _INT8, str(value)
    if isinstance(value, float):
        return _FLOAT8, repr(value) if value == value and abs(value) != float("inf") else \
            ("NaN" if value != value else ("Infinity" if value > 0 else "-Infinity"))
    if isinstance(value, str):
        return 0, value
    if isinstance(value, datetime):
        return (_TIMESTAMP if value.tzinfo is None else _TIMESTAMPTZ), value.isoformat()
    if isinstance(value, date):
        return _DATE, value.isoformat()
    if isinstance(value, (list, tuple)):
        return 0, "{" + ",".join(_array_item(v) for v in value) + "}"
    raise InterfaceError(f"cannot send a {type(value).__name__} to PostgreSQL")


def _value(oid: int, raw: bytes) -> Any:
    if oid == _BOOL:
        return raw == b"t"
    if oid in (_INT8, _INT2, _INT4, _OID):
        return int(raw)
    if oid in (_FLOAT8, _FLOAT4):
        return float(raw)
    text = raw.decode("utf-8")
    if oid == _TIMESTAMPTZ or oid == _TIMESTAMP:
        return datetime.fromisoformat(text)
    if oid == _DATE:
        return date.fromisoformat(text)
    if oid == _NUMERIC:
        from decimal import Decimal

        return Decimal(text)
    return text


class Cursor:
    """The rows of the last statement: ``fetchall``/``fetchone``, and ``executemany``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> Cursor:
        self._rows = self._conn._execute(sql, params)
        return self

    def executemany(self, sql: str, params_seq: Sequence[Any]) -> None:
        for params in params_seq:
            self._conn._execute(sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._rows = []


class _Transaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._savepoint: str | None = None

    def __enter__(self) -> _Transaction:
        conn = self._conn
        if conn._depth:
            self._savepoint = f"queuectl_sp_{conn._depth}"
            conn._execute(f"SAVEPOINT {self._savepoint}")
        else:
            conn._execute("BEGIN")
        conn._depth += 1
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        conn = self._conn
        conn._depth -= 1
        if exc_type is None:
            conn._execute(f"RELEASE SAVEPOINT {self._savepoint}" if self._savepoint else "COMMIT")
        elif not conn.closed:
            try:
                conn._execute(f"ROLLBACK TO SAVEPOINT {self._savepoint}" if self._savepoint else "ROLLBACK")
            except Error:
                pass  # the original error is the one to report


class Connection:
    """One libpq connection in autocommit mode, as ``psycopg.connect(..., autocommit=True)``."""

    def __init__(self, pg: int) -> None:
        self._pg: int | None = pg
        self._depth = 0
        self._statements: dict[str, tuple[bytes, list[str | int]]] = {}

    @property
    def closed(self) -> bool:
        return self._pg is None or _lib.PQstatus(self._pg) != _CONNECTION_OK

    def close(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            _lib.PQfinish(pg)

    def add_notify_handler(self, handler: Any) -> None:
        """CLI processes never LISTEN: nothing to deliver."""

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def cursor(self) -> Cursor:
        return Cursor(self)

    def execute(self, sql: str, params: Any = None) -> Cursor:
        return Cursor(self).execute(sql, params)

    def _execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        lib = _lib
        if self._pg is None:
            raise OperationalError("the connection is closed")
        if params is None:
            # No parameters: the simple protocol, which also runs several statements (migrations).
            res = lib.PQexec(self._pg, sql.encode())  # as psycopg: no params, no placeholders
        else:
            prepared = self._statements.get(sql)
            if prepared is None:
                prepared = self._statements[sql] = _placeholders(sql)
            text, order = prepared
            values = [params[key] for key in order]  # dict keys, or positions 0, 1, 2 ...
            n = len(values)
            types = (ctypes.c_uint * n)()
            texts = (ctypes.c_char_p * n)()
            for k, value in enumerate(values):
                if value is not None:
                    oid, as_text = _text(value)
                    types[k] = oid
                    texts[k] = as_text.encode("utf-8", "surrogateescape")
            res = lib.PQexecParams(self._pg, text, n, types, texts, None, None, 0)
        try:
            return self._result(res)
        finally:
            lib.PQclear(res)

    def _result(self, res: int | None) -> list[tuple[Any, ...]]:
        lib = _lib
        status = lib.PQresultStatus(res) if res else -1
        if status == _PGRES_TUPLES_OK:
            nrows, ncols = lib.PQntuples(res), lib.PQnfields(res)
            oids = [lib.PQftype(res, c) for c in range(ncols)]
            getvalue, getlength, isnull = lib.PQgetvalue, lib.PQgetlength, lib.PQgetisnull
            return [tuple(None if isnull(res, r, c) else _value(oids[c], ctypes.string_at(getvalue(res, r, c),
                                                                                          getlength(res, r, c)))
                          for c in range(ncols)) for r in range(nrows)]
        if status in (_PGRES_COMMAND_OK, _PGRES_EMPTY_QUERY):
            return []
        if not res or lib.PQstatus(self._pg) == _CONNECTION_BAD:
            raise OperationalError(_decode(lib.PQerrorMessage(self._pg)) or "the connection was lost")
        sqlstate = _decode(lib.PQresultErrorField(res, _PG_DIAG_SQLSTATE))
        message = _decode(lib.PQresultErrorField(res, _PG_DIAG_MESSAGE_PRIMARY)) or \
            _decode(lib.PQresultErrorMessage(res))
        detail = _decode(lib.PQresultErrorField(res, _PG_DIAG_MESSAGE_DETAIL))
        if detail:
            message += f"\nDETAIL:  {detail}"
        cls = _BY_SQLSTATE.get(sqlstate) or (OperationalError if sqlstate.startswith("08") else DatabaseError)
        raise cls(message)


def connect(dsn: str = "", **kwargs: Any) -> Connection:
    """As ``psycopg.connect(dsn, autocommit=True, **kwargs)``: keyword arguments override the DSN's."""
    lib = _load()
    kwargs.pop("autocommit", None)
    # Parameters are sent and results decoded as UTF-8, whatever the database's own encoding.
    kwargs["client_encoding"] = "UTF8"
    keys = [b"dbname"] + [k.encode() for k in kwargs]
    vals = [dsn.encode()] + [str(v).encode() for v in kwargs.values()]
    n = len(keys)
    ckeys = (ctypes.c_char_p * (n + 1))(*keys, None)
    cvals = (ctypes.c_char_p * (n + 1))(*vals, None)
    pg = lib.PQconnectdbParams(ckeys, cvals, 1)
    if not pg:
        raise OperationalError("connection failed: out of memory")
    if lib.PQstatus(pg) != _CONNECTION_OK:
        message = _decode(lib.PQerrorMessage(pg))
        lib.PQfinish(pg)
        raise OperationalError(f"connection failed: {message}")
    conn = Connection(pg)
    # Timestamps are read back by datetime.fromisoformat: make sure the server writes ISO.
    style = _decode(lib.PQparameterStatus(pg, b"DateStyle"))
    if not style.startswith("ISO"):
        conn._execute("SET DateStyle = ISO")
    return conn


def lite_storage(config: Config) -> PostgresStorage:
    """The configured PostgreSQL storage on this driver; ImportError when libpq cannot be loaded
    (the caller then uses the psycopg one)."""
    from .postgres_storage import PostgresStorage

    _load()
    return PostgresStorage(config["postgres.dsn"], config["postgres.schema"], config["postgres.connect_timeout"],
                           driver=sys.modules[__name__])
