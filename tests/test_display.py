"""Output for people: tables fit the width and cut with …, relative times and durations, and colour
only on a terminal without NO_COLOR (a real pseudo-terminal, a real `queuectl` process)."""

from __future__ import annotations

import os
import pty
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from conftest import QUEUECTL

from queuectl_core.cli import display
from queuectl_core.jobs.timeutil import now


def test_duration_and_relative_times() -> None:
    assert [display.duration(s) for s in (0.0123, 4.21, 42, 245, 3720, 3 * 86400 + 4 * 3600)] == \
        ["12ms", "4.2s", "42s", "4m05s", "1h02m", "3d04h"]
    t = now()
    assert display.relative(t - timedelta(seconds=12), t) == "12s ago"
    assert display.relative(t + timedelta(minutes=4, seconds=5), t) == "in 4m"
    assert display.relative(t, t) == "now" and display.relative(None, t) == ""


def test_table_fits_the_width_cuts_with_an_ellipsis_and_drops_columns_last_resort() -> None:
    cols = [display.Column("ID"), display.Column("Q", drop_first=2), display.Column("CMD", min_width=8, weight=2),
            display.Column("ERR", min_width=6, drop_first=1)]
    rows = [["a1", "default", "x" * 200, "exit 3"], ["b2", "default", "short\nline", ""]]
    for width in (40, 80, 200):
        lines = display.table(cols, rows, total=width)
        assert all(len(line) <= width for line in lines) and len(lines) == 3
    wide = display.table(cols, rows, total=200)
    assert "…" in wide[1] and "short line" in wide[2] and "exit 3" in wide[1]
    narrow = display.table(cols, rows, total=24)
    assert narrow[0].split() == ["ID", "CMD", "ERR"]  # Q gave way first


def _on_a_terminal(q: Any, *args: str, env: dict[str, str] | None = None) -> str:
    main, child = pty.openpty()
    proc = subprocess.Popen([*QUEUECTL, *args], stdin=subprocess.DEVNULL, stdout=child, stderr=child,
                            env={**q.env, "TERM": "xterm", **(env or {})})
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(main)
    return out.decode()


@pytest.mark.parametrize("command", [("list",), ("status",)])
def test_colour_only_on_a_terminal_and_never_with_no_color(q: Any, command: tuple[str, ...]) -> None:
    q.run("enqueue", "--id", "j1", "--cmd", "true")
    assert "\x1b[" in _on_a_terminal(q, *command)
    assert "\x1b[" not in _on_a_terminal(q, *command, env={"NO_COLOR": "1"})
    assert "\x1b[" not in q.run(*command).stdout  # a pipe
    assert "\x1b[" not in _on_a_terminal(q, *command, "--json")
