"""Plain code: queuectl's own code uses public APIs of its libraries and of CPython, and its docs are
its own contract. Each check names what a newcomer would otherwise have to learn the hard way."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest

import queuectl_core

ROOT = Path(__file__).resolve().parent.parent
CODE = sorted(p for d in ("queuectl_core", "plugins", "bench", "tests") for p in (ROOT / d).rglob("*.py"))
TEXT = CODE + sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

# Each: what is refused, and why. This file names them, so it is left out of its own search.
REFUSED = {
    # A forked child ends with os._exit, as the os module's docs prescribe; nothing else may.
    r"\bos\._exit\(": "skipping interpreter teardown outside a forked child",
    r"\bsys\.modules\[[^\]]+\]\s*=": "a stand-in module put into sys.modules",
    r"_ncallbacks": "CPython's private atexit counter",
    r"^\s*(import|from) _(socket|thread)\b": "a private C module instead of socket/threading",
    r"^\s*(import|from) ctypes\b": "a hand-written binding (use the library's own driver)",
}


def _in_forked_child(lines: list[str], index: int) -> bool:
    return any("os.fork()" in line for line in lines[max(0, index - 15):index])


@pytest.mark.parametrize("pattern", REFUSED)
def test_no_private_interpreter_tricks(pattern: str) -> None:
    me = Path(__file__).resolve()
    found = []
    for p in CODE:
        lines = p.read_text().splitlines() if p != me else []
        found += [f"{p.relative_to(ROOT)}:{i + 1}" for i, line in enumerate(lines) if re.search(pattern, line)
                  and not (pattern.startswith(r"\bos\._exit") and _in_forked_child(lines, i))]
    assert not found, f"{REFUSED[pattern]}: {found}"


def test_hookimpl_is_pluggys_own_marker() -> None:
    assert isinstance(queuectl_core.hookimpl, pluggy.HookimplMarker)
    assert queuectl_core.hookimpl.project_name == "queuectl"


def test_nothing_cites_a_document_outside_the_repository() -> None:
    """The docs are the contract: no comment, docstring, test or doc sends a reader to section
    numbers of a document they do not have."""
    me = Path(__file__).resolve()
    found = [f"{p.relative_to(ROOT)}:{n}" for p in TEXT if p != me
             for n, line in enumerate(p.read_text().splitlines(), 1) if "§" in line]
    assert not found, found
