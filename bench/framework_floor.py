"""The framework floor: what any click + pluggy CLI must do to enqueue one job, and nothing more.

Imports click and pluggy, lists the ``queuectl`` entry points (without importing them), reads
``$QUEUECTL_HOME/config.toml`` and inserts one row in one transaction: into SQLite, or with
``--postgres DSN`` into PostgreSQL with psycopg. `queuectl bench` times it beside `queuectl enqueue`.
"""

import os, sys, time, tomllib  # noqa: E401
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
    with psycopg.connect(sys.argv[2]) as db:  # one transaction, committed on leaving the block
        db.execute("CREATE TABLE IF NOT EXISTS floor_jobs (id text PRIMARY KEY, command text, created_at float8)")
        db.execute("INSERT INTO floor_jobs VALUES (%s, %s, %s)", row)
else:
    import sqlite3
    db = sqlite3.connect(os.path.join(home, "floor.db"))
    db.execute("PRAGMA journal_mode = WAL")  # as queuectl's SQLite storage opens its database
    db.execute("PRAGMA synchronous = NORMAL")
    with db:  # one transaction
        db.execute("CREATE TABLE IF NOT EXISTS floor_jobs (id TEXT PRIMARY KEY, command TEXT, created_at REAL)")
        db.execute("INSERT INTO floor_jobs VALUES (?, ?, ?)", row)
    db.close()
print(row[0])
