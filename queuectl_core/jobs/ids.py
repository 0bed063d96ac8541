"""Job ids: short, unique and sortable by creation time (a tiny monotonic ULID)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_RANDOM_BITS = 25
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_lock = threading.Lock()
_last = 0
_prefix_cache = (-1, "")  # (millisecond part, its 9 characters): one tuple, read and replaced whole


def _encode_slow(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _encode(value: int) -> str:
    """70 bits as 14 base32 characters: 9 for the millisecond part (computed once per
    millisecond), 5 for the low 25 bits (two table look-ups and one character). Safe without the
    lock: the cache is one tuple, so a thread never pairs one millisecond with another's text."""
    global _prefix_cache
    high = value >> _RANDOM_BITS
    key, prefix = _prefix_cache
    if high != key:
        prefix = _encode_slow(high, 9)
        _prefix_cache = (high, prefix)
    return prefix + _PAIRS[(value >> 15) & 1023] + _PAIRS[(value >> 5) & 1023] + _ALPHABET[value & 31]


def _reserve(n: int) -> int:
    """The first of ``n`` consecutive id values, none of them handed out before in this process."""
    global _last
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last >> _RANDOM_BITS:
            first = _last + 1  # same millisecond (or the clock stepped back): count up, no syscall
        else:
            first = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(4), "big") >> (32 - _RANDOM_BITS + 4)
        _last = first + n - 1
    return first


def new_id() -> str:
    """A 14-character id: 9 characters of milliseconds, 5 of randomness.

    Within one process ids strictly increase (the random part counts up inside a millisecond),
    so a batch enqueued at once keeps its order. Only 21 of the 25 low bits are drawn at random,
    leaving room to count up within one millisecond without spilling into the time part; so
    across processes a clash is about a 1 in 2 million event per millisecond, and storage
    rejects it (the caller then draws again).
    """
    return _encode(_reserve(1))


def new_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_id` would give them one after another, for the price of one clock
    read and one lock (``enqueue --file``). They are consecutive values: past the millisecond's
    2**25 the count runs on into the next millisecond's, still increasing."""
    if n <= 0:
        return []
    first = _reserve(n)
    return [_encode(value) for value in range(first, first + n)]
