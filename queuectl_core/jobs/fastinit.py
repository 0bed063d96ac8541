"""Building frozen slots dataclasses fast, for the paths that make one per job by the hundred thousand.

A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__`` (to get past
the frozen guard): a NewJob costs ~4.4 µs, a Job ~7 µs on the 2-vCPU machine of
docs/operations.md. :func:`positional_factory` returns a function taking every field positionally
that builds the same object ~3-10 times cheaper: it fills an instance of an unfrozen twin class,
which has the very same ``__slots__`` (so the same memory layout), with plain attribute stores,
then sets its ``__class__`` to the frozen class, which Python allows between classes of one
layout. Where that assignment is refused, it stores through the slots' own descriptors instead.
It is only for classes without ``__post_init__`` (checked), and callers pass every field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_made: dict[type, Callable[..., Any]] = {}


def positional_factory(cls: type[T]) -> Callable[..., T]:
    """``make(*every_field_in_order) -> cls instance``, equal to ``cls(*every_field_in_order)``."""
    made = _made.get(cls)
    if made is not None:
        return made
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: positional_factory needs a slots dataclass without __post_init__")
    names = [f.name for f in dataclasses.fields(cls)]
    params = ", ".join(f"a{i}" for i in range(len(names)))
    made = _twin_factory(cls, names, params) or _descriptor_factory(cls, names, params)
    _made[cls] = made
    return made


def _descriptor_factory(cls: type, names: list[str], params: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set{i}": getattr(cls, name).__set__ for i, name in enumerate(names)})
    body = "".join(f"    _set{i}(o, a{i})\n" for i in range(len(names)))
    exec(f"def make({params}):\n    o = _new(_cls)\n{body}    return o\n", namespace)  # as dataclasses does
    made: Callable[..., Any] = namespace["make"]
    return made


def _twin_factory(cls: type, names: list[str], params: str) -> Callable[..., Any] | None:
    """The twin-class factory, or None where this Python refuses the ``__class__`` assignment."""
    slots = vars(cls)["__slots__"]
    if cls.__bases__ != (object,) or list(slots) != names or not all(n.isidentifier() and not n.startswith("__")
                                                                   for n in names):
        return None
    twin = type(f"_{cls.__name__}Builder", (), {"__slots__": tuple(slots)})
    namespace: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    body = "".join(f"    o.{name} = a{i}\n" for i, name in enumerate(names))
    exec(f"def make({params}):\n    o = _new(_twin)\n{body}    o.__class__ = _cls\n    return o\n", namespace)
    made: Callable[..., Any] = namespace["make"]
    try:
        probe = [object() for _ in names]
        sample = made(*probe)
    except TypeError:  # "object layout differs"
        return None
    if type(sample) is not cls or any(getattr(sample, n) is not v for n, v in zip(names, probe)):
        return None
    return made


__all__ = ["positional_factory"]
