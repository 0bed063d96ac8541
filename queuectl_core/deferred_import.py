"""A module that is imported when it is first used, not when it is first imported.

The click-free ``queuectl enqueue`` (fast_enqueue) builds the plugin API's frozen dataclasses, and
``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``, ``linecache``: ~4 ms of a
~30 ms process here, ``python -X importtime``) only to write a signature into the docstring of a
class that has none. Every dataclass on that path has a docstring, so ``inspect`` is never used
there. ``defer("inspect")`` puts a stand-in into ``sys.modules``: ``import inspect`` anywhere then
gets the stand-in, and its first attribute lookup imports the real module, which from then on is
what ``sys.modules`` holds and what the stand-in forwards to. A plugin or tool that uses inspect
gets the real thing, a few ms later.

``importlib.util.LazyLoader`` cannot do this on Python 3.11: every ``import inspect`` reads the
module's ``__spec__``, which makes a LazyLoader module load at once (docs/operations.md, "The
click-free `queuectl enqueue`"). The stand-in keeps its own ``__spec__`` (None), so that read
loads nothing.
"""

from __future__ import annotations

import sys
from types import ModuleType


class _Deferred(ModuleType):
    def __getattr__(self, attr: str) -> object:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]  # so that the import below finds and runs the real module
        return getattr(__import__(name), attr)


def defer(name: str) -> None:
    """Import top-level module ``name`` on first use (nothing to do once it is imported)."""
    if name not in sys.modules:
        stand_in = _Deferred(name)
        stand_in.__spec__ = None
        sys.modules[name] = stand_in
