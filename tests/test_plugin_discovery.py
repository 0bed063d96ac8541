"""A plugin installed, changed or removed between two `queuectl` runs is seen by the next one, and
every installed plugin hears every event."""

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

