"""The framework floor: what any click + pluggy CLI must do to enqueue one job, and nothing more.

Imports click and pluggy, lists the ``queuectl`` entry points (without importing them), reads
``$QUEUECTL_HOME/config.toml`` and inserts one row in one transaction: into SQLite, or with
``--postgres [DSN]`` into PostgreSQL with psycopg (DSN default: QUEUECTL_POSTGRES_DSN, then the
config's; the table goes in the config's postgres.schema). `queuectl bench` times it beside
`queuectl enqueue --cmd true` (W1); run it alone as ``python bench/framework_floor.py``.
"""

import os
import sys
import time
import tomllib
from importlib.metadata import entry_points

import click  # noqa: F401
import pluggy  # noqa: F401

plugins = [ep.name for ep in entry_points(group="queuectl")]
home = os.environ.get("QUEUECTL_HOME") or os.path.expanduser("~/.config/queuectl")
os.makedirs(home, mode=0o700, exist_ok=True)
try:
    with open(os.path.join(home, "config.toml"), "rb") as fh:
        config = tomllib.load(fh)
except FileNotFoundError:
    config = {}
row = (os.urandom(8).hex(), "true", time.time())
if sys.argv[1:2] == ["--postgres"]:
    import psycopg

    pg = config.get("postgres", {})
    dsn = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("QUEUECTL_POSTGRES_DSN", pg.get("dsn", ""))
    with psycopg.connect(dsn, options=f"-c search_path={pg.get('schema', 'queuectl')}") as db:  # one transaction
        db.execute("CREATE TABLE IF NOT EXISTS floor_jobs (id text PRIMARY KEY, command text, created_at float8)")
        db.execute("INSERT INTO floor_jobs VALUES (%s, %s, %s)", row)
else:
    import sqlite3

    lite = sqlite3.connect(os.path.join(home, "floor.db"))
    lite.execute("PRAGMA journal_mode = WAL")  # as queuectl's SQLite storage opens its database
    lite.execute("PRAGMA synchronous = NORMAL")
    with lite:  # one transaction
        lite.execute("CREATE TABLE IF NOT EXISTS floor_jobs (id TEXT PRIMARY KEY, command TEXT, created_at REAL)")
        lite.execute("INSERT INTO floor_jobs VALUES (?, ?, ?)", row)
    lite.close()
print(row[0])
