"""Start-up must never serve a stale view of the installed plugins: a plugin installed, changed or
removed between two `queuectl` runs is seen by the next one, and every installed plugin hears
every event. Guards any start-up cache of which plugin implements which hook."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from process_helpers import install_plugin

HEARS = ("from queuectl_core.api import hookimpl\n"
         "@hookimpl\n"
         "def queuectl_job_event(event):\n"
         "    with open({log!r}, 'a') as fh:\n"
         "        fh.write(f'{name} {{event.kind}} {{event.job.id}}\\n')\n")
PROVIDES = ("\n@hookimpl\n"
            "def queuectl_register_backoff_policies(register):\n"
            "    register('{name}-flat', lambda config: None)\n")


def _uninstall(site: Path, name: str) -> None:
    shutil.rmtree(site / f"{name}-0.1.dist-info")
    (site / f"{name}.py").unlink()
    shutil.rmtree(site / "__pycache__", ignore_errors=True)


def _plugins(q: Any, env: dict[str, str]) -> dict[str, Any]:
    return {p["name"]: p for p in json.loads(q.run("plugins", "list", "--json", env=env).stdout)}


def test_installing_changing_and_removing_a_plugin_is_noticed_at_once(q: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    log = tmp_path / "events.log"
    env = {"PYTHONPATH": str(site)}

    q.run("enqueue", "--id", "before", "--cmd", "true", env=env)
    assert "alpha" not in _plugins(q, env)

    # Installed: the very next process loads it and it hears its first event.
    install_plugin(site, "alpha", HEARS.format(log=str(log), name="alpha"))
    q.run("enqueue", "--id", "a1", "--cmd", "true", env=env)
    assert log.read_text() == "alpha enqueued a1\n"
    assert _plugins(q, env)["alpha"]["hooks"] == ["queuectl_job_event"]

    # A second plugin beside it: both hear every event, neither is skipped.
    install_plugin(site, "beta", HEARS.format(log=str(log), name="beta"))
    q.run("enqueue", "--id", "b1", "--cmd", "true", env=env)
    assert sorted(log.read_text().splitlines()[1:]) == ["alpha enqueued b1", "beta enqueued b1"]

    # Upgraded in place (same dist-info, a new hook): the new hook is used at once.
    time.sleep(0.01)  # a different mtime even on coarse-grained file systems
    (site / "beta.py").write_text(HEARS.format(log=str(log), name="beta") + PROVIDES.format(name="beta"))
    shutil.rmtree(site / "__pycache__", ignore_errors=True)
    q.run("config", "set", "backoff", "beta-flat", env=env)
    assert _plugins(q, env)["beta"]["hooks"] == ["queuectl_job_event", "queuectl_register_backoff_policies"]
    q.run("config", "set", "backoff", "exponential", env=env)

    # Removed: gone from the next process, and its hook is never called again.
    _uninstall(site, "alpha")
    q.run("enqueue", "--id", "c1", "--cmd", "true", env=env)
    assert log.read_text().splitlines()[3:] == ["beta enqueued c1"]
    assert "alpha" not in _plugins(q, env) and "beta" in _plugins(q, env)

    _uninstall(site, "beta")
    q.run("enqueue", "--id", "d1", "--cmd", "true", env=env)
    assert "beta" not in _plugins(q, env)
    assert log.read_text().splitlines()[-1] == "beta enqueued c1"
    assert [j["id"] for j in q.json("list")] == ["d1", "c1", "b1", "a1", "before"]


def _fast(q: Any, env: dict[str, str], *args: str) -> str:
    """`queuectl enqueue ARGS`, asserting it took the click-free path (the start-up index was
    trusted): click is never imported. Returns the new job's id."""
    proc = q.run("enqueue", *args, env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "queuectl_core.fast_enqueue" in imported and "click" not in imported, sorted(imported)
    return proc.stdout.strip()


def test_a_warm_start_up_index_notices_plugins_installed_edited_and_removed(q: Any, tmp_path: Path) -> None:
    """The second `enqueue` runs from the start-up index; every change to the installed plugins
    between two runs reaches the very next one: the event arrives, or stops arriving."""
    site = tmp_path / "site"
    site.mkdir()
    log = tmp_path / "events.log"
    env = {"PYTHONPATH": str(site)}
    q.run("enqueue", "--cmd", "true", env=env)  # a full start writes the index
    assert (q.home / ".startup-index.json").exists()
    _fast(q, env, "--cmd", "true")

    # A plugin that only provides a backoff policy: nothing of it is needed to enqueue.
    install_plugin(site, "gamma", "from queuectl_core.api import hookimpl\n" + PROVIDES.format(name="gamma"))
    q.run("enqueue", "--id", "g0", "--cmd", "true", env=env)
    assert not log.exists()
    # Edited in place to hear events (no file added or removed in site/): heard at once.
    time.sleep(0.01)
    (site / "gamma.py").write_text(HEARS.format(log=str(log), name="gamma") + PROVIDES.format(name="gamma"))
    q.run("enqueue", "--id", "g1", "--cmd", "true", env=env)
    assert log.read_text() == "gamma enqueued g1\n"
    q.run("enqueue", "--id", "g2", "--cmd", "true", env=env)
    assert log.read_text().splitlines()[-1] == "gamma enqueued g2"

    # Removed: the next enqueue, fast again, no longer calls it.
    _uninstall(site, "gamma")
    q.run("enqueue", "--id", "g3", "--cmd", "true", env=env)
    _fast(q, env, "--id", "g4", "--cmd", "true")
    assert log.read_text().splitlines()[-1] == "gamma enqueued g2"

    # Installed where a warm index had been trusted: the first enqueue after it is heard.
    install_plugin(site, "delta", HEARS.format(log=str(log), name="delta"))
    q.run("enqueue", "--id", "d1", "--cmd", "true", env=env)
    assert log.read_text().splitlines()[-1] == "delta enqueued d1"
    q.run("enqueue", "--id", "d2", "--cmd", "true", env=env)  # from the index it rewrote: still heard
    assert log.read_text().splitlines()[-1] == "delta enqueued d2"
    _uninstall(site, "delta")
    q.run("enqueue", "--id", "d3", "--cmd", "true", env=env)
    _fast(q, env, "--id", "d4", "--cmd", "true")
    assert log.read_text().splitlines()[-1] == "delta enqueued d2"
    assert [j["id"] for j in q.json("list")][:9] == ["d4", "d3", "d2", "d1", "g4", "g3", "g2", "g1", "g0"]


# A plugin whose writes reach the disk only when the interpreter ends: a module-level file left
# open (flushed when it is finalised) and an atexit handler.
AT_EXIT = ("import atexit\n"
           "from queuectl_core.api import hookimpl\n"
           "_log = open({log!r}, 'a')\n"
           "atexit.register(lambda: open({log!r}, 'a').write('atexit\\n'))\n"
           "@hookimpl\n"
           "def queuectl_job_event(event):\n"
           "    _log.write(f'{{event.kind}} {{event.job.id}}\\n')\n")


def _full_then_fast(q: Any, tmp_path: Path, name: str, source: str) -> tuple[Path, str]:
    """Install plugin ``name`` (``source`` formatted with ``log``), enqueue job `full` the full
    way (which writes the start-up index), then one job the click-free way: (log, its id)."""
    log = tmp_path / "events.log"
    env = {"PYTHONPATH": str(install_plugin(tmp_path / "site", name, source.format(log=str(log))))}
    q.run("enqueue", "--id", "full", "--cmd", "true", env=env)
    return log, _fast(q, env, "--cmd", "true")


def test_a_fast_enqueue_ends_as_python_does_when_a_plugin_ran(q: Any, tmp_path: Path) -> None:
    """With only queuectl's own plugins the click-free `enqueue` ends the process without the
    interpreter's teardown (queuectl_core.fast_enqueue._exit_now); with a third-party plugin it
    ends normally, so a plugin's atexit handlers and buffered files are never lost."""
    log, job_id = _full_then_fast(q, tmp_path, "gamma", AT_EXIT)
    # (the handler runs before the open file is finalised: its line comes first)
    assert log.read_text().splitlines() == ["atexit", "enqueued full", "atexit", f"enqueued {job_id}"]


# A plugin that uses `inspect`, which a click-free enqueue leaves to a stand-in until first used
# (queuectl_core.deferred_import): bound at import, used at the event.
USES_INSPECT = ("import inspect\n"
                "from inspect import signature\n"
                "from queuectl_core.api import hookimpl\n"
                "def _probe(a, b=2): pass\n"
                "@hookimpl\n"
                "def queuectl_job_event(event):\n"
                "    with open({log!r}, 'a') as fh:\n"
                "        fh.write(f'{{event.job.id}} {{signature(_probe)}} {{inspect.isfunction(_probe)}}"
                " {{inspect.ismodule(inspect)}}\\n')\n")


def test_a_plugin_that_uses_inspect_gets_it_on_the_fast_path(q: Any, tmp_path: Path) -> None:
    log, job_id = _full_then_fast(q, tmp_path, "epsilon", USES_INSPECT)
    assert log.read_text().splitlines() == ["full (a, b=2) True True", f"{job_id} (a, b=2) True True"]


# A plugin with a setting of its own that its event handler reads from the event's config.
READS_CONFIG = ("from queuectl_core.api import Setting, hookimpl\n"
                "@hookimpl\n"
                "def queuectl_register_settings(register):\n"
                "    register(Setting('zeta.greeting', str, 'hello', 'How zeta greets a job.'))\n"
                "@hookimpl\n"
                "def queuectl_job_event(event):\n"
                "    c = event.config\n"
                "    with open({log!r}, 'a') as fh:\n"
                "        fh.write(f'{{event.job.id}} {{c[\"zeta.greeting\"]}} {{c.source(\"zeta.greeting\")}}"
                " {{type(c).__name__}} {{c.home.name}}\\n')\n")


def test_a_plugin_that_reads_the_config_gets_a_config_on_the_fast_path(q: Any, tmp_path: Path) -> None:
    """The click-free enqueue hands recorded values, not a Config, to queuectl's own plugins only:
    a third party's handler gets the Config a full start gives, with its own keys and sources."""
    log, job_id = _full_then_fast(q, tmp_path, "zeta", READS_CONFIG)
    home = q.home.name
    assert log.read_text().splitlines() == [f"full hello default Config {home}", f"{job_id} hello default Config {home}"]


# A plugin whose setting's default is computed, and cannot be here (its variable is not set).
RAISING_DEFAULT = ("import os\n"
                   "from queuectl_core.api import Setting, hookimpl\n"
                   "@hookimpl\n"
                   "def queuectl_register_settings(register):\n"
                   "    register(Setting('eta.dir', str, lambda home: os.environ['ETA_DIR_NOT_SET'], 'Where eta keeps things.'))\n"
                   "@hookimpl\n"
                   "def queuectl_job_event(event):\n"
                   "    with open({log!r}, 'a') as fh:\n"
                   "        fh.write(f'{{event.job.id}}\\n')\n")


def test_a_default_that_cannot_be_computed_does_not_cost_the_fast_path(q: Any, tmp_path: Path) -> None:
    """The index records every key's value for queuectl's own plugins; a third party's default
    that raises when computed (no enqueue reads it) leaves those out, not the whole index."""
    log, job_id = _full_then_fast(q, tmp_path, "eta", RAISING_DEFAULT)
    index = json.loads((q.home / ".startup-index.json").read_text())
    assert index["values"] is None and log.read_text().splitlines() == ["full", job_id]
