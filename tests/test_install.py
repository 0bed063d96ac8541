"""A plain, non-editable install from a built wheel ships and discovers every bundled plugin.

The editable install the other tests run against finds `plugins/` through the source tree; only a
real wheel proves the `package-dir` mapping, the entry points and the package data are right.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the wheel is built from: the files pyproject.toml needs, nothing from the working tree's
# build products (egg-info, build/, __pycache__), so the test cannot pass on stale leftovers.
SOURCES = ("pyproject.toml", "README.md", "queuectl", "queuectl_core", "plugins")

pytestmark = pytest.mark.slow


def _sh(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system site-packages) with queuectl installed from a built wheel."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = work / "dist"
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src)
    wheels = list(dist.glob("queuectl-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = work / "venv"
    _sh(sys.executable, "-m", "venv", env_dir)
    # Dependencies resolve as for any user: from the configured index.
    _sh(env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheels[0])
    return env_dir


def _env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUECTL_", "PYTHON", "VIRTUAL_ENV"))}
    env["QUEUECTL_HOME"] = str(home)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_wheel_ships_and_discovers_every_bundled_plugin(venv: Path, tmp_path: Path) -> None:
    env = _env(venv, tmp_path / "home")
    queuectl = venv / "bin" / "queuectl"
    # Imported from the venv's site-packages, never from this source tree.
    where = _sh(venv / "bin" / "python", "-c",
                "import queuectl_core, queuectl_plugins; print(queuectl_core.__file__); print(queuectl_plugins.__file__)",
                env=env, cwd=tmp_path).stdout.split()
    assert all(str(venv) in path for path in where), where
    _sh(venv / "bin" / "python", "-c", "import queuectl_core, pathlib; "
        "assert (pathlib.Path(queuectl_core.__file__).parent / 'py.typed').exists()", env=env, cwd=tmp_path)
    # The application API: the top-level `queuectl` package, from the wheel too.
    api = _sh(venv / "bin" / "python", "-c", "import queuectl, pathlib; "
              "assert (pathlib.Path(queuectl.__file__).parent / 'py.typed').exists(); "
              "print(queuectl.__file__); print(queuectl.Queue().enqueue('echo from python', id='py').id)",
              env=env, cwd=tmp_path).stdout.split()
    assert str(venv) in api[0] and api[1] == "py", api

    bundled = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["queuectl"]
    listed = {p["name"]: p for p in json.loads(_sh(queuectl, "plugins", "list", "--json", env=env).stdout)}
    assert set(bundled) <= set(listed)
    for name, module in bundled.items():
        assert listed[name]["module"] == module
        assert listed[name]["version"]
    assert listed["sqlite"]["provides"]["storages"] == ["sqlite"]
    assert listed["subprocess"]["provides"]["executors"] == ["subprocess"]
    assert listed["exponential"]["provides"]["backoff_policies"] == ["exponential"]
    assert listed["stdout"]["hooks"] == ["queuectl_job_event"]

    # The round trip: enqueue, drain with a burst worker, read the job's output.
    _sh(queuectl, "enqueue", "--id", "hello", "--cmd", "echo hi from the wheel", env=env)
    drained = _sh(queuectl, "worker", "start", "--burst", env=env, timeout=120)
    assert "Picked job: hello | cmd: echo hi from the wheel" in drained.stdout
    assert "completed: hello" in drained.stdout and "completed: py" in drained.stdout
    jobs = json.loads(_sh(queuectl, "list", "--json", env=env).stdout)
    assert sorted((j["id"], j["state"]) for j in jobs) == [("hello", "completed"), ("py", "completed")]
    assert _sh(queuectl, "logs", "hello", env=env).stdout == "hi from the wheel\n"


def test_readme_demo_runs_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """demo.sh, the README's first setup step: a job lands in the DLQ and the rest complete."""
    env = _env(venv, tmp_path / "unused")
    env["TMPDIR"] = str(tmp_path)
    proc = _sh("sh", ROOT / "demo.sh", env=env, cwd=tmp_path, timeout=120)
    out = proc.stdout
    assert "DLQ: broken (exit 3)" in out
    assert "DLQ: too-slow (timed out after 1s)" in out
    assert "completed: hello" in out and "completed: later" in out
    # status aligns its counts (and split pending): the numbers, not the spacing, are the contract.
    assert re.search(r"^completed\s+5$", out, re.M) and re.search(r"^dead\s+2$", out, re.M)
    assert "Hello from hello" in out and "about to fail" in out
    assert not (tmp_path / "unused").exists()  # the demo uses its own temporary queue


def test_example_plugin_installs_next_to_the_wheel(venv: Path, tmp_path: Path) -> None:
    """docs/plugins/example is a real package: installed, it is discovered through its entry point."""
    example = tmp_path / "example"
    shutil.copytree(ROOT / "docs" / "plugins" / "example", example,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    env = _env(venv, tmp_path / "home")
    _sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", example, env=env)
    try:
        listed = {p["name"]: p for p in json.loads(_sh(venv / "bin" / "queuectl", "plugins", "list", "--json",
                                                       env=env).stdout)}
        assert listed["jsonl_events"]["version"] == "0.1.0"
        assert listed["jsonl_events"]["provides"]["settings"] == ["jsonl_events.path"]
        _sh(venv / "bin" / "queuectl", "enqueue", "--id", "e1", "--cmd", "true", env=env)
        _sh(venv / "bin" / "queuectl", "worker", "start", "--burst", env=env, timeout=120)
        kinds = [json.loads(line)["kind"] for line in (tmp_path / "home" / "events.jsonl").read_text().splitlines()]
        assert kinds == ["enqueued", "worker_started", "claimed", "completed", "worker_stopped"]
    finally:
        _sh(venv / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "queuectl-jsonl-events", env=env)


def _tutorial_sh_blocks() -> list[str]:
    import re

    text = (ROOT / "docs" / "plugins" / "tutorial.md").read_text()
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S)


def test_the_tutorial_step_by_step_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """docs/plugins/tutorial.md's shell steps, run as written from a checkout: install the example,
    try it, then install its test extra and run its own tests against the installed package."""
    shutil.copytree(ROOT / "docs" / "plugins" / "example", tmp_path / "docs" / "plugins" / "example",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache"))
    env = _env(venv, tmp_path / "unused")
    env["TMPDIR"] = str(tmp_path)
    try_it, test_it = _tutorial_sh_blocks()
    try:
        out = _sh("sh", "-ec", try_it, env=env, cwd=tmp_path, timeout=300).stdout
        assert "jsonl_events 0.1.0" in out
        kinds = [json.loads(line)["kind"] for line in out.splitlines() if line.startswith('{"kind"')]
        assert kinds == ["enqueued", "worker_started", "claimed", "completed", "worker_stopped"]
        tests = _sh("sh", "-ec", test_it, env=env, cwd=tmp_path, timeout=300).stdout
        assert "2 passed" in tests, tests
    finally:
        _sh(venv / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "queuectl-jsonl-events", env=env)
