"""A module that is imported when it is first used, not when it is first imported.

The click-free ``queuectl enqueue`` (fast_enqueue) builds the plugin API's frozen dataclasses, and
on Python 3.11 ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``,
``linecache``: ~4 ms of a ~30 ms process here, ``python -X importtime``) only to write a signature
into the docstring of a class that has none. Every dataclass on that path has a docstring, so
``inspect`` is never used there. (From 3.12 ``dataclasses`` reads every class's annotations with
``inspect.get_annotations``, so ``entry.main`` defers it on 3.11 only.)

``defer("inspect")`` puts a stand-in into ``sys.modules``: ``import inspect`` anywhere then gets the
stand-in, and its first attribute lookup imports the real module, which from then on is what
``sys.modules`` holds and what the stand-in forwards to. A plugin or tool that uses inspect gets
the real thing, a few ms later. Looking up ``__file__``, ``__path__`` or ``__cached__``, which tools
do on every module, is not a use.

``importlib.util.LazyLoader`` cannot do this on Python 3.11: every ``import inspect`` reads the
module's ``__spec__``, which makes a LazyLoader module load at once (docs/operations.md, "The
click-free `queuectl enqueue`"). The stand-in keeps a spec of its own (no loader), so that read
loads nothing.
"""

from __future__ import annotations

import sys
from types import ModuleType

_PROBED = frozenset({"__file__", "__path__", "__cached__"})


class _Deferred(ModuleType):
    def __getattr__(self, attr: str) -> object:
        if attr in _PROBED:
            # What tools look up on every module in sys.modules: not a use, and it must not change
            # sys.modules while they iterate over it.
            raise AttributeError(attr)
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]  # so that the import below finds and runs the real module
        return getattr(__import__(name), attr)


def defer(name: str) -> None:
    """Import top-level module ``name`` on first use (nothing to do once it is imported)."""
    if name not in sys.modules:
        stand_in = _Deferred(name)
        # A spec of its own, so that reading it (every import statement does) loads nothing, and
        # importlib.util.find_spec(name) answers rather than raising.
        stand_in.__spec__ = type(sys.__spec__)(name, None)
        sys.modules[name] = stand_in
