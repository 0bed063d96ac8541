"""queuectl_core.testing, as a plugin author uses it: importable without psycopg, a config builder,
and the conformance suite runnable against a backend from outside queuectl's own tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queuectl_core.errors import ConfigError
from queuectl_core.testing import make_config


def test_the_suite_imports_and_runs_without_psycopg(tmp_path: Path) -> None:
    # A plugin's test file: subclass the suite for SQLite, with psycopg made unimportable (a
    # package of that name first on the path, which refuses to import).
    blocked = tmp_path / "blocked" / "psycopg"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('psycopg is not installed here')\n")
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        import pytest
        from queuectl_core.testing import StorageConformance, make_config, register_plugin

        class TestMine(StorageConformance):
            @pytest.fixture
            def storage_factory(self, tmp_path):
                from queuectl_plugins.sqlite_storage import SQLiteStorage
                opened = []
                def factory():
                    opened.append(SQLiteStorage(tmp_path / "q.db"))
                    return opened[-1]
                yield factory
                for s in opened:
                    s.close()

        def test_psycopg_is_really_absent():
            with pytest.raises(ImportError):
                import psycopg  # noqa: F401
            import queuectl_core.testing as t
            assert not any("postgres" in name for name in dir(t))
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                           "psycopg or list_jobs or apply or cancel or fail_with_retry", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocked.parent), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_make_config_builds_a_validated_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"sqlite.path": str(tmp_path / "q.db"), "max-retries": 1}, lease_seconds=5)
    assert config["max_retries"] == 1 and config["lease_seconds"] == 5.0
    assert config["sqlite.path"] == str(tmp_path / "q.db")
    assert config["backoff_base"] == 2  # defaults for the rest
    assert config.source("lease_seconds") == "config.toml"
    with pytest.raises(ConfigError):
        make_config(tmp_path, max_retries=-1)
    with pytest.raises(ConfigError):
        make_config(tmp_path, {"no.such.key": 1})
