"""Enforcing a job's memory and CPU time limits on its process tree, for the subprocess executor.

Two mechanisms, chosen per attempt (config ``subprocess.limits``: ``auto``, ``cgroup``, ``procfs``):

- **cgroup v2** (``auto`` picks it where the worker may create a cgroup): each attempt runs in a
  cgroup of its own, made beside the worker's in the cgroup2 hierarchy found in
  ``/proc/self/mountinfo``. Its members are the whole tree, a daemonised grandchild included, and
  ``cpu.stat`` counts the CPU time of every process that was ever in it. Where the memory
  controller can be enabled for it, ``memory.max`` is the limit (the kernel's OOM killer takes the
  whole cgroup down, ``memory.oom.group``), and ``memory.peak`` is the tree's peak; elsewhere the
  members' resident memory is polled.
- **procfs** (anywhere with ``/proc``): the job's process group is found in ``/proc`` every poll,
  its members' CPU time (their own and their waited-for children's) and resident memory summed.
  ``RLIMIT_CPU`` on the leader backs the CPU limit up between polls.

A limit that is exceeded stops the whole tree (SIGKILL); the executor reports which limit and the
peak (:class:`Verdict`), and the lifecycle words the failure.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Protocol

MODES = ("auto", "cgroup", "procfs")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limits made of an attempt: the limit exceeded ("memory", "cpu_time") or None, and
    the tree's peak memory as this mechanism saw it (None: not measured)."""

    exceeded: str | None
    peak_memory: int | None
    peak_is_tree: bool = False  # peak_memory is the whole tree's (cgroup memory.peak): accounting may use it
    cpu_seconds: float | None = None  # the tree's CPU time as measured here (cgroup cpu.stat, or the last poll)


class Limiter(Protocol):
    """One attempt's limits on one process tree."""

    def preexec(self) -> Callable[[], None] | None:
        """What the child runs before exec (joining its cgroup), or None."""

    def started(self, pid: int) -> None:
        """The leader (also the process group) is running."""

    def check(self) -> str | None:
        """Poll: the limit now exceeded ("memory", "cpu_time"), or None."""

    def kill(self) -> None:
        """SIGKILL every process of the tree."""

    def verdict(self, returncode: int, cpu_seconds: float | None) -> Verdict:
        """After the leader was reaped: the limit that ended the attempt, if any."""

    def close(self) -> None:
        """Release what the limiter made (its cgroup)."""


# -- /proc ----------------------------------------------------------------------------------------
def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # Field 2 (the command's name) may hold spaces and parentheses: split after its last ')'.
    return text[text.rfind(b")") + 2:].decode("ascii", "replace").split()


def group_usage(pgid: int) -> tuple[float, int, list[int]]:
    """(CPU seconds, resident bytes, pids) of the live processes in process group ``pgid``: each
    one's user + system time and that of its children it waited for, and its resident set."""
    cpu, rss, pids = 0.0, 0, []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        # f[0] is field 3 (state): field k is f[k - 3]; 5 pgrp, 14-17 utime stime cutime cstime, 24 rss.
        if f is None or len(f) < 22 or f[2] != str(pgid):
            continue
        pids.append(int(name))
        cpu += sum(int(x) for x in f[11:15]) / _TICKS
        rss += int(f[21]) * _PAGE
    return cpu, rss, pids


