"""Job ids: short, unique and sortable by creation time (a tiny monotonic ULID)."""

from __future__ import annotations

import base64
import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_RANDOM_BITS = 25
_lock = threading.Lock()
_last = 0


_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def _encode(value: int) -> str:
    """70 bits as 14 base32 characters (10 bytes encode to 16; the top 2 are always zero)."""
    return base64.b32encode(value.to_bytes(10, "big")).translate(_TO_CROCKFORD)[2:].decode()


def new_id() -> str:
    """A 14-character id: 9 characters of milliseconds, 5 of randomness.

    Within one process ids strictly increase (the random part counts up inside a millisecond),
    so a batch enqueued at once keeps its order. Only 21 of the 25 low bits are drawn at random,
    leaving room to count up within one millisecond without spilling into the time part; so
    across processes a clash is about a 1 in 2 million event per millisecond, and storage
    rejects it (the caller then draws again).
    """
    global _last
    ms = time.time_ns() // 1_000_000
    with _lock:
        candidate = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(4), "big") >> (32 - _RANDOM_BITS + 4)
        if candidate <= _last:
            candidate = _last + 1
        _last = candidate
    return _encode(candidate)
