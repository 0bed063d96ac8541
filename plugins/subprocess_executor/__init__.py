"""The ``subprocess`` executor: each attempt runs as a child process of the worker.

This module is what every command loads: the plugin's hooks and its settings. The executor itself
(:mod:`.executor`) and its limits (:mod:`.limits`) are imported when a worker makes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl
from queuectl_core.framework.settings import Setting, check_path

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config

    from .executor import SubprocessExecutor


def _make(config: Config) -> SubprocessExecutor:
    from .executor import SubprocessExecutor

    return SubprocessExecutor(Path(config["subprocess.log_dir"]).expanduser(), config["subprocess.max_log_bytes"],
                              config["subprocess.kill_grace_seconds"], config["subprocess.shell"],
                              config["subprocess.direct_exec"], config.secret_env_vars(),
                              config["subprocess.limits"], config["subprocess.limits_poll_ms"] / 1000,
                              config["subprocess.log_file"])


@hookimpl
def queuectl_register_executors(register: Callable[[str, Any], None]) -> None:
    register("subprocess", _make)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("subprocess.log_dir", str, lambda home: str(home / "logs"),
                     "Where each attempt's output is written (default: logs in QUEUECTL_HOME).", validate=check_path))
    register(Setting("subprocess.log_file", str, "auto",
                     "Whether each attempt's output is also written to ID.N.log in log_dir: auto (only when the "
                     "storage keeps no output), or always (a copy on the worker's host, for tail -f there).",
                     choices=("auto", "always")))
    register(Setting("subprocess.max_log_bytes", int, 4 * 1024 * 1024,
                     "Most bytes kept per attempt: the first and last halves; the middle is dropped.", minimum=1024))
    register(Setting("subprocess.kill_grace_seconds", float, 5.0,
                     "After SIGTERM (timeout or forced stop), how long before SIGKILL.", minimum=0))
    register(Setting("subprocess.shell", str, "/bin/sh", "The shell that runs each command as `SHELL -c COMMAND`."))
    register(Setting("subprocess.direct_exec", bool, True,
                     "Run a command with no shell syntax (plain words only) directly, without starting a shell."))
    # -- limits (see .limits) --
    register(Setting("subprocess.limits", str, "auto",
                     "How a job's memory and cpu_time limits are enforced: auto (cgroup v2 where the worker may "
                     "create one, else procfs), cgroup, or procfs (polling the process group).",
                     choices=("auto", "cgroup", "procfs")))
    register(Setting("subprocess.limits_poll_ms", int, 200,
                     "How often a job with limits is measured (procfs, and cgroup without memory.max).",
                     minimum=10, maximum=60_000))