def resident(pids: list[int]) -> int:
    """The sum of the processes' resident memory, in bytes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class ProcfsLimiter:
    """Limits by polling the process group in /proc (and RLIMIT_CPU on the leader)."""

    def __init__(self, memory: int | None, cpu_time: float | None) -> None:
        self.memory, self.cpu_time = memory, cpu_time
        self.pgid: int | None = None
        self.peak = 0
        self.cpu = 0.0
        self.exceeded: str | None = None

    def preexec(self) -> Callable[[], None] | None:
        return None

    def started(self, pid: int) -> None:
        self.pgid = pid
        if self.cpu_time:
            # A backstop between polls, per process: SIGXCPU a second after the limit, SIGKILL after two.
            import resource

            soft = math.ceil(self.cpu_time) + 1
            try:
                resource.prlimit(pid, resource.RLIMIT_CPU, (soft, soft + 1))
            except (OSError, ValueError):
                pass

    def check(self) -> str | None:
        if self.pgid is None or self.exceeded is not None:
            return self.exceeded
        cpu, rss, _ = group_usage(self.pgid)
        self.peak, self.cpu = max(self.peak, rss), max(self.cpu, cpu)
        if self.memory and rss > self.memory:
            self.exceeded = "memory"
        elif self.cpu_time and self.cpu >= self.cpu_time:
            self.exceeded = "cpu_time"
        return self.exceeded

    def kill(self) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def verdict(self, returncode: int, cpu_seconds: float | None) -> Verdict:
        exceeded = self.exceeded
        if exceeded is None and self.cpu_time and returncode != 0:
            # RLIMIT_CPU ended it between polls (SIGXCPU, or a shell's 152), or its last poll came late.
            used = max(self.cpu, cpu_seconds or 0.0)
            if used >= self.cpu_time or returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
                exceeded = "cpu_time"
        return Verdict(exceeded, self.peak or None, cpu_seconds=self.cpu or None)

    def close(self) -> None:
        pass


# -- cgroup v2 ------------------------------------------------------------------------------------
def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup2 hierarchy is mounted (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified``
    on a hybrid system), from mountinfo: None when there is none."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split()[4].replace("\\040", " ")
    return None


def own_cgroup(path: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup in the v2 hierarchy (the ``0::`` line)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def _keyed(text: str | None, key: str) -> int | None:
    """A value of a flat-keyed cgroup file (``cpu.stat``, ``memory.events``)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


class CgroupLimiter:
    """Limits on a cgroup v2 of the attempt's own: its members are the whole tree."""

    def __init__(self, parent: str, name: str, memory: int | None, cpu_time: float | None) -> None:
        self.path = os.path.join(parent, name)
        self.memory, self.cpu_time = memory, cpu_time
        os.mkdir(self.path, 0o755)
        self.memory_max = False
        if memory:
            self.memory_max = _write(os.path.join(self.path, "memory.max"), str(memory))
            if self.memory_max:
                _write(os.path.join(self.path, "memory.swap.max"), "0")  # over the limit is over, not swapped
                _write(os.path.join(self.path, "memory.oom.group"), "1")  # the OOM killer takes the whole tree
        self.procs_fd = os.open(os.path.join(self.path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        self.peak = 0
        self.exceeded: str | None = None
        self.pid: int | None = None

    def preexec(self) -> Callable[[], None] | None:
        fd = self.procs_fd

        def join() -> None:  # in the child, before exec: everything it starts is in the cgroup
            os.write(fd, b"0")

        return join

    def started(self, pid: int) -> None:
        self.pid = pid
        os.close(self.procs_fd)
        self.procs_fd = -1

    def _pids(self) -> list[int]:
        return [int(p) for p in (_read(os.path.join(self.path, "cgroup.procs")) or "").split()]

    def _cpu(self) -> float:
        usec = _keyed(_read(os.path.join(self.path, "cpu.stat")), "usage_usec")
        return (usec or 0) / 1e6

    def _oom_killed(self) -> bool:
        events = _read(os.path.join(self.path, "memory.events"))
        return bool(_keyed(events, "oom_kill") or _keyed(events, "oom_group_kill"))

    def check(self) -> str | None:
        if self.exceeded is not None:
            return self.exceeded
        if self.memory:
            if self.memory_max:
                if self._oom_killed():
                    self.exceeded = "memory"
            else:
                rss = resident(self._pids())
                self.peak = max(self.peak, rss)
                if rss > self.memory:
                    self.exceeded = "memory"
        if self.exceeded is None and self.cpu_time and self._cpu() >= self.cpu_time:
            self.exceeded = "cpu_time"
        return self.exceeded

    def kill(self) -> None:
        if _write(os.path.join(self.path, "cgroup.kill"), "1"):
            return
        for _ in range(10):  # before cgroup.kill (Linux 5.14): each member, until none forks another
            pids = self._pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _tree_peak(self) -> int | None:
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            text = _read(os.path.join(self.path, name))
            if text and text.strip().isdigit():
                return int(text)
        return None

    def verdict(self, returncode: int, cpu_seconds: float | None) -> Verdict:
        exceeded = self.exceeded
        if exceeded is None and self.memory and self.memory_max and self._oom_killed():
            exceeded = "memory"
        if exceeded is None and self.cpu_time and returncode != 0 and self._cpu() >= self.cpu_time:
            exceeded = "cpu_time"
        cpu = self._cpu() or None
        if self.memory_max:
            peak = self._tree_peak()
            return Verdict(exceeded, peak, peak_is_tree=peak is not None, cpu_seconds=cpu)
        return Verdict(exceeded, self.peak or None, cpu_seconds=cpu)

    def close(self) -> None:
        if self.procs_fd >= 0:
            os.close(self.procs_fd)
            self.procs_fd = -1
        for delay in (0, 0.01, 0.05, 0.1, 0.25):
            time.sleep(delay)
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                self.kill()  # a member left (or not yet gone): it must not outlive its attempt


class LimitEnforcer:
    """Makes each attempt's :class:`Limiter`: cgroup v2 where the worker may create one (``auto``,
    ``cgroup``), else procfs."""

    def __init__(self, mode: str = "auto") -> None:
        self.mode = mode
        self._parent: str | None | bool = False  # False: not looked for yet; None: no cgroup to use
        self._memory_controller = False
        import threading

        self._lock = threading.Lock()  # a worker's slots start attempts from threads of their own

    def cgroup_parent(self) -> str | None:
        """The cgroup the worker makes its attempts' cgroups in (its own), once found writable."""
        with self._lock:
            if self._parent is False:
                self._parent = self._find_parent()
            return self._parent  # type: ignore[return-value]

    def _find_parent(self) -> str | None:
        mount, own = cgroup2_mount(), own_cgroup()
        if mount is None or own is None:
            return None
        parent = os.path.join(mount, own.lstrip("/"))
        if not os.access(parent, os.W_OK):
            return None
        controllers = (_read(os.path.join(parent, "cgroup.controllers")) or "").split()
        enabled = (_read(os.path.join(parent, "cgroup.subtree_control")) or "").split()
        if "memory" in controllers and "memory" not in enabled:
            # Allowed where the worker's cgroup holds no processes of its own, or is the root.
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
            enabled = (_read(os.path.join(parent, "cgroup.subtree_control")) or "").split()
        self._memory_controller = "memory" in enabled
        return parent

    def mechanism(self) -> str:
        """What this worker uses: ``cgroup+memory.max``, ``cgroup``, or ``procfs``."""
        if self.mode != "procfs" and self.cgroup_parent() is not None:
            return "cgroup+memory.max" if self._memory_controller else "cgroup"
        return "procfs"

    def for_attempt(self, name: str, memory: int | None, cpu_time: float | None) -> Limiter:
        """The limiter of one attempt. Raises OSError when ``cgroup`` was asked for and cannot be had,
        or when neither mechanism is available here."""
        if self.mode != "procfs":
            parent = self.cgroup_parent()
            if parent is not None:
                try:
                    return CgroupLimiter(parent, name, memory, cpu_time)
                except OSError:
                    if self.mode == "cgroup":
                        raise
            elif self.mode == "cgroup":
                raise OSError("no cgroup v2 hierarchy this worker may create cgroups in")
        if not os.path.isdir("/proc/self"):
            raise OSError("limits need /proc or cgroup v2, and this host has neither")
        return ProcfsLimiter(memory, cpu_time)
